"""The library's modules import one another without a cycle ("one way in").

Every module of ``osdpm_lib`` is parsed with :mod:`ast`; its imports of other library modules (``from .x import``,
``from .. import x``, ``from osdpm_lib.x import``, ``import osdpm_lib.x``), at module level and inside functions or
classes, are the edges of a graph that must be acyclic.  Imports inside ``if __name__ == "__main__":`` blocks are
not edges: they run only when the module is the program, never when another module imports it."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "osdpm_lib"


def module_names(root: Path = ROOT, package: str = PACKAGE) -> dict[str, Path]:
    """``{dotted module name: file}`` of every module of the package (``__init__.py``: the package's name)."""
    out = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _is_main_guard(node: ast.AST) -> bool:
    """``if __name__ == "__main__":`` (either operand order)."""
    if not isinstance(node, ast.If) or not isinstance(node.test, ast.Compare) or len(node.test.ops) != 1:
        return False
    sides = [node.test.left, *node.test.comparators]
    names = {s.id for s in sides if isinstance(s, ast.Name)}
    consts = {s.value for s in sides if isinstance(s, ast.Constant)}
    return isinstance(node.test.ops[0], ast.Eq) and names == {"__name__"} and consts == {"__main__"}


def _walk_imports(tree: ast.AST):
    """Every Import / ImportFrom node, at any depth, except those inside a ``__main__`` guard."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if _is_main_guard(node):
            stack.extend(node.orelse)       # the else branch runs on import
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        stack.extend(ast.iter_child_nodes(node))


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The library modules ``name`` (at ``path``) imports."""
    is_pkg = path.name == "__init__.py"
    here = name.split(".") if is_pkg else name.split(".")[:-1]       # the package relative imports start from
    out = set()
    for node in _walk_imports(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        else:
            if node.level:
                base = here[:len(here) - (node.level - 1)]
                if node.level - 1 > len(here):
                    raise ValueError(f"{path}: relative import beyond the top package")
                base = ".".join(base + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            # `from pkg import sub` imports the submodule pkg.sub when there is one, else a name of pkg
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
        for t in targets:
            # `import osdpm_lib.a.b` (or a name inside a module): the deepest library module it names
            while t and t not in modules:
                t = t.rpartition(".")[0]
            if t and t != name:
                out.add(t)
    return out


def import_graph(root: Path = ROOT, package: str = PACKAGE) -> dict[str, set[str]]:
    modules = module_names(root, package)
    return {name: imports_of(name, path, modules) for name, path in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle ``[a, b, ..., a]`` of ``graph`` or None (depth-first search, deterministic order)."""
    state: dict[str, int] = {}      # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_the_graph_sees_every_kind_of_import(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    for f in ("__init__.py", "a.py", "b.py", "c.py", "d.py", "sub/__init__.py", "sub/x.py"):
        (pkg / f).write_text("")
    (pkg / "a.py").write_text("from .b import f\n\ndef g():\n    from .sub import x\n")
    (pkg / "b.py").write_text("import pkg.c\n")
    (pkg / "c.py").write_text("def h():\n    from . import d\n")
    (pkg / "d.py").write_text("if __name__ == '__main__':\n    from .a import g\nelse:\n    from .sub.x import y\n")
    (pkg / "sub/x.py").write_text("from .. import a\nfrom . import NAME\n")
    g = import_graph(tmp_path, "pkg")
    assert g["pkg.a"] == {"pkg.b", "pkg.sub.x"}            # module level and function level
    assert g["pkg.b"] == {"pkg.c"} and g["pkg.c"] == {"pkg.d"}
    assert g["pkg.d"] == {"pkg.sub.x"}                       # the __main__ block is no edge, its else branch is
    assert g["pkg.sub.x"] == {"pkg.a", "pkg.sub"}            # `from .. import a`: the module; NAME: the package
    assert find_cycle(g) == ["pkg.a", "pkg.b", "pkg.c", "pkg.d", "pkg.sub.x", "pkg.a"]
    g["pkg.sub.x"] = {"pkg.sub"}                             # cut it: no cycle left
    assert find_cycle(g) is None
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycle_among_the_library_modules():
    graph = import_graph()
    assert "osdpm_lib.baselines.run" in graph and "osdpm_lib.profiles" in graph
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_profiles_does_not_import_the_baselines():
    graph = import_graph()
    assert not {m for m in graph["osdpm_lib.profiles"] if m.startswith("osdpm_lib.baselines")}


if __name__ == "__main__":      # python tests/test_imports.py: print the cycle, if any
    print(find_cycle(import_graph()) or "no cycle")
    pytest.main([__file__, "-q"])
