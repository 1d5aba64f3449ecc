"""
OpenLineage datasets and facets of what the operators did, built from their results.

The operators' ``get_openlineage_facets_on_complete`` methods call the builders here with the result their
``execute`` returned (kept on the operator, :func:`~airflow_mlops.utils.results.keep_result`); the
``apache-airflow-providers-openlineage`` provider (extra ``openlineage``) turns what they return into the
task's COMPLETE event. Nothing here imports OpenLineage at module level: DAG files import the operators.

Naming (the OpenLineage naming conventions):

- a file on S3: namespace ``s3://<bucket>``, name ``<key>`` (no leading ``/``);
- a local file: namespace ``file``, name its absolute path (as Airflow's own ``file://`` Assets map to
  OpenLineage, so the ingest's Asset and its datasets have the same name);
- a snapshot ``<uri>`` is the snapshot folder, ``<uri>#<split>`` its file ``<uri>/<split>.parquet``; both
  carry the snapshot id as their version facet;
- an MLflow model: namespace the tracking or registry URI without credentials, query or fragment; a
  registered version is ``models/<name>/<version>``, a logged model ``models/<model id>`` (from
  ``models:/<model id>``), a run's model ``runs/<run id>/<path>`` (from ``runs:/<run id>/<path>``);
- a serving endpoint: namespace ``<scheme>://<host>[:<port>]`` of its URL, name its path.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit, urlunsplit

from airflow_mlops import __version__
from airflow_mlops.data.snapshots import DATA, parse_snapshot_uri
from airflow_mlops.data.storage import has_glob, is_local, scheme, split_bucket

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, Sequence

    from airflow.providers.common.compat.openlineage.facet import Dataset, InputDataset, OutputDataset
    from airflow.providers.openlineage.extractors import OperatorLineage

__all__ = [
    "dataset_name",
    "deployment_lineage",
    "drift_lineage",
    "evaluation_lineage",
    "infra_validation_lineage",
    "ingest_lineage",
    "model_namespace",
    "model_version_facet",
    "model_version_name",
    "registration_lineage",
    "snapshot_location",
    "training_lineage",
    "validation_lineage",
]


# -- names -------------------------------------------------------------------------------------------------


def dataset_name(uri: str) -> tuple[str, str]:
    """
    The OpenLineage ``(namespace, name)`` of a storage location: an object-store URI, a ``file://`` URI or a path.

    An object-store URI's namespace is ``<scheme>://<bucket>``, without the Airflow connection it may name.
    """
    uri = uri.strip()
    if not is_local(uri):
        bucket, key = split_bucket(uri)
        return f"{scheme(uri)}://{bucket}", key.strip("/") or "/"
    if uri.startswith("file://"):
        parts = urlsplit(uri)
        return (f"file://{parts.netloc}" if parts.netloc else "file"), unquote(parts.path).rstrip("/") or "/"
    return "file", uri.rstrip("/") or "/"


def snapshot_location(uri: str) -> str:
    """Where a snapshot URI's rows are: the snapshot folder, or ``<folder>/<split>.parquet`` for ``#split``."""
    base, split = parse_snapshot_uri(uri)
    return f"{base}/{split}.parquet" if split else base


def model_namespace(uri: str) -> str:
    """The namespace of an MLflow tracking or registry URI: the URI without user-info, query and fragment."""
    parts = urlsplit(uri.strip())
    netloc = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", "")) or uri


def model_version_name(model_name: str, version: Any) -> str:
    """The dataset name of a registered model version: ``models/<name>/<version>``."""
    return f"models/{model_name}/{version}"


def _model_uri_name(model_uri: str) -> str:
    """``models:/<id>`` -> ``models/<id>``, ``runs:/<run>/<path>`` -> ``runs/<run>/<path>``; else as it is."""
    scheme, sep, rest = model_uri.partition(":/")
    if sep and scheme in ("models", "runs"):
        return f"{scheme}/{rest.strip('/')}"
    return model_uri


# -- facets ------------------------------------------------------------------------------------------------


