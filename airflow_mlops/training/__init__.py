"""
Where and how a trainer runs, apart from the operator that asks for it.

- :mod:`.spec`: :class:`~.spec.TrainingSpec`, what a runtime is asked to run, and entrypoint parsing;
- :mod:`.base`: the :class:`~.base.TrainingRuntime` interface and the callbacks a runtime gets;
- :mod:`.local`: :class:`~.local.LocalRuntime`, a child process of the worker;
- :mod:`.kubernetes`: :class:`~.kubernetes.runtime.KubernetesRuntime`, a pod or an Indexed Job;
- :mod:`.selection`: choosing a runtime by name or from the environment.

:class:`~airflow_mlops.operators.training.TrainModelOperator` builds the spec; runtimes never see the
operator, so imports go one way: operator -> runtimes.
"""
