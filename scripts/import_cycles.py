"""
Import cycles between the modules of a package, read from the source (nothing is imported).

    python scripts/import_cycles.py [PACKAGE_DIR]      # default: airflow_mlops

Every import counts, including those inside functions and under ``TYPE_CHECKING``: a cycle there is still a
knot in the design. Prints each cycle (a strongly connected component of the import graph) on a line and
exits 1 if there is any.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path


def module_files(package: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every module of *package* (a package directory)."""
    modules = {}
    for path in sorted(package.rglob("*.py")):
        parts = list(path.relative_to(package.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


def _imported(node: ast.AST, module: str, is_package: bool) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if isinstance(node, ast.ImportFrom):
        if node.level:
            base = module.split(".") if is_package else module.split(".")[:-1]
            base = base[: len(base) - node.level + 1]
            target = ".".join(base + ([node.module] if node.module else []))
        else:
            target = node.module or ""
        # ``from pkg import name`` may import the submodule pkg.name.
        return [target] + [f"{target}.{alias.name}" for alias in node.names]
    return []


def import_graph(package: Path) -> dict[str, set[str]]:
    """Module -> the package's modules it imports (each import resolved to the longest existing module)."""
    modules = module_files(package)
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            for target in _imported(node, name, path.name == "__init__.py"):
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                if target and target != name and not name.startswith(target + "."):
                    graph[name].add(target)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return sorted(found)


def main(argv: list[str] | None = None) -> int:
    """Print the import cycles of the package given (default ``airflow_mlops``); exit 1 if there are any."""
    args = sys.argv[1:] if argv is None else argv
    package = Path(args[0] if args else Path(__file__).resolve().parents[1] / "airflow_mlops")
    found = cycles(import_graph(package))
    for component in found:
        print(" <-> ".join(component))
    print(f"{len(found)} import cycle(s) in {package.name}")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
