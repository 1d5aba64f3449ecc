"""
What an evaluation decides, as plain Python: no Airflow import, and no heavy library at module level.

- :mod:`~airflow_mlops.evaluation.thresholds`: the metrics per model type and the threshold spec.
- :mod:`~airflow_mlops.evaluation.gate`: one metric through the gate, and the decision with its reason.
- :mod:`~airflow_mlops.evaluation.slices`: the slice spec and the per-segment comparison.
- :mod:`~airflow_mlops.evaluation.report`: the Markdown report, the summaries and the champion history plot.

:class:`~airflow_mlops.operators.evaluation.EvaluateModelOperator` runs them on MLflow's evaluation results.
"""
