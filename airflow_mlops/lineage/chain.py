"""
The lineage of a model version, from the MLflow registry alone.

    airflow-mlops lineage MODEL VERSION|ALIAS [--tracking-uri URI] [--json]

prints data (the snapshot and its original source: connection and query, or objects with their ETags) ->
code version -> validation -> training run -> evaluation -> approval -> promotion -> infra validation ->
deployments (and the reason a version was rolled away from) for a version. With the signing connection
(``mlops_signing_default``) reachable, it says which gate, approval and deployment records the package signed;
the others are marked and count as absent.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any

from airflow_mlops import tags
from airflow_mlops.exceptions import ConfigurationError
from airflow_mlops.lineage.deployments import verified
from airflow_mlops.provenance import NOT_RECORDED, code_version, json_or_text, training_data
from airflow_mlops.registry import signed_tags_problem
from airflow_mlops.signing import load_keys

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from airflow_mlops.data.storage import Storage
    from airflow_mlops.signing import SigningKeys


def get_lineage(
    client: MlflowClient,
    model_name: str,
    version_or_alias: str,
    keys: SigningKeys | None = None,
    storage: Storage | None = None,
) -> dict[str, Any]:
    """
    Collect the lineage of one model version.

    :param client: An MLflow client pointing at the registry.
    :param model_name: Registered model name.
    :param version_or_alias: A version number, or an alias such as ``champion``.
    :param keys: The package's signing keys. With them, the gate and approval say whether the package signed
        them (``signature``: None, or what is wrong), deployment entries it did not sign are listed apart
        (``untrusted_deployments``) and what serves comes from the signed entries only. Without them
        (``signature`` is ``"not checked"``) everything is shown as written.
    :param storage: Storage to read an ``s3://`` snapshot's manifest through (default: the AWS environment).
        The manifest gives the data's original source (``data.source``); the code version is
        ``mlops.code.version`` or the training run's ``mlflow.source.git.commit`` (None: not recorded), and
        the image digest the training pod ran is ``mlops.code.image_digest`` (None: not trained in Kubernetes).
    """
    from mlflow.exceptions import MlflowException

    ref = str(version_or_alias)
    try:
        version = (
            client.get_model_version(model_name, ref)
            if ref.isdigit()
            else client.get_model_version_by_alias(model_name, ref)
        )
    except MlflowException as err:
        raise LookupError(f"Model {model_name!r} has no version or alias {ref!r}: {err.message}") from err
    vtags = dict(version.tags or {})
    get = vtags.get
    run: dict[str, Any] | None = None
    run_tags: dict[str, str] = {}
    run_id = get(tags.MLFLOW_RUN_ID) or version.run_id
    if run_id:
        try:
            mlflow_run = client.get_run(run_id)
            run_tags = dict(mlflow_run.data.tags)
            run = {
                "run_id": run_id,
                "experiment_id": mlflow_run.info.experiment_id,
                "status": mlflow_run.info.status,
                "start_time": mlflow_run.info.start_time,
                "end_time": mlflow_run.info.end_time,
                "params": dict(mlflow_run.data.params),
                "metrics": dict(mlflow_run.data.metrics),
            }
        except MlflowException:
            run = {"run_id": run_id, "status": "DELETED_OR_MISSING"}
    deployments = json_or_text(get(tags.DEPLOYMENTS))
    deployments = (
        [entry for entry in deployments if isinstance(entry, dict)] if isinstance(deployments, list) else []
    )
    try:
        history = json_or_text(
            dict(client.get_registered_model(model_name).tags or {}).get(tags.DEPLOYMENTS)
        )
    except MlflowException:
        history = None
    history = [entry for entry in history if isinstance(entry, dict)] if isinstance(history, list) else []
    unchecked = "not checked (no signing key)"
    gate_signature: str | None = unchecked
    approval_signature: str | None = unchecked
    untrusted: list[dict[str, Any]] = []
    if keys is not None:
        gate_signature = (
            signed_tags_problem(version, tags.GATE_SIGNATURE, keys) if get(tags.GATE_DECISION) else None
        )
        approval_signature = (
            signed_tags_problem(version, tags.APPROVAL_SIGNATURE, keys)
            if get(tags.APPROVAL_DECISION)
            else None
        )
        rejected: list[tuple[dict[str, Any], str]] = []
        deployments = verified(client, model_name, deployments, keys, rejected)
        untrusted = [{**entry, "problem": problem} for entry, problem in rejected]
        history = verified(client, model_name, history, keys)
    return {
        "model_name": model_name,
        "version": version.version,
        "aliases": list(version.aliases or []),
        "source": version.source,
        "created_at": version.creation_timestamp,
        "data": _data(get(tags.DATA_URI) or run_tags.get(tags.DATA_URI), get(tags.DATA_SHA256), storage),
        "validation": {
            "success": json_or_text(get(tags.VALIDATION_SUCCESS)),
            "summary": json_or_text(get(tags.VALIDATION_SUMMARY)),
        },
        "airflow": {
            "dag_id": get(tags.AIRFLOW_DAG_ID),
            "run_id": get(tags.AIRFLOW_RUN_ID),
            "task_id": get(tags.AIRFLOW_TASK_ID),
            "try_number": get(tags.AIRFLOW_TRY_NUMBER),
        },
        "code_version": code_version(vtags, run_tags),
        "image_digest": get(tags.CODE_IMAGE_DIGEST) or run_tags.get(tags.CODE_IMAGE_DIGEST),
        "training_run": run,
        "evaluation": {
            "decision": get(tags.GATE_DECISION),
            "reason": get(tags.GATE_REASON),
            "summary": json_or_text(get(tags.EVALUATION_SUMMARY)),
            "signature": gate_signature,
        },
        "approval": {
            "decision": get(tags.APPROVAL_DECISION),
            "approver": get(tags.APPROVAL_APPROVER),
            "time": get(tags.APPROVAL_TIME),
            "comment": get(tags.APPROVAL_COMMENT),
            "signature": approval_signature,
        },
        "promotion": {"time": get(tags.PROMOTED_AT), "previous_champion": get(tags.PREVIOUS_CHAMPION)},
        "infra_validation": {
            "passed": json_or_text(get(tags.INFRA_VALIDATION_PASSED)),
            "summary": json_or_text(get(tags.INFRA_VALIDATION_SUMMARY)),
        },
        "deployments": deployments,
        "untrusted_deployments": untrusted,
        "rollback": {"reason": get(tags.ROLLBACK_REASON)},
        "serving": _serving(history, str(version.version)),
    }


def _data(uri: str | None, sha256: str | None, storage: Storage | None) -> dict[str, Any]:
    """``{"uri", "sha256", "rows", "created_at", "source"}`` of the training snapshot (``source`` from its manifest)."""
    found = training_data(uri, storage) or {}
    return {
        "uri": uri,
        "sha256": sha256 or found.get("sha256"),
        "rows": found.get("rows"),
        "created_at": found.get("created_at"),
        "source": found.get("source"),
        **({"problem": found["problem"]} if found.get("problem") else {}),
    }


def _describe_source(data: dict[str, Any]) -> list[str]:
    """Where the training data came from, one line per object (at most 10)."""
    source = data.get("source")
    if not source:
        return [f"  source      unknown ({data.get('problem') or 'no snapshot recorded'})"]
    if source.get("kind") == "sql":
        query = " ".join(str(source.get("query") or "?").split())
        return [f"  source      connection {source.get('connection') or '?'}: {query}"]
    lines = [f"  source      {source.get('source') or '?'}"]
    objects = source.get("objects") or []
    for entry in objects[:10]:
        details = [f"ETag {entry['etag']}" if entry.get("etag") else "", entry.get("modified") or ""]
        detail = ", ".join(part for part in details if part)
        lines.append(f"    {entry['uri']}" + (f" ({detail})" if detail else ""))
    if len(objects) > 10:
        lines.append(f"    ... and {len(objects) - 10} more objects")
    return lines


def _serving(history: Any, version: str) -> dict[str, Any]:
    """
    Whether *version* is what serves now, from the model's deployment history (newest entry last).

    What serves is the version of the last succeeded deploy or rollback; ``now`` is None without a history.
    """
    entries = [e for e in history if isinstance(e, dict)] if isinstance(history, list) else []
    last = next((e for e in reversed(entries) if e.get("outcome") == "succeeded"), None)
    if last is None:
        return {"now": None}
    now = str(last.get("version")) == version
    return {
        "now": now,
        "version": str(last.get("version")),
        "since": last.get("time"),
        "action": last.get("action"),
        "target": last.get("target"),
    }


def format_lineage(lineage: dict[str, Any]) -> str:
    """Render :func:`get_lineage`'s result as a short, readable chain."""
    run = lineage["training_run"] or {}
    evaluation, approval, promotion = lineage["evaluation"], lineage["approval"], lineage["promotion"]
    summary = evaluation.get("summary")
    metrics = summary.get("metrics") if isinstance(summary, dict) else None
    aliases = ", ".join(lineage["aliases"]) or "none"
    lines = [
        f"{lineage['model_name']} version {lineage['version']} (aliases: {aliases})",
        f"  data        {lineage['data']['uri'] or '?'} sha256={lineage['data']['sha256'] or '?'}"
        + (f" rows={lineage['data']['rows']}" if lineage["data"].get("rows") is not None else "")
        + (f" created {lineage['data']['created_at']}" if lineage["data"].get("created_at") else ""),
        *_describe_source(lineage["data"]),
        f"  code        {lineage.get('code_version') or NOT_RECORDED}"
        + (f" image {lineage['image_digest']}" if lineage.get("image_digest") else ""),
        f"  validation  success={lineage['validation']['success']}",
        f"  training    run {run.get('run_id', '?')} status={run.get('status', '?')} "
        f"metrics={json.dumps(run.get('metrics', {}), sort_keys=True)}",
        f"  airflow     {lineage['airflow']['dag_id'] or '?'} / {lineage['airflow']['run_id'] or '?'} "
        f"try {lineage['airflow']['try_number'] or '?'}",
        f"  evaluation  {evaluation['decision'] or 'not evaluated'}"
        + (f" ({evaluation['reason']})" if evaluation["reason"] else "")
        + (f" metrics={json.dumps(metrics, sort_keys=True)}" if metrics else "")
        + _describe_signature(evaluation),
        f"  approval    {approval['decision'] or 'not decided'}"
        + (f" by {approval['approver']} at {approval['time']}" if approval["approver"] else "")
        + (f": {approval['comment']!r}" if approval["comment"] else "")
        + _describe_signature(approval),
        f"  promotion   {promotion['time'] or 'not promoted'}"
        + (
            f" (previous champion: v{promotion['previous_champion']})"
            if promotion["previous_champion"]
            else ""
        ),
    ]
    lines.append(f"  infra       {_describe_infra(lineage.get('infra_validation') or {})}")
    deployments = lineage.get("deployments") or []
    lines.append(f"  deployments {len(deployments) or 'none'}")
    lines += [f"    {_describe_deployment(entry)}" for entry in deployments]
    untrusted = lineage.get("untrusted_deployments") or []
    if untrusted:
        lines.append(f"  NOT SIGNED  {len(untrusted)} deployment entries the package did not write (ignored)")
        lines += [f"    {_describe_deployment(entry)} [signature {entry['problem']}]" for entry in untrusted]
    serving = lineage.get("serving") or {}
    if serving.get("now"):
        lines.append(
            f"  serving     yes, since {serving.get('since') or '?'} ({serving.get('action')}"
            + (f" on {serving['target']}" if serving.get("target") else "")
            + ")"
        )
    elif serving.get("now") is False:
        lines.append(
            f"  serving     no (v{serving.get('version')} serves since {serving.get('since') or '?'})"
        )
    reason = (lineage.get("rollback") or {}).get("reason")
    if reason and serving.get("now"):
        lines.append(f"  rollback    rolled away from earlier ({reason}); serves again")
    elif reason:
        lines.append(f"  rollback    rolled away from this version: {reason}")
    return "\n".join(lines)


