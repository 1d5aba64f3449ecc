"""
Wait out a server that is down for a moment (a restart), then fail saying what was unreachable and for how long.

The hooks run their calls to MLflow and S3 through :func:`wait_out`: a call that fails because the server could
not be reached is tried again with exponential backoff (tenacity) until the outage window
(``[mlops] service_outage_timeout``) is spent; any other failure is raised at once. Also here: taking the
user-info (``user:password@``) out of every URL in an error's text, since clients such as botocore put the
endpoint URL they could not reach in their messages.

Imports only the standard library; tenacity (installed with Airflow) is imported when a call is made.
"""

from __future__ import annotations

import logging
import re
import time
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from collections.abc import Callable

T = TypeVar("T")

#: Longest pause between two tries: a server back from a restart is found within this many seconds.
MAX_WAIT_S = 10.0
_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://)[^/\s@'\"<>]*@")
log = logging.getLogger(__name__)


def redact_userinfo(text: str) -> str:
    """*text* with the user-info of every URL in it replaced by ``***`` (``http://***@host/...``)."""
    return _USERINFO.sub(r"\g<scheme>***@", text)


def redact_exception(err: BaseException) -> BaseException:
    """
    Take URL user-info out of the text of *err* and of every exception it chains to, in place; return *err*.

    Rewrites each exception's string ``args`` (what ``str()`` and tracebacks show) and the string values of
    botocore's ``kwargs`` (what its message was made of).
    """
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        try:
            current.args = tuple(redact_userinfo(a) if isinstance(a, str) else a for a in current.args)
        except (AttributeError, TypeError):  # pragma: no cover - an exception type with read-only args
            pass
        kwargs = getattr(current, "kwargs", None)
        if isinstance(kwargs, dict):
            for key, value in kwargs.items():
                if isinstance(value, str):
                    kwargs[key] = redact_userinfo(value)
        current = current.__cause__ or current.__context__
    return err


def describe_error(err: BaseException, limit: int = 300) -> str:
    """``Type: message`` of *err*, without URL user-info and at most *limit* characters of message."""
    text = redact_userinfo(str(err)).strip()
    if len(text) > limit:
        text = f"{text[:limit]}..."
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def wait_out(
    call: Callable[[], T],
    *,
    what: str,
    window: float,
    is_transient: Callable[[BaseException], bool],
    give_up: Callable[[BaseException, float], BaseException],
    logger: logging.Logger | Any | None = None,
) -> T:
    """
    Return ``call()``, trying again while it fails with a transient error, for up to *window* seconds.

    Waits 1, 2, 4... seconds between tries (at most :data:`MAX_WAIT_S`, with up to 1 s of jitter), logging
    each failed try. A failure that is not transient is raised at once, with URL user-info taken out of its
    text. When the window is spent, raises ``give_up(last_error, seconds_waited)`` from the last error.

    :param what: What is called, for the log lines (e.g. ``"MLflow server http://mlflow:5000"``).
    :param window: Seconds to keep trying; 0 tries once.
    """
    import tenacity

    out = logger or log
    start = time.monotonic()

    def _log_retry(state: tenacity.RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        sleep = state.next_action.sleep if state.next_action else 0.0
        out.warning(
            "%s is unreachable (%s); trying again in %.1f s (%.0f of %.0f s waited)",
            what, describe_error(error) if error else "?", sleep, time.monotonic() - start, window,
        )  # fmt: skip

    retrying = tenacity.Retrying(
        stop=tenacity.stop_after_delay(window),
        wait=tenacity.wait_exponential(multiplier=1, min=1, max=MAX_WAIT_S) + tenacity.wait_random(0, 1),
        retry=tenacity.retry_if_exception(is_transient),
        before_sleep=_log_retry,
        reraise=True,
    )
    try:
        return retrying(call)
    except Exception as err:
        redact_exception(err)
        if not is_transient(err):
            raise
        raise give_up(err, time.monotonic() - start) from err
