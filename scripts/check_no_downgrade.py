"""Fail if installing the provider changed any package that Airflow's own installation brought in."""

from __future__ import annotations

import sys


def read(path: str) -> dict[str, str]:
    pins = {}
    for line in open(path, encoding="utf-8"):
        line = line.strip()
        if "==" in line and not line.startswith("#"):
            name, version = line.split("==", 1)
            pins[name.lower().replace("_", "-")] = version
    return pins


def main(before_path: str, after_path: str) -> int:
    before, after = read(before_path), read(after_path)
    changed = {name: (v, after.get(name)) for name, v in before.items() if after.get(name) != v}
    if changed:
        for name, (old, new) in sorted(changed.items()):
            print(f"installing airflow-provider-mlops changed {name}: {old} -> {new}", file=sys.stderr)
        return 1
    print(f"ok: all {len(before)} packages of the Airflow installation kept their versions "
          f"(apache-airflow {before.get('apache-airflow')})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(*sys.argv[1:3]))
