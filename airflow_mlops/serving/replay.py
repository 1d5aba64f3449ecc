"""
Replay captured production traffic against a candidate, and compare with what the champion answered.

The captures (:mod:`airflow_mlops.serving.capture`) hold each production request's input rows and the answer
the serving version gave. A replay takes a sample of the requests one version (the champion) answered in a
window, sends each again, with the same rows, to the candidate running where no client sees it (the target's
sandbox), and compares the two answers row by row:

- **classification** (labels: text, or a few whole numbers): the disagreement rate, and which answers changed
  (``0 -> 1``: 12 rows);
- **regression** (other numbers): the absolute difference, its median, p95 and maximum, and the mean signed
  difference (candidate minus champion);
- the same **per segment** when a captured column names segments (``region``, ``plan``);
- the **errors** of the candidate (requests it did not answer, or answered with another number of rows), and
  its **latency** (each replayed request timed), beside the champion's as captured (``_latency_ms``, where
  the serving side measured it: the local target's proxy does).

The sample is drawn by request with a seed (:func:`replay_seed`): the same captures and seed give the same
sample. :func:`gate_failures` compares the figures with optional limits (:class:`ReplayLimits`), and
:func:`render_markdown` writes what a reviewer reads. No Airflow import; pandas and numpy are imported when
used.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from airflow_mlops.serving.base import PredictionError
from airflow_mlops.serving.capture import PREDICTION, REQUEST_ID, ROW, TIMESTAMP, VERSION, traffic_kind

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence
    from datetime import datetime

    import pandas as pd

    from airflow_mlops.data.storage import Storage

CLASSIFICATION, REGRESSION, AUTO = "classification", "regression", "auto"
PREDICTION_KINDS = (AUTO, CLASSIFICATION, REGRESSION)
PASSED, FAILED, NOTHING_TO_REPLAY = "passed", "failed", "nothing_to_replay"
#: Whole-number answers with at most this many distinct values are class labels.
MAX_CLASSES = 20
#: Segments reported one by one (the largest); the others are summed up as one.
MAX_SEGMENTS = 20
OTHER_SEGMENTS = "(other)"
NULL_SEGMENT = "(null)"
#: The header value (and traffic kind) of the requests the local endpoint mirrors to a shadow.
SHADOW = "shadow"
#: Changed answers listed (the most frequent), and candidate errors quoted.
MAX_CHANGES = 10
MAX_ERROR_EXAMPLES = 3


@dataclass(frozen=True)
class ReplayLimits:
    """
    The replay's gate: each limit None (not checked) or the most the figure may be.

    :param max_disagreement: Share of rows (0-1) the candidate answers differently (classification).
    :param max_median_abs_diff: Median absolute difference of the answers (regression).
    :param max_p95_abs_diff: 95th percentile of the absolute difference (regression).
    :param max_error_rate: Share of replayed requests (0-1) the candidate did not answer.
    :param max_p95_latency_ms: 95th percentile of the candidate's latency per request, in milliseconds.
    """

    max_disagreement: float | None = None
    max_median_abs_diff: float | None = None
    max_p95_abs_diff: float | None = None
    max_error_rate: float | None = None
    max_p95_latency_ms: float | None = None

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise ValueError(f"{name} must be a number or None, got {value!r}")
            if value < 0 or (name in ("max_disagreement", "max_error_rate") and value > 1):
                allowed = (
                    "between 0 and 1 (a share)" if name in ("max_disagreement", "max_error_rate") else ">= 0"
                )
                raise ValueError(f"{name} must be {allowed}, got {value!r}")

    def to_dict(self) -> dict[str, float]:
        """The limits that are set."""
        return {name: value for name, value in asdict(self).items() if value is not None}

    def check_kind(self, kind: str) -> None:
        """
        Refuse limits that do not apply to *kind* (they would never be checked).

        :raises ValueError: naming the limit and what to use instead.
        """
        if kind == REGRESSION and self.max_disagreement is not None:
            raise ValueError(
                "max_disagreement applies to class labels, but the answers are numbers compared as a "
                "regression: set max_median_abs_diff or max_p95_abs_diff, or prediction_kind='classification'"
            )
        if kind == CLASSIFICATION:
            for name in ("max_median_abs_diff", "max_p95_abs_diff"):
                if getattr(self, name) is not None:
                    raise ValueError(
                        f"{name} applies to numbers compared as a regression, but the answers are class "
                        "labels: set max_disagreement, or prediction_kind='regression'"
                    )


def replay_seed(key: str) -> int:
    """A sampling seed made of *key* (the task instance: the same for every try of a task in a DAG run)."""
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:4], "big")


def sample_requests(captured: pd.DataFrame, size: int, seed: int) -> pd.DataFrame:
    """
    The rows of at most *size* requests of *captured*, drawn with *seed*, in the order they were served.

    The requests are ordered (first row's time, then id) before drawing, so the draw does not depend on the
    order the capture files were read in.
    """
    import numpy as np

    if captured.empty:
        return captured
    first = captured.groupby(REQUEST_ID, sort=False)[TIMESTAMP].min().reset_index()
    first = first.sort_values([TIMESTAMP, REQUEST_ID], kind="stable")
    ids = first[REQUEST_ID].tolist()
    if len(ids) > size:
        chosen = np.random.default_rng(seed).choice(len(ids), size=size, replace=False)
        ids = [ids[i] for i in sorted(chosen)]
    order = {rid: position for position, rid in enumerate(ids)}
    sample = captured[captured[REQUEST_ID].isin(order)].copy()
    sample["_order"] = sample[REQUEST_ID].map(order)
    sample = sample.sort_values(["_order", ROW], kind="stable").drop(columns="_order")
    return sample.reset_index(drop=True)


@dataclass
class ReplayRun:
    """What the candidate answered: one answer per sampled row (None where its request failed)."""

    answers: list[Any]
    latencies_ms: list[float]
    requests: int
    failed_requests: int
    errors: list[str]


def replay_requests(
    sample: pd.DataFrame,
    columns: Sequence[str],
    predict: Callable[[list[dict[str, Any]]], list[Any]],
) -> ReplayRun:
    """
    Send each request of *sample* (its rows' *columns*) to *predict*, one request at a time, timed.

    A request that *predict* refuses (:class:`~airflow_mlops.serving.base.PredictionError`) or answers with
    another number of predictions than rows counts as failed; its rows get no answer.
    """
    answers: list[Any] = []
    latencies: list[float] = []
    errors: list[str] = []
    failed = requests = 0
    for _, rows in sample.groupby(REQUEST_ID, sort=False):
        records = json.loads(rows[list(columns)].to_json(orient="records", date_format="iso"))
        requests += 1
        started = time.perf_counter()
        predictions: list[Any] | None = None
        try:
            answered = predict(records)
        except PredictionError as err:
            problem = str(err)
        else:
            latencies.append((time.perf_counter() - started) * 1000)
            problem = f"{len(records)} rows sent, {len(answered)} predictions received"
            if len(answered) == len(records):
                predictions = answered
        if predictions is None:
            failed += 1
            if len(errors) < MAX_ERROR_EXAMPLES:
                errors.append(problem[:500])
            answers.extend([None] * len(records))
        else:
            answers.extend(_answer(p) for p in predictions)
    return ReplayRun(answers, latencies, requests, failed, errors)


def _answer(prediction: Any) -> Any:
    """A prediction as the capture stores it: a one-key dict's value; lists and dicts as JSON text."""
    if isinstance(prediction, dict) and len(prediction) == 1:
        (prediction,) = prediction.values()
    if isinstance(prediction, dict | list):
        return json.dumps(prediction, sort_keys=True)
    return prediction


def _number(value: Any) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value) if math.isfinite(value) else None
    try:
        number = float(str(value))
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def _label(value: Any) -> str | None:
    """A class label as text; numbers written alike (1, 1.0 and "1" are the same label)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    number = _number(value)
    return f"{number:g}" if number is not None else str(value)


def prediction_kind(values: Sequence[Any]) -> str:
    """``classification`` for text or a few whole numbers, ``regression`` for other numbers."""
    present = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    numbers = [_number(v) for v in present]
    if not present or any(n is None for n in numbers):
        return CLASSIFICATION
    whole = all(float(n).is_integer() for n in numbers if n is not None)
    return CLASSIFICATION if whole and len(set(numbers)) <= MAX_CLASSES else REGRESSION


def _figures(champion: Sequence[Any], candidate: Sequence[Any], kind: str) -> dict[str, Any]:
    """The comparison of rows both answered: ``rows`` and the figures of *kind*."""
    import numpy as np

    if kind == CLASSIFICATION:
        pairs = [
            (a, b)
            for a, b in zip(map(_label, champion), map(_label, candidate), strict=True)
            if a is not None and b is not None
        ]
        changed = [(a, b) for a, b in pairs if a != b]
        counts: dict[tuple[str, str], int] = {}
        for pair in changed:
            counts[pair] = counts.get(pair, 0) + 1
        ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:MAX_CHANGES]
        return {
            "rows": len(pairs),
            "disagreeing_rows": len(changed),
            "disagreement": round(len(changed) / len(pairs), 6) if pairs else None,
            "changes": [{"champion": a, "candidate": b, "rows": n} for (a, b), n in ranked],
        }
    numbers = [
        (a, b)
        for a, b in zip(map(_number, champion), map(_number, candidate), strict=True)
        if a is not None and b is not None
    ]
    if not numbers:
        return {
            "rows": 0,
            "median_abs_diff": None,
            "p95_abs_diff": None,
            "max_abs_diff": None,
            "mean_diff": None,
        }
    diff = np.array([b - a for a, b in numbers], dtype=float)
    absolute = np.abs(diff)
    return {
        "rows": len(numbers),
        "median_abs_diff": round(float(np.median(absolute)), 6),
        "p95_abs_diff": round(float(np.percentile(absolute, 95)), 6),
        "max_abs_diff": round(float(absolute.max()), 6),
        "mean_diff": round(float(diff.mean()), 6),
    }


def compare(
    sample: pd.DataFrame,
    answers: Sequence[Any],
    kind: str,
    segment_column: str | None = None,
) -> dict[str, Any]:
    """
    The champion's captured answers (``_prediction`` of *sample*) against the candidate's *answers*, row by row.

    :returns: ``{"kind", "overall": {...}, "segments": None | {"column", "values": [{"segment", ...}]}}``;
        the figures are those of *kind* (see the module docstring), over the rows both answered.
    """
    champion = sample[PREDICTION].tolist()
    out: dict[str, Any] = {"kind": kind, "overall": _figures(champion, answers, kind), "segments": None}
    if segment_column is None:
        return out
    names = [NULL_SEGMENT if _label(v) is None else str(v) for v in sample[segment_column].tolist()]
    rows_of: dict[str, list[int]] = {}
    for index, name in enumerate(names):
        rows_of.setdefault(name, []).append(index)
    ranked = sorted(rows_of.items(), key=lambda item: (-len(item[1]), item[0]))
    shown, rest = ranked[:MAX_SEGMENTS], [i for _, indices in ranked[MAX_SEGMENTS:] for i in indices]
    if rest:
        shown.append((OTHER_SEGMENTS, sorted(rest)))
    values = []
    for name, indices in shown:
        figures = _figures([champion[i] for i in indices], [answers[i] for i in indices], kind)
        figures.pop("changes", None)
        values.append({"segment": name, "sampled_rows": len(indices), **figures})
    out["segments"] = {"column": segment_column, "values": values}
    return out


def latency(latencies_ms: Sequence[float], champion_ms: Sequence[float] = ()) -> dict[str, Any]:
    """
    ``{"candidate": {"p50", "p95", "max"} | None, "champion": ... | None}``.

    *champion_ms*: the captured latencies of the sampled requests (none when the captures record none).
    """
    # Here, not at the top: the operator's module (imported when DAGs are parsed) imports this one.
    from airflow_mlops.serving.verification import latency_summary

    return {
        "candidate": latency_summary(latencies_ms) if latencies_ms else None,
        "champion": latency_summary(champion_ms) if champion_ms else None,
    }


def captured_latencies(sample: pd.DataFrame) -> list[float]:
    """The champion's captured latency of each sampled request, in milliseconds ([] when none was recorded)."""
    from airflow_mlops.serving.capture import LATENCY, REQUEST_ID

    if LATENCY not in sample.columns:
        return []
    per_request = sample.drop_duplicates(REQUEST_ID)[LATENCY].dropna()
    return [float(value) for value in per_request]


def gate_failures(
    limits: ReplayLimits,
    comparison: Mapping[str, Any],
    errors: Mapping[str, Any],
    latency_ms: Mapping[str, Any],
) -> list[str]:
    """Each figure beyond its limit, as ``<figure> <value> > <limit name> <limit>``."""
    overall = comparison["overall"]
    checks = [
        ("disagreement", overall.get("disagreement"), "max_disagreement", limits.max_disagreement, _percent),
        ("median absolute difference", overall.get("median_abs_diff"), "max_median_abs_diff",
         limits.max_median_abs_diff, _plain),
        ("p95 absolute difference", overall.get("p95_abs_diff"), "max_p95_abs_diff", limits.max_p95_abs_diff,
         _plain),
        ("error rate", errors.get("rate"), "max_error_rate", limits.max_error_rate, _percent),
        ("p95 latency", (latency_ms.get("candidate") or {}).get("p95"), "max_p95_latency_ms",
         limits.max_p95_latency_ms, _ms),
    ]  # fmt: skip
    failures = []
    for figure, value, name, limit, shown in checks:
        if limit is not None and value is not None and value > limit:
            failures.append(f"{figure} {shown(value)} > {name} {shown(limit)}")
    if (
        limits.max_disagreement is not None
        and overall.get("rows") == 0
        and comparison["kind"] == CLASSIFICATION
    ):
        failures.append("no row was answered by both versions, so max_disagreement cannot be checked")
    return failures


def _percent(value: float) -> str:
    return f"{value * 100:.4g}%"


def _plain(value: float) -> str:
    return f"{value:.4g}"


def _ms(value: float) -> str:
    return f"{value:.4g} ms"


def _cell(value: Any) -> str:
    text = "" if value is None else str(value)
    return text.replace("|", "\\|").replace("\n", " ").replace("`", "'")


def render_markdown(result: Mapping[str, Any]) -> str:
    """What a reviewer reads: the window and sample, the figures against their limits, segments, outcome."""
    name, version, champion = result["model_name"], result["version"], result.get("champion_version")
    window = result["window"]
    title = f"### Replay of production traffic: `{_cell(name)}` v{version}"
    against = f" against v{champion} (champion)" if champion is not None else ""
    lines = [title + against, ""]
    if result["outcome"] == NOTHING_TO_REPLAY:
        lines.append(f"Nothing to replay: {result['reason']}.")
        return "\n".join(lines)
    captured, sample = result["captured"], result["sample"]
    lines.append(
        f"{sample['requests']} of {captured['requests']} production requests ({sample['rows']} rows) that "
        f"v{champion} answered between {window['start']} and {window['end']}, sent again to v{version} in a "
        f"sandbox of the {result['target']} target (sample seed {sample['seed']})."
        + (
            f" {captured['bad_rows']} captured rows with values not of the signature's types were left out."
            if captured.get("bad_rows")
            else ""
        )
    )
    limits = result.get("limits") or {}
    comparison, errors, latency_ms = result["comparison"], result["errors"], result["latency_ms"]
    overall = comparison["overall"]
    lines += ["", "| figure | value | limit |", "|---|---|---|"]
    if comparison["kind"] == CLASSIFICATION:
        value = (
            "n/a"
            if overall["disagreement"] is None
            else f"{_percent(overall['disagreement'])} ({overall['disagreeing_rows']} of {overall['rows']} rows)"
        )
        lines.append(f"| disagreement | {value} | {_limit(limits, 'max_disagreement', _percent)} |")
    else:
        for key, label in (("median_abs_diff", "median"), ("p95_abs_diff", "p95"), ("max_abs_diff", "max")):
            value = "n/a" if overall[key] is None else _plain(overall[key])
            lines.append(
                f"| {label} absolute difference ({overall['rows']} rows) | {value} | "
                f"{_limit(limits, f'max_{key}', _plain)} |"
            )
        mean = "n/a" if overall["mean_diff"] is None else f"{overall['mean_diff']:+.4g}"
        lines.append(f"| mean difference (candidate - champion) | {mean} | |")
    lines.append(
        f"| failed requests | {errors['requests']} of {sample['requests']} | "
        f"{_limit(limits, 'max_error_rate', _percent)} |"
    )
    candidate = latency_ms.get("candidate")
    shown = f"{candidate['p50']:g} / {candidate['p95']:g} ms" if candidate else "n/a"
    lines.append(f"| candidate latency p50 / p95 | {shown} | {_limit(limits, 'max_p95_latency_ms', _ms)} |")
    champion = latency_ms.get("champion")
    shown = f"{champion['p50']:g} / {champion['p95']:g} ms (as captured)" if champion else "not captured"
    lines.append(f"| champion latency p50 / p95 | {shown} | |")
    changes = overall.get("changes") or []
    if changes:
        listed = ", ".join(
            f"`{_cell(c['champion'])} -> {_cell(c['candidate'])}` {c['rows']}" for c in changes
        )
        lines += ["", f"Changed answers (champion -> candidate, rows): {listed}."]
    if errors.get("examples"):
        lines += ["", "Candidate errors: " + "; ".join(f"`{_cell(e[:200])}`" for e in errors["examples"])]
    segments = comparison.get("segments")
    if segments:
        column = _cell(segments["column"])
        if comparison["kind"] == CLASSIFICATION:
            lines += ["", f"| {column} | rows | disagreement |", "|---|---|---|"]
            for seg in segments["values"]:
                value = "n/a" if seg["disagreement"] is None else _percent(seg["disagreement"])
                lines.append(f"| {_cell(seg['segment'])} | {seg['sampled_rows']} | {value} |")
        else:
            lines += ["", f"| {column} | rows | median / p95 absolute difference |", "|---|---|---|"]
            for seg in segments["values"]:
                value = (
                    "n/a"
                    if seg["median_abs_diff"] is None
                    else f"{_plain(seg['median_abs_diff'])} / {_plain(seg['p95_abs_diff'])}"
                )
                lines.append(f"| {_cell(seg['segment'])} | {seg['sampled_rows']} | {value} |")
    lines.append("")
    if result["failures"]:
        lines.append("**Failed**: " + "; ".join(result["failures"]) + ".")
    elif limits:
        lines.append("**Passed**: every figure is within its limit.")
    else:
        lines.append("No limits set: the figures are for the reviewer to judge.")
    return "\n".join(lines)


def _limit(limits: Mapping[str, Any], name: str, shown: Callable[[float], str]) -> str:
    value = limits.get(name)
    return "" if value is None else f"<= {shown(value)}"


def compare_shadow(
    root: str,
    model_name: str,
    shadow_version: str,
    start: datetime,
    end: datetime,
    *,
    kind: str = AUTO,
    segment_column: str | None = None,
    limits: ReplayLimits | None = None,
    storage: Storage | None = None,
) -> dict[str, Any]:
    """
    What a shadow answered against what users got, for the production requests mirrored to it in the window.

    The shadow's answers (captured with the request's own id, see
    :meth:`~airflow_mlops.serving.local.LocalServerTarget.start_shadow`) are joined with the production answers
    on request id and row, and compared as a replay compares (:func:`compare`, :func:`gate_failures`).

    :param kind: ``classification``, ``regression`` or ``auto`` (as :func:`prediction_kind` tells).
    :returns: ``{"model_name", "version", "served_versions", "window", "outcome", "reason", "compared":
        {"requests", "rows"}, "comparison", "limits", "failures", "markdown"}``; ``outcome`` is ``passed``,
        ``failed`` (a figure beyond its limit) or ``nothing_to_replay`` (no mirrored request answered).
    """
    from airflow_mlops.serving.capture import read_captures

    limits = limits or ReplayLimits()
    production = read_captures(root, model_name, start, end, storage=storage)
    shadow = read_captures(
        root, model_name, start, end, columns=[], meta=[REQUEST_ID, ROW, PREDICTION], storage=storage,
        version=str(shadow_version), traffic=traffic_kind(SHADOW, 200),
    )  # fmt: skip
    joined = production.merge(
        shadow.rename(columns={PREDICTION: "_shadow_prediction"}), on=[REQUEST_ID, ROW], how="inner"
    )
    result: dict[str, Any] = {
        "model_name": model_name,
        "version": str(shadow_version),
        "served_versions": sorted({str(v) for v in joined[VERSION]}) if len(joined) else [],
        "window": {"start": start.isoformat(), "end": end.isoformat()},
        "compared": {
            "requests": int(joined[REQUEST_ID].nunique()) if len(joined) else 0,
            "rows": len(joined),
        },
        "limits": limits.to_dict(),
        "failures": [],
    }
    if joined.empty:
        result.update(
            outcome=NOTHING_TO_REPLAY,
            reason=f"no production request mirrored to v{shadow_version} was answered and captured between "
            f"{result['window']['start']} and {result['window']['end']}",
        )
        result["markdown"] = (
            f"### Shadow of `{_cell(model_name)}` v{shadow_version}\n\nNothing to compare: {result['reason']}."
        )
        return result
    if segment_column is not None and segment_column not in joined.columns:
        raise ValueError(f"segment_column {segment_column!r} is not captured for model {model_name!r}")
    if kind == AUTO:
        kind = prediction_kind(joined[PREDICTION].tolist())
    limits.check_kind(kind)
    result["comparison"] = compare(joined, joined["_shadow_prediction"].tolist(), kind, segment_column)
    result["failures"] = gate_failures(limits, result["comparison"], {}, {})
    result["outcome"] = FAILED if result["failures"] else PASSED
    result["reason"] = "; ".join(result["failures"]) or None
    result["markdown"] = _shadow_markdown(result)
    return result


def _shadow_markdown(result: Mapping[str, Any]) -> str:
    """The shadow's comparison as a reviewer reads it (the figure table of :func:`render_markdown`)."""
    served = ", ".join(f"v{v}" for v in result["served_versions"])
    lines = [
        f"### Shadow of `{_cell(result['model_name'])}` v{result['version']} against what users got ({served})",
        "",
        f"{result['compared']['requests']} mirrored production requests ({result['compared']['rows']} rows) "
        f"between {result['window']['start']} and {result['window']['end']}; the shadow's answers reached no user.",
    ]
    table = render_markdown(
        {
            **result,
            "champion_version": None,
            "target": "local",
            "outcome": PASSED,
            "captured": {"requests": result["compared"]["requests"]},
            "sample": {
                "requests": result["compared"]["requests"],
                "rows": result["compared"]["rows"],
                "seed": "",
            },
            "errors": {"requests": 0},
            "latency_ms": {},
        }
    ).split("\n")
    start = table.index("| figure | value | limit |")
    rows = [line for line in table[start:] if "latency" not in line and "failed requests" not in line]
    return "\n".join([*lines, "", *rows])
