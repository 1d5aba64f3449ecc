"""NewDataSensor: pokes, defers to its trigger, completes from the event; bad rendered arguments."""

from __future__ import annotations

import pytest

from airflow_mlops.exceptions import ConfigurationError, DatasetError
from airflow_mlops.sensors.new_data import NewDataSensor
from airflow_mlops.triggers.new_data import NewDataTrigger
from airflow_mlops.version_compat import TaskDeferred
from tests.support.new_data import (
    ingest,
    run_trigger,
    sources_in_temp_folders,  # noqa: F401  (autouse: sources in temp folders)
    write_csv,
)


def test_sensor_pokes_defers_and_completes(tmp_path, data_root):
    raw = tmp_path / "raw"
    write_csv(raw / "a.csv")
    sensor = NewDataSensor(
        task_id="wait", source=str(raw), dataset_name="events", data_root=str(data_root),
        deferrable=True, poke_interval=5, timeout=60,
    )  # fmt: skip
    result = sensor.execute(context={})  # something new already: no deferral
    assert result["count"] == 1

    ingest(raw, data_root)
    with pytest.raises(TaskDeferred) as deferred:
        sensor.execute(context={})
    trigger = deferred.value.trigger
    assert isinstance(trigger, NewDataTrigger)
    assert trigger.serialize()[1]["poll_interval"] == 5.0
    assert trigger.serialize()[1]["deadline"] is not None

    write_csv(raw / "b.csv")
    (event,) = run_trigger(trigger)
    done = sensor.execute_complete(context={}, event=event)
    assert done["count"] == 1
    assert done["files"][0]["uri"] == str(raw / "b.csv")

    with pytest.raises(DatasetError, match="failed: boom") as info:
        sensor.execute_complete(context={}, event={"status": "error", "message": "boom"})
    assert (info.value.dataset, info.value.uri) == ("events", str(raw))


def test_deferrable_defaults_to_the_operators_setting():
    import inspect

    from airflow_mlops.version_compat import conf

    default = inspect.signature(NewDataSensor.__init__).parameters["deferrable"].default
    assert default is conf.getboolean("operators", "default_deferrable", fallback=False)


def test_templated_name_that_renders_unsafe_fails_without_retries(tmp_path, data_root):
    sensor = NewDataSensor(
        task_id="wait", source=str(tmp_path), dataset_name="{{ params.name }}", data_root=str(data_root),
        deferrable=True,
    )  # fmt: skip
    sensor.dataset_name = "../../etc"  # what the template rendered to
    with pytest.raises(ConfigurationError, match="Invalid dataset name") as info:
        sensor.execute(context={})
    assert isinstance(info.value, DatasetError)
    assert info.value.retryable is False
    assert info.value.dataset == "../../etc"
    assert info.value.uri == str(tmp_path)


def test_a_source_outside_the_allowed_sources_fails_before_deferring(tmp_path, data_root, monkeypatch):
    monkeypatch.setenv("AIRFLOW__MLOPS__ALLOWED_SOURCES", str(tmp_path / "landing"))
    sensor = NewDataSensor(
        task_id="wait", source="/etc", dataset_name="events", data_root=str(data_root), deferrable=True,
    )  # fmt: skip
    with pytest.raises(DatasetError) as info:  # not TaskDeferred: nothing is watched
        sensor.execute(context={})
    assert str(info.value) == (
        f"Waiting for new data of dataset 'events': source /etc is outside the allowed sources "
        f"({tmp_path / 'landing'}); an administrator allows more in [mlops] allowed_sources"
    )
    assert info.value.retryable is False


def test_a_dataset_name_with_a_trailing_newline_is_refused(tmp_path):
    with pytest.raises(ValueError, match="Invalid dataset name"):
        NewDataSensor(task_id="wait", source=str(tmp_path), dataset_name="events\n")
