"""
Log a trained model to the run with its input signature, whatever the model family.

:func:`log_model` takes a fitted scikit-learn estimator or pipeline (linear models, tree ensembles, gradient
boosting, ...) or a PyTorch ``nn.Module`` and logs it with the columns it was trained on as its MLflow
signature. That signature is the column contract: evaluation, infra validation, the smoke test and the
canary send the model exactly these columns (:func:`input_columns`), nothing else::

    from airflow_mlops.trainer.models import log_model

    with mlflow.start_run(run_id=ctx.run_id):
        info = log_model(model, X_train)  # X_train: the feature columns the model was fitted on

scikit-learn models are saved in MLflow's default safe format (skops). skops refuses to load a type it does
not trust, and tree models hold ``sklearn.tree._tree.Tree``; :func:`log_model` records the types of the model
just saved as trusted, so loading it later needs no list of them.

This module imports neither Airflow nor any heavy library at import time.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd
    from mlflow.models.model import ModelInfo

#: Output types of a signature that mean the model predicts labels (classifier) rather than numbers.
_LABEL_TYPES = {"string", "boolean", "integer", "long", "binary"}


def import_skops_quietly() -> None:
    """
    Import ``skops.io`` (when installed) with Airflow's deprecated-import warnings off.

    Call it before MLflow loads a model that may be saved with skops. On import, skops looks up every scipy ufunc in every loaded module. In an Airflow task process (3,000+
    modules) each lookup on one of Airflow's deprecation shims warns: 1,000+ warnings, each a line of the task's
    log, and 20 seconds instead of 8 on a 2-core machine. Once imported, skops does not search again.
    """
    import sys
    import warnings

    if "skops.io" in sys.modules:
        return
    # Only a process that loaded Airflow has its shims; this never imports Airflow itself.
    shims = sys.modules.get("airflow.utils.deprecation_tools")
    with warnings.catch_warnings():
        if shims is not None:
            warnings.simplefilter("ignore", shims.DeprecatedImportWarning)
        try:
            import skops.io  # noqa: F401
        except ImportError:  # no skops, no skops models
            return


def sklearn_trusted_types(model: Any) -> list[str]:
    """
    The types skops would refuse to load from *model*'s own serialization (e.g. ``sklearn.tree._tree.Tree``).

    Trusting them is safe for a model this process just fitted; a model file from elsewhere is another matter.
    """
    import skops.io

    return sorted(skops.io.get_untrusted_types(data=skops.io.dumps(model)))


def log_model(
    model: Any,
    features: pd.DataFrame,
    *,
    name: str = "model",
    predictions: Any = None,
    **kwargs: Any,
) -> ModelInfo:
    """
    Log *model* to the active MLflow run with the signature of *features*; return MLflow's ``ModelInfo``.

    :param model: A fitted scikit-learn estimator or pipeline, or a PyTorch ``nn.Module`` (logged with
        ``mlflow.pytorch``; MLflow feeds it the columns as one float32 tensor and returns its raw output).
    :param features: The feature columns the model was trained on (a few rows are enough): they become the
        signature's inputs and the input example. Only these columns are sent to the model later.
    :param name: Name of the model in the run.
    :param predictions: The model's output for *features* (for the signature's outputs); computed with
        ``model.predict`` for scikit-learn models when not given.
    :param kwargs: Passed on to ``mlflow.sklearn.log_model`` / ``mlflow.pytorch.log_model``.
    """
    import mlflow
    from mlflow.models import infer_signature

    example = features.head(5)
    if _is_torch_module(model):
        import mlflow.pytorch
        import numpy as np

        if predictions is None:
            import torch

            with torch.no_grad():
                predictions = model(torch.as_tensor(example.to_numpy(dtype=np.float32))).numpy()
        # "pickle": the pyfunc takes a DataFrame of these columns and feeds it as float32 (the traced "pt2"
        # format takes tensors only); the signature keeps the table's own (float64) types, as JSON sends them.
        kwargs.setdefault("serialization_format", "pickle")
        signature = infer_signature(example, predictions)
        return mlflow.pytorch.log_model(
            model, name=name, signature=signature, input_example=example, **kwargs
        )
    if not hasattr(model, "predict"):
        raise TypeError(
            f"log_model takes a fitted scikit-learn estimator or a torch.nn.Module, got {type(model).__name__}"
        )
    import mlflow.sklearn

    if predictions is None:
        predictions = model.predict(example)
    signature = infer_signature(example, predictions)
    kwargs.setdefault("serialization_format", mlflow.sklearn.SERIALIZATION_FORMAT_SKOPS)
    if kwargs["serialization_format"] == mlflow.sklearn.SERIALIZATION_FORMAT_SKOPS:
        kwargs.setdefault("skops_trusted_types", sklearn_trusted_types(model))
        kwargs.setdefault("pip_requirements", mlflow.sklearn.get_default_pip_requirements(include_skops=True))
    return mlflow.sklearn.log_model(model, name=name, signature=signature, input_example=example, **kwargs)


def _is_torch_module(model: Any) -> bool:
    return any(
        cls.__module__.startswith("torch.nn") and cls.__name__ == "Module" for cls in type(model).__mro__
    )


def input_columns(model_uri: str) -> list[str] | None:
    """
    The input columns of the model at *model_uri*, in signature order; None if it has no named columns.

    Reads only the model's ``MLmodel`` file (the tracking and registry URIs must be set for ``models:/``).
    """
    from mlflow.models import get_model_info

    signature = get_model_info(model_uri).signature
    if signature is None or signature.inputs is None or not signature.inputs.has_input_names():
        return None
    return list(signature.inputs.input_names())


def signature_model_type(model_uri: str) -> str | None:
    """
    ``"classifier"`` when the model's signature says it outputs labels, ``"regressor"`` for floats, else None.

    Integer outputs are taken for class labels.
    """
    from mlflow.models import get_model_info

    signature = get_model_info(model_uri).signature
    outputs = getattr(signature, "outputs", None)
    if outputs is None:
        return None
    kinds = set()
    for spec in outputs.inputs:
        kind = spec.type
        if hasattr(kind, "kind"):  # a tensor spec: a numpy dtype
            kinds.add("double" if kind.kind == "f" else "integer" if kind.kind in "iub" else kind.kind)
        else:
            kinds.add(getattr(kind, "name", str(kind)))
    if len(kinds) != 1:
        return None
    kind = kinds.pop()
    if kind in ("double", "float"):
        return "regressor"
    return "classifier" if kind in _LABEL_TYPES else None
