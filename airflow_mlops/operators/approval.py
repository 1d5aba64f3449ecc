"""Human approval of a candidate model version through Airflow's Human-in-the-loop (HITL) operators."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from airflow.providers.standard.exceptions import HITLRejectException, HITLTimeoutError
from airflow.providers.standard.operators.hitl import ApprovalOperator
from airflow.sdk import Param
from airflow.sdk.definitions.param import ParamsDict

from airflow_mlops import tags as T
from airflow_mlops.exceptions import ApprovalRejectedError
from airflow_mlops.hooks.mlflow import MLflowHook
from airflow_mlops.links import http_links_only
from airflow_mlops.operators.base import ModelOperatorMixin, rendered_arguments
from airflow_mlops.registry import (
    delete_alias_if_points_to,
    get_alias_version,
    get_model_version,
    parse_version,
    signed_tags_problem,
    validate_model_name,
    write_signed_tags,
)
from airflow_mlops.results import model_version
from airflow_mlops.signing import Subject, record_keys, untrusted_message
from airflow_mlops.utils.clock import utc_now, utc_now_iso
from airflow_mlops.utils.results import keep_result, keyed_results
from airflow_mlops.utils.templating import is_templated
from airflow_mlops.version_compat import DownstreamTasksSkipped

if TYPE_CHECKING:
    from airflow.sdk import Context

COMMENT_PARAM = "comment"
#: How long a retry looks for an answer given to an earlier try before asking again.
ADOPT_TIMEOUT = timedelta(minutes=2)
#: How long the look-up waits before it reads: a deferred task resumed before the scheduler has handled the exit
#: of the process that deferred it is failed by Airflow 3.3.2's scheduler.
ADOPT_SETTLE = timedelta(seconds=10)
#: ``mlops.approval.decision`` of an approval refused because the user who triggered the run gave it.
SELF_APPROVAL_REFUSED = "self_approval_refused"


class ApproveModelOperator(ModelOperatorMixin, ApprovalOperator):
    """
    Ask a person to approve promoting a candidate model version to ``champion``.

    An :class:`~airflow.providers.standard.operators.hitl.ApprovalOperator` (options ``Approve`` /
    ``Reject``) whose request names the model and versions and shows the evaluation report. On Airflow 3.3+
    the task waits in ``awaiting_input`` (no worker slot, no triggerer); people answer on the UI's Required
    Actions page and may leave a comment. A rejection, or no answer within ``response_timeout`` (the
    default option is ``Reject``), skips the downstream tasks, so the champion stays as it is. With
    ``fail_on_reject=True``, or when a request without a default option times out, the task fails instead
    with :class:`~airflow_mlops.exceptions.ApprovalRejectedError` (not retried; ``reason`` is ``rejected``
    or ``timed_out``). A candidate version that does not exist fails the task before anyone is asked, with
    :class:`~airflow_mlops.exceptions.ModelVersionNotFoundError`.

    Nobody approves their own run: an ``Approve`` from the user who triggered the DAG run (the run's
    ``triggering_user_name``) is refused, recorded with the decision ``self_approval_refused`` (the version
    stays unapproved), and fails the task with
    :class:`~airflow_mlops.exceptions.ApprovalRejectedError` (not retried; ``reason`` is
    ``self_approval_refused``); trigger a new run and let someone else answer. A ``Reject`` from that user
    counts as usual. Runs nobody triggered (scheduled, asset-triggered) are not concerned. Set
    ``allow_self_approval=True`` where one person may both trigger and approve (a single-user setup).

    The decision is written to the model version as the tags ``mlops.approval.decision``
    (``approved`` / ``rejected`` / ``timed_out`` / ``self_approval_refused``), ``mlops.approval.approver``,
    ``mlops.approval.time`` and ``mlops.approval.comment``. Only ``approved`` lets a version be promoted; any
    other decision also removes the ``challenger`` alias from the version (when it still points there).

    Nobody is asked twice for one task instance. A retry (``try_number`` > 1) first gives the decision an
    earlier try recorded, if any; else it adopts the answer Airflow still holds for the earlier try's request
    (read in the triggerer by :class:`~airflow_mlops.triggers.approval.HITLAnswerTrigger`, a short deferral),
    with the same checks as a fresh answer (assigned users, self-approval); only when there is none does it
    ask again. This keeps an answer given while Airflow retried the try (on Airflow 3.3.2 an answer within
    seconds of the request can make the scheduler fail the parked try) or given just before a worker died.
    So that such an answer is never lost, the task retries once, at once, unless ``retries`` is given (as an
    argument or in ``default_args``) or ``adopt_earlier_answer=False``.
    Before asking, the task records ``mlops.approval.asked`` (its task instance and try) on the version; a
    first try that finds it naming its own task instance (Airflow ran the try's resumption over again from
    ``execute``) looks for the answer the same way. That tag is an unsigned hint: it only decides whether to
    look.

    Returns (XCom) ``{"decision", "approver", "time", "comment", "model_name", "version", "option"}``
    (``option`` is the option that took effect: ``Approve`` or ``Reject``).

    :param model_name: Registered model name (templated).
    :param candidate_version: Version to approve (templated).
    :param report: Markdown shown to the approver (templated), typically the ``report`` of
        :class:`~airflow_mlops.operators.evaluation.EvaluateModelOperator`'s result; or a list of Markdown
        sections shown one after another (e.g. the evaluation's report and a replay's ``markdown``; empty
        ones left out). Used as the body unless ``body`` is given.
    :param mlflow_conn_id: The MLflow connection to use.
    :param subject: Headline of the request (templated); default ``<model> v<n>: promote over v<champion>?``
        (model and version first, short enough for the Required Actions list).
    :param body: Body of the request (templated); default the report (only its ``http(s)`` links and
        pictures), what changed from the champion (unless ``show_changes=False``) and what each answer does.
    :param defaults: Option taken when ``response_timeout`` passes; ``"Reject"`` unless given.
    :param params: Extra form fields; a ``comment`` text field is always added.
    :param allow_self_approval: Accept an ``Approve`` from the user who triggered the run (default False:
        refused, see above).
    :param adopt_earlier_answer: On a retry, adopt the answer given to the earlier try's request before
        asking again (default True; False asks again on every retry and writes no ``mlops.approval.asked``).
    :param show_changes: Show in the default body what changed from the champion (hyper-parameters, features,
        training data and its source, code and package versions), the infra validation's smoke test and
        latency, and the per-class metrics (:mod:`airflow_mlops.provenance`). Default True.

    Other keyword arguments go to ``ApprovalOperator`` (``assigned_users``, ``response_timeout``,
    ``notifiers``, ``fail_on_reject``, ``ignore_downstream_trigger_rules``...). ``notifiers`` are called
    once the request is written, after the subject and body are filled in, so a templated notifier message
    may use ``{{ task.subject }}``.
    """

    template_fields: Sequence[str] = (
        "model_name",
        "candidate_version",
        "report",
        "subject",
        "body",
        "mlflow_conn_id",
    )
    template_fields_renderers = {"report": "md", "body": "md"}
    ui_color = "#f3e5f5"

    def __init__(
        self,
        *,
        model_name: str,
        candidate_version: int | str,
        report: str | Sequence[str | None] | None = None,
        mlflow_conn_id: str = MLflowHook.default_conn_name,
        subject: str | None = None,
        body: str | None = None,
        defaults: str | list[str] | None = ApprovalOperator.REJECT,
        params: ParamsDict | dict[str, Any] | None = None,
        allow_self_approval: bool = False,
        adopt_earlier_answer: bool = True,
        show_changes: bool = True,
        **kwargs: Any,
    ) -> None:
        if not isinstance(allow_self_approval, bool):
            raise ValueError(f"allow_self_approval must be True or False, got {allow_self_approval!r}")
        if not isinstance(adopt_earlier_answer, bool):
            raise ValueError(f"adopt_earlier_answer must be True or False, got {adopt_earlier_answer!r}")
        if not isinstance(show_changes, bool):
            raise ValueError(f"show_changes must be True or False, got {show_changes!r}")
        if not is_templated(model_name):
            validate_model_name(model_name)
        if not is_templated(candidate_version):
            name = None if is_templated(model_name) else model_name
            parse_version(
                model_version(candidate_version, "candidate_version", name),
                str(model_name),
                "candidate_version",
            )
        merged: dict[str, Any] = {}
        if isinstance(params, ParamsDict):
            merged = {key: params.get_param(key) for key in params}
        elif params:
            merged = dict(params)
        merged.setdefault(
            COMMENT_PARAM,
            Param(
                None,
                type=["null", "string"],
                title="Comment",
                description="Why you approve or reject; stored on the model version in MLflow.",
                source="task",
            ),
        )
        self._default_subject = subject is None
        self._default_body = body is None
        given = {**(kwargs.get("default_args") or {}), **kwargs}
        if adopt_earlier_answer and "retries" not in given:
            # An answer that races Airflow fails the try that asked; the retry adopts it (see above).
            kwargs["retries"] = 1
            if "retry_delay" not in given:
                kwargs["retry_delay"] = timedelta(0)
        super().__init__(
            subject=subject or "Promote a model version to champion?",
            body=body,
            defaults=defaults,
            params=merged,
            **keyed_results(kwargs),
        )
        self.model_name = model_name
        self.candidate_version = candidate_version
        self.report = report
        self.mlflow_conn_id = mlflow_conn_id
        self.allow_self_approval = allow_self_approval
        self.adopt_earlier_answer = adopt_earlier_answer
        self.show_changes = show_changes
        self._answer_hint = ""

    @keep_result
    def execute(self, context: Context) -> Any:
        recorded = self._recorded_decision(context)
        if recorded is not None:
            return self._replay(context, recorded)
        ti = context.get("ti")
        try_number = getattr(ti, "try_number", None) or 1
        ti_id = getattr(ti, "id", None)
        if (
            self.adopt_earlier_answer
            and ti_id is not None
            and (try_number > 1 or self._asked_before(context))
        ):
            # The request of the earlier try, answer included, lasts until this try writes its own; only the
            # triggerer can read it. (Triggers are kept out of what a DAG file loads when it is parsed.) A first
            # try looks too when this task instance already asked: Airflow can run a try's resumption over
            # again from execute, with the same try number, after the answer came.
            from airflow_mlops.triggers.approval import HITLAnswerTrigger

            self.log.info(
                "Try %s: looking for an answer given to an earlier request before asking", try_number
            )
            self.defer(
                trigger=HITLAnswerTrigger(
                    ti_id=str(ti_id),
                    deadline=time.time() + ADOPT_TIMEOUT.total_seconds(),
                    not_before=time.time() + ADOPT_SETTLE.total_seconds(),
                ),
                method_name="execute_adopted",
                timeout=ADOPT_TIMEOUT * 2,
            )
        return self._ask(context)

    @keep_result
    def execute_adopted(self, context: Context, event: dict[str, Any]) -> Any:
        """
        Resume a retry with the earlier try's answer (through :meth:`execute_complete`), or ask again.

        *event* is the :class:`~airflow_mlops.triggers.approval.HITLAnswerTrigger` event, or, on Airflow 3.3+,
        a Human-in-the-loop response given to the earlier request while the trigger ran (Airflow resumes the
        deferred task with it).
        """
        if event.get("chosen_options"):
            responded_by = _user_name(event.get("responded_by_user")) or "nobody (the timeout default)"
            self.log.info(
                "Adopting the answer %s by %s at %s given to an earlier try; not asking again",
                event["chosen_options"], responded_by, event.get("responded_at"),
            )  # fmt: skip
            return self.execute_complete(context, _hitl_event(event))
        if event.get("status") == "error":
            self.log.warning("Asking again: %s", event.get("message"))
        else:
            self.log.info("No earlier answer to adopt (%s); asking", event.get("message") or event)
        return self._ask(context)

    def _ask(self, context: Context) -> Any:
        """Write the request and wait for the answer (the standard ``ApprovalOperator.execute``)."""
        self._answer_hint = _shell_hint(context)
        self.prepare_request()
        if self.adopt_earlier_answer:
            self._mark_asked(context)
        self.log.info("Asking for approval: %s", self.subject)
        return super().execute(context)

    def prepare_request(self) -> None:
        """
        Check the candidate version exists and fill the default subject and body from the registry.

        Called by :meth:`execute` after the template fields are rendered, before the request is written; the
        body then also says how to answer from a shell.
        """
        name, version = self._model_version()
        client = self.hook.client
        get_model_version(client, name, version)  # fail before asking anyone about a missing version
        self.link_model_version(name, version)
        champion = get_alias_version(client, name, T.CHAMPION)
        if self._default_subject:
            self.subject = request_subject(name, version, champion)
        if self._default_body:
            kept = f"v{champion} stays champion" if champion is not None else "the model keeps no champion"
            timeout = (
                f" or no answer within {_duration(self.response_timeout)}" if self.response_timeout else ""
            )
            on_timeout = f" No answer counts as {self.defaults[0]}." if timeout and self.defaults else ""
            replacing = f", replacing v{champion}" if champion is not None and champion != version else ""
            outcome = (
                f"**Approve** makes `{name}` v{version} the champion{replacing}. **Reject**{timeout} means "
                f"{kept}.{on_timeout}"
            )
            changes = self._changes(client, name, version, champion) if self.show_changes else ""
            sections = [self.report] if isinstance(self.report, str) else list(self.report or ())
            report = "\n\n".join(http_links_only(str(section)) for section in sections if section)
            self.body = "\n\n".join(part for part in (report, changes, outcome, self._answer_hint) if part)

    def _changes(self, client: Any, name: str, version: int, champion: int | None) -> str:
        """What changed from the champion, the infra validation and the per-class metrics, as Markdown."""
        from airflow_mlops.provenance import per_class_metrics, render_diff, version_provenance

        try:
            candidate = version_provenance(client, name, version)
            candidate["per_class"] = per_class_metrics(client, candidate.get("evaluation"))
            previous = (
                version_provenance(client, name, champion)
                if champion is not None and champion != version
                else None
            )
        except Exception as err:  # the request is still made: a reviewer can look in MLflow
            self.log.warning("Cannot compare %s v%s with its champion: %s", name, version, err)
            return f"### What changed\n\nNot shown: the registry could not be read ({type(err).__name__})."
        return render_diff(candidate, previous)

    @keep_result
    def execute_complete(self, context: Context, event: dict[str, Any]) -> Any:
        from airflow_mlops.utils.context import airflow_ids, instance_key

        try:
            self._instance_key = instance_key(airflow_ids(context))
        except ValueError:  # no task instance (a test calling execute_complete bare)
            self._instance_key = ""
        trigger_user = self._self_approver(context, event)
        if trigger_user is not None:
            result = self._record(event, refused=True)
            ti = context.get("ti")
            if ti is not None:
                ti.xcom_push(key="return_value", value=result)
            raise ApprovalRejectedError(
                f"Approval of model {result['model_name']!r} v{result['version']} by {trigger_user} was "
                f"refused: {trigger_user} triggered this run, and nobody approves their own run. Trigger a new "
                "run and let another user approve it, or set allow_self_approval=True on the task "
                f"{self.task_id!r} where one person may do both.",
                model=result["model_name"],
                version=str(result["version"]),
                reason=SELF_APPROVAL_REFUSED,
            )
        try:
            super().execute_complete(context=context, event=event)
        except (DownstreamTasksSkipped, HITLRejectException, HITLTimeoutError) as err:
            # The return value is lost when the task raises: record the decision and push it first.
            result = self._record(event)
            ti = context.get("ti")
            if ti is not None:
                ti.xcom_push(key="return_value", value=result)
            if isinstance(err, DownstreamTasksSkipped):
                raise
            raise ApprovalRejectedError(
                _rejection_message(result),
                model=result["model_name"],
                version=str(result["version"]),
                reason=result["decision"],
            ) from err
        return self._record(event)

    def _model_version(self) -> tuple[str, int]:
        """The rendered model name and candidate version; invalid ones are a ``ConfigurationError``."""
        with rendered_arguments(model=str(self.model_name)):
            name = validate_model_name(self.model_name)
            version = model_version(self.candidate_version, "candidate_version", name)
            return name, parse_version(version, name, "candidate_version")

    def _self_approver(self, context: Context, event: Mapping[str, Any]) -> str | None:
        """The user who triggered the run, if that user answered ``Approve`` and it is not allowed; else None."""
        if self.allow_self_approval or "error" in event or event.get("timedout"):
            return None
        if (event.get("chosen_options") or [None])[0] != self.APPROVE:
            return None
        dag_run = context.get("dag_run")
        trigger_user = getattr(dag_run, "triggering_user_name", None) if dag_run is not None else None
        approver = _user_name(event.get("responded_by_user"))
        if trigger_user and approver and approver == trigger_user:
            return trigger_user
        return None

    def _recorded_decision(self, context: Context) -> dict[str, Any] | None:
        """
        The decision an earlier try of this task instance recorded (it was killed before it returned), or None.

        Only a decision the package signed counts (``mlops.approval.signature``, written last, covers the
        decision, approver, time, comment and ``mlops.approval.task``): when it names this task instance, the
        person is not asked twice. Tags anyone else wrote are ignored, and the person is asked.
        """
        from airflow_mlops.utils.context import airflow_ids, instance_key

        name, version = self._model_version()
        mv = get_model_version(self.hook.client, name, version)
        tags = mv.tags or {}
        try:
            key = instance_key(airflow_ids(context))
        except ValueError:
            return None
        if tags.get(T.APPROVAL_TASK) != key or not tags.get(T.APPROVAL_DECISION):
            return None
        problem = signed_tags_problem(mv, T.APPROVAL_SIGNATURE, record_keys())
        if problem is not None:
            self.log.warning(
                "Ignoring the approval tags on %s v%s that name this task: %s",
                name, version, untrusted_message(T.APPROVAL_SIGNATURE, Subject.of(mv), problem),
            )  # fmt: skip
            return None
        decision = tags[T.APPROVAL_DECISION]
        return {
            "decision": decision,
            "approver": tags.get(T.APPROVAL_APPROVER) or None,
            "time": tags.get(T.APPROVAL_TIME),
            "comment": tags.get(T.APPROVAL_COMMENT) or "",
            "model_name": name,
            "version": version,
            "option": self.APPROVE if decision == "approved" else self.REJECT,
        }

    def _mark_asked(self, context: Context) -> None:
        """
        Record on the candidate version that this task instance is about to ask (``mlops.approval.asked``).

        Written before the request, so a run of this task instance that starts over at :meth:`execute` (even
        as try 1) knows a request may hold an answer. A failed write only loses that hint: the request is made.
        """
        from airflow_mlops.utils.context import airflow_ids, instance_key

        ids = airflow_ids(context)
        try:
            key = instance_key(ids)
        except ValueError:
            return
        name, version = self._model_version()
        hint = json.dumps({"task": key, "try": ids.get("try_number")})
        try:
            self.hook.client.set_model_version_tag(name, str(version), T.APPROVAL_ASKED, hint)
        except Exception as err:
            self.log.warning("Could not record %s on %s v%s: %s", T.APPROVAL_ASKED, name, version, err)

    def _asked_before(self, context: Context) -> bool:
        """
        Whether ``mlops.approval.asked`` on the candidate version names this task instance (any try).

        The tag is unsigned and anyone with MLflow write access can set it, so it is only a hint: it decides
        whether this try first looks, through :class:`~airflow_mlops.triggers.approval.HITLAnswerTrigger`, for
        an answer Airflow holds for this task instance's request. A planted or stale hint costs a short
        deferral and nothing else; the answer, if any, is read from Airflow and checked as a fresh one
        (assigned users, self-approval), never from the tag.
        """
        from airflow_mlops.utils.context import airflow_ids, instance_key

        try:
            key = instance_key(airflow_ids(context))
        except ValueError:
            return False
        name, version = self._model_version()
        raw = (get_model_version(self.hook.client, name, version).tags or {}).get(T.APPROVAL_ASKED)
        try:
            hint = json.loads(raw) if raw else None
        except ValueError:
            return False
        if not isinstance(hint, dict) or hint.get("task") != key:
            return False
        self.log.info("This task instance asked before (try %s): an answer may be waiting", hint.get("try"))
        return True

    def _replay(self, context: Context, result: dict[str, Any]) -> dict[str, Any]:
        """Give the recorded decision again: approved returns it; any other ends as the first try did."""
        self.log.info(
            "This task already recorded the decision on %s v%s: %s by %s at %s; not asking again",
            result["model_name"], result["version"], result["decision"], result["approver"] or "nobody",
            result["time"],
        )  # fmt: skip
        if result["decision"] == "approved":
            return result
        ti = context.get("ti")
        if ti is not None:
            ti.xcom_push(key="return_value", value=result)
        if self.fail_on_reject or result["decision"] == SELF_APPROVAL_REFUSED:
            raise ApprovalRejectedError(
                _rejection_message(result),
                model=result["model_name"],
                version=str(result["version"]),
                reason=result["decision"],
            )
        from airflow_mlops.version_compat import AirflowSkipException

        raise AirflowSkipException(f"{_rejection_message(result)}; the champion stays as it is")

    def _record(self, event: Mapping[str, Any], refused: bool = False) -> dict[str, Any]:
        name, version = self._model_version()
        chosen = (event.get("chosen_options") or [None])[0]
        user = event.get("responded_by_user")
        if refused:
            decision = SELF_APPROVAL_REFUSED
        elif "error" in event or event.get("timedout") or not user:
            decision = "timed_out"
        else:
            decision = "approved" if chosen == self.APPROVE else "rejected"
        approver = _user_name(user)
        responded_at = event.get("responded_at")
        if isinstance(responded_at, datetime):
            when = responded_at.isoformat(timespec="seconds")
        else:
            when = str(responded_at) if responded_at else utc_now_iso()
        comment = (event.get("params_input") or {}).get(COMMENT_PARAM) or ""
        values = {
            "decision": decision,
            "approver": approver or "",
            "time": when,
            "comment": str(comment),
            "task": getattr(self, "_instance_key", ""),
        }
        # Signed with the key only Airflow holds, the signature last: a retry trusts the decision only then.
        write_signed_tags(self.hook.client, name, version, T.APPROVAL_SIGNATURE, values, record_keys())
        self.log.info("Approval of %s v%s: %s by %s", name, version, decision, approver or "nobody")
        if decision != "approved" and delete_alias_if_points_to(
            self.hook.client, name, T.CHALLENGER, version
        ):
            self.log.info(
                "Removed alias %s from %s v%s: it is no candidate any more", T.CHALLENGER, name, version
            )
        return {
            "decision": decision,
            "approver": approver,
            "time": when,
            "comment": str(comment),
            "model_name": name,
            "version": version,
            "option": chosen,
        }


def request_subject(name: str, version: int, champion: int | None) -> str:
    """
    The request's headline, model and version first so that the Required Actions list shows them.

    ``churn v3: promote over v2?``, or ``churn v3: promote to champion?`` when nothing else is champion.
    """
    if champion is not None and champion != version:
        return f"{name} v{version}: promote over v{champion}?"
    return f"{name} v{version}: promote to champion?"


def _hitl_event(event: Mapping[str, Any]) -> dict[str, Any]:
    """A Human-in-the-loop event as ``execute_complete`` takes it: ``responded_at`` a datetime, no status."""
    hitl = {key: value for key, value in event.items() if key not in ("status", "message")}
    responded_at = hitl.get("responded_at")
    if isinstance(responded_at, str):
        hitl["responded_at"] = datetime.fromisoformat(responded_at)
    elif responded_at is None:
        hitl["responded_at"] = utc_now()
    hitl.setdefault("params_input", {})
    hitl.setdefault("responded_by_user", None)
    return hitl


def _user_name(user: Any) -> str | None:
    """The name of the user in a HITL response (a mapping or an object with ``name`` / ``id``), or None."""
    if not user:
        return None
    get = user.get if isinstance(user, Mapping) else lambda key: getattr(user, key, None)
    name = get("name") or get("id")
    return str(name) if name else None


def _duration(delta: timedelta) -> str:
    """A response timeout as people say it, in its two largest units: ``2 days``, ``1 hour 30 minutes``."""
    seconds = int(delta.total_seconds())
    parts = []
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60), ("second", 1)):
        count, seconds = divmod(seconds, size)
        if count:
            parts.append(f"{count} {unit}{'s' if count != 1 else ''}")
    return " ".join(parts[:2]) or "0 seconds"


def _shell_hint(context: Context | None) -> str:
    """How to answer this request from a shell (``airflow-mlops approve|reject``), or "" without a run."""
    dag_run = (context or {}).get("dag_run")
    dag_id, run_id = getattr(dag_run, "dag_id", None), getattr(dag_run, "run_id", None)
    if not dag_id or not run_id:
        return ""
    command = f"airflow-mlops approve {dag_id} '{run_id}' --as USER --comment '...'"
    return f"From a shell: `{command}` (or `reject`)."


def _rejection_message(result: Mapping[str, Any]) -> str:
    """E.g. ``Approval of model 'churn' v3 was rejected by reviewer: too slow``, or ``... timed out``."""
    message = f"Approval of model {result['model_name']!r} v{result['version']}"
    if result["decision"] == "timed_out":
        message += " timed out"
    else:
        message += " was rejected" + (f" by {result['approver']}" if result["approver"] else "")
    return message + (f": {result['comment']}" if result["comment"] else "")
