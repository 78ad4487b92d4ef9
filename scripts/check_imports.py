#!/usr/bin/env python3
"""Check botkit's import graph: no cycles, and dependencies in one direction only.

    python scripts/check_imports.py             # prints the layers and any problem; exit 1 on a problem
    python scripts/check_imports.py --root DIR  # the same for another checkout (e.g. an older commit)

Every ``import`` / ``from ... import`` statement counts, including those inside functions and
under ``if TYPE_CHECKING:``: a lazy import still ties two modules together, it only hides the
tie until the function runs. Modules are parsed (never imported), so the check is fast and
needs no dependencies.

The layers, lowest first; each may import only itself and the layers it lists::

    botkit core   botkit.* except app and backends  (types, engine, store, escalation, responders, ...)
    knowledge     knowledge.*                       -> botkit core
    training      training.*                        -> botkit core, knowledge
    connectors    connectors.*                      -> botkit core
    backends      botkit.backends.*                 -> botkit core, knowledge, training, connectors
                                                       (PostgreSQL, Redis: their drivers; the twins of
                                                       those layers' SQLite stores)
    app           botkit.app.*, botkit.__main__     -> everything

Four checks:

* **layers**: an import that goes against the table above;
* **file cycles**: modules that import each other, directly or through others;
* **package cycles**: sibling packages (folders) that import each other, e.g.
  ``botkit.responders`` <-> ``botkit.generation`` (a package and its own parent don't count);
* **private names**: ``from a.b import _name`` where ``a.b`` is in another layer: a name with a
  leading underscore is free to change, so nothing outside its layer may rely on it.
"""

from __future__ import annotations

import ast
import sys
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("botkit", "connectors", "knowledge", "training")
ALLOWED: dict[str, set[str]] = {
    "core": {"core"},
    "knowledge": {"core", "knowledge"},
    "training": {"core", "knowledge", "training"},
    "connectors": {"core", "connectors"},
    "backends": {"core", "knowledge", "training", "connectors", "backends"},
    "app": {"core", "knowledge", "training", "connectors", "backends", "app"},
}


def layer_of(module: str) -> str:
    if module == "botkit.__main__" or module == "botkit.app" or module.startswith("botkit.app."):
        return "app"
    if module == "botkit.backends" or module.startswith("botkit.backends."):
        return "backends"
    top = module.split(".")[0]
    return "core" if top == "botkit" else top


@dataclass
class Graph:
    modules: dict[str, Path] = field(default_factory=dict)
    edges: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    lines: dict[tuple[str, str], int] = field(default_factory=dict)  # (importer, imported) -> first line
    private: list[tuple[str, str, str, int]] = field(default_factory=list)  # importer, module, name, line


def _module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _targets(node: ast.AST, module: str, is_package: bool) -> Iterable[str]:
    if isinstance(node, ast.Import):
        for alias in node.names:
            yield alias.name
    elif isinstance(node, ast.ImportFrom):
        if node.level:
            base = module.split(".") if is_package else module.split(".")[:-1]
            base = base[: len(base) - (node.level - 1)]
            source = ".".join(base + ([node.module] if node.module else []))
        else:
            source = node.module or ""
        yield source
        for alias in node.names:  # `from pkg import submodule`
            yield f"{source}.{alias.name}"


def build_graph(root: Path = ROOT, packages: Iterable[str] = PACKAGES) -> Graph:
    graph = Graph()
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            graph.modules[_module_name(path, root)] = path
    for module, path in graph.modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            for target in _targets(node, module, path.name == "__init__.py"):
                if target in graph.modules and target != module:
                    graph.edges[module].add(target)
                    graph.lines.setdefault((module, target), getattr(node, "lineno", 0))
            if isinstance(node, ast.ImportFrom) and not node.level and node.module in graph.modules:
                for alias in node.names:
                    if alias.name.startswith("_") and not alias.name.startswith("__"):
                        graph.private.append((module, node.module, alias.name, node.lineno))
    return graph


def strongly_connected(nodes: Iterable[str], edges: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iterative; only components of two or more nodes."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for start in nodes:
        if start in index:
            continue
        work = [(start, iter(sorted(edges.get(start, ()))))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges.get(child, ())))))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
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
    return found


def _package_of(module: str, graph: Graph) -> str:
    """The folder a module lives in (a package's __init__ belongs to the package itself)."""
    path = graph.modules[module]
    return module if path.name == "__init__.py" else module.rpartition(".")[0]


def _relative(path: Path) -> Path:
    for parent in path.parents:
        if (parent / "pyproject.toml").exists():
            return path.relative_to(parent)
    return path


def layer_violations(graph: Graph) -> list[str]:
    problems = []
    for importer, imported in sorted((a, b) for a, bs in graph.edges.items() for b in bs):
        have, need = layer_of(importer), layer_of(imported)
        if need not in ALLOWED[have]:
            line = graph.lines[(importer, imported)]
            problems.append(f"{_relative(graph.modules[importer])}:{line}: {importer} ({have}) imports "
                            f"{imported} ({need}); {have} may import only {', '.join(sorted(ALLOWED[have]))}")
    return problems


def private_imports(graph: Graph) -> list[str]:
    return [f"{_relative(graph.modules[importer])}:{line}: {importer} ({layer_of(importer)}) imports the private "
            f"{name} of {source} ({layer_of(source)}); make it public or keep it inside its layer"
            for importer, source, name, line in sorted(graph.private) if layer_of(importer) != layer_of(source)]


def file_cycles(graph: Graph) -> list[list[str]]:
    return strongly_connected(graph.modules, graph.edges)


def package_cycles(graph: Graph) -> list[list[str]]:
    edges: dict[str, set[str]] = defaultdict(set)
    for importer, targets in graph.edges.items():
        a = _package_of(importer, graph)
        for imported in targets:
            b = _package_of(imported, graph)
            related = a == b or a.startswith(b + ".") or b.startswith(a + ".")
            if not related:
                edges[a].add(b)
    packages = sorted({_package_of(m, graph) for m in graph.modules})
    return strongly_connected(packages, edges)


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description="Check botkit's import layers and cycles.")
    parser.add_argument("--root", type=Path, default=ROOT, help="the checkout to check (default: this one)")
    root = parser.parse_args(argv).root.resolve()
    graph = build_graph(root)
    layers = layer_violations(graph)
    cycles = file_cycles(graph)
    pkg_cycles = package_cycles(graph)
    private = private_imports(graph)
    n_edges = sum(len(v) for v in graph.edges.values())
    print(f"{len(graph.modules)} modules, {n_edges} imports between them")
    between: dict[str, set[str]] = defaultdict(set)
    for importer, targets in graph.edges.items():
        for imported in targets:
            if layer_of(importer) != layer_of(imported):
                between[layer_of(importer)].add(layer_of(imported))
    for layer in ALLOWED:
        print(f"  {layer:<11} -> {', '.join(sorted(between.get(layer, ()))) or '(nothing)'}")
    for problem in layers:
        print(f"LAYER  {problem}")
    for problem in private:
        print(f"PRIVATE  {problem}")
    for cycle in cycles:
        print(f"CYCLE  files: {' <-> '.join(cycle)}")
    for cycle in pkg_cycles:
        print(f"CYCLE  packages: {' <-> '.join(cycle)}")
    if layers or cycles or pkg_cycles or private:
        print(f"{len(layers)} layer violation(s), {len(cycles)} file cycle(s), {len(pkg_cycles)} package cycle(s), "
              f"{len(private)} private import(s) across layers")
        return 1
    print("no layer violations, no import cycles, no private names across layers")
    return 0


if __name__ == "__main__":
    sys.exit(main())
