"""Operator extra link to the Great Expectations Data Docs page a validation task wrote."""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import quote

from airflow.sdk import BaseOperatorLink

if TYPE_CHECKING:
    from airflow.models.taskinstancekey import TaskInstanceKey
    from airflow.sdk import BaseOperator


def data_docs_url(uri: str, base_url: str | None = None, root: str | None = None) -> str:
    """
    A browser URL for the Data Docs page stored at *uri*.

    With *base_url* (a web server that serves the data root *root*), the page's path below *root* is
    appended to it. Otherwise a local page becomes a ``file://`` URL and an S3 page its AWS console page.
    """
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
