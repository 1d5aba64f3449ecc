"""
What an evaluation reports: the Markdown report, the metric and tag summaries, past champions and their plot.

No Airflow import; matplotlib is imported by :func:`champion_history_figure` when it draws.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode

from airflow_mlops import tags as T
from airflow_mlops.evaluation.slices import slice_summary
from airflow_mlops.evaluation.values import finite, fmt, load_spec
from airflow_mlops.utils.urls import without_credentials

if TYPE_CHECKING:
    from matplotlib.figure import Figure

#: How many past champions the report and the plot show (the most recent ones).
HISTORY_MAX = 20
#: Where the champion history plot is logged in the evaluation run.
HISTORY_PLOT_PATH = "evaluation/champion_history.png"

_LINK_LABELS = (
    ("evaluation_run", "MLflow evaluation run"),
    ("model_version", "MLflow model version"),
    ("data_docs", "Data Docs"),
)
#: Plots shown first, in this order; the others follow by name.
_PLOT_ORDER = ("champion_history", "confusion_matrix", "roc_curve_plot", "precision_recall_curve_plot")
_PLOTS_PER_ROW = 3
_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif", ".svg", ".webp")
#: At most this many drift rows (feature x statistic) in the report; the full report has them all.
_DRIFT_ROWS_MAX = 60
_RUN_ID = re.compile(r"[0-9a-f]{32}")
_STORE_ARTIFACT = re.compile(r"/([0-9a-f]{32})/artifacts/(.+)$")
_SNAPSHOT_PATH = re.compile(r"/datasets/(?P<name>[^/]+)/(?P<id>[0-9a-f]{16,})(?P<rest>/.*)?$")


def upstream_summary(value: Any, field: str) -> dict[str, Any] | None:
    """An upstream task's result given as a dict, a JSON string or the literal a plain template renders to."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        value = load_spec(value, field, "a dict (the upstream task's result)")
    if not isinstance(value, Mapping):
        raise ValueError(f"{field} must render to a dict (the upstream task's result), got {value!r:.200}")
    return dict(value)


def data_docs_uri(validation: Mapping[str, Any] | None) -> str:
    """The Data Docs page a validation summary names (``data_docs_uri``, or ``data_docs``), or ""."""
    uri = (validation or {}).get("data_docs_uri") or (validation or {}).get("data_docs")
    return uri if isinstance(uri, str) else ""


def describe_upstream(summary: Mapping[str, Any]) -> str:
    """One line about an upstream check: its outcome, its counts, what failed."""
    outcome_keys = ("success", "passed", "drift", "drift_detected")
    parts = []
    for key in outcome_keys:
        if key in summary:
            value = summary[key]
            if key in ("drift", "drift_detected"):
                parts.append("**drift detected**" if value else "no drift detected")
            else:
                parts.append("**passed**" if value else "**FAILED**")
    for key, value in summary.items():
        if (
            key in outcome_keys
            or key in ("data_docs_uri", "data_docs")
            or isinstance(value, Mapping | list | tuple)
        ):
            continue
        if value is not None:
            parts.append(f"{key} `{short_location(value) if isinstance(value, str) else value}`")
    failed = summary.get("failed")
    if isinstance(failed, list) and failed:
        names = [
            f"{item.get('expectation')}" + (f" on `{item['column']}`" if item.get("column") else "")
            for item in failed[:5]
            if isinstance(item, Mapping)
        ]
        parts.append(
            "failed: " + ", ".join(names) + (f" and {len(failed) - 5} more" if len(failed) > 5 else "")
        )
    for key, value in summary.items():
        if key != "failed" and isinstance(value, Mapping | list | tuple) and value:
            parts.append(f"{key} `{json.dumps(value, sort_keys=True, default=str)[:300]}`")
    return "; ".join(parts) or "(empty summary)"


def metrics_summary(
    candidate_metrics: Mapping[str, Any],
    champion_metrics: Mapping[str, Any] | None,
    rows: list[dict[str, Any]],
) -> dict[str, dict[str, Any]]:
    """
    Every metric the candidate produced: ``{"candidate", "champion", "delta", "passed"}``.

    ``passed`` comes from the gate rows and is None for metrics not gated; *champion_metrics* None means no
    champion.
    """
    gated = {row["metric"]: row["passed"] for row in rows}
    metrics = {}
    for metric in sorted(candidate_metrics):
        candidate = finite(candidate_metrics[metric])
        champion = finite(champion_metrics.get(metric)) if champion_metrics is not None else None
        metrics[metric] = {
            "candidate": candidate,
            "champion": champion,
            "delta": candidate - champion if candidate is not None and champion is not None else None,
            "passed": gated.get(metric),
        }
    return metrics