def _describe_signature(record: dict[str, Any]) -> str:
    """`` [signed]``, `` [NOT SIGNED: ...]`` (the record counts as absent) or `` [signature not checked]``."""
    signature = record.get("signature")
    if not record.get("decision"):
        return ""
    if signature is None:
        return " [signed]"
    if str(signature).startswith("not checked"):
        return f" [signature {signature}]"
    return f" [NOT SIGNED: signature {signature}; counts as absent]"


def _describe_infra(infra: dict[str, Any]) -> str:
    passed, summary = infra.get("passed"), infra.get("summary")
    if passed is None:
        return "not validated"
    text = "passed" if passed is True else "FAILED"
    if isinstance(summary, dict):
        target = summary.get("target")
        if isinstance(target, dict):
            target = target.get("kind")
        if target:
            text += f" on {target}"
        if summary.get("requests") is not None:
            text += f", {summary['requests']} requests"
        latency = summary.get("latency_ms")
        if isinstance(latency, dict) and latency:
            text += ", latency ms " + " ".join(f"{key}={value}" for key, value in latency.items())
        if summary.get("error"):
            text += f": {summary['error']}"
    return text


def _describe_deployment(entry: dict[str, Any]) -> str:
    """One line per deployment entry: when, what, where, who, why."""
    text = f"{entry.get('time', '?')}  {entry.get('action', '?')} v{entry.get('version', '?')} " + (
        f"{entry.get('outcome', '?')}"
    )
    if entry.get("target") or entry.get("endpoint"):
        text += " on " + " ".join(str(entry[key]) for key in ("target", "endpoint") if entry.get(key))
    if entry.get("actor"):
        text += f" by {entry['actor']}"
    if entry.get("previous_version"):
        text += f" (previous v{entry['previous_version']})"
    if entry.get("reason"):
        text += f": {entry['reason']}"
    return text