def _schema_facet(schema: Mapping[str, Any]) -> Any:
    from airflow.providers.common.compat.openlineage.facet import SchemaDatasetFacet, SchemaDatasetFacetFields

    return SchemaDatasetFacet(
        fields=[SchemaDatasetFacetFields(name=str(column), type=str(kind)) for column, kind in schema.items()]
    )


def _version_facet(version: str) -> Any:
    from openlineage.client.facet_v2 import dataset_version_dataset

    return dataset_version_dataset.DatasetVersionDatasetFacet(datasetVersion=str(version))


def _assertions_facet(assertions: list[Any]) -> Any:
    from openlineage.client.facet_v2 import data_quality_assertions_dataset

    return data_quality_assertions_dataset.DataQualityAssertionsDatasetFacet(assertions=assertions)


def _assertion(assertion: str, success: bool, column: str | None = None, **fields: Any) -> Any:
    from openlineage.client.facet_v2 import data_quality_assertions_dataset

    return data_quality_assertions_dataset.Assertion(
        assertion=assertion, success=bool(success), column=column, **fields
    )


def _snapshot_facets(uri: str, snapshot_id: str | None, schema: Mapping[str, Any] | None) -> dict[str, Any]:
    facets: dict[str, Any] = {}
    if schema:
        facets["schema"] = _schema_facet(schema)
    if snapshot_id:
        facets["version"] = _version_facet(snapshot_id)
    return facets


def _input(uri: str, facets: dict[str, Any] | None = None, input_facets: dict[str, Any] | None = None) -> Any:
    from airflow.providers.common.compat.openlineage.facet import InputDataset

    namespace, name = dataset_name(uri)
    return InputDataset(namespace=namespace, name=name, facets=facets or {}, inputFacets=input_facets or {})


def _snapshot_input(uri: str, input_facets: dict[str, Any] | None = None, **known: Any) -> InputDataset:
    """An input dataset for a snapshot URI (``#split`` selects its file), with what is known of it."""
    return _input(
        snapshot_location(uri),
        _snapshot_facets(uri, known.get("snapshot_id"), known.get("schema")),
        input_facets,
    )


def _model_dataset(
    namespace: str, name: str, output: bool = False, input_facets: dict[str, Any] | None = None
) -> Dataset:
    from airflow.providers.common.compat.openlineage.facet import InputDataset, OutputDataset

    if output:
        return OutputDataset(namespace=namespace, name=name)
    return InputDataset(namespace=namespace, name=name, inputFacets=input_facets or {})


def _lineage(
    inputs: Iterable[Any] = (), outputs: Iterable[Any] = (), job_facets: dict[str, Any] | None = None
) -> OperatorLineage:
    from airflow.providers.openlineage.extractors import OperatorLineage

    return OperatorLineage(inputs=list(inputs), outputs=list(outputs), job_facets=job_facets or {})


#: ``_producer`` of the package's own facets (the OpenLineage spec asks for a URI naming the producing code).
FACET_PRODUCER = f"https://github.com/airflow-mlops/airflow-mlops/tree/{__version__}"
#: Key of :func:`model_version_facet` in a dataset's facets.
MODEL_VERSION_FACET = "mlopsModelVersion"
#: ``_schemaURL`` of :func:`model_version_facet`: the JSON schema kept with the docs.
MODEL_VERSION_FACET_SCHEMA = (
    "https://raw.githubusercontent.com/airflow-mlops/airflow-mlops/main/docs/openlineage/"
    "MLOpsModelVersionDatasetFacet.json#/$defs/MLOpsModelVersionDatasetFacet"
)


