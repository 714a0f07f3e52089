"""The package layout is the architecture: no import cycles, and each subpackage imports only the ones below it.

The graph is built from the source (every `import` / `from ... import`, including those under TYPE_CHECKING and
inside functions): a cycle that is only broken by a late import is still a cycle in the design.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parent.parent / "src"

# Lowest first. A module may import from its own package and from any package listed before it.
LAYERS = ["config", "wire", "_py", "sharding", "protect", "execute", "frontend", "process", "tools"]


def _modules() -> dict[str, Path]:
    mods = {}
    for path in (SRC / "ddm").rglob("*.py"):
        name = ".".join(path.relative_to(SRC).with_suffix("").parts)
        mods[name.removesuffix(".__init__")] = path
    return mods


MODULES = _modules()


def _resolve(name: str) -> str | None:
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _imports(path: Path) -> set[str]:
    deps: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            deps.update(r for a in node.names if a.name.startswith("ddm.") and (r := _resolve(a.name)))
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module and \
                node.module.split(".")[0] == "ddm":
            for a in node.names:
                full = f"{node.module}.{a.name}"
                r = full if full in MODULES else _resolve(node.module)
                if r:
                    deps.add(r)
    return deps


GRAPH = {m: _imports(p) - {m} for m, p in MODULES.items()}


def _package(module: str) -> str | None:
    """The subpackage a module belongs to (ddm.wire.backend -> wire); None for the root package ddm."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            v, it = work[-1]
            for w in it:
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(graph.get(w, ())))))
                    break
                if w in on_stack:
                    low[v] = min(low[v], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[v])
                if low[v] == index[v]:
                    comp = []
                    while True:
                        w = stack.pop()
                        on_stack.discard(w)
                        comp.append(w)
                        if w == v:
                            break
                    if len(comp) > 1:
                        found.append(sorted(comp))
    return found


def test_the_cycle_finder_finds_cycles():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles():
    cycles = _cycles(GRAPH)
    detail = [f"{c}: " + "; ".join(f"{m} -> {sorted(GRAPH[m] & set(c))}" for m in c) for c in cycles]
    assert not cycles, "import cycles:\n" + "\n".join(detail)


def test_every_subpackage_has_a_layer():
    packages = {p for m in MODULES if (p := _package(m))}
    assert packages <= set(LAYERS), f"add {sorted(packages - set(LAYERS))} to LAYERS (and ARCHITECTURE.md)"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_go_down_the_layers(module: str):
    own = _package(module)
    if own is None:
        return
    allowed = set(LAYERS[:LAYERS.index(own) + 1])
    upward = sorted(d for d in GRAPH[module] if (p := _package(d)) is not None and p not in allowed)
    assert not upward, f"{module} imports from a higher layer: {upward}"


def test_lower_layers_do_not_name_the_frontend():
    """Executor, scatter, metadata, lock waits, LOAD DATA and thread ids see a client through
    ddm.execute.client.ClientSession, not through ddm.frontend.connection."""
    for module, deps in GRAPH.items():
        if _package(module) in ("config", "wire", "_py", "sharding", "protect", "execute"):
            assert not any(d.startswith("ddm.frontend.connection") for d in deps), module


# A module over MAX_LINES must be one table, one state machine or a twin; each exception says why.
MAX_LINES = 800
LONG_MODULES = {
    "ddm._py.shard": "pure-Python twin of ddm_core.shard, kept line for line with the .pyx",
    "ddm.process.master": "one state machine: the master's worker supervision, reload and handoff",
    "ddm.sharding.rewrite": "Plan.bind: one pass from a plan and a query's tokens to per-shard SQL",
}


@pytest.mark.parametrize("module", sorted(MODULES))
def test_modules_stay_small(module: str):
    lines = MODULES[module].read_text().count("\n")
    assert lines <= MAX_LINES or module in LONG_MODULES, \
        f"{module} has {lines} lines: split it by concern (or say in LONG_MODULES why it is one piece)"
