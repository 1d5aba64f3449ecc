"""
Tests here see an unreachable MLflow or S3 server fail at once: ``[mlops] service_outage_timeout`` is 0 unless a
test sets it (the tests of waiting out an outage, tests/integration/hooks/test_outages.py, do).
"""

from __future__ import annotations

import os

os.environ.setdefault("AIRFLOW__MLOPS__SERVICE_OUTAGE_TIMEOUT", "0")