@functools.cache
def _model_version_facet_class() -> type:
    import attr
    from openlineage.client.facet_v2 import DatasetFacet

    @attr.define
    class MLOpsModelVersionDatasetFacet(DatasetFacet):
        """Where a registered model version came from (a custom facet, ahead of the spec's ML facets)."""

        modelName: str  # noqa: N815 - OpenLineage facet fields are camelCase
        version: str
        codeVersion: str | None = None  # noqa: N815
        imageDigest: str | None = None  # noqa: N815
        trainingRun: str | None = None  # noqa: N815
        trainingData: dict[str, Any] | None = None  # noqa: N815
        hyperParameters: dict[str, Any] = attr.field(factory=dict)  # noqa: N815
        metrics: dict[str, Any] = attr.field(factory=dict)

        @staticmethod
        def _get_schema() -> str:
            return MODEL_VERSION_FACET_SCHEMA

    return MLOpsModelVersionDatasetFacet


def model_version_facet(provenance: Mapping[str, Any]) -> Any:
    """
    The ``mlopsModelVersion`` dataset facet of a model version: where it came from.

    Built from :func:`~airflow_mlops.provenance.version_provenance`: its code version (and ``image_digest``, the
    image a Kubernetes training pod ran, when the provenance has it), training run, training data
    (snapshot, sha256, rows and the original source: connection and query, or objects with their ETags),
    hyper-parameters and the training run's metrics, with ``_producer`` and ``_schemaURL``.
    """
    data = provenance.get("data") or None
    return _model_version_facet_class()(
        modelName=str(provenance["model_name"]),
        version=str(provenance["version"]),
        codeVersion=provenance.get("code_version"),
        imageDigest=provenance.get("image_digest"),
        trainingRun=provenance.get("run_id"),
        trainingData=dict(data) if data else None,
        hyperParameters=dict(provenance.get("params") or {}),
        metrics=dict(provenance.get("metrics") or {}),
        producer=FACET_PRODUCER,
    )


# -- per operator ------------------------------------------------------------------------------------------


def ingest_lineage(manifest: Mapping[str, Any] | None) -> OperatorLineage:
    """
    The source read and the snapshot written by an ingest, from the snapshot's manifest.

    Outputs: the snapshot folder (schema, row count, bytes) and one dataset per split file (schema, row
    count), each with the snapshot id as version. Input: the one source file, or the source directory,
    prefix or glob folder; a SQL source gives the query as the job's ``sql`` facet instead.
    """
    from airflow.providers.common.compat.openlineage.facet import (
        OutputDataset,
        OutputStatisticsOutputDatasetFacet,
        SQLJobFacet,
    )

    if not manifest:
        return _lineage()
    uri, snapshot_id, schema = manifest["uri"], manifest.get("snapshot_id"), manifest.get("schema") or {}
    files = manifest.get("files") or {DATA: f"{DATA}.parquet"}
    split_rows = (manifest.get("split") or {}).get("rows") or {}
    outputs: list[OutputDataset] = []
    for key in files:
        rows = manifest.get("rows") if key == DATA else split_rows.get(key)
        location = uri if key == DATA else f"{uri.rstrip('/')}/{files[key]}"
        namespace, name = dataset_name(location)
        statistics = OutputStatisticsOutputDatasetFacet(
            rowCount=int(rows) if rows is not None else None,
            size=int(manifest["bytes"]) if key == DATA and manifest.get("bytes") is not None else None,
        )
        outputs.append(
            OutputDataset(
                namespace=namespace,
                name=name,
                facets=_snapshot_facets(location, snapshot_id, schema),
                outputFacets={"outputStatistics": statistics},
            )
        )
    job_facets: dict[str, Any] = {}
    inputs = []
    if manifest.get("format") == "sql":
        if manifest.get("query"):
            job_facets["sql"] = SQLJobFacet(query=str(manifest["query"]))
    else:
        source_files = manifest.get("source_files") or []
        if len(source_files) == 1:
            inputs.append(_input(source_files[0]["uri"]))
        elif manifest.get("source"):
            inputs.append(_input(_static_prefix(str(manifest["source"]))))
    return _lineage(inputs, outputs, job_facets)


def _static_prefix(source: str) -> str:
    """A source without its glob part: ``s3://b/raw/*.csv`` -> ``s3://b/raw``."""
    if not has_glob(source):
        return source
    kept = []
    for part in source.split("/"):
        if has_glob(part):
            break
        kept.append(part)
    return "/".join(kept)