def evaluation_summary(
    *,
    passed: bool,
    holdout_uri: str,
    rows_count: int,
    champion: int | None,
    evaluation_run_id: str,
    rows: list[dict[str, Any]],
    artifacts: Mapping[str, str],
    slice_rows: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """
    The compact summary written to the candidate version as ``mlops.evaluation.summary``.

    It holds the decision, the holdout, the champion, the evaluation run, the gated metrics of both models,
    the plots and, with slice checks, :func:`~airflow_mlops.evaluation.slices.slice_summary`.
    """
    summary: dict[str, Any] = {
        "passed": passed,
        "holdout": holdout_uri,
        "rows": rows_count,
        "champion_version": champion,
        "evaluation_run_id": evaluation_run_id,
        "metrics": {
            row["metric"]: {"candidate": row["candidate"], "champion": row["champion"]} for row in rows
        },
        "artifacts": dict(artifacts),
    }
    if slice_rows:
        summary["slices"] = slice_summary(slice_rows)
    return summary


def plot_artifacts(result: Any) -> dict[str, str]:
    """
    URIs of the pictures the default evaluator logged for a model (its plots need matplotlib).

    Only image files are kept: the evaluator's tables (``per_class_metrics`` as CSV, ...) are no plot.
    """
    artifacts = getattr(result, "artifacts", None) or {}
    uris = {key: str(getattr(value, "uri", value)) for key, value in sorted(artifacts.items())}
    return {key: uri for key, uri in uris.items() if uri.lower().endswith(_IMAGE_SUFFIXES)}


def champion_history(
    model_versions: Iterable[Any], metrics: list[str], candidate: int | None
) -> list[dict[str, Any]]:
    """
    Past champions, oldest first (at most :data:`HISTORY_MAX`).

    Past champions are the versions carrying ``mlops.promotion.time``, each with the gated *metrics* its own
    evaluation measured (``mlops.evaluation.summary``); the *candidate* version is left out.

    :param model_versions: The model's versions (objects with ``version`` and ``tags``, as MLflow returns
        them).
    """
    history = []
    for mv in model_versions:
        tags = mv.tags or {}
        promoted_at = tags.get(T.PROMOTED_AT)
        if not promoted_at or (candidate is not None and int(mv.version) == candidate):
            continue
        try:
            summary = json.loads(tags.get(T.EVALUATION_SUMMARY) or "{}")
        except ValueError:
            summary = {}
        measured = summary.get("metrics") if isinstance(summary, dict) else None
        values = {}
        for metric in metrics:
            entry = (measured or {}).get(metric)
            values[metric] = finite(entry.get("candidate")) if isinstance(entry, dict) else None
        history.append({"version": int(mv.version), "promoted_at": promoted_at, "metrics": values})
    history.sort(key=lambda entry: (entry["promoted_at"], entry["version"]))
    return history[-HISTORY_MAX:]


def champion_history_figure(
    name: str,
    history: list[dict[str, Any]],
    metrics: list[str],
    version: int | None,
    candidate_metrics: Mapping[str, Any],
) -> Figure | None:
    """
    A plot of the gated metrics of past champions and this candidate; None when there is nothing to draw.

    Raises ImportError when matplotlib is not installed. A bare ``Figure`` renders with Agg: pyplot (and its
    global state) is not touched.
    """
    if not any(value is not None for entry in history for value in entry["metrics"].values()):
        return None
    from matplotlib.figure import Figure

    labels = [f"v{entry['version']}\n{entry['promoted_at'][:10]}" for entry in history]
    labels.append(f"v{version}\ncandidate" if version is not None else "candidate")
    fig = Figure(figsize=(7, 3.5), layout="constrained")
    ax = fig.subplots()
    for metric in metrics[:8]:
        values = [entry["metrics"].get(metric) for entry in history]
        values.append(finite(candidate_metrics.get(metric)))
        ax.plot(
            range(len(values)),
            [float("nan") if value is None else value for value in values],
            marker="o",
            label=metric,
        )
    ax.set_xticks(range(len(labels)), labels, fontsize=7)
    ax.set_title(f"{name}: gated metrics of past champions (each on its own holdout)", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return fig


def short_location(uri: Any) -> str:
    """
    A location as a reviewer reads it, without the worker's folders.

    A local snapshot path (``<root>/datasets/<name>/<snapshot id>/...#split``) becomes
    ``<name>@<first 12 characters of the id>/...#split``, any other local path its file name; other URIs
    (``s3://``, ``https://``) are kept as they are.
    """
    text = str(uri)
    if not text.startswith(("/", "file:")):
        return text
    path, _, split = text.partition("#")
    snapshot = _SNAPSHOT_PATH.search(path)
    if snapshot:
        short = f"{snapshot['name']}@{snapshot['id'][:12]}{snapshot['rest'] or ''}"
    else:
        short = path.rstrip("/").rsplit("/", 1)[-1] or path
    return short + (f"#{split}" if split else "")


def artifact_url(mlflow_url: str | None, uri: str) -> str:
    """
    The MLflow server URL that serves the run artifact *uri* (its ``get-artifact`` endpoint), or "".

    *uri* is ``runs:/<run id>/<path>`` or an artifact store URI holding ``/<run id>/artifacts/<path>``
    (``mlflow-artifacts:/``, ``s3://``, a local folder). "" when *mlflow_url* is not an ``http(s)`` server
    or the run cannot be told from *uri*.
    """
    run_id, path = _run_artifact(uri)
    base = _mlflow_base(mlflow_url)
    if not base or not run_id:
        return ""
    return f"{base}/get-artifact?{urlencode({'path': path, 'run_uuid': run_id})}"


def artifact_page_url(mlflow_url: str | None, experiment_id: str | None, uri: str) -> str:
    """The MLflow UI page that shows the run artifact *uri* in its run's artifact browser, or ""."""
    run_id, path = _run_artifact(uri)
    base = _mlflow_base(mlflow_url)
    if not base or not run_id or not experiment_id:
        return ""
    return f"{base}/#/experiments/{quote(str(experiment_id))}/runs/{run_id}/artifactPath/{quote(path)}"


def _run_artifact(uri: str) -> tuple[str, str]:
    if uri.startswith("runs:/"):
        run_id, _, path = uri[len("runs:/") :].partition("/")
    else:
        found = _STORE_ARTIFACT.search(uri)
        run_id, path = found.groups() if found else ("", "")
    return (run_id, path) if _RUN_ID.fullmatch(run_id) and path else ("", "")


def _mlflow_base(mlflow_url: str | None) -> str:
    if mlflow_url and mlflow_url.startswith(("http://", "https://")):
        return without_credentials(mlflow_url).rstrip("/")  # shown to everyone: no user-info
    return ""


def _plot_title(key: str) -> str:
    return key.removesuffix("_plot").replace("_", " ")


def _plots_section(
    artifacts: Mapping[str, str], mlflow_url: str | None, experiment_id: str | None
) -> list[str]:
    """The plots as images (each opening its artifact page in MLflow), three a row; or their names."""
    order = {key: rank for rank, key in enumerate(_PLOT_ORDER)}
    keys = sorted(artifacts, key=lambda key: (order.get(key, len(order)), key))
    images = {key: artifact_url(mlflow_url, artifacts[key]) for key in keys}
    lines = ["", "#### Plots", ""]
    shown = [key for key in keys if images[key]]
    if not shown:
        return [*lines, "Logged in the evaluation run: " + ", ".join(f"`{key}`" for key in keys)]
    for start in range(0, len(shown), _PLOTS_PER_ROW):
        chunk = shown[start : start + _PLOTS_PER_ROW]
        pad = [""] * (_PLOTS_PER_ROW - len(chunk))
        titles = [_plot_title(key) for key in chunk] + pad
        if start == 0:
            lines += ["| " + " | ".join(titles) + " |", "|" + "---|" * _PLOTS_PER_ROW]
        else:
            lines.append("| " + " | ".join(f"**{title}**" if title else "" for title in titles) + " |")
        cells = []
        for key in chunk:
            page = artifact_page_url(mlflow_url, experiment_id, artifacts[key]) or images[key]
            cells.append(f"[![{_plot_title(key)}]({images[key]})]({page})")
        lines.append("| " + " | ".join(cells + pad) + " |")
    missing = [key for key in keys if not images[key]]
    if missing:
        lines += ["", "Also logged: " + ", ".join(f"`{key}`" for key in missing)]
    return lines


def _metric_lines(rows: list[dict[str, Any]], metrics: Mapping[str, Mapping[str, Any]] | None) -> list[str]:
    """One table of every metric: the gated ones first (with their threshold and result), then the rest."""
    lines = [
        "| metric | candidate | champion | delta | gate | result |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        delta = "n/a" if row["delta"] is None else f"{row['delta']:+.4f}"
        lines.append(
            f"| {row['metric']} | {fmt(row['shown'][0])} | {fmt(row['shown'][1])} | {delta} | "
            f"{row['threshold']} | {'pass' if row['passed'] else '**FAIL**'} |"
        )
    gated = {row["metric"] for row in rows}
    for metric in sorted(set(metrics or {}) - gated):
        entry = (metrics or {})[metric]
        values = [entry.get("candidate"), entry.get("champion"), entry.get("delta")]
        if all(value is None or float(value).is_integer() for value in values):  # counts: 56, not 56.0000
            cells = ["n/a" if value is None else f"{int(value)}" for value in values]
            cells[2] = cells[2] if values[2] is None else f"{int(values[2]):+d}"
        else:
            cells = [fmt(values[0]), fmt(values[1]), "n/a" if values[2] is None else f"{values[2]:+.4f}"]
        lines.append(f"| {metric} | {' | '.join(cells)} | not gated | |")
    return lines


def _validation_line(summary: Mapping[str, Any]) -> str:
    if not {"success", "evaluated"} <= set(summary):
        return describe_upstream(summary)
    outcome = "**passed**" if summary["success"] else "**FAILED**"
    met = f"{summary.get('successful', '?')} of {summary['evaluated']} expectations met"
    where = summary.get("dataset")
    rows = summary.get("rows")
    line = f"{outcome}; {met}" + (f" on `{short_location(where)}`" if where else "")
    line += f" ({rows} rows)" if rows is not None else ""
    failed = summary.get("failed")
    if isinstance(failed, list) and failed:
        names = [
            f"{item.get('expectation')}" + (f" on `{item['column']}`" if item.get("column") else "")
            for item in failed[:5]
            if isinstance(item, Mapping)
        ]
        more = f" and {len(failed) - 5} more" if len(failed) > 5 else ""
        line += "; failed: " + ", ".join(names) + more
    return line


def _drift_lines(summary: Mapping[str, Any]) -> tuple[str, list[str]]:
    """The drift summary's line, and its per-feature table (a row per gated statistic)."""
    drifted = summary.get("drift", summary.get("drift_detected"))
    parts = ["**drift detected**" if drifted else "no drift detected"]
    if summary.get("reference"):
        parts.append(f"reference `{short_location(summary['reference'])}`")
    elif "reference" in summary:
        parts.append("no reference (no champion to compare with)")
    if summary.get("dataset"):
        parts.append(f"current `{short_location(summary['dataset'])}`")
    features = summary.get("features")
    if not isinstance(features, Mapping):
        return describe_upstream(summary), []
    if summary.get("report"):
        parts.append(f"full report `{short_location(summary['report'])}`")
    table: list[str] = []
    for column in summary.get("missing_features") or []:
        table.append(f"| {column} | | | | **yes** (missing from the current data) |")
    for column in summary.get("added_features") or []:
        table.append(f"| {column} | | | | **yes** (not in the reference) |")
    ordered = sorted(features.items(), key=lambda item: (not (item[1] or {}).get("exceeded"), str(item[0])))
    for column, info in ordered:
        info = info or {}
        values = info.get("metrics") or {}
        exceeded = set(info.get("exceeded") or [])
        for statistic, limit in sorted((info.get("thresholds") or {}).items()):
            if statistic not in values:
                continue
            flag = "**yes**" if statistic in exceeded else "no"
            table.append(f"| {column} | {statistic} | {values[statistic]:.4g} | {limit:g} | {flag} |")
    if not table:
        return "; ".join(parts), []
    shown = table[:_DRIFT_ROWS_MAX]
    more = len(table) - len(shown)
    lines = ["", "| feature | statistic | value | threshold | drifted |", "|---|---|---|---|---|", *shown]
    if more:
        lines += ["", f"... and {more} more rows in the full report."]
    return "; ".join(parts), lines


def render_report(
    *,
    name: str,
    version: int | None,
    champion: int | None,
    champion_note: str,
    holdout_uri: str,
    rows_count: int,
    target: str,
    model_type: str,
    rows: list[dict[str, Any]],
    passed: bool,
    reason: str,
    slice_rows: list[dict[str, Any]] | None = None,
    slices: list[dict[str, Any]] | None = None,
    upstream: Mapping[str, Mapping[str, Any] | None] | None = None,
    links: Mapping[str, str] | None = None,
    artifacts: Mapping[str, str] | None = None,
    history: list[dict[str, Any]] | None = None,
    metrics: Mapping[str, Mapping[str, Any]] | None = None,
    mlflow_url: str | None = None,
    experiment_id: str | None = None,
    average: str | None = None,
) -> str:
    """
    The Markdown report an approver reads (Airflow's Required Actions page renders it).

    It holds the decision with its reason, one table of every metric (candidate against champion, gated ones
    with their threshold and result), the slice table, the upstream checks (drift as a table per feature),
    the plots as images, the past champions and the links. Locations are shown without the worker's folders
    (:func:`short_location`).

    :param rows: The gate rows (:func:`~airflow_mlops.evaluation.gate.gate_metric`).
    :param slice_rows: The slice rows (:func:`~airflow_mlops.evaluation.slices.check_slices`).
    :param slices: The parsed slice specs, to state their limits.
    :param upstream: ``{"validation": summary, "drift": summary}`` (either may be None).
    :param links: ``{"evaluation_run", "model_version", "data_docs"}`` URLs ("" when unknown).
    :param artifacts: Plot names to artifact URIs.
    :param history: Past champions (:func:`champion_history`).
    :param metrics: Every metric the evaluation produced (:func:`metrics_summary`); the ones no gate row
        names are listed as not gated.
    :param mlflow_url: The MLflow server (tracking URI); with an ``http(s)`` one the plots show as images.
    :param experiment_id: The evaluation's experiment, so that a plot opens its page in the MLflow UI.
    :param average: How a multiclass classifier's precision, recall and F1 averaged over its classes (None:
        not a multiclass classifier).
    """
    title = f"v{version}" if version is not None else "candidate"
    against = f"champion v{champion}" if champion is not None else "no champion"
    lines = [
        f"### Evaluation of `{name}` {title} against {against}",
        "",
        f"**Decision: {'passed' if passed else 'rejected'}** — {reason}",
        "",
        f"Holdout `{short_location(holdout_uri)}` ({rows_count} rows), target `{target}`, "
        f"model type {model_type}"
        + (f", precision, recall and F1 averaged over the classes as `{average}`." if average else "."),
        "",
    ]
    if champion is None:
        lines += [
            f"**{champion_note[0].upper()}{champion_note[1:]}**: only absolute thresholds apply; "
            "min_absolute_change / min_relative_change are not applied.",
            "",
        ]
    lines += _metric_lines(rows, metrics)
    if slice_rows:
        lines += ["", "#### Slices", ""]
        for spec in slices or []:
            limits = ", ".join(
                f"{m} max regression {c['max_regression']:g}" for m, c in spec["metrics"].items()
            )
            lines.append(f"By `{spec['column']}` ({limits}; segments need {spec['min_rows']} rows).")
        lines += [
            "",
            "| slice | rows | metric | champion | candidate | delta | result |",
            "|---|---|---|---|---|---|---|",
        ]
        for row in slice_rows:
            delta = "n/a" if row["delta"] is None else f"{row['delta']:+.4f}"
            result = "FAIL" if row["status"] == "fail" else row["status"]
            lines.append(
                f"| {row['column']}={row['segment']} | {row['rows']} | {row['metric']} | "
                f"{fmt(row['champion'])} | {fmt(row['candidate'])} | {delta} | {result} |"
            )
    validation = (upstream or {}).get("validation")
    drift = (upstream or {}).get("drift")
    if validation or drift:
        lines += ["", "#### Upstream checks", ""]
        if validation:
            lines.append(f"- Data validation: {_validation_line(validation)}")
        drift_table: list[str] = []
        if drift:
            drift_line, drift_table = _drift_lines(drift)
            lines.append(f"- Drift: {drift_line}")
        lines += drift_table
    if artifacts:
        lines += _plots_section(artifacts, mlflow_url, experiment_id)
    if history:
        metric_names = [row["metric"] for row in rows]
        lines += ["", "#### Past champions", "", "| version | promoted | " + " | ".join(metric_names) + " |"]
        lines.append("|---|---|" + "---|" * len(rows))
        for entry in history:
            values = " | ".join(fmt(entry["metrics"].get(metric)) for metric in metric_names)
            lines.append(f"| v{entry['version']} | {entry['promoted_at']} | {values} |")
    named_links = [(label, (links or {}).get(key)) for key, label in _LINK_LABELS]
    if any(url for _, url in named_links):
        lines += ["", "#### Links", ""]
        lines += [f"- [{label}]({url})" for label, url in named_links if url]
    return "\n".join(lines)
