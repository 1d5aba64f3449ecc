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

from airflow_mlops.data.storage import Storage, is_s3, join, local_path

if TYPE_CHECKING:
    from collections.abc import Sequence

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


def visible_files(uris: list[str], base: str) -> list[str]:
    """Drop files whose path below *base* has a part starting with '.' or '_' (``_SUCCESS``, ``.crc``)."""
    prefix = base.rstrip("/") + "/"
    out = []
    for uri in uris:
        relative = uri[len(prefix) :] if uri.startswith(prefix) else uri.rsplit("/", 1)[-1]
        if not any(part.startswith((".", "_")) for part in relative.split("/")):
            out.append(uri)
    return out


def latest_manifest(root: str, name: str, storage: Storage | None = None) -> dict | None:
    """
    The manifest of the most recently written snapshot of dataset *name* under *root*, or None if none exists.

    "Most recent" is the newest ``_manifest.json`` by modification time (one listing, one read).
    """
    storage = storage or Storage()
    folder = join(root, "datasets", check_dataset_name(name))
    try:
        entries = storage.list_entries(folder)
    except FileNotFoundError:
        return None
    prefix = folder.rstrip("/") + "/"
    manifests = [
        entry
        for entry in entries
        if entry["uri"].startswith(prefix)
        and entry["uri"][len(prefix) :].count("/") == 1
        and entry["uri"].endswith("/" + MANIFEST)
        and not entry["uri"][len(prefix) :].startswith(".")
    ]
    if not manifests:
        return None
    newest = max(manifests, key=lambda entry: (entry["mtime"] or 0.0, entry["uri"]))
    return load_manifest(newest["uri"][: -len(MANIFEST) - 1], storage)


def changed_files(entries: list[dict], manifest: dict | None) -> list[dict]:
    """
    The entries of a listing (:meth:`Storage.list_entries`) that *manifest* did not ingest, or that changed.

    A file counts as ingested when the manifest's ``source_files`` has the same URI and size, and the same
    ETag (S3) or modification time (local) where the manifest recorded one.
    """
    known: dict[str, dict] = {item["uri"]: item for item in (manifest or {}).get("source_files") or []}
    out = []
    for entry in entries:
        seen = known.get(entry["uri"])
        if seen is None or int(seen.get("bytes", -1)) != int(entry["size"]):
            out.append(entry)
        elif entry.get("etag") and seen.get("etag") and entry["etag"] != seen["etag"]:
            out.append(entry)
        elif (
            not entry.get("etag")
            and entry.get("mtime") is not None
            and seen.get("mtime") is not None
            and abs(float(entry["mtime"]) - float(seen["mtime"])) > 1e-3
        ):
            out.append(entry)
    return out


def read_snapshot(
    uri: str, split: str | None = None, storage: Storage | None = None, columns: Sequence[str] | None = None
) -> pd.DataFrame:
    """
    Load a snapshot (or one of its splits) into a pandas DataFrame.

    :param uri: Snapshot URI, optionally with ``#train`` / ``#valid`` / ``#holdout`` to select a split.
    :param split: Split to read; overrides the one in *uri*. None reads all rows.
    :param storage: Storage to read through (default: local files and S3 from the AWS environment).
    :param columns: Read only these columns (Parquet reads no other bytes); None reads them all.
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
            return pd.read_parquet(local, columns=columns)
    return pd.read_parquet(local_path(file_uri), columns=columns)