def validation_lineage(
    summary: Mapping[str, Any] | None, expectations: Sequence[Mapping[str, Any]] | None = None
) -> OperatorLineage:
    """
    The snapshot a validation read, with its results as a data-quality assertions facet.

    One assertion per expectation when they are known (declared in the DAG), else one per failed
    expectation; each names the expectation type, its column and severity, and whether it held.
    """
    if not summary or not summary.get("dataset") or str(summary["dataset"]).startswith("sql://"):
        return _lineage()  # a table or query: no OpenLineage name for it without the database's own
    failed = list(summary.get("failed") or [])
    assertions = []
    if expectations:
        unmatched = list(failed)
        for expectation in expectations:
            kwargs = expectation.get("kwargs") or {}
            column = kwargs.get("column")
            failure = next(
                (
                    f
                    for f in unmatched
                    if f["expectation"] == expectation.get("type") and f["column"] == column
                ),
                None,
            )
            if failure is not None:
                unmatched.remove(failure)
            assertions.append(
                _assertion(
                    str(expectation.get("type")),
                    failure is None,
                    column,
                    severity=str(expectation.get("severity") or "critical"),
                )  # fmt: skip
            )
    else:
        assertions = [
            _assertion(f["expectation"], False, f.get("column"), severity=f.get("severity")) for f in failed
        ]
    input_facets: dict[str, Any] = {"dataQualityAssertions": _assertions_facet(assertions)}
    if summary.get("rows") is not None:
        from openlineage.client.facet_v2 import data_quality_metrics_input_dataset

        input_facets["dataQualityMetrics"] = (
            data_quality_metrics_input_dataset.DataQualityMetricsInputDatasetFacet(
                rowCount=int(summary["rows"]), columnMetrics={}
            )
        )
    dataset = _snapshot_input(str(summary["dataset"]), input_facets, snapshot_id=summary.get("snapshot_id"))
    return _lineage([dataset])


def drift_lineage(summary: Mapping[str, Any] | None) -> OperatorLineage:
    """
    The snapshot a drift check compared and its reference (inputs) and the report it wrote (output).

    The current snapshot carries one assertion per feature and metric limit (``<metric> <= <limit>``) and
    one per missing or added column, as data-quality assertions.
    """
    from airflow.providers.common.compat.openlineage.facet import OutputDataset

    if not summary or not summary.get("dataset"):
        return _lineage()
    assertions = []
    for feature, detail in sorted((summary.get("features") or {}).items()):
        exceeded = set(detail.get("exceeded") or [])
        for metric, limit in sorted((detail.get("thresholds") or {}).items()):
            value = (detail.get("metrics") or {}).get(metric)
            assertions.append(
                _assertion(
                    f"drift {metric} <= {limit}",
                    metric not in exceeded,
                    feature,
                    actual=None if value is None else str(value),
                    expected=str(limit),
                )  # fmt: skip
            )
    for column in summary.get("missing_features") or []:
        assertions.append(_assertion("column present", False, column))
    for column in summary.get("added_features") or []:
        assertions.append(_assertion("column known to the reference", False, column))
    # A table or query (sql://<conn>/...) has no OpenLineage name without the database's own: left out, as
    # in validation_lineage, rather than named as a file.
    inputs = []
    if not str(summary["dataset"]).startswith("sql://"):
        inputs.append(
            _snapshot_input(str(summary["dataset"]), {"dataQualityAssertions": _assertions_facet(assertions)})
        )
    if summary.get("reference") and not str(summary["reference"]).startswith("sql://"):
        inputs.append(_snapshot_input(str(summary["reference"])))
    outputs = []
    if summary.get("report"):
        namespace, name = dataset_name(str(summary["report"]))
        outputs.append(OutputDataset(namespace=namespace, name=name))
    return _lineage(inputs, outputs)


