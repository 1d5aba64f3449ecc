"""
What the model operators share: a lazily built MLflow hook and the task's link to the model version.

Also the rule that a rendered argument found invalid is a
:class:`~airflow_mlops.exceptions.ConfigurationError`.
"""

from __future__ import annotations

from contextlib import contextmanager
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow_mlops.exceptions import ConfigurationError
from airflow_mlops.hooks.mlflow import MLflowHook
from airflow_mlops.links import MLflowModelVersionLink, model_version_url

if TYPE_CHECKING:
    from collections.abc import Collection, Iterator

    from airflow.sdk import BaseOperatorLink


@contextmanager
def rendered_arguments(**fields: Any) -> Iterator[None]:
    """
    Check rendered arguments: a ``ValueError`` raised inside becomes :class:`ConfigurationError`.

    The message stays the same; *fields* (``model=``, ``version=``...) go on the error. A
    ``ConfigurationError`` is itself a ``ValueError`` (not retryable), so callers that catch ``ValueError``
    still do.
    """
    try:
        yield
    except ConfigurationError:
        raise
    except ValueError as err:
        raise ConfigurationError(str(err), **fields) from err


class ModelOperatorMixin:
    """Shared lazily built hook and the link to the model version; operators set ``mlflow_conn_id``."""

    mlflow_conn_id: str
    operator_extra_links: Collection[BaseOperatorLink] = (MLflowModelVersionLink(),)

    @cached_property
    def hook(self) -> MLflowHook:
        """The MLflow hook of ``mlflow_conn_id``, built on first use (never in ``__init__``)."""
        return MLflowHook(mlflow_conn_id=self.mlflow_conn_id)

    def link_model_version(self, model_name: str, version: int | str) -> None:
        """Point the task's "MLflow model version" link at *version* of *model_name*."""
        self.mlflow_model_version_url = model_version_url(self.hook.tracking_uri, model_name, version)
