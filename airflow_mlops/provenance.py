"""
Where a model version came from, and what changed between two versions: read from MLflow alone.

:func:`version_provenance` gathers, for one registered model version, its hyper-parameters (the training
run's params), its signature, its training data (the snapshot's ``_manifest.json``: the original source, its
connection and query or its objects and their ETags, rows, dates), its code version, the package versions its
``MLmodel`` file records, its infra validation and its per-class metrics. :func:`diff_rows` compares two of
them and :func:`render_diff` renders the comparison as Markdown for the approval page. The results are
JSON-safe. MLflow is imported only inside the functions; ``models:/`` URIs are read through the tracking and
registry URIs set for MLflow (:class:`~airflow_mlops.hooks.mlflow.MLflowHook` sets them).
"""

from __future__ import annotations

import csv
import io
import json
import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from airflow_mlops import tags as T
from airflow_mlops.data.snapshots import load_manifest
from airflow_mlops.evaluation.report import short_location
from airflow_mlops.evaluation.values import fmt

if TYPE_CHECKING:
    from collections.abc import Mapping

    from mlflow import MlflowClient

    from airflow_mlops.data.storage import Storage

log = logging.getLogger(__name__)

#: MLflow's own run tag of the git commit a run's code came from (set when the run starts in a git checkout).
MLFLOW_GIT_COMMIT = "mlflow.source.git.commit"
#: Shown where a version records no code version.
NOT_RECORDED = "not recorded"
#: The artifact MLflow's classifier evaluation writes its per-class metrics to.
PER_CLASS_ARTIFACT = "per_class_metrics.csv"
#: Longest value shown in a table cell (a SQL query, a long list).
CELL_MAX = 160
#: Most rows of each section of the diff table (hyper-parameters, features).
SECTION_ROWS_MAX = 40
#: What marks a changed row.
CHANGED = "**changed**"


def json_or_text(value: str | None) -> Any:
    """A tag's value as the JSON it holds, else as text (``None`` when absent)."""
    if value is None:
        return None
    try:
        return json.loads(value)
    except (TypeError, ValueError):
        return value


def code_version(version_tags: Mapping[str, str], run_tags: Mapping[str, str]) -> str | None:
    """
    The code version of a model version, or None when none is recorded.

    ``mlops.code.version`` (on the version, else on its training run), else MLflow's ``mlflow.source.git.commit``
    run tag.
    """
    return version_tags.get(T.CODE_VERSION) or run_tags.get(T.CODE_VERSION) or run_tags.get(MLFLOW_GIT_COMMIT)


def data_source(manifest: Mapping[str, Any]) -> dict[str, Any]:
    """
    The original source of a snapshot, from its manifest.

    ``{"kind": "sql", "connection", "query"}`` for a query on an Airflow connection, else ``{"kind": "files",
    "source", "objects"}`` where each object is ``{"uri", "etag", "bytes", "modified"}`` (ETag and modification
    time when the store gave them).
    """
    source = str(manifest.get("source") or "")
    if manifest.get("format") == "sql" or source.startswith("sql://"):
        return {
            "kind": "sql",
            "connection": source.removeprefix("sql://") or None,
            "query": manifest.get("query"),
        }
    objects = []
    for entry in manifest.get("source_files") or []:
        if isinstance(entry, dict) and entry.get("uri"):
            objects.append(
                {
                    "uri": str(entry["uri"]),
                    "etag": entry.get("etag"),
                    "bytes": entry.get("bytes"),
                    "modified": _iso(entry.get("mtime")),
                }
            )
    return {"kind": "files", "source": source or None, "objects": objects}


def _iso(mtime: Any) -> str | None:
    if isinstance(mtime, int | float):
        return datetime.fromtimestamp(float(mtime), UTC).isoformat(timespec="seconds")
    return str(mtime) if mtime else None


def training_data(uri: str | None, storage: Storage | None = None) -> dict[str, Any] | None:
    """
    What a model was trained on: the snapshot at *uri* (``mlops.data.uri``) and its original source.

    ``{"snapshot", "sha256", "rows", "created_at", "source": data_source(...)}``; ``{"snapshot", "problem"}``
    when the manifest cannot be read; None without a URI.
    """
    if not uri:
        return None
    try:
        manifest = load_manifest(uri, storage)
    except Exception as err:  # a missing snapshot, or a store this process cannot read
        return {"snapshot": uri, "problem": f"manifest not readable: {type(err).__name__}: {err}"[:300]}
    return {
        "snapshot": uri,
        "sha256": manifest.get("sha256"),
        "rows": manifest.get("rows"),
        "created_at": manifest.get("created_at"),
        "source": data_source(manifest),
    }


