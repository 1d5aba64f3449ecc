"""
The records a passed gate and a person's approval leave on a version, signed with the tests' key.

The tests' key is the connection ``mlops_signing_default`` that tests/conftest.py sets for in-process tasks and
the live stack alike; versions made by hand get their gate and approval through the package's own writer.
"""

from __future__ import annotations

from typing import Any

from airflow_mlops import tags as T
from airflow_mlops.registry import write_signed_tags
from airflow_mlops.signing import SigningKeys, load_keys


def test_keys() -> SigningKeys:
    """The keys of the tests' signing connection."""
    return load_keys()


def approve_version(
    client: Any, model_name: str, version: Any, approver: str = "reviewer", keys: SigningKeys | None = None
) -> None:
    """A passed gate and a recorded approval by *approver*, both signed (with *keys*, default the tests')."""
    keys = keys or test_keys()
    write_signed_tags(
        client,
        model_name,
        version,
        T.GATE_SIGNATURE,
        {"decision": "passed", "reason": "accuracy passed"},
        keys,
    )
    write_signed_tags(
        client,
        model_name,
        version,
        T.APPROVAL_SIGNATURE,
        {"decision": "approved", "approver": approver, "time": "2026-12-01T10:00:00+00:00", "comment": ""},
        keys,
    )
