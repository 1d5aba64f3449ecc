"""
Layout and reading of immutable dataset snapshots, without Airflow.

A snapshot lives at ``<root>/datasets/<name>/<snapshot_id>/`` and holds ``data.parquet`` (all rows), one
``<split>.parquet`` per requested split, and ``_manifest.json``, written last: a snapshot without a manifest
does not exist. ``<root>`` is a local directory or ``s3://bucket/prefix`` (default: ``$MLOPS_DATA_ROOT``,
else ``./.mlops-data``). A snapshot URI followed by ``#train`` / ``#valid`` / ``#holdout`` selects a split.

The snapshot id is the SHA-256 of the source content hash and the canonical JSON of how it is read and split
(:func:`snapshot_id`): the same input gives the same id, so a retry finds the snapshot it already wrote.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow_mlops import __version__
from airflow_mlops.data.formats import canonical_json
from airflow_mlops.data.storage import Storage, is_local, join, local_path

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence

    import pandas as pd

    from airflow_mlops.data.storage import TransferProgress

log = logging.getLogger(__name__)

MANIFEST = "_manifest.json"
DATA = "data"
SPLIT_NAMES = ("train", "valid", "holdout")
#: Folders of a snapshot that hold what is written about it later: validation results, drift reports.
VALIDATION_DIR = "_validation"
DRIFT_DIR = "_drift"
DATA_ROOT_ENV = "MLOPS_DATA_ROOT"
DEFAULT_DATA_ROOT = "./.mlops-data"
#: What a manifest's ``sha256`` is the hash of (manifest key ``sha256_of``).
SHA256_OF_BYTES = "bytes"
SHA256_OF_S3_ETAG = "s3-etag+size"
# Other object stores: the SHA-256 of the scheme, the object's ETag (GCS: generation) and its size.
SHA256_OF_ETAG = "etag+size"
SHA256_OF_ROWS = "rows"
#: The manifest's ``producer``.
PRODUCER = f"airflow-provider-mlops {__version__}"

_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
#: A local staging folder (``.<snapshot id>.tmp-...``) untouched for this long belongs to a dead ingest.
STAGING_GRACE_S = 3600.0
# ".<snapshot>.tmp-<owner>-<try>-<random>" (owner: a hash of the task instance), or ".<snapshot>.tmp-<random>".
_STAGING_RE = re.compile(
    r"\.(?P<snapshot>[^/]+)\.tmp-(?:(?P<owner>[0-9a-f]{12})-(?P<attempt>\d+)-)?[0-9a-f]{12}"
)


def check_dataset_name(name: object) -> str:
    """
    Return *name* if it is safe as one path segment, else raise :class:`ValueError` saying what is allowed.

    Allowed: 1-128 characters of letters, digits, ``.``, ``_`` and ``-``, starting with a letter or digit,
    without ``..``; so no ``/``, no absolute path, no way out of ``<root>/datasets/``.
    """
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name) or ".." in name:
        raise ValueError(
            f"Invalid dataset name {name!r}: use 1-128 letters, digits, '.', '_' or '-', starting with a "
            "letter or digit (no '/', no '..', no absolute path)."
        )
    return name


def configured_data_root() -> str:
    """
    ``[mlops] data_root``, else ``$MLOPS_DATA_ROOT`` (its documented fallback); empty if neither is set.

    Outside Airflow (a trainer's container) only the environment variable is read.
    """
    try:
        from airflow_mlops.version_compat import conf
    except ImportError:  # no Airflow here
        configured = ""
    else:
        configured = conf.get("mlops", "data_root", fallback="") or ""
    return configured.strip() or os.environ.get(DATA_ROOT_ENV, "").strip()


def resolve_data_root(root: str | None = None) -> str:
    """
    The snapshot root to use: *root*, else ``[mlops] data_root``, else ``$MLOPS_DATA_ROOT``, else ``./.mlops-data``.

    Local roots are made absolute, so snapshot URIs stay valid for processes with another working directory.
    """
    root = (root or configured_data_root() or DEFAULT_DATA_ROOT).strip()
    if not is_local(root):
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

    with snapshot_file(uri, split, storage) as path:
        return pd.read_parquet(path, columns=columns)


def snapshot_file_uri(uri: str, split: str | None = None, storage: Storage | None = None) -> str:
    """
    The URI of a snapshot's Parquet file (or of one of its splits' file), for an engine that reads it itself.

    :raises FileNotFoundError: if there is no snapshot at *uri*.
    :raises ValueError: if the snapshot has no such split.
    """
    base, uri_split = parse_snapshot_uri(uri)
    key = split or uri_split or DATA
    manifest = load_manifest(base, storage)
    files = manifest["files"]
    if key not in files:
        raise ValueError(
            f"Snapshot {base} (dataset {manifest.get('name')!r}) has no split {key!r}; "
            f"it has {sorted(name for name in files if name != DATA) or 'no splits'}"
        )
    return join(base, files[key])


@contextmanager
def snapshot_file(uri: str, split: str | None = None, storage: Storage | None = None) -> Iterator[Path]:
    """
    The local Parquet file of a snapshot (or of one of its splits): downloaded while in use when on S3.

    :param uri: Snapshot URI, optionally with ``#train`` / ``#valid`` / ``#holdout`` to select a split.
    :param split: Split to read; overrides the one in *uri*. None: all rows.
    :raises FileNotFoundError: if there is no snapshot at *uri*.
    :raises ValueError: if the snapshot has no such split.
    """
    storage = storage or Storage()
    file_uri = snapshot_file_uri(uri, split, storage)
    if is_local(file_uri):
        yield local_path(file_uri)
        return
    with tempfile.TemporaryDirectory(prefix="mlops-snapshot-") as tmp:
        yield storage.download_file(file_uri, Path(tmp) / Path(file_uri).name)


def snapshot_spec(
    fmt: str, csv_options: dict[str, Any] | None, split: dict[str, float] | None, split_seed: int
) -> dict[str, Any]:
    """How a source is read and split: what, besides the content, a snapshot id depends on."""
    return {
        "format": fmt,
        "csv_options": (csv_options or {}) if fmt == "csv" else None,
        "split": {"seed": split_seed, "fractions": split} if split else None,
    }


def snapshot_id(content_sha256: str, spec: dict[str, Any]) -> str:
    """The id of the snapshot of content *content_sha256* read and split as *spec* (:func:`snapshot_spec`)."""
    return hashlib.sha256(f"{content_sha256}\n{canonical_json(spec)}".encode()).hexdigest()


def ingest_result(manifest: dict[str, Any]) -> dict[str, Any]:
    """
    The small, JSON-safe description of a snapshot an ingest returns, built from its manifest.

    ``{"name", "snapshot_id", "uri", "sha256", "rows", "schema", "splits"}``, where ``splits`` maps each
    split to ``<uri>#<split>``; built from the manifest so that retries return the same value.
    """
    uri = manifest["uri"]
    return {
        "name": manifest["name"],
        "snapshot_id": manifest["snapshot_id"],
        "uri": uri,
        "sha256": manifest["sha256"],
        "rows": manifest["rows"],
        "schema": manifest["schema"],
        "splits": {split: f"{uri}#{split}" for split in manifest["files"] if split != DATA},
    }


def manifest_bytes(manifest: dict[str, Any]) -> bytes:
    """The stored form of a manifest (indented JSON, sorted keys)."""
    return json.dumps(manifest, indent=2, sort_keys=True).encode()


def write_parquet(frames: dict[str, pd.DataFrame], directory: Path) -> None:
    """
    Write each frame as ``<directory>/<key>.parquet`` (no index).

    :raises ValueError: if the rows cannot be stored as Parquet (mixed types in a column...).
    """
    import pyarrow as pa

    directory.mkdir(parents=True, exist_ok=True)
    for key, frame in frames.items():
        try:
            frame.to_parquet(directory / f"{key}.parquet", index=False)
        except (pa.ArrowException, ValueError, TypeError) as err:
            raise ValueError(f"rows cannot be stored as Parquet: {err}") from err


def staging_owner(dag_id: str, run_id: str, task_id: str, map_index: int = -1) -> str:
    """The short owner tag a task instance puts in its staging folders' names (the same for all its tries)."""
    return hashlib.sha256(f"{dag_id}\n{run_id}\n{task_id}\n{map_index}".encode()).hexdigest()[:12]


