"""Operators, one module per stage of the loop: ingest, validation, drift, training, registry, evaluation, approval, deployment."""
