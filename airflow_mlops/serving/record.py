"""
The durable record of a release, written to the registry before each step and read by a retry.

A release (a deploy, or a manual rollback) is one task instance's attempt to make one version serve. Before
it changes anything it writes its plan, and before each later step the name of that step, so a try killed
at any point leaves behind exactly what it was doing; the next try of the same task instance reads the
record and finishes that same release instead of planning a new one from what serves now.

Two tags hold it (:data:`~airflow_mlops.tags.RELEASE`, ``mlops.release``):

- on the **registered model**, a small pointer to the model's last release: ``{"id", "version", "kind",
  "step", "updated", "expires"}``; a release of another task instance whose pointer is not ``done`` and not
  expired blocks a second one (:class:`~airflow_mlops.exceptions.ReleaseInProgressError`, retryable);
- on the **version released**, the whole record: the pointer's keys plus ``plan`` (see
  :mod:`airflow_mlops.serving.release`), ``steps`` (each step with its time and try) and, once ``done``,
  ``outcome`` (``succeeded`` / ``failed`` / ``rolled_back``) and ``result`` or ``error``.

Steps, in order (:data:`STEPS`): ``planned`` (version, target and the previous deployment chosen; nothing
changed yet), ``switch`` (the target is switched next), ``verify`` (switched and ready; health check and
smoke test next), ``bake`` (the canary is baked next), ``promote_canary`` (the canary goes to 100% next),
``record`` (verified; alias and deployment history next), ``rollback`` (failed; the target goes back to the
recorded previous deployment next), ``done``.

Both tags are signed by the package (a ``signature`` key, :mod:`airflow_mlops.signing`), bound to the model,
the version and the version's source. A pointer or record without a valid signature counts as absent; when it
names the task instance reading it (so it would decide what that task deploys) the task fails with
:class:`~airflow_mlops.exceptions.RecordSignatureError` instead. No Airflow import.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from airflow_mlops import signing
from airflow_mlops import tags as T
from airflow_mlops.exceptions import RecordSignatureError
from airflow_mlops.registry import error_code
from airflow_mlops.utils.clock import utc_now
from airflow_mlops.utils.context import instance_key
from airflow_mlops.utils.results import json_safe

if TYPE_CHECKING:
    from collections.abc import Mapping

    from mlflow import MlflowClient

    from airflow_mlops.signing import SigningKeys

PLANNED = "planned"
SWITCH = "switch"
VERIFY = "verify"
BAKE = "bake"
PROMOTE_CANARY = "promote_canary"
RECORD = "record"
ROLLBACK = "rollback"
DONE = "done"
#: The steps of a release, in the order a successful canary release passes them.
STEPS = (PLANNED, SWITCH, VERIFY, BAKE, PROMOTE_CANARY, RECORD, ROLLBACK, DONE)
OUTCOMES = ("succeeded", "failed", "rolled_back")
#: The keys of the registered model's pointer.
_POINTER_KEYS = ("id", "version", "kind", "step", "updated", "expires")
#: What the signature of each tag is made as (the record kinds of :mod:`airflow_mlops.signing`).
_VERSION_TAG = f"{T.RELEASE} (model version)"
_MODEL_TAG = f"{T.RELEASE} (registered model)"


def release_id(airflow: Mapping[str, Any]) -> str:
    """The id of the release a task instance makes: the same for all its tries (dag/run/task/map index)."""
    return instance_key(airflow)


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="seconds")


class ReleaseRecord:
    """
    One release's record: load it, :meth:`advance` it before each step, :meth:`finish` it.

    :param client: The MLflow client.
    :param model_name: The registered model.
    :param data: The record (see the module docstring).
    :param lease: Seconds the release may go without writing its record before another task instance may
        take over (its longest step: the readiness wait or the canary bake, plus a margin).
    :param keys: The signing keys the record is signed with (None: written unsigned).
    """

    def __init__(
        self,
        client: MlflowClient,
        model_name: str,
        data: dict[str, Any],
        lease: float,
        keys: SigningKeys | None = None,
    ) -> None:
        self.client = client
        self.model_name = model_name
        self.data = data
        self.lease = lease
        self.keys = keys
        self._subject: signing.Subject | None = None

    # -- reading -------------------------------------------------------------------------------------------

    @staticmethod
    def pointer(client: MlflowClient, model_name: str) -> dict[str, Any] | None:
        """The registered model's pointer to its last release, or None."""
        from mlflow.exceptions import MlflowException

        try:
            model = client.get_registered_model(model_name)
        except MlflowException as err:
            if error_code(err) == "RESOURCE_DOES_NOT_EXIST":
                return None
            raise
        return _loads((model.tags or {}).get(T.RELEASE))

    @classmethod
    def load(
        cls,
        client: MlflowClient,
        model_name: str,
        lease: float,
        keys: SigningKeys | None = None,
        reader: str | None = None,
    ) -> ReleaseRecord | None:
        """
        The model's last release (pointer and full record), or None if it has none.

        With *keys*, a pointer or record the package did not sign counts as absent (None, or the pointer
        alone), unless it names *reader* (the release id of the task reading it, :func:`release_id`).

        :raises RecordSignatureError: if an unsigned or mis-signed pointer or record names *reader*.
        """
        pointer = cls.pointer(client, model_name)
        if not pointer or not pointer.get("version"):
            return None
        from mlflow.exceptions import MlflowException

        try:
            mv = client.get_model_version(model_name, str(pointer["version"]))
        except MlflowException as err:
            if error_code(err) == "RESOURCE_DOES_NOT_EXIST":
                if keys is not None and pointer.get("id") == reader:
                    cls._untrusted(
                        _MODEL_TAG,
                        signing.Subject.model_only(model_name),
                        "names a version that does not exist",
                    )
                return None
            raise
        subject = signing.Subject.of(mv) if keys is not None else None
        if keys is not None and subject is not None:
            problem = keys.problem(
                signing.RELEASE_POINTER, subject, pointer, pointer.get(signing.SIGNATURE_KEY)
            )
            if problem is not None:
                if pointer.get("id") == reader:
                    cls._untrusted(_MODEL_TAG, subject, problem)
                return None
        data = _loads((mv.tags or {}).get(T.RELEASE))
        if data and keys is not None and subject is not None:
            problem = keys.problem(signing.RELEASE, subject, data, data.get(signing.SIGNATURE_KEY))
            if problem is not None:
                if data.get("id") == reader or pointer.get("id") == reader:
                    cls._untrusted(_VERSION_TAG, subject, problem)
                data = None
        if not data or data.get("id") != pointer.get("id"):
            # The version's record is another release's (a new one killed before its pointer was written,
            # which changed nothing yet): the pointer is all there is.
            data = dict(pointer)
        data.pop(signing.SIGNATURE_KEY, None)
        record = cls(client, model_name, data, lease, keys)
        record._subject = subject
        return record

    @staticmethod
    def _untrusted(tag: str, subject: signing.Subject, problem: str) -> None:
        raise RecordSignatureError(
            f"{signing.untrusted_message(tag, subject, problem)}. It names this task, so this task will not act "
            "on it: nothing was changed. Someone wrote the release record outside the package; check who (the "
            f"MLflow audit log), then delete the tag {T.RELEASE} of the registered model and of the version, "
            "and run the task again.",
            model=subject.model,
            version=subject.version or None,
            reason="untrusted release record",
        )

    @property
    def id(self) -> str:
        """The release id (:func:`release_id`)."""
        return str(self.data.get("id"))

    @property
    def step(self) -> str:
        """The step the release is at (the last one written)."""
        return str(self.data.get("step"))

    @property
    def plan(self) -> dict[str, Any]:
        """The release plan as last written."""
        return dict(self.data.get("plan") or {})

    @property
    def done(self) -> bool:
        """Whether the release ended (``succeeded``, ``failed`` or ``rolled_back``)."""
        return self.step == DONE

    def expired(self, now: datetime | None = None) -> bool:
        """Whether an unfinished release stopped writing its record longer ago than its lease."""
        expires = self.data.get("expires")
        try:
            return bool(expires) and (now or utc_now()) > datetime.fromisoformat(str(expires))
        except ValueError:
            return True

    def describe(self) -> str:
        """E.g. ``deploy of version 3 by dag/run/task/-1, at step verify since 2026-...``."""
        return (
            f"{self.data.get('kind', 'release')} of version {self.data.get('version')} by {self.id}, at step "
            f"{self.step} since {self.data.get('updated')}"
        )

    # -- writing -------------------------------------------------------------------------------------------

    @classmethod
    def begin(
        cls,
        client: MlflowClient,
        model_name: str,
        rid: str,
        kind: str,
        plan: dict[str, Any],
        lease: float,
        try_number: Any = None,
        keys: SigningKeys | None = None,
    ) -> ReleaseRecord:
        """Write a new release's record at step ``planned`` (before anything changes)."""
        record = cls(
            client,
            model_name,
            {
                "id": rid,
                "kind": kind,
                "version": str(plan["version"]),
                "steps": [],
                "started": _iso(utc_now()),
            },
            lease,
            keys,
        )
        record.advance(PLANNED, plan, try_number)
        return record

    def advance(self, step: str, plan: Mapping[str, Any] | None = None, try_number: Any = None) -> None:
        """
        Write that the release is at *step* now (with its plan as it is), before the step is taken.

        The version's full record is written first, the model's pointer last: a try killed between the two
        leaves the pointer at the earlier step, which a retry repeats.
        """
        if step not in STEPS:
            raise ValueError(f"Unknown release step {step!r}: one of {', '.join(STEPS)}")
        now = utc_now()
        self.data["step"] = step
        self.data["updated"] = _iso(now)
        self.data["expires"] = _iso(now + timedelta(seconds=self.lease))
        if plan is not None:
            self.data["plan"] = _without_records(plan)
        steps = self.data.setdefault("steps", [])
        steps.append({"step": step, "time": self.data["updated"], "try": try_number})
        del steps[:-40]  # a long retry history keeps its last steps
        self._save()

    def finish(
        self,
        outcome: str,
        *,
        result: Mapping[str, Any] | None = None,
        error: str | None = None,
        try_number: Any = None,
    ) -> None:
        """Write that the release ended with *outcome*, and its task result or error."""
        if outcome not in OUTCOMES:
            raise ValueError(f"Unknown release outcome {outcome!r}: one of {', '.join(OUTCOMES)}")
        self.data["outcome"] = outcome
        if result is not None:
            self.data["result"] = dict(result)
        if error is not None:
            self.data["error"] = error[:2000]
        self.advance(DONE, None, try_number)

    def _save(self) -> None:
        name, version = self.model_name, str(self.data["version"])
        # JSON-safe before signing: what is verified later is what was written (NaN and inf as null).
        data: dict[str, Any] = json_safe(dict(self.data))
        pointer = {key: data.get(key) for key in _POINTER_KEYS}
        if self.done:
            pointer["outcome"] = data.get("outcome")
        if self.keys is not None:
            if self._subject is None:
                self._subject = signing.Subject.of(self.client.get_model_version(name, version))
            data = self.keys.signed(signing.RELEASE, self._subject, data)
            pointer = self.keys.signed(signing.RELEASE_POINTER, self._subject, pointer)
        self.client.set_model_version_tag(name, version, T.RELEASE, _dumps(data))
        self.client.set_registered_model_tag(name, T.RELEASE, _dumps(pointer))


def _without_records(plan: Mapping[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in plan.items() if key != "records"}


def _dumps(data: Mapping[str, Any]) -> str:
    return json.dumps(json_safe(dict(data)), sort_keys=True, separators=(",", ":"), allow_nan=False)


def _loads(value: str | None) -> dict[str, Any] | None:
    if not value:
        return None
    try:
        data = json.loads(value)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None
