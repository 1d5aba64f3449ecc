"""The ``airflow-mlops`` command."""

from __future__ import annotations

import sys

#: Sub-command: (module, function taking the remaining arguments and returning the exit status).
COMMANDS = {
    "demo": ("airflow_mlops.demo.run", "main"),
    "lineage": ("airflow_mlops.lineage.chain", "main"),
    "approve": ("airflow_mlops.approvals", "main"),
    "reject": ("airflow_mlops.approvals", "reject"),
}


def main(argv: list[str] | None = None) -> int:
    """Run ``airflow-mlops demo|lineage|approve|reject ...``; return the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in COMMANDS:
        print(f"usage: airflow-mlops {{{','.join(COMMANDS)}}} [options]", file=sys.stderr)
        return 2
    import importlib

    module, function = COMMANDS[argv[0]]
    return getattr(importlib.import_module(module), function)(argv[1:])


if __name__ == "__main__":
    raise SystemExit(main())
