"""A data source of one's own, as docs/data.md ("Writing your own source") shows it: JSON lines over HTTP."""

from __future__ import annotations

import hashlib
import io
from typing import Any

from airflow_mlops.exceptions import DatasetConfigurationError, ServiceUnavailableError
from airflow_mlops.sources import DataSource, SourceContext, SourceReading


class JsonLinesSource(DataSource):
    """Rows served as JSON lines by an HTTP endpoint."""

    template_fields = ("url",)

    def __init__(self, url: str) -> None:
        self.url = url

    @property
    def uri(self) -> str:
        return self.url

    def open(self, ctx: SourceContext) -> SourceReading:
        import pandas as pd
        import requests

        response = requests.get(self.url, timeout=30)
        said = f"Dataset {ctx.dataset!r}: {self.url} answered {response.status_code}"
        if response.status_code >= 500:  # the server's fault: retried
            raise ServiceUnavailableError(said, dataset=ctx.dataset, uri=self.url)
        if response.status_code >= 400:  # a wrong URL: not retried
            raise DatasetConfigurationError(said, dataset=ctx.dataset, uri=self.url)
        body = response.content

        def read() -> Any:
            try:
                return pd.read_json(io.BytesIO(body), lines=True)
            except ValueError as err:
                ctx.fail(self.url, err, "not JSON lines: ")

        return SourceReading(
            sha256=hashlib.sha256(body).hexdigest(),
            sha256_of="bytes",
            format="jsonl",
            described={"source": self.url, "bytes": len(body)},
            read=read,
        )
