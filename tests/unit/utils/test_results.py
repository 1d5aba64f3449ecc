"""
Every result an operator returns is JSON-safe: NaN and infinities become null, numpy and pandas values plain
Python, in one place (``keep_result``), and every operator's execute (and resume method) goes through it.
"""

from __future__ import annotations

import importlib
import inspect
import json
import math
import pkgutil
from datetime import UTC, datetime, timedelta

import pytest
from airflow.sdk import BaseOperator

import airflow_mlops.operators
import airflow_mlops.sensors
from airflow_mlops.utils.results import KEEPS_RESULT, json_safe, keep_result, kept_result


def test_nan_inf_and_numpy_values_become_strict_json():
    import numpy as np
    import pandas as pd

    value = {
        "unexpected_examples": [float("nan"), 1.5, None],
        "psi": np.float64("inf"),
        "ks": -math.inf,
        "rows": np.int64(3),
        "ok": np.bool_(True),
        "values": np.array([1.0, np.nan]),
        "series": pd.Series([1, None], dtype="Int64"),
        "pair": (np.float32(0.5), "x"),
        "nested": {1: {"deep": [np.nan, {"inf": float("-inf")}]}},
        "at": datetime(2026, 12, 5, 10, tzinfo=UTC),
        "took": timedelta(seconds=90),
        "missing": pd.NA,
        "not_a_time": pd.NaT,
    }

    safe = json_safe(value)

    text = json.dumps(safe, allow_nan=False)  # what Airflow's XCom serialiser requires
    assert json.loads(text) == {
        "unexpected_examples": [None, 1.5, None],
        "psi": None,
        "ks": None,
        "rows": 3,
        "ok": True,
        "values": [1.0, None],
        "series": [1, None],
        "pair": [0.5, "x"],
        "nested": {"1": {"deep": [None, {"inf": None}]}},
        "at": "2026-12-05T10:00:00+00:00",
        "took": 90.0,
        "missing": None,
        "not_a_time": None,
    }
    assert type(safe["rows"]) is int
    assert type(safe["ok"]) is bool


def test_the_decorator_returns_and_keeps_the_safe_result():
    class Op:
        @keep_result
        def execute(self, context):
            return {"score": float("nan"), "n": 2}

    op = Op()

    assert op.execute({}) == {"score": None, "n": 2}
    assert kept_result(op) == {"score": None, "n": 2}


def _operator_classes() -> list[type]:
    found: dict[str, type] = {}
    for package in (airflow_mlops.operators, airflow_mlops.sensors):
        for info in pkgutil.iter_modules(package.__path__):
            module = importlib.import_module(f"{package.__name__}.{info.name}")
            for _, cls in inspect.getmembers(module, inspect.isclass):
                if (
                    issubclass(cls, BaseOperator)
                    and cls.__module__.startswith("airflow_mlops.")
                    and not cls.__name__.startswith("_")
                ):
                    found[cls.__name__] = cls
    return [found[name] for name in sorted(found)]


@pytest.mark.parametrize("cls", [pytest.param(cls, id=cls.__name__) for cls in _operator_classes()])
def test_every_operator_returns_its_result_through_keep_result(cls):
    # execute and every method Airflow resumes a deferred task with (execute_complete, execute_adopted, ...)
    # that the package defines: a NaN in any of their results would make Airflow refuse the XCom.
    methods = {
        name: getattr(cls, name)
        for name in dir(cls)
        if name.startswith("execute")
        and callable(getattr(cls, name))
        and getattr(getattr(cls, name), "__module__", "").startswith("airflow_mlops.")
    }

    assert "execute" in methods, f"{cls.__name__}.execute is not the package's own"
    undecorated = sorted(name for name, method in methods.items() if not getattr(method, KEEPS_RESULT, False))
    assert undecorated == [], f"{cls.__name__}: {undecorated} do not return through keep_result"
