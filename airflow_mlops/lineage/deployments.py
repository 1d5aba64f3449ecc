"""
Deployment history kept in the MLflow registry, readable without Airflow.

Every deploy, automatic rollback and manual rollback appends one entry::

    {"time": "2025-01-01T12:00:00+00:00", "action": "deploy" | "auto_rollback" | "rollback",
     "version": "3", "outcome": "succeeded" | "failed", "target": "local",
     "endpoint": "http://127.0.0.1:5001", "actor": "alice", "reason": "...", "previous_version": "2",
     "airflow": {"dag_id": ..., "run_id": ..., "task_id": ..., "try_number": ...}}

Entries are written to two tags, both named ``mlops.deployments`` and holding a JSON list, oldest first:

- on the registered model: the recent entries of all versions, without ``verify`` and ``airflow`` (trimmed
  from the oldest to fit MLflow's 5000-character limit on registered-model tags);
- on each model version: every entry about that version, with ``verify`` (the smoke-test settings, which a
  rollback reuses) and ``airflow`` (the task instance; a retried task writes no entry twice).

Each entry, in each list, carries a ``signature`` (:mod:`airflow_mlops.signing`) over the entry as stored, bound to
the model, the version and the version's source. Readers given the signing keys see only the entries the
package signed; the others count as absent (:func:`verified`).

The registered-model tag ``mlops.deployment.target`` holds the JSON config of the target the model was last
deployed to successfully (information for people: a rollback builds its target from its DAG, never from a
tag), and a version rolled away from carries the reason in ``mlops.rollback.reason``.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from airflow_mlops import signing
from airflow_mlops import tags as T
from airflow_mlops.registry import error_code
from airflow_mlops.utils.context import airflow_ids

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

    from mlflow import MlflowClient

    from airflow_mlops.signing import SigningKeys

ACTIONS = ("deploy", "auto_rollback", "rollback")
OUTCOMES = ("succeeded", "failed")
#: Registered-model tag values are VARCHAR(5000) in MLflow's SQL store.
MODEL_TAG_LIMIT = 5000
#: Model-version tag values are TEXT, validated by MLflow at 100,000 characters.
VERSION_TAG_LIMIT = 100_000
#: Longest reason kept in the registered-model list (the version's list keeps up to 2000 characters).
SHORT_REASON = 300
LONG_REASON = 2000
_IDENTITY = ("action", "version", "outcome")
#: Keys kept in the version's list only (the registered-model list must stay short).
_VERSION_ONLY = ("verify", "airflow")


def _loads(value: str | None) -> list[dict[str, Any]]:
    if not value:
        return []
    try:
        data = json.loads(value)
    except ValueError:
        return []
    return [entry for entry in data if isinstance(entry, dict)] if isinstance(data, list) else []


def _dumps_within(entries: list[dict[str, Any]], limit: int) -> str:
    entries = list(entries)
    while True:
        text = json.dumps(entries, separators=(",", ":"), sort_keys=True)
        if len(text) <= limit or not entries:
            return text
        entries.pop(0)


def _shorten(entry: Mapping[str, Any], reason_limit: int, compact: bool = False) -> dict[str, Any]:
    out = {k: v for k, v in entry.items() if not (compact and k in _VERSION_ONLY)}
    reason = out.get("reason") or ""
    if len(reason) > reason_limit:
        out["reason"] = reason[: reason_limit - 3] + "..."
    return out


def _task(entry: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in (entry.get("airflow") or {}).items() if k != "try_number"}


def _same_event(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """Entries written twice by one task instance (any try): same action, version and outcome."""
    return bool(_task(a)) and _task(a) == _task(b) and all(a.get(k) == b.get(k) for k in _IDENTITY)


def _subjects(client: MlflowClient, model_name: str) -> Any:
    """The signing subject of each version of *model_name*, read once (None for a version that is gone)."""
    from mlflow.exceptions import MlflowException

    cache: dict[str, signing.Subject | None] = {}

    def subject(version: Any) -> signing.Subject | None:
        key = str(version)
        if key not in cache:
            try:
                cache[key] = signing.Subject.of(client.get_model_version(model_name, key))
            except MlflowException as err:
                if error_code(err) != "RESOURCE_DOES_NOT_EXIST":
                    raise
                cache[key] = None
        return cache[key]

    return subject


def verified(
    client: MlflowClient,
    model_name: str,
    entries: Sequence[Mapping[str, Any]],
    keys: SigningKeys | None,
    rejected: list[tuple[dict[str, Any], str]] | None = None,
    subject: Callable[[Any], signing.Subject | None] | None = None,
) -> list[dict[str, Any]]:
    """
    The entries the package signed (all of them when *keys* is None: signatures unchecked).

    :param rejected: Filled with each other entry and what is wrong with its signature.
    :param subject: The signing subject of an entry's version (default: read from the registry, once each).
    """
    if keys is None:
        return [dict(entry) for entry in entries]
    subject = subject or _subjects(client, model_name)
    trusted = []
    for entry in entries:
        about = subject(entry.get("version"))
        problem = (
            f"names version {entry.get('version')!r}, which does not exist"
            if about is None
            else keys.problem(signing.DEPLOYMENT, about, entry, entry.get(signing.SIGNATURE_KEY))
        )
        if problem is None:
            trusted.append(dict(entry))
        elif rejected is not None:
            rejected.append((dict(entry), problem))
    return trusted


def read_history(
    client: MlflowClient,
    model_name: str,
    keys: SigningKeys | None = None,
    rejected: list[tuple[dict[str, Any], str]] | None = None,
) -> list[dict[str, Any]]:
    """
    Recent deployment entries of *model_name* (all versions), oldest first; [] if none.

    With *keys*, only the entries the package signed (:func:`verified`).
    """
    from mlflow.exceptions import MlflowException

    try:
        model = client.get_registered_model(model_name)
    except MlflowException as err:
        if error_code(err) == "RESOURCE_DOES_NOT_EXIST":
            return []
        raise
    return verified(client, model_name, _loads((model.tags or {}).get(T.DEPLOYMENTS)), keys, rejected)


def read_version_history(
    client: MlflowClient,
    model_name: str,
    version: str | int,
    keys: SigningKeys | None = None,
    rejected: list[tuple[dict[str, Any], str]] | None = None,
) -> list[dict[str, Any]]:
    """Every deployment entry about one version, oldest first (with *keys*: only those the package signed)."""
    mv = client.get_model_version(model_name, str(version))
    entries = [e for e in _loads((mv.tags or {}).get(T.DEPLOYMENTS)) if str(e.get("version")) == str(version)]
    if keys is None:
        return entries
    about = signing.Subject.of(mv)
    return verified(client, model_name, entries, keys, rejected, subject=lambda _: about)


def read_full_history(
    client: MlflowClient, model_name: str, keys: SigningKeys | None = None
) -> list[dict[str, Any]]:
    """Every entry of every version (the version tags merged), oldest first (with *keys*: signed ones only)."""
    entries: list[dict[str, Any]] = []
    for mv in client.search_model_versions(f"name = '{model_name}'"):
        entries.extend(read_version_history(client, model_name, mv.version, keys))
    return sorted(entries, key=lambda e: (e.get("time") or "", ACTIONS.index(e.get("action", "deploy"))))


def last_verify_settings(
    client: MlflowClient, model_name: str, version: str | int | None, keys: SigningKeys | None = None
) -> dict[str, Any] | None:
    """
    The smoke-test settings (``verify``) *version* was last deployed with successfully, or None if unknown.

    A rollback reuses them to check the version it restores.
    """
    if not version:
        return None
    for entry in reversed(read_version_history(client, model_name, version, keys)):
        if entry.get("outcome") == "succeeded" and isinstance(entry.get("verify"), dict):
            return dict(entry["verify"])
    return None


def actor_of(context: Mapping[str, Any] | None) -> str:
    """Who acts: the user who triggered the DAG run, else ``airflow:<dag_id>`` (scheduled and asset runs)."""
    dag_run = (context or {}).get("dag_run")
    user = getattr(dag_run, "triggering_user_name", None)
    if user:
        return str(user)
    return f"airflow:{airflow_ids(context).get('dag_id', 'unknown')}"


def previous_serving_version(history: Sequence[Mapping[str, Any]], current_version: str | None) -> str | None:
    """The version that last served successfully before *current_version* took over (None if there is none)."""
    for entry in reversed(history):
        if entry.get("outcome") == "succeeded" and str(entry.get("version")) != str(current_version):
            return str(entry["version"])
    return None


def last_served_version(history: Sequence[Mapping[str, Any]]) -> str | None:
    """The version of the last successful entry (what serves when the history is the whole story), or None."""
    for entry in reversed(history):
        if entry.get("outcome") == "succeeded":
            return str(entry["version"])
    return None


def served_before(
    client: MlflowClient,
    model_name: str,
    version: str | int,
    keys: SigningKeys | None = None,
    rejected: list[tuple[dict[str, Any], str]] | None = None,
) -> bool:
    """Whether *version* ever served successfully (a succeeded entry, signed with *keys*, in its own history)."""
    entries = read_version_history(client, model_name, version, keys, rejected)
    return any(e.get("outcome") == "succeeded" for e in entries)


def append_entry(
    client: MlflowClient,
    model_name: str,
    entry: Mapping[str, Any],
    target_config: Mapping[str, Any] | None = None,
    keys: SigningKeys | None = None,
) -> bool:
    """
    Append *entry* to the model's and the version's ``mlops.deployments`` lists, each copy signed with *keys*.

    A retried task writes nothing twice: an entry of the same task instance (dag, run, task, map index) with
    the same action, version and outcome as one already there is skipped. With *target_config*, the model's
    ``mlops.deployment.target`` is set too. Entries already in the lists are kept as they are (a reader with
    the keys skips those the package did not sign).

    :return: Whether the entry was new.
    """
    if entry.get("action") not in ACTIONS or entry.get("outcome") not in OUTCOMES:
        raise ValueError(
            f"A deployment entry needs action in {ACTIONS} and outcome in {OUTCOMES}: {dict(entry)}"
        )
    version = str(entry["version"])
    model_list = read_history(client, model_name)
    mv = client.get_model_version(model_name, version)
    version_list = _loads((mv.tags or {}).get(T.DEPLOYMENTS))
    if any(_same_event(old, entry) for old in version_list):
        return False
    long_entry, short_entry = _shorten(entry, LONG_REASON), _shorten(entry, SHORT_REASON, compact=True)
    if keys is not None:
        about = signing.Subject.of(mv)
        long_entry = keys.signed(signing.DEPLOYMENT, about, long_entry)
        short_entry = keys.signed(signing.DEPLOYMENT, about, short_entry)
    version_list.append(long_entry)
    model_list.append(short_entry)
    client.set_model_version_tag(
        model_name, version, T.DEPLOYMENTS, _dumps_within(version_list, VERSION_TAG_LIMIT)
    )
    client.set_registered_model_tag(model_name, T.DEPLOYMENTS, _dumps_within(model_list, MODEL_TAG_LIMIT))
    if target_config is not None:
        client.set_registered_model_tag(
            model_name, T.DEPLOYMENT_TARGET, json.dumps(dict(target_config), sort_keys=True)[:MODEL_TAG_LIMIT]
        )
    return True
