"""The import-layer check (``make lint``): layers point down and no module cycle appears.

Layers, bottom first: ``common`` -> ``wallet`` -> ``contracts`` -> ``ess_collector`` -> ``app``. A package
may import its own layer and those below it, never one above. Every import counts, including those
inside functions: an import moved into a function still makes a cycle, it only hides it from Python.
Imports under ``if TYPE_CHECKING:`` are left out: they never run.

A cycle is a set of modules that import each other (a strongly connected component of the module graph).
Cycles that are being untangled are listed in ``KNOWN_CYCLES``; any other cycle, or a known one that grew,
fails the check. Standalone: ``python scripts/check_layers.py [root]``; exit status 1 on a violation.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterable
from pathlib import Path

LAYERS = ["common", "wallet", "contracts", "ess_collector", "app"]

# Cycles being untangled: each entry is the set of modules (or packages) a cycle may span. Remove an entry
# once its cycle is gone; never add one to let a new cycle in. None is left (issue 13): app/'s domains
# import each other in one direction (docs/architecture.md).
KNOWN_CYCLES: list[frozenset[str]] = []


def modules(root: Path) -> dict[str, Path]:
    found = {}
    for top in LAYERS:
        for path in sorted((root / top).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def _type_checking(node: ast.stmt) -> bool:
    test = node.test if isinstance(node, ast.If) else None
    return isinstance(test, ast.Name | ast.Attribute) and ast.unparse(test).endswith("TYPE_CHECKING")


def _nodes(tree: ast.AST) -> Iterable[ast.AST]:
    """Every node, skipping the bodies of ``if TYPE_CHECKING:``."""
    todo = [tree]
    while todo:
        node = todo.pop()
        yield node
        if isinstance(node, ast.If) and _type_checking(node):
            todo.extend(node.orelse)
        else:
            todo.extend(ast.iter_child_nodes(node))


def _imported(tree: ast.AST, name: str, is_package: bool) -> Iterable[str]:
    package = name if is_package else name.rpartition(".")[0]
    for node in _nodes(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            yield from (f"{base}.{alias.name}" for alias in node.names)  # a name, else its module


def graph(root: Path) -> dict[str, set[str]]:
    """Module -> the project modules it imports (a name that is a module, else the nearest package)."""
    mods = modules(root)
    edges: dict[str, set[str]] = {}
    for name, path in mods.items():
        tree = ast.parse(path.read_text(), str(path))
        targets = set()
        for imported in _imported(tree, name, path.name == "__init__.py"):
            while imported and imported not in mods:
                imported = imported.rpartition(".")[0]
            if imported and imported != name:
                targets.add(imported)
        edges[name] = targets
    return edges


def layer_violations(edges: dict[str, set[str]]) -> list[str]:
    rank = {top: i for i, top in enumerate(LAYERS)}
    bad = []
    for source, targets in sorted(edges.items()):
        for target in sorted(targets):
            if rank[target.split(".")[0]] > rank[source.split(".")[0]]:
                bad.append(f"{source} imports {target}, a layer above it")
    return bad


def cycles(edges: dict[str, set[str]]) -> list[set[str]]:
    """Tarjan's strongly connected components with more than one module (iterative: no recursion limit)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[set[str]] = []
    for start in sorted(edges):
        if start in index:
            continue
        work = [(start, iter(sorted(edges[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(component)
    return found


def packages(edges: dict[str, set[str]]) -> dict[str, set[str]]:
    """The same graph one level up: ``app.market.engine`` counts as ``app.market``."""
    up: dict[str, set[str]] = {}
    for source, targets in edges.items():
        top = ".".join(source.split(".")[:2])
        up.setdefault(top, set()).update(".".join(t.split(".")[:2]) for t in targets)
        up[top].discard(top)
    return up


def violations(root: Path, known: list[frozenset[str]] = KNOWN_CYCLES) -> list[str]:
    edges = graph(root)
    bad = layer_violations(edges)
    for component in sorted({frozenset(c) for c in [*cycles(edges), *cycles(packages(edges))]}, key=sorted):
        if not any(component <= allowed for allowed in known):
            bad.append("import cycle: " + " <-> ".join(sorted(component)))
    return bad


def main(argv: list[str]) -> int:
    root = Path(argv[1]) if len(argv) > 1 else Path(__file__).resolve().parent.parent
    bad = violations(root)
    for line in bad:
        print(line)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
