"""Dependencies point one way: `app`, `indexes`, `training` and `benchmarks` use
`crosearch_agent`, never the reverse, and the library's own modules import each other without
a cycle. Imports inside functions count: they hide a cycle, they do not remove it."""
import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LIBRARY = "crosearch_agent"
OUTSIDE = ("app", "app_views", "engine", "indexes", "training", "benchmarks", "tests")


def imports_of(path: Path) -> set[str]:
    """Every module a file imports, at any depth (top level, functions, methods)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def library_graph() -> dict[str, set[str]]:
    modules = {f"{LIBRARY}.{p.stem}": p for p in (ROOT / LIBRARY).glob("*.py") if p.stem != "__init__"}
    return {name: {m for m in imports_of(path) if m in modules and m != name} for name, path in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the graph as a path that ends where it starts, or None."""
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        state[node] = "done"
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_walker_sees_function_level_imports_and_finds_cycles(tmp_path):
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
    source = tmp_path / "probe.py"
    source.write_text("def f():\n    from crosearch_agent.policy import load_policy\n")
    assert "crosearch_agent.policy" in imports_of(source)


def test_the_library_has_no_import_cycle():
    assert find_cycle(library_graph()) is None


def test_the_library_imports_nothing_that_depends_on_it():
    offenders = {}
    for path in (ROOT / LIBRARY).glob("*.py"):
        bad = sorted(m for m in imports_of(path) if m.split(".")[0] in OUTSIDE)
        if bad:
            offenders[path.name] = bad
    assert offenders == {}
