"""Operator extra links: the MLflow UI (run and model version pages) and Great Expectations Data Docs."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, quote, unquote, urlsplit

from airflow.sdk import BaseOperatorLink

from airflow_mlops.utils.urls import without_credentials

if TYPE_CHECKING:
    from airflow.sdk import BaseOperator
    from airflow.sdk.types import TaskInstanceKey


# -- MLflow ------------------------------------------------------------------------------------------------


def _ui_base(tracking_uri: str | None) -> str | None:
    if tracking_uri and tracking_uri.startswith(("http://", "https://")):
        return without_credentials(tracking_uri).rstrip("/")  # a link is shown to everyone: no user-info
    return None


def run_url(tracking_uri: str | None, experiment_id: str, run_id: str) -> str:
    """MLflow UI page of a run, or "" when the tracking URI has no UI (e.g. a SQLite file)."""
    base = _ui_base(tracking_uri)
    return f"{base}/#/experiments/{experiment_id}/runs/{run_id}" if base else ""


def model_version_url(tracking_uri: str | None, model_name: str, version: str | int) -> str:
    """MLflow UI page of a registered model version, or "" when the tracking URI has no UI."""
    base = _ui_base(tracking_uri)
    return f"{base}/#/models/{quote(model_name, safe='')}/versions/{version}" if base else ""


class MLflowRunLink(BaseOperatorLink):
    """Link to the MLflow run the task created or used (``operator.mlflow_run_url``, set during execute)."""

    name = "MLflow run"

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        return getattr(operator, "mlflow_run_url", "") or ""


class MLflowModelVersionLink(BaseOperatorLink):
    """Link to the model version the task registered or acted on (``operator.mlflow_model_version_url``)."""

    name = "MLflow model version"

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        return getattr(operator, "mlflow_model_version_url", "") or ""


# -- Great Expectations Data Docs --------------------------------------------------------------------------


def data_docs_url(uri: str, base_url: str | None = None, root: str | None = None) -> str:
    """
    A browser URL for the Data Docs page stored at *uri*.

    A URI that already is a web page (``http(s)://``) is returned as it is. With *base_url* (a web server that
    serves the data root *root*), the page's path below *root* is appended to it. Otherwise a local page
    becomes a ``file://`` URL and an S3 page its AWS console page.
    """
    if uri.startswith(("http://", "https://")):
        return uri
    if base_url and root and uri.startswith(root.rstrip("/") + "/"):
        return base_url.rstrip("/") + "/" + quote(uri[len(root.rstrip("/")) + 1 :])
    if uri.startswith("s3://"):
        bucket, _, key = uri[len("s3://") :].partition("/")
        return f"https://s3.console.aws.amazon.com/s3/object/{quote(bucket)}?prefix={quote(key, safe='')}"
    if uri.startswith("file://"):
        return uri
    return "file://" + quote(uri)


class DataDocsLink(BaseOperatorLink):
    """Link to the Data Docs page of the validation (``operator.data_docs_url``, set during execute)."""

    name = "Data Docs"

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        return getattr(operator, "data_docs_url", "") or ""


# -- links a reviewer can open -----------------------------------------------------------------------------

_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif", ".svg", ".webp")
# Patterns as text: compiled (and cached by re) when first used, not while a DAG file is parsed.
_IMAGE = r"!\[(?P<text>[^\]]*)\]\((?P<url>[^)\s]*)\)"
_LINK = r"(?<!!)\[(?P<text>[^\]]*)\]\((?P<url>[^)\s]*)\)"


def browser_url(url: str | None) -> str:
    """*url* when a browser elsewhere can open it (``http(s)://``), else "" (``file://``, a worker's path)."""
    return url if isinstance(url, str) and url.startswith(("http://", "https://")) else ""


def _is_image(url: str) -> bool:
    parts = urlsplit(url)
    paths = [parts.path, *parse_qs(parts.query).get("path", [])]
    return any(unquote(path).lower().endswith(_IMAGE_SUFFIXES) for path in paths)


def http_links_only(markdown: str) -> str:
    """
    *markdown* with every link and image a reviewer's browser can open, and no other.

    An image that is not an ``http(s)`` picture (a CSV artifact, a ``file://`` plot) becomes its alt text; a
    link that is not ``http(s)`` (a Data Docs page on a worker's disk) becomes its text; a link left with no
    text is dropped.
    """

    def image(match: re.Match[str]) -> str:
        url = match["url"]
        return match[0] if browser_url(url) and _is_image(url) else match["text"]

    def link(match: re.Match[str]) -> str:
        if not match["text"].strip():
            return ""
        return match[0] if browser_url(match["url"]) else match["text"]

    return re.sub(_LINK, link, re.sub(_IMAGE, image, markdown))