def _model_file(model_name: str, version: str) -> dict[str, Any]:
    """The signature and recorded package versions of a version's ``MLmodel`` file (empty when unreadable)."""
    from mlflow.models import get_model_info

    try:
        info = get_model_info(f"models:/{model_name}/{version}")
    except Exception as err:  # the artifact store's own errors have no common type
        log.warning("Cannot read the MLmodel file of %s v%s: %s", model_name, version, err)
        return {}
    signature = None
    if info.signature is not None:
        signature = {
            part: {
                str(spec.get("name", index)): str(spec.get("type"))
                for index, spec in enumerate(getattr(info.signature, part).to_dict())
            }
            for part in ("inputs", "outputs")
            if getattr(info.signature, part) is not None
        }
    packages: dict[str, str] = {}
    if info.mlflow_version:
        packages["mlflow"] = str(info.mlflow_version)
    for conf in (info.flavors or {}).values():  # {"sklearn_version": ...}, {"python_version": ...}
        for key, value in conf.items() if isinstance(conf, dict) else ():
            if key.endswith("_version") and isinstance(value, str):
                packages[key.removesuffix("_version")] = value
    return {"signature": signature, "packages": packages}


def per_class_metrics(client: MlflowClient, evaluation: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    """
    The per-class metrics of an evaluation (``mlops.evaluation.summary``), one row per class, or ``[]``.

    Read from the ``per_class_metrics.csv`` artifact MLflow's classifier evaluation logged to the evaluation run.
    """
    run_id = (evaluation or {}).get("evaluation_run_id")
    if not run_id:
        return []
    uri = str(((evaluation or {}).get("artifacts") or {}).get("per_class_metrics") or "")
    path = uri.split("/artifacts/", 1)[1] if "/artifacts/" in uri else PER_CLASS_ARTIFACT
    from mlflow.artifacts import download_artifacts

    try:
        local = download_artifacts(run_id=str(run_id), artifact_path=path, tracking_uri=client.tracking_uri)
        with open(local, encoding="utf-8") as handle:
            text = handle.read()
    except Exception as err:  # no such artifact (a regressor, a binary model before MLflow logged it)
        log.info("No per-class metrics in evaluation run %s: %s", run_id, err)
        return []
    rows = []
    for row in csv.DictReader(io.StringIO(text)):
        rows.append({key: _number(value) for key, value in row.items() if key})
    return rows


def _number(value: str | None) -> Any:
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return value
    return int(number) if number.is_integer() and "." not in str(value) else number


def version_provenance(
    client: MlflowClient, model_name: str, version: str | int, storage: Storage | None = None
) -> dict[str, Any]:
    """
    Everything a reviewer compares about one model version (JSON-safe).

    ``{"model_name", "version", "run_id", "params", "metrics", "signature", "packages", "code_version", "data",
    "infra_validation", "evaluation"}`` (``metrics``: the training run's); what is not recorded is None
    (``params``, ``metrics`` and ``packages`` empty).

    :param client: An MLflow client of the registry (and tracking server) the version is in.
    :param storage: Storage to read an ``s3://`` snapshot's manifest through (default: the AWS environment).
    """
    from mlflow.exceptions import MlflowException

    mv = client.get_model_version(model_name, str(version))
    vtags = dict(mv.tags or {})
    run_id = vtags.get(T.MLFLOW_RUN_ID) or mv.run_id
    params: dict[str, str] = {}
    run_tags: dict[str, str] = {}
    metrics: dict[str, float] = {}
    if run_id:
        try:
            run = client.get_run(run_id)
            params, run_tags, metrics = dict(run.data.params), dict(run.data.tags), dict(run.data.metrics)
        except MlflowException as err:
            log.warning("Cannot read training run %s of %s v%s: %s", run_id, model_name, version, err)
    model_file = _model_file(model_name, str(mv.version))
    return {
        "model_name": model_name,
        "version": str(mv.version),
        "run_id": run_id,
        "params": params,
        "metrics": metrics,
        "signature": model_file.get("signature"),
        "packages": model_file.get("packages") or {},
        "code_version": code_version(vtags, run_tags),
        "image_digest": vtags.get(T.CODE_IMAGE_DIGEST) or run_tags.get(T.CODE_IMAGE_DIGEST),
        "data": training_data(vtags.get(T.DATA_URI) or run_tags.get(T.DATA_URI), storage),
        "infra_validation": json_or_text(vtags.get(T.INFRA_VALIDATION_SUMMARY)),
        "evaluation": json_or_text(vtags.get(T.EVALUATION_SUMMARY)),
    }


# -- the diff ----------------------------------------------------------------------------------------------


def _data_items(data: Mapping[str, Any] | None) -> dict[str, Any]:
    """The training data as ``{label: value}`` rows."""
    if not data:
        return {"snapshot": None}
    source = data.get("source") or {}
    items: dict[str, Any] = {}
    if source.get("kind") == "sql":
        items["source"] = f"connection {source.get('connection')}"
        items["query"] = source.get("query")
    elif source:
        items["source"] = short_location(source["source"]) if source.get("source") else None
        objects = source.get("objects") or []
        if objects:
            items["objects"] = ", ".join(
                short_location(entry["uri"]) + (f" (ETag {entry['etag']})" if entry.get("etag") else "")
                for entry in objects[:5]
            ) + (f" and {len(objects) - 5} more" if len(objects) > 5 else "")
            dates = sorted(entry["modified"] for entry in objects if entry.get("modified"))
            if dates:
                items["source modified"] = dates[0] if dates[0] == dates[-1] else f"{dates[0]} to {dates[-1]}"
    items["snapshot"] = short_location(data.get("snapshot"))
    if data.get("problem"):
        items["snapshot"] += f" ({data['problem']})"
    items["rows"] = data.get("rows")
    items["snapshot created"] = data.get("created_at")
    return items


def diff_rows(candidate: Mapping[str, Any], champion: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    """
    The candidate against the champion, row by row: ``{"section", "item", "champion", "candidate", "changed"}``.

    Sections: ``hyper-parameters`` (every param), ``features`` (columns added, removed or of another type; one
    summary row when they are the same), ``training data``, ``code version``, ``packages``. Without a champion
    every ``champion`` value is None and nothing is marked changed.
    """
    rows: list[dict[str, Any]] = []

    def add(section: str, item: str, new: Any, old: Any) -> None:
        changed = champion is not None and new != old
        rows.append({"section": section, "item": item, "champion": old, "candidate": new, "changed": changed})

    old = champion or {}
    old_params, new_params = old.get("params") or {}, candidate.get("params") or {}
    for key in sorted(set(old_params) | set(new_params))[:SECTION_ROWS_MAX]:
        add("hyper-parameters", key, new_params.get(key), old_params.get(key))
    if not old_params and not new_params:
        add("hyper-parameters", "params", NOT_RECORDED, NOT_RECORDED if champion is not None else None)
    old_inputs = ((old.get("signature") or {}).get("inputs")) if champion is not None else None
    new_inputs = (candidate.get("signature") or {}).get("inputs")
    if new_inputs is None and old_inputs is None:
        add("features", "signature", None, None)
    elif champion is None or old_inputs is None or new_inputs is None:
        add("features", "columns", _columns(new_inputs), _columns(old_inputs))
    else:
        differing = sorted(
            column
            for column in set(old_inputs) | set(new_inputs)
            if old_inputs.get(column) != new_inputs.get(column)
        )
        if not differing:
            add("features", "columns", _columns(new_inputs), _columns(old_inputs))
        for column in differing[:SECTION_ROWS_MAX]:
            add("features", column, new_inputs.get(column, "absent"), old_inputs.get(column, "absent"))
    old_data, new_data = _data_items(old.get("data")), _data_items(candidate.get("data"))
    for key in [*new_data, *(key for key in old_data if key not in new_data)]:
        add("training data", key, new_data.get(key), old_data.get(key) if champion is not None else None)
    add(
        "code version",
        "code version",
        candidate.get("code_version") or NOT_RECORDED,
        (old.get("code_version") or NOT_RECORDED) if champion is not None else None,
    )
    if candidate.get("image_digest") or old.get("image_digest"):
        add(
            "code version",
            "image digest",
            candidate.get("image_digest") or NOT_RECORDED,
            (old.get("image_digest") or NOT_RECORDED) if champion is not None else None,
        )
    old_packages, new_packages = old.get("packages") or {}, candidate.get("packages") or {}
    for key in sorted(set(old_packages) | set(new_packages)):
        add("packages", key, new_packages.get(key), old_packages.get(key) if champion is not None else None)
    if not old_packages and not new_packages:
        add("packages", "packages", NOT_RECORDED, NOT_RECORDED if champion is not None else None)
    return rows


def _columns(inputs: Mapping[str, str] | None) -> str | None:
    if inputs is None:
        return None
    return f"{len(inputs)} columns: " + ", ".join(f"{name} {kind}" for name, kind in inputs.items())


def _cell(value: Any) -> str:
    if value is None:
        return "—"
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
    text = " ".join(text.split())
    if len(text) > CELL_MAX:
        text = text[: CELL_MAX - 1] + "…"
    return "`" + text.replace("`", "'").replace("|", "\\|") + "`"


def render_diff(
    candidate: Mapping[str, Any], champion: Mapping[str, Any] | None, rows: list[dict[str, Any]] | None = None
) -> str:
    """
    The Markdown a reviewer reads: what changed, whether it serves, how it does per class.

    The :func:`diff_rows` table (changed rows marked), the candidate's infra validation (smoke test and
    latency) and its per-class metrics (*candidate*'s ``per_class`` rows, when given).
    """
    rows = diff_rows(candidate, champion) if rows is None else rows
    new = f"candidate v{candidate['version']}"
    old = f"champion v{champion['version']}" if champion is not None else "champion (none)"
    changed = sum(1 for row in rows if row["changed"])
    lines = [
        "### What changed",
        "",
        (
            f"{changed} of {len(rows)} compared items differ from the champion (marked {CHANGED})."
            if champion is not None
            else "No champion to compare with: the candidate's own values."
        ),
        "",
        f"| section | item | {old} | {new} | |",
        "|---|---|---|---|---|",
    ]
    for row in rows:
        mark = CHANGED if row["changed"] else ""
        lines.append(
            f"| {row['section']} | {row['item']} | {_cell(row['champion'])} | {_cell(row['candidate'])} | {mark} |"
        )
    lines += ["", *infra_lines(candidate.get("infra_validation"))]
    per_class = candidate.get("per_class") or []
    if per_class:
        lines += ["", *per_class_lines(per_class)]
    return "\n".join(lines)


def infra_lines(summary: Any) -> list[str]:
    """The infra validation as Markdown: smoke test outcome and latency (p50, p95, max) in a table."""
    if not isinstance(summary, dict):
        return ["### Infra validation", "", "Not infra-validated: no smoke test or latency measured."]
    passed = summary.get("passed")
    outcome = "**passed**" if passed is True else "**FAILED**" if passed is False else "unknown"
    target = summary.get("target")
    if isinstance(target, dict):
        target = target.get("kind")
    line = f"Smoke test {outcome}"
    if target:
        line += f" on the `{target}` target"
    if summary.get("requests") is not None:
        line += f", {summary['requests']} requests answered ({summary.get('rows', '?')} sample rows)"
    if summary.get("error"):
        line += f" — {' '.join(str(summary['error']).split())[:300]}"
    lines = ["### Infra validation", "", line + "."]
    latency = summary.get("latency_ms")
    if isinstance(latency, dict) and latency:
        keys = [key for key in ("p50", "p95", "max") if key in latency] or sorted(latency)
        lines += [
            "",
            "| latency (ms) | " + " | ".join(keys) + " |",
            "|---|" + "---|" * len(keys),
            "| candidate | " + " | ".join(str(latency[key]) for key in keys) + " |",
        ]
    return lines


def per_class_lines(rows: list[Mapping[str, Any]]) -> list[str]:
    """Per-class metrics as a Markdown table, one row per class."""
    columns = [key for key in rows[0] if key != "positive_class"]
    lines = [
        "### Per-class metrics",
        "",
        "| class | " + " | ".join(column.replace("_", " ") for column in columns) + " |",
        "|---|" + "---|" * len(columns),
    ]
    for row in rows:
        cells = [
            str(row[column]) if isinstance(row.get(column), int) else fmt(row.get(column))
            for column in columns
        ]
        lines.append(f"| {row.get('positive_class', '?')} | " + " | ".join(cells) + " |")
    return lines
