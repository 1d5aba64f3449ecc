"""Waiting for Kueue to admit a queued training workload (pod, Indexed Job or TrainJob) as a whole."""

from __future__ import annotations

from typing import Any


def defer_for_admission(engine: Any, what: str, kind: str, name: str, namespace: str) -> dict[str, Any]:
    """
    Say the workload is queued and, when deferrable, defer until Kueue admits it; return the resume state.

    The wait is not counted against the training timeout; ``admission_timeout`` bounds it instead. Without
    deferral the caller polls in the worker with the returned state.

    :param engine: The training engine (``PodTraining``, ``JobTraining`` or ``TrainJobTraining``).
    :param what: How the log names the workload ("Training pod", "Job", "TrainJob").
    :param kind: The Kubernetes kind the trigger reads (``Pod``, ``Job``, ``TrainJob``).
    :param name: The workload's name.
    :param namespace: Its namespace.
    """
    runtime = engine.runtime
    engine.callbacks.log.info(
        "%s %s/%s is queued on Kueue LocalQueue %r%s; waiting up to %d s for admission (not counted "
        "against the training timeout)",
        what, namespace, name, runtime.queue_name,
        f" (priority class {runtime.queue_priority_class})" if runtime.queue_priority_class else "",
        runtime.admission_timeout,
    )  # fmt: skip
    state = {"mode": kind.lower(), "phase": "admission", "name": name, "namespace": namespace}
    if runtime.deferrable:
        from airflow_mlops.triggers.training import KueueAdmissionTrigger

        engine.callbacks.defer(
            trigger=KueueAdmissionTrigger(
                kind=kind, name=name, namespace=namespace, queue_name=str(runtime.queue_name),
                timeout=runtime.admission_timeout, connection=runtime.connection.to_dict(),
                poll_interval=runtime.poll_interval,
            ),
            spec=engine.spec,
            state=state,
        )  # fmt: skip
    return state
