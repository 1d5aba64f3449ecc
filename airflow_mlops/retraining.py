"""
What ties monitoring to retraining, light enough for DAG files.

:func:`retraining_asset` is the Asset whose events ask for a model to be retrained (what the
continuous-training DAG is scheduled on, and what
:class:`~airflow_mlops.operators.monitoring.RequestRetrainingOperator` emits); :func:`describe_trigger` says in a
run's report which verdict triggered it. Importing this module loads no operator.
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import Asset

__all__ = ["describe_trigger", "retraining_asset"]


def retraining_asset(model_name: str) -> Asset:
    """The Asset whose events ask for *model_name* to be retrained (what the continuous-training DAG waits on)."""
    # Named only: a URI with a scheme makes Airflow load every provider's URI handlers (and boto3) at parse time.
    return Asset(name=f"mlops_retraining_{model_name}")


def describe_trigger(triggering_asset_events: Any) -> str:
    """
    Markdown saying which monitoring verdict triggered this run ("" for a run triggered by hand).

    For DAG templates: ``{{ describe_trigger(triggering_asset_events) }}`` (a ``user_defined_macros`` entry).
    """
    lines = []
    for events in dict(triggering_asset_events or {}).values():
        for event in events or []:
            extra = getattr(event, "extra", None)
            extra = (
                extra
                if isinstance(extra, dict)
                else (event.get("extra") if isinstance(event, dict) else None)
            )
            if not extra or "verdict" not in extra:
                continue
            window = extra.get("window") or {}
            lines.append(
                f"Retraining requested by monitoring: model {extra.get('model_name')} v{extra.get('version')} "
                f"was **{extra['verdict']}** over {window.get('start')} - {window.get('end')} "
                f"({extra.get('records')} captured rows): " + "; ".join(extra.get("reasons") or [])
            )
    return ("### Why this run\n\n" + "\n".join(f"- {line}" for line in lines) + "\n\n") if lines else ""
