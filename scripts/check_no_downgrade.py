"""
Check that installing the provider left Airflow and its pins alone.

Compares two ``pip freeze`` snapshots (Airflow alone, then with the provider) and fails if any Airflow
distribution (``apache-airflow*``) or any dependency that Airflow pins (``==``, ``<``, ``<=``, ``~=`` in the
Requires-Dist of apache-airflow, apache-airflow-core or apache-airflow-task-sdk) changed version. Other
packages that were simply at their newest release may be re-resolved by the provider's dependencies; they are
listed for information.

    python scripts/check_no_downgrade.py BEFORE AFTER            # check
    python scripts/check_no_downgrade.py --constraints BEFORE    # print constraints that keep them fixed
"""

from __future__ import annotations

import re
import sys
from importlib import metadata

AIRFLOW_DISTS = ("apache-airflow", "apache-airflow-core", "apache-airflow-task-sdk")
PIN = re.compile(r"(==|<=|<|~=)")


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def read(path: str) -> dict[str, str]:
    pins = {}
    for line in open(path, encoding="utf-8"):
        line = line.strip()
        if "==" in line and not line.startswith("#"):
            name, version = line.split("==", 1)
            pins[normalise(name)] = version
    return pins


def airflow_pinned_names() -> set[str]:
    """Names of the dependencies Airflow itself declares with an exact or upper bound."""
    names = set()
    for dist in AIRFLOW_DISTS:
        try:
            requires = metadata.requires(dist) or []
        except metadata.PackageNotFoundError:
            continue
        for requirement in requires:
            spec, _, marker = requirement.partition(";")
            if "extra ==" in marker:
                continue
            match = re.match(r"\s*([A-Za-z0-9._-]+)", spec)
            if match and PIN.search(spec[match.end() :]):
                names.add(normalise(match.group(1)))
    return names


def protected(before: dict[str, str]) -> set[str]:
    return {name for name in before if name.startswith("apache-airflow")} | (
        airflow_pinned_names() & set(before)
    )


def main(argv: list[str]) -> int:
    if argv[:1] == ["--constraints"]:
        before = read(argv[1])
        for name in sorted(protected(before)):
            print(f"{name}=={before[name]}")
        return 0
    before, after = read(argv[0]), read(argv[1])
    keep = protected(before)
    changed = {
        name: (before[name], after.get(name)) for name in sorted(before) if after.get(name) != before[name]
    }
    broken = {name: change for name, change in changed.items() if name in keep}
    for name, (old, new) in broken.items():
        print(f"installing airflow-provider-mlops changed {name}: {old} -> {new}", file=sys.stderr)
    if broken:
        return 1
    print(
        f"ok: Airflow {before.get('apache-airflow')} and all {len(keep)} of its distributions and pinned "
        "dependencies kept their versions"
    )
    added = sorted(set(after) - set(before))
    print(f"  added {len(added)} distributions; moved {len(changed)} that Airflow does not pin:")
    for name, (old, new) in changed.items():
        direction = "removed" if new is None else ("down" if _key(new) < _key(old) else "up")
        print(
            f"  moved {direction}: {name} {old} -> {new} (required by: {', '.join(_requirers(name)) or '?'})"
        )
    return 0


def _key(version: str) -> tuple:
    try:
        from packaging.version import Version

        return (Version(version),)
    except Exception:  # an unparsable version sorts by its text
        return (version,)


def _requirers(name: str) -> list[str]:
    """Installed distributions that require *name* with an upper bound (what held it back)."""
    out = []
    for dist in metadata.distributions():
        for requirement in dist.requires or []:
            spec, _, marker = requirement.partition(";")
            if "extra ==" in marker:
                continue
            match = re.match(r"\s*([A-Za-z0-9._-]+)", spec)
            if match and normalise(match.group(1)) == name and re.search(r"<|==|~=", spec[match.end() :]):
                out.append(f"{dist.metadata['Name']} {spec[match.end() :].strip().strip('()')}")
    return sorted(set(out))


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
