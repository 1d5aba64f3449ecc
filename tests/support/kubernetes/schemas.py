"""
What the stand-ins check of an object, as the API server does.

- Built-in kinds (Pod, Job, Service): :func:`validate_object` against the official Kubernetes JSON schemas of 1.30
  and the newest version ``kubernetes-validate`` ships (strict: unknown fields are errors), plus object names and
  label keys/values (:func:`check_metadata`).
- Custom resources: :func:`load_crd_schema` reads any CRD copied into tests/data; :func:`spec_validator` gives a
  strict validator of one part of it (default the InferenceService ``spec``); :func:`trainjob_validators` the
  Kubeflow Trainer TrainJob's ``spec`` and ``status`` validators.
- :func:`apply_merge_patch`: an RFC 7386 JSON merge patch, as the API server applies ``merge-patch+json``.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

CRD_DIR = Path(__file__).parents[2] / "data" / "k8s-crds"
CRD_FILE = CRD_DIR / "kserve.serving.kserve.io_inferenceservices.yaml"
TRAINJOB_CRD_FILE = CRD_DIR / "kubeflow-trainer.trainer.kubeflow.org_trainjobs.yaml"
SCHEMA_VERSIONS = ("1.30.0", None)  # None: the newest version kubernetes-validate ships
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_LABEL_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


# -- custom resources: CRD schemas -------------------------------------------------------------------------------


def load_crd_schema(path: Path = CRD_FILE, version: str = "v1beta1") -> dict[str, Any]:
    """
    The ``openAPIV3Schema`` of *version* of a CRD copied into tests/data.

    Default the v1beta1 InferenceService; ``load_crd_schema(TRAINJOB_CRD_FILE, "v1alpha1")`` is the TrainJob.
    """
    import yaml

    with open(path) as fh:
        crd = yaml.load(fh, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    (served,) = [v for v in crd["spec"]["versions"] if v["name"] == version]
    return served["schema"]["openAPIV3Schema"]


def strict(schema: Any) -> Any:
    """
    The schema with ``additionalProperties: false`` wherever it lists properties and keeps no unknown fields.

    The API server silently prunes unknown fields; tests want to hear about a misspelt one.
    """
    if isinstance(schema, list):
        return [strict(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out = {key: strict(value) for key, value in schema.items()}
    if (
        "properties" in out
        and "additionalProperties" not in out
        and not out.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


def spec_validator(schema: dict[str, Any] | None = None, part: str = "spec"):
    """A jsonschema validator of a custom resource's *part* (default an InferenceService ``spec``; strict)."""
    import jsonschema

    schema = schema or load_crd_schema()
    return jsonschema.Draft7Validator(strict(schema["properties"][part]))


def trainjob_validators() -> tuple[Any, Any]:
    """Validators of a TrainJob's ``spec`` and ``status``, from the Kubeflow Trainer CRD (strict)."""
    schema = load_crd_schema(TRAINJOB_CRD_FILE, "v1alpha1")
    return spec_validator(schema), spec_validator(schema, "status")


def apply_merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = apply_merge_patch(result.get(key), value)
    return result


# -- built-in kinds: the official schemas and the API server's name rules ---------------------------------------


def latest_schema_version() -> str:
    import kubernetes_validate

    return kubernetes_validate.latest_version()


def schema_versions() -> list[str]:
    return [version or latest_schema_version() for version in SCHEMA_VERSIONS]


def validate_object(obj: dict[str, Any]) -> list[str]:
    """Errors of *obj* against the Kubernetes schemas (1.30 and newest, strict) and API-server name rules."""
    import kubernetes_validate

    errors: list[str] = []
    for version in schema_versions():
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as err:
            path = "/".join(map(str, getattr(err, "path", None) or []))
            errors.append(
                f"{obj.get('kind')} invalid for Kubernetes {version} at {path or '/'}: {err.message}"
            )
    errors += check_metadata(obj.get("metadata") or {}, obj.get("kind", ""))
    for path, meta in _nested_metadata(obj):
        errors += [f"{path}: {e}" for e in check_metadata(meta, "template")]
    return errors


def _nested_metadata(obj: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    template = ((obj.get("spec") or {}).get("template") or {}).get("metadata")
    return [("spec.template.metadata", template)] if template else []


def check_metadata(meta: dict[str, Any], kind: str) -> list[str]:
    errors = []
    name = meta.get("name")
    if name is not None:
        pattern = _DNS1035 if kind == "Service" else _DNS_LABEL if kind == "Job" else _DNS_SUBDOMAIN
        limit = 63 if kind in ("Service", "Job") else 253
        if not pattern.match(name) or len(name) > limit:
            errors.append(f"metadata.name {name!r} is not a valid {kind} name")
    for key, value in (meta.get("labels") or {}).items():
        prefix, _, label = key.rpartition("/")
        if (prefix and not _DNS_SUBDOMAIN.match(prefix)) or not _LABEL_NAME.match(label) or len(label) > 63:
            errors.append(f"label key {key!r} is invalid")
        if not isinstance(value, str) or not _LABEL_VALUE.match(value) or len(value) > 63:
            errors.append(f"label {key}={value!r}: invalid label value")
    for key in meta.get("annotations") or {}:
        prefix, _, label = key.rpartition("/")
        if (prefix and not _DNS_SUBDOMAIN.match(prefix)) or not _LABEL_NAME.match(label):
            errors.append(f"annotation key {key!r} is invalid")
    return errors