def main(argv: list[str] | None = None) -> int:
    """``airflow-mlops lineage``: print the lineage of a model version (exit code 1 if it does not exist)."""
    parser = argparse.ArgumentParser(prog="airflow-mlops lineage", description=__doc__)
    parser.add_argument("model_name")
    parser.add_argument("version", help="version number or alias (e.g. champion)")
    parser.add_argument("--tracking-uri", help="MLflow tracking URI (default: MLFLOW_TRACKING_URI)")
    parser.add_argument("--registry-uri", help="model registry URI (default: the tracking URI)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    args = parser.parse_args(argv)

    import mlflow

    registry_uri = args.registry_uri or args.tracking_uri  # else MLflow's own default (MLFLOW_REGISTRY_URI)
    client = mlflow.MlflowClient(tracking_uri=args.tracking_uri, registry_uri=registry_uri)
    try:
        keys = load_keys()
    except ConfigurationError as err:  # no key here: show what is written, marked unchecked
        print(f"Signatures not checked: {err}", file=sys.stderr)
        keys = None
    try:
        lineage = get_lineage(client, args.model_name, args.version, keys)
    except LookupError as err:
        print(err)
        return 1
    print(json.dumps(lineage, indent=2, default=str) if args.json else format_lineage(lineage))
    return 0
