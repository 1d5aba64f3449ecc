"""
Which files under a source are new or changed since a dataset's latest snapshot, without Airflow.

Used by :class:`~airflow_mlops.sensors.new_data.NewDataSensor` and its trigger alike. A file counts as
ingested when the latest snapshot's manifest lists it in ``source_files`` with the same URI and size, and the
same ETag (S3) or modification time (local) where the manifest recorded one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow_mlops.data.snapshots import latest_manifest, resolve_data_root
from airflow_mlops.data.sources import normalize_source, visible_files
from airflow_mlops.data.storage import has_glob, is_local

if TYPE_CHECKING:
    from airflow_mlops.data.storage import Storage

#: At most this many changed files are named in an event or a sensor's result (the count is always exact).
MAX_FILES_IN_EVENT = 20


def changed_files(entries: list[dict[str, Any]], manifest: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The entries of a listing (:meth:`Storage.list_entries`) that *manifest* did not ingest, or that changed."""
    known: dict[str, dict[str, Any]] = {
        item["uri"]: item for item in (manifest or {}).get("source_files") or []
    }
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


def source_entries(storage: Storage, source: str) -> list[dict[str, Any]]:
    """The fingerprints (``{"uri", "size", "etag", "mtime"}``) of the files an ingest of *source* would read."""
    source = normalize_source(source)
    if has_glob(source):
        return _entries_by_glob(storage, source)
    entries = storage.list_entries(source)
    visible = set(visible_files([entry["uri"] for entry in entries], source))
    entries = [entry for entry in entries if entry["uri"] in visible]
    if not entries and not is_local(source) and not source.endswith("/"):
        try:  # a single object rather than a prefix
            head = storage.head(source)
        except FileNotFoundError:
            return []
        return [{"uri": source, **{key: value for key, value in head.items() if key != "sha256"}}]
    return entries


def find_new_files(storage: Storage, source: str, dataset_name: str, data_root: str | None) -> dict[str, Any]:
    """
    Compare the files under *source* with the ``source_files`` of the latest snapshot of *dataset_name*.

    Blocking (listing and one manifest read): call it from a thread in async code.

    :returns: ``{"files": [entries], "count", "snapshot": uri of the latest snapshot or None}``.
    :raises ValueError: if *dataset_name* is not a valid dataset name.
    """
    entries = source_entries(storage, source)
    manifest = latest_manifest(resolve_data_root(data_root), dataset_name, storage)
    changed = changed_files(entries, manifest)
    return {"files": changed, "count": len(changed), "snapshot": (manifest or {}).get("uri")}


def _entries_by_glob(storage: Storage, pattern: str) -> list[dict[str, Any]]:
    matches = set(storage.glob(pattern))
    if not matches:
        return []
    base = pattern[: min(pattern.find(c) for c in "*?[" if c in pattern)].rsplit("/", 1)[0] or "/"
    return [entry for entry in storage.list_entries(base) if entry["uri"] in matches]
