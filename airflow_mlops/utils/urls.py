"""
Credentials written into a URL (``scheme://user:password@host``): find them and take them out.

A URL is shown and passed on in many places (logs, links, error messages, a trainer's environment, a pod
spec), so the hooks read a connection's URL once, take its user-info out with :func:`split_credentials` and
hand on only the clean URL; the user name and password go where the connection's own credentials go.
"""

from __future__ import annotations

from typing import NamedTuple
from urllib.parse import unquote, urlsplit, urlunsplit


class URLCredentials(NamedTuple):
    """A URL without its user-info, and the user name and password the user-info held (percent-decoded)."""

    url: str
    username: str | None
    password: str | None

    def __repr__(self) -> str:  # never show the password, even in a debugger or a traceback
        held = [name for name in ("username", "password") if getattr(self, name)]
        return f"URLCredentials(url={self.url!r}, held={held})"


def split_credentials(url: str) -> URLCredentials:
    """
    Split *url* into the URL without user-info and the user name and password of its user-info.

    A URL without user-info is returned unchanged (``username`` and ``password`` are ``None``); an empty user
    name or password is ``None`` too.

    :raises ValueError: if *url* cannot be read as a URL with a host (for example a password holding an
        unencoded ``/``, ``?`` or ``#``). The message never repeats *url*, which may hold a secret.
    """
    parts = urlsplit(url)
    try:
        parts.port  # noqa: B018 - reading it checks the host part (a stray ':' before an '@' fails here)
    except ValueError as err:
        raise ValueError(
            "the URL's host part is not host[:port] (a password in it must be percent-encoded; better, give "
            "credentials separately)"
        ) from err
    if "@" not in parts.netloc:
        return URLCredentials(url, None, None)
    userinfo, _, hostport = parts.netloc.rpartition("@")
    username, has_password, password = userinfo.partition(":")
    return URLCredentials(
        urlunsplit(parts._replace(netloc=hostport)),
        unquote(username) or None,
        (unquote(password) or None) if has_password else None,
    )


def without_credentials(url: str) -> str:
    """*url* without its user-info (``user:password@``); a URL that cannot be read is returned as ``***``."""
    try:
        return split_credentials(url).url
    except ValueError:
        return "***"
