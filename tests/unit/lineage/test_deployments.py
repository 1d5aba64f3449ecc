"""Deployment history: who acted, the previous champion, and entries trimmed to the registry's tag limits."""

from __future__ import annotations

import json
from types import SimpleNamespace

from airflow_mlops.lineage.deployments import _dumps_within, actor_of, previous_serving_version


def test_previous_champion_is_the_last_version_that_served_before_the_current_one():
    history = [
        {"version": "1", "outcome": "succeeded"},
        {"version": "2", "outcome": "succeeded"},
        {"version": "3", "outcome": "failed"},
        {"version": "2", "outcome": "succeeded"},
    ]

    assert previous_serving_version(history, "2") == "1"
    assert previous_serving_version(history, "1") == "2"
    assert previous_serving_version(history[:1], "1") is None


def test_history_drops_the_oldest_entries_to_fit_the_tag_limit():
    entries = [{"version": str(i), "reason": "x" * 100} for i in range(100)]

    text = _dumps_within(entries, 5000)

    kept = json.loads(text)
    assert len(text) <= 5000
    assert kept[-1]["version"] == "99"
    assert kept[0]["version"] != "0"


def test_the_actor_is_the_triggering_user_else_the_dag():
    by_user = {"dag_run": SimpleNamespace(triggering_user_name="alice", dag_id="d", run_id="r")}
    scheduled = {"dag_run": SimpleNamespace(triggering_user_name=None, dag_id="nightly", run_id="r")}

    assert actor_of(by_user) == "alice"
    assert actor_of(scheduled) == "airflow:nightly"
    assert actor_of(None) == "airflow:unknown"
