"""Fixtures of the data tests: the session's PostgreSQL server."""

from __future__ import annotations

from tests.support.postgres import postgres_server  # noqa: F401  (session fixture)
