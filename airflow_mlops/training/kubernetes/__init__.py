"""
The Kubernetes training runtime, split by concern.

- :mod:`.config`: the small named parts a runtime is built from (:class:`~.config.Resources`,
  :class:`~.config.Gpus`, :class:`~.config.Scheduling`; the cluster is a
  :class:`~airflow_mlops.utils.k8s.KubernetesConnection`);
- :mod:`.settings`: :class:`~.settings.KubernetesSettings`, every setting of a runtime and its validation;
- :mod:`.runtime`: :class:`~.runtime.KubernetesRuntime`, those settings plus starting, resuming and stopping;
- :mod:`.manifests`: the Pod, Job and Service manifests, as plain dicts;
- :mod:`.failures`: why a training pod failed, as one line and an exception type;
- :mod:`.pod`: one pod through cncf-kubernetes' ``KubernetesPodOperator``;
- :mod:`.job`: an Indexed Job of pods with a headless Service, for multi-node training.

Only :mod:`.pod` and :mod:`.job` import the kubernetes client and the cncf-kubernetes provider; they are
imported when a task runs, never when a DAG file is parsed. Imports go one way: runtime -> pod / job ->
manifests, failures -> settings -> config.
"""
