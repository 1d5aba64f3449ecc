"""
Helpers for the data tests: source files, a first snapshot, a trigger run, and sources allowed in temp folders.
"""

from __future__ import annotations

import asyncio
import tempfile
from typing import TYPE_CHECKING

import pandas as pd
import pytest

from airflow_mlops.operators.ingest import IngestDatasetOperator

if TYPE_CHECKING:
    from airflow_mlops.triggers.new_data import NewDataTrigger


#: ``[mlops] allowed_sources`` for tests that read from pytest's temporary folders and from moto's S3.
ALLOWED_SOURCES_ENV = "AIRFLOW__MLOPS__ALLOWED_SOURCES"
TEST_ALLOWED_SOURCES = f"{tempfile.gettempdir()},s3://*"


@pytest.fixture(autouse=True, scope="module")
def sources_in_temp_folders():
    """Allow ingests and sensors of the module using it to read the temporary folders (and any bucket)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(ALLOWED_SOURCES_ENV, TEST_ALLOWED_SOURCES)
        yield


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
