"""Apache Airflow provider for the machine-learning lifecycle."""

from __future__ import annotations

__version__ = "0.1.0"