def training_lineage(
    result: Mapping[str, Any] | None, tracking_uri: str, data: Iterable[str | None]
) -> OperatorLineage:
    """The snapshots a training read (inputs) and the model it logged (output, in the tracking server)."""
    inputs = [_snapshot_input(uri) for uri in data if isinstance(uri, str) and uri.strip()]
    outputs = []
    if result and result.get("model_uri"):
        outputs.append(
            _model_dataset(model_namespace(tracking_uri), _model_uri_name(result["model_uri"]), True)
        )
    return _lineage(inputs, outputs)


def registration_lineage(
    result: Mapping[str, Any] | None,
    tracking_uri: str,
    registry_uri: str,
    provenance: Mapping[str, Any] | None = None,
) -> OperatorLineage:
    """
    The logged model registered (input) and the model version created or reused (output, in the registry).

    With *provenance* (:func:`~airflow_mlops.provenance.version_provenance` of that version) the version
    carries the :func:`model_version_facet`.
    """
    from airflow.providers.common.compat.openlineage.facet import OutputDataset

    if not result:
        return _lineage()
    inputs = []
    if result.get("source_uri"):
        inputs.append(_model_dataset(model_namespace(tracking_uri), _model_uri_name(result["source_uri"])))
    facets = {MODEL_VERSION_FACET: model_version_facet(provenance)} if provenance else {}
    version = OutputDataset(
        namespace=model_namespace(registry_uri),
        name=model_version_name(result["model_name"], result["version"]),
        facets=facets,
    )
    return _lineage(inputs, [version])


def evaluation_lineage(
    result: Mapping[str, Any] | None, registry_uri: str, holdout_uri: str | None
) -> OperatorLineage:
    """
    The holdout rows and the model versions an evaluation compared (inputs).

    The candidate carries the gate's checks (one assertion per gated metric) as data-quality assertions.
    """
    if not result:
        return _lineage()
    inputs: list[Dataset] = []
    if holdout_uri:
        inputs.append(_snapshot_input(holdout_uri))
    namespace = model_namespace(registry_uri)
    name = result.get("model_name")
    if name and result.get("candidate_version") is not None:
        assertions = [
            _assertion(
                f"gate {metric}",
                bool(detail.get("passed")),
                None,
                actual=None if detail.get("candidate") is None else str(detail["candidate"]),
            )  # fmt: skip
            for metric, detail in sorted((result.get("metrics") or {}).items())
            if isinstance(detail, dict) and detail.get("passed") is not None
        ]
        inputs.append(
            _model_dataset(
                namespace,
                model_version_name(name, result["candidate_version"]),
                input_facets={"dataQualityAssertions": _assertions_facet(assertions)},
            )  # fmt: skip
        )
    if name and result.get("champion_version") is not None:
        inputs.append(_model_dataset(namespace, model_version_name(name, result["champion_version"])))
    return _lineage(inputs)


def infra_validation_lineage(
    result: Mapping[str, Any] | None, registry_uri: str, sample_uri: str | None
) -> OperatorLineage:
    """The model version an infra validation served in a sandbox and the rows it sent (inputs)."""
    if not result:
        return _lineage()
    inputs = [
        _model_dataset(
            model_namespace(registry_uri), model_version_name(result["model_name"], result["version"])
        )
    ]
    if sample_uri:
        inputs.append(_snapshot_input(sample_uri))
    return _lineage(inputs)


def deployment_lineage(result: Mapping[str, Any] | None, registry_uri: str) -> OperatorLineage:
    """The model version a deployment put in service (input) and the endpoint that serves it (output)."""
    from airflow.providers.common.compat.openlineage.facet import OutputDataset

    if not result or result.get("version") is None:
        return _lineage()
    inputs = [
        _model_dataset(
            model_namespace(registry_uri), model_version_name(result["model_name"], result["version"])
        )
    ]
    outputs = []
    endpoint = str(result.get("endpoint") or "")
    parts = urlsplit(endpoint)
    if parts.scheme and parts.netloc:
        netloc = parts.netloc.rpartition("@")[2]
        outputs.append(OutputDataset(namespace=f"{parts.scheme}://{netloc}", name=parts.path or "/"))
    return _lineage(inputs, outputs)
