"""The package's import direction: the method stands alone, the harness sits on top.

Each subpackage of ``moelora`` may import only from itself and the subpackages of lower level
below (module level or inside functions alike); the graph of ``moelora`` modules has no cycle
of module-level imports.
"""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import REPO_ROOT

PACKAGE = REPO_ROOT / "moelora"
# subpackage → level; a module may import from subpackages of its own level or lower, never higher,
# and never from a sibling of the same level unless listed in SAME_LEVEL_OK.
LEVELS = {
    "utils": 0,
    "method": 1,
    "data": 2,
    "models": 3,
    "engine": 4,
    "evaluation": 4,
    "harness": 5,
    "inference": 6,
}
SAME_LEVEL_OK = {("engine", "evaluation")}


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(REPO_ROOT).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _imports(path: Path, *, top_level_only: bool = False) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    nodes = tree.body if top_level_only else ast.walk(tree)
    found = set()
    for node in nodes:
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
    return {name for name in found if name == "moelora" or name.startswith("moelora.")}


def _subpackage(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and parts[1] in LEVELS) else None


def test_every_module_is_in_a_subpackage():
    loose = [
        m
        for m, p in _modules().items()
        if m.count(".") == 1 and p.name != "__init__.py" and m.split(".")[1] not in LEVELS
    ]
    assert not loose, f"modules outside a subpackage: {loose}"
    assert set(LEVELS) == {
        p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").is_file()
    }


def test_import_direction():
    modules = _modules()
    wrong = []
    for module, path in modules.items():
        own = _subpackage(module)
        if own is None:
            continue
        for name in _imports(path):
            other = _subpackage(name)
            if other is None or other == own or other not in LEVELS:
                continue
            if LEVELS[other] > LEVELS[own] or (
                LEVELS[other] == LEVELS[own] and (own, other) not in SAME_LEVEL_OK
            ):
                wrong.append(f"{module} imports {name}")
    assert not wrong, "imports against the layering:\n" + "\n".join(sorted(wrong))


def test_the_method_imports_only_itself():
    for module, path in _modules().items():
        if _subpackage(module) == "method":
            outside = [n for n in _imports(path) if _subpackage(n) not in (None, "method")]
            assert not outside, f"{module} imports {outside}"


def test_no_import_cycles():
    modules = _modules()
    graph = {}
    for module, path in modules.items():
        names = _imports(path, top_level_only=True)
        # ``from pkg import submodule`` depends on the submodule, not on the package
        graph[module] = {
            n
            for n in names
            if n in modules
            and n != module
            and not any(o.startswith(n + ".") and o in modules for o in names)
        }
    state: dict[str, int] = {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in graph[node]:
            if state.get(nxt) == 1:
                raise AssertionError("import cycle: " + " → ".join(stack + [node, nxt]))
            if nxt not in state:
                visit(nxt, stack + [node])
        state[node] = 2

    for node in graph:
        if node not in state:
            visit(node, [])
