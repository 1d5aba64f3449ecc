"""Helpers for the new-data sensor and trigger tests: source files, a first snapshot, a trigger run."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import pandas as pd

from airflow_mlops.operators.ingest import IngestDatasetOperator

if TYPE_CHECKING:
    from airflow_mlops.triggers.new_data import NewDataTrigger


def write_csv(path, rows: int = 10) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"x": range(rows), "label": [0, 1] * (rows // 2)}).to_csv(path, index=False)


def ingest(source, data_root) -> dict:
    op = IngestDatasetOperator(
        task_id="i", dataset_name="events", source=str(source), data_root=str(data_root)
    )
    return op.execute(context={})


def run_trigger(trigger: NewDataTrigger) -> list[dict]:
    async def collect():
        return [event.payload async for event in trigger.run()]

    return asyncio.run(asyncio.wait_for(collect(), timeout=60))
