"""The package's import graph: no circles, and product code never loads the lab's `experiments`.

The graph is read from the source (every `import` statement, in functions too), so a circle that
only a late import hides is still one. Importing `a.b.c` runs `a` and `a.b` first, so those are
edges as well; a module naming its own parent package is not.
"""

import ast
from pathlib import Path

from tests.helpers import REPO


def _modules(top: str) -> dict[str, Path]:
    mods = {}
    for path in sorted((REPO / top).rglob("*.py")):
        parts = list(path.relative_to(REPO).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        mods[".".join(parts)] = path
    return mods


def _imported(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)
    return names


def import_graph(top: str) -> dict[str, set[str]]:
    """Module -> the modules of `top` that importing it runs (targets and their packages)."""
    mods = _modules(top)
    graph = {}
    for mod, path in mods.items():
        deps = set()
        for name in _imported(path):
            parts = name.split(".")
            for i in range(1, len(parts) + 1):
                target = ".".join(parts[:i])
                if target in mods and target != mod and not mod.startswith(target + "."):
                    deps.add(target)
        graph[mod] = deps
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_checker_finds_a_circle():
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert circles({"a": {"b"}, "b": set()}) == []


def test_hybrid_jax_has_no_import_circle():
    assert circles(import_graph("hybrid_jax")) == []


def test_hybrid_jax_never_imports_experiments_code():
    bad = {mod: sorted(n for n in _imported(path) if n.split(".")[0] == "experiments")
           for mod, path in _modules("hybrid_jax").items()}
    assert {mod: names for mod, names in bad.items() if names} == {}


def test_every_subcommand_module_is_product_code_that_exists():
    import importlib.util

    from hybrid_jax.cli import SUBCOMMANDS

    for name, (module, _) in SUBCOMMANDS.items():
        assert module.split(".")[0] in ("hybrid_jax", "analysis"), (name, module)
        assert importlib.util.find_spec(module) is not None, (name, module)
