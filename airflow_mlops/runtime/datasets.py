"""
Layout and reading of immutable dataset snapshots, without Airflow.

A snapshot lives at ``<root>/datasets/<name>/<snapshot_id>/`` and holds ``data.parquet`` (all rows), one
``<split>.parquet`` per requested split, and ``_manifest.json``, written last: a snapshot without a manifest
does not exist. ``<root>`` is a local directory or ``s3://bucket/prefix`` (default: ``$MLOPS_DATA_ROOT``,
else ``./.mlops-data``). A snapshot URI followed by ``#train`` / ``#valid`` / ``#holdout`` selects a split.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from airflow_mlops.runtime.storage import Storage, is_s3, join, local_path

if TYPE_CHECKING:
    import pandas as pd

MANIFEST = "_manifest.json"
DATA = "data"
SPLIT_NAMES = ("train", "valid", "holdout")
DATA_ROOT_ENV = "MLOPS_DATA_ROOT"
DEFAULT_DATA_ROOT = "./.mlops-data"

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def check_dataset_name(name: object) -> str:
    """
    Return *name* if it is safe as one path segment, else raise :class:`ValueError` saying what is allowed.

    Allowed: 1-128 characters of letters, digits, ``.``, ``_`` and ``-``, starting with a letter or digit,
    without ``..``; so no ``/``, no absolute path, no way out of ``<root>/datasets/``.
    """
    if not isinstance(name, str) or not _NAME_RE.match(name) or ".." in name:
        raise ValueError(
            f"Invalid dataset name {name!r}: use 1-128 letters, digits, '.', '_' or '-', starting with a "
            "letter or digit (no '/', no '..', no absolute path)."
        )
    return name


def resolve_data_root(root: str | None = None) -> str:
    """
    The snapshot root to use: *root*, else ``$MLOPS_DATA_ROOT``, else ``./.mlops-data``.

    Local roots are made absolute, so snapshot URIs stay valid for processes with another working directory.
    """
    root = (root or os.environ.get(DATA_ROOT_ENV) or DEFAULT_DATA_ROOT).strip()
    if is_s3(root):
        return root.rstrip("/")
    return str(local_path(root).expanduser().resolve())


def snapshot_uri(root: str, name: str, snapshot_id: str) -> str:
    """URI of snapshot *snapshot_id* of dataset *name* under *root*."""
    return join(root, "datasets", check_dataset_name(name), snapshot_id)


def parse_snapshot_uri(uri: str) -> tuple[str, str | None]:
    """Split ``<snapshot-uri>#<split>`` into the snapshot URI and the split name (or None)."""
    base, _, split = uri.partition("#")
    return base.rstrip("/"), split or None


def load_manifest(uri: str, storage: Storage | None = None) -> dict:
    """
    Return the manifest of the snapshot at *uri* (a ``#split`` suffix is ignored).

    :raises FileNotFoundError: if there is no manifest: a snapshot without one does not exist.
    """
    base, _ = parse_snapshot_uri(uri)
    storage = storage or Storage()
    manifest_uri = join(base, MANIFEST)
    try:
        raw = storage.read_bytes(manifest_uri)
    except FileNotFoundError as err:
        raise FileNotFoundError(f"No dataset snapshot at {base}: {MANIFEST} is missing") from err
    try:
        manifest = json.loads(raw)
    except ValueError as err:
        raise ValueError(f"Snapshot manifest {manifest_uri} is not valid JSON: {err}") from err
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict):
        raise ValueError(f"Snapshot manifest {manifest_uri} has no 'files' mapping")
    return manifest


def read_snapshot(uri: str, split: str | None = None, storage: Storage | None = None) -> pd.DataFrame:
    """
    Load a snapshot (or one of its splits) into a pandas DataFrame.

    :param uri: Snapshot URI, optionally with ``#train`` / ``#valid`` / ``#holdout`` to select a split.
    :param split: Split to read; overrides the one in *uri*. None reads all rows.
    :param storage: Storage to read through (default: local files and S3 from the AWS environment).
    :raises FileNotFoundError: if there is no snapshot at *uri*.
    :raises ValueError: if the snapshot has no such split.
    """
    import pandas as pd

    storage = storage or Storage()
    base, uri_split = parse_snapshot_uri(uri)
    key = split or uri_split or DATA
    manifest = load_manifest(base, storage)
    files = manifest["files"]
    if key not in files:
        raise ValueError(
            f"Snapshot {base} (dataset {manifest.get('name')!r}) has no split {key!r}; "
            f"it has {sorted(name for name in files if name != DATA) or 'no splits'}"
        )
    file_uri = join(base, files[key])
    if is_s3(file_uri):
        with tempfile.TemporaryDirectory(prefix="mlops-snapshot-") as tmp:
            local = storage.download_file(file_uri, Path(tmp) / Path(files[key]).name)
            return pd.read_parquet(local)
    return pd.read_parquet(local_path(file_uri))
