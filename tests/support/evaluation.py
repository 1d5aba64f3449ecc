"""
Evaluation specs for the tests: a slice check and the ways a slice spec is refused, good thresholds, and an
EvaluateModelOperator built from them.
"""

from __future__ import annotations

from airflow_mlops.operators.evaluation import EvaluateModelOperator

SLICES = {"column": "region", "metrics": {"accuracy_score": {"max_regression": 0.05}}, "min_rows": 30}

#: A slice spec refused, with what the error says.
BAD_SLICES = [
    ({**SLICES, "column": ""}, "must be the name of a holdout column"),
    ({**SLICES, "min_rows": 0}, "min_rows'] must be a whole number >= 1"),
    ({**SLICES, "min_rows": 2.5}, "min_rows'] must be a whole number >= 1"),
    ({**SLICES, "metrics": {}}, "must be a non-empty dict"),
    (
        {**SLICES, "metrics": {"roc_auc": {"max_regression": 0.1}}},
        "allowed: accuracy_score, precision_score",
    ),
    ({**SLICES, "metrics": {"accuracy_score": {"max_regression": -1}}}, "must be a number >= 0"),
    (
        {**SLICES, "metrics": {"accuracy_score": {"threshold": 0.7}}},
        "must be {'max_regression': number >= 0}",
    ),
    ({**SLICES, "segments": ["north"]}, "unknown keys ['segments']"),
    ([SLICES, "region"], "slices[1] must be a dict"),
    ("{region", "slices is a string but not valid JSON"),
]

GOOD = {"accuracy_score": {"threshold": 0.7, "min_absolute_change": 0.0}}


def evaluate(**overrides) -> EvaluateModelOperator:
    """An EvaluateModelOperator with good arguments, *overrides* replacing some."""
    kwargs = {
        "task_id": "evaluate",
        "model_name": "churn",
        "candidate_version": "3",
        "holdout_data": "s3://bucket/datasets/churn/abc#holdout",
        "thresholds": GOOD,
    }
    kwargs.update(overrides)
    return EvaluateModelOperator(**kwargs)