def _last_touched(path: Path) -> float:
    newest = path.lstat().st_mtime
    for folder, _, names in os.walk(path):
        for entry in [folder, *(os.path.join(folder, name) for name in names)]:
            try:
                newest = max(newest, os.lstat(entry).st_mtime)
            except FileNotFoundError:
                continue
    return newest


def remove_stale_staging(
    root: str,
    name: str,
    owner: str | None = None,
    attempt: int | None = None,
    grace: float = STAGING_GRACE_S,
) -> list[str]:
    """
    Remove the staging folders a killed ingest of dataset *name* left under the local *root*; return them.

    A staging folder is removed when its owner tag is *owner* with a try number below *attempt* (an earlier
    try of the same task instance, which is over), or when nothing in it changed for *grace* seconds. Folders
    of an ingest that may still be writing are left alone. Object-store roots have no staging folders.
    """
    if not is_local(root):
        return []
    folder = local_path(join(root, "datasets", check_dataset_name(name)))
    if not folder.is_dir():
        return []
    removed = []
    now = time.time()
    for path in sorted(folder.glob(".*.tmp-*")) + sorted(folder.glob(".*.stale-*")):
        found = _STAGING_RE.fullmatch(path.name)
        earlier_try = (
            found is not None
            and owner is not None
            and attempt is not None
            and found["owner"] == owner
            and int(found["attempt"]) < attempt
        )
        try:
            stale = earlier_try or ".stale-" in path.name or now - _last_touched(path) > grace
        except FileNotFoundError:
            continue  # removed meanwhile
        if stale and path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
            removed.append(str(path))
            log.info("Removed staging folder %s left by an earlier, interrupted ingest", path)
    return removed


