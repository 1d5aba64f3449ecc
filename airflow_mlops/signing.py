"""
Signatures on the registry records that decide what serves.

The MLflow registry is shared storage: anyone with write access may set any tag. The records that decide
what serves (the gate decision, the approval, the release record and each deployment-history entry) are
therefore signed by the package with a key only Airflow holds, and verified wherever they are read. A record
that is unsigned, signed with an unknown key, changed after signing or signed for another model version
counts as absent.

**The key** is an Airflow connection (``[mlops] signing_conn_id``, default ``mlops_signing_default``, any
connection type): its *password* is the secret (at least 32 characters), its *login* the key id (default
``k1``), and its extra may hold the keys of earlier ids, ``{"previous_keys": {"k0": "..."}}``, so records
signed before a rotation stay verifiable. Create one with::

    airflow connections add mlops_signing_default --conn-type generic --conn-login k1 --conn-password "$(python -c 'import secrets; print(secrets.token_urlsafe(48))')"

**A signature** is ``hmac-sha256:<key id>:<base64url HMAC-SHA256>`` over the canonical JSON of the record
kind, the model name, the version, the version's source (its MLflow run id and source, which nobody can
change once the version exists) and the record's content. The tags stay human-readable; the signature is one
more tag (``mlops.gate.signature``, ``mlops.approval.signature``) or a ``signature`` key inside a JSON record
(``mlops.release``, ``mlops.deployments`` entries).

No Airflow import at module level; the key is read (and masked in logs) by :func:`load_keys`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, NamedTuple

from airflow_mlops.exceptions import ConfigurationError

if TYPE_CHECKING:
    from mlflow.entities.model_registry import ModelVersion

SCHEME = "hmac-sha256"
DEFAULT_CONN_ID = "mlops_signing_default"
DEFAULT_KEY_ID = "k1"
#: Shortest secret accepted (characters).
MIN_SECRET_LENGTH = 32
#: The key of a JSON record that holds its signature.
SIGNATURE_KEY = "signature"

# Record kinds (part of what is signed, so one kind's signature never passes for another's).
GATE = "gate"
APPROVAL = "approval"
RELEASE = "release"
RELEASE_POINTER = "release_pointer"
DEPLOYMENT = "deployment"
RETRAINING_REQUEST = "retraining_request"


class Subject(NamedTuple):
    """
    What a record is about: a model version, bound to its source so a record cannot be moved to another one.

    :param model: The registered model name.
    :param version: The version number, as a string.
    :param source: The version's MLflow run id and source (``run_id|source``), fixed once it is registered.
    """

    model: str
    version: str
    source: str

    @classmethod
    def of(cls, mv: ModelVersion) -> Subject:
        """The subject of a model version read from the registry."""
        return cls(str(mv.name), str(mv.version), f"{mv.run_id or ''}|{mv.source or ''}")

    @classmethod
    def model_only(cls, model: str) -> Subject:
        """The subject of a record about a registered model as a whole (no version)."""
        return cls(str(model), "", "")


def _message(kind: str, subject: Subject, record: Mapping[str, Any]) -> bytes:
    content = {key: value for key, value in record.items() if key != SIGNATURE_KEY}
    return json.dumps(
        {
            "kind": kind,
            "model": subject.model,
            "version": subject.version,
            "source": subject.source,
            "record": content,
        },
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
        default=str,
    ).encode()


class SigningKeys:
    """
    The package's signing key and the earlier keys it still accepts.

    :param key_id: The id of the key new records are signed with.
    :param keys: Every key by id (the signing key included); never shown by ``repr``.
    """

    # A plain class rather than a dataclass: this module loads when a DAG file is parsed, and a dataclass is
    # built by generating and compiling code (about 0.3 ms).
    __slots__ = ("key_id", "keys")

    def __init__(self, key_id: str, keys: Mapping[str, bytes]) -> None:
        if not key_id or ":" in key_id or key_id not in keys:
            raise ConfigurationError(f"Signing key id {key_id!r} must be non-empty, without ':'")
        self.key_id = key_id
        self.keys = keys

    def __repr__(self) -> str:
        return f"SigningKeys(key_id={self.key_id!r})"

    @classmethod
    def from_secrets(cls, key_id: str, secret: str, previous: Mapping[str, str] | None = None) -> SigningKeys:
        """Keys from their secrets; each secret must be at least :data:`MIN_SECRET_LENGTH` characters."""
        secrets = {**dict(previous or {}), key_id: secret}
        for kid, value in secrets.items():
            if not isinstance(value, str) or len(value) < MIN_SECRET_LENGTH:
                raise ConfigurationError(
                    f"Signing key {kid!r} is too short: use a random secret of at least {MIN_SECRET_LENGTH} "
                    "characters (python -c 'import secrets; print(secrets.token_urlsafe(48))')"
                )
            if ":" in kid:
                raise ConfigurationError(f"Signing key id {kid!r} must not contain ':'")
        return cls(key_id, {kid: value.encode() for kid, value in secrets.items()})

    def sign(self, kind: str, subject: Subject, record: Mapping[str, Any]) -> str:
        """The signature of *record* (its ``signature`` key, if any, left out) as a *kind* about *subject*."""
        digest = hmac.new(self.keys[self.key_id], _message(kind, subject, record), hashlib.sha256).digest()
        return f"{SCHEME}:{self.key_id}:{base64.urlsafe_b64encode(digest).decode().rstrip('=')}"

    def problem(self, kind: str, subject: Subject, record: Mapping[str, Any], signature: Any) -> str | None:
        """
        What is wrong with *signature* for *record*, or None if the package signed exactly this record.

        E.g. ``is missing (not written by the package)``, ``was made with unknown key id 'k0'``, ``does not
        match: the record was changed after signing, or signed for another model version``.
        """
        if not signature:
            return "is missing (the record was not written by the package)"
        parts = str(signature).split(":")
        if len(parts) != 3 or parts[0] != SCHEME:
            return f"is not a {SCHEME} signature of the package"
        key_id, digest = parts[1], parts[2]
        key = self.keys.get(key_id)
        if key is None:
            return f"was made with key id {key_id!r}, which the signing connection does not hold"
        expected = hmac.new(key, _message(kind, subject, record), hashlib.sha256).digest()
        expected_text = base64.urlsafe_b64encode(expected).decode().rstrip("=")
        if not hmac.compare_digest(expected_text, digest):
            return (
                "does not match: the record was changed after the package signed it, or it was signed for "
                "another model or version"
            )
        return None

    def signed(self, kind: str, subject: Subject, record: Mapping[str, Any]) -> dict[str, Any]:
        """A copy of the JSON record *record* with its ``signature`` key set."""
        out = {key: value for key, value in record.items() if key != SIGNATURE_KEY}
        out[SIGNATURE_KEY] = self.sign(kind, subject, out)
        return out


def untrusted_message(tag: str, subject: Subject, problem: str) -> str:
    """E.g. ``The signature of mlops.approval.* on model 'churn' v3 is missing (...): it counts as absent``."""
    where = f"model {subject.model!r}" + (f" v{subject.version}" if subject.version else "")
    return f"The signature of {tag} on {where} {problem}; it counts as absent"


class SigningKeyMissingError(ConfigurationError):
    """The signing connection is not defined."""


def load_keys(conn_id: str | None = None) -> SigningKeys:
    """
    The signing keys from the Airflow connection *conn_id* (default ``[mlops] signing_conn_id``).

    :raises ConfigurationError: if the connection is missing (:class:`SigningKeyMissingError`) or its key is
        unusable (not retryable).
    """
    from airflow.sdk import BaseHook
    from airflow.sdk.log import mask_secret

    from airflow_mlops.version_compat import AirflowNotFoundException, conf

    conn_id = conn_id or conf.get("mlops", "signing_conn_id", fallback=DEFAULT_CONN_ID)
    try:
        conn = BaseHook.get_connection(conn_id)
    except AirflowNotFoundException:
        raise SigningKeyMissingError(
            f"No signing key: the Airflow connection {conn_id!r} is not defined. The package signs the gate, "
            "approval, release and deployment records with it. Create it with a random secret of at least "
            f"{MIN_SECRET_LENGTH} characters as its password and a key id as its login (docs/security.md), or "
            "set [mlops] require_approval = False where no person approves releases."
        ) from None
    secret = conn.password or ""
    previous = (conn.extra_dejson or {}).get("previous_keys") or {}
    if not isinstance(previous, Mapping):
        raise ConfigurationError(
            f"Signing connection {conn_id!r}: extra previous_keys must map key ids to secrets"
        )
    for value in (secret, *previous.values()):
        if value:
            mask_secret(str(value))
    if not secret:
        raise ConfigurationError(
            f"Signing connection {conn_id!r} has no password: set it to a random secret of at least "
            f"{MIN_SECRET_LENGTH} characters (docs/security.md)"
        )
    return SigningKeys.from_secrets(
        (conn.login or DEFAULT_KEY_ID).strip(), secret, {str(k): str(v) for k, v in previous.items()}
    )


def record_keys() -> SigningKeys | None:
    """
    The keys the package signs and verifies with, or None where the trust checks are off.

    With ``[mlops] require_approval`` (the default) the key is required (:func:`load_keys` raises without
    one). With ``require_approval = False`` records are signed and verified when a key is configured, and
    written unsigned and read unverified when none is.
    """
    from airflow_mlops.utils.config import approval_required

    try:
        return load_keys()
    except SigningKeyMissingError:
        if approval_required():
            raise
        return None
