"""The ``airflow-mlops`` command."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    """Run ``airflow-mlops demo ...`` or ``airflow-mlops lineage ...``; return the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    commands = {"demo": "airflow_mlops.demo.run", "lineage": "airflow_mlops.lineage.chain"}
    if not argv or argv[0] not in commands:
        print(f"usage: airflow-mlops {{{','.join(commands)}}} [options]", file=sys.stderr)
        return 2
    import importlib

    return importlib.import_module(commands[argv[0]]).main(argv[1:])


if __name__ == "__main__":
    raise SystemExit(main())