def publish_snapshot(
    storage: Storage,
    target: str,
    frames: dict[str, pd.DataFrame],
    manifest: dict[str, Any],
    tmp: Path,
    progress: Callable[[str, int], TransferProgress] | None = None,
    owner: str | None = None,
    attempt: int | None = None,
) -> dict[str, Any]:
    """
    Write the snapshot at *target*: one Parquet file per frame, the manifest last; return the stored manifest.

    On S3 the files are uploaded from *tmp* and the manifest put last. Locally the snapshot is written into
    a staging folder (``.<snapshot id>.tmp-<owner>-<try>-<random>``) renamed into place, so a crash leaves no
    half snapshot, and a later try removes what a killed one left (:func:`remove_stale_staging`); when a
    concurrent attempt finished first, its manifest is returned.

    :param progress: Builds the progress callback of one upload from ``(what, total bytes)``.
    :param owner: The task instance's owner tag (:func:`staging_owner`), put in the staging folder's name.
    :param attempt: The try number, put in the staging folder's name with *owner*.
    :raises ValueError: if the rows cannot be stored as Parquet.
    """
    stored = manifest_bytes(manifest)
    if not is_local(target):
        write_parquet(frames, tmp)
        for key in frames:
            local = tmp / f"{key}.parquet"
            uri = join(target, f"{key}.parquet")
            callback = progress(f"Upload {uri}", local.stat().st_size) if progress else None
            storage.upload_file(local, uri, callback)
            if callback is not None:
                callback.done()
        storage.write_bytes(join(target, MANIFEST), stored)
        return manifest

    final = local_path(target)
    final.parent.mkdir(parents=True, exist_ok=True)
    tag = f"{owner}-{int(attempt)}-" if owner and attempt is not None else ""
    staging = final.parent / f".{final.name}.tmp-{tag}{uuid.uuid4().hex[:12]}"
    try:
        write_parquet(frames, staging)
        (staging / MANIFEST).write_bytes(stored)
        try:
            os.rename(staging, final)
        except OSError:
            if (final / MANIFEST).exists():
                log.info("Snapshot %s was completed by a concurrent attempt; keeping it", target)
                return load_manifest(target, storage)
            # A directory without a manifest is not a snapshot (a leftover): replace it.
            leftover = final.parent / f".{final.name}.stale-{uuid.uuid4().hex[:12]}"
            os.rename(final, leftover)
            shutil.rmtree(leftover, ignore_errors=True)
            os.rename(staging, final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return manifest
