"""The layout of ``lib_profile`` stays readable: no import cycles, small modules, the WebUI kept in its corner.

Every module's imports are read with :mod:`ast` (nothing is imported), function-level imports included:

* (a) no import cycle among lib_profile modules, counting function-level imports too (a cycle hidden in a
  function is still two modules that need each other). An import of ``pkg.mod`` is an edge to ``pkg.mod`` only,
  not to ``pkg/__init__``: Python runs the package first, but a package importing its own submodules is no cycle.
  Imports under ``if TYPE_CHECKING:`` are left out (they never run).
* (b) no module of ``lib_profile`` or ``scripts`` over :data:`MAX_LINES` lines.
* (c) ``lib_profile`` never imports the WebUI's ``modules`` package at module top (it must import without a WebUI).
* (d) only the WebUI host (``lib_profile/hosts/webui/``) and the WebUI glue (``lib_profile/webui/``) import
  ``modules`` at all, or look it up by name (``sys.modules.get("modules.paths")``, ``import_module("modules.x")``),
  or spell ADetailer's arguments (``"ad_model"``, ...): the core hands hosts host-neutral requests.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "lib_profile"
MAX_LINES = 400
WEBUI_PLACES = ("lib_profile/hosts/webui/", "lib_profile/webui/")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _type_checking_only(node: ast.AST) -> bool:
    test = getattr(node, "test", None)
    return isinstance(node, ast.If) and (
        (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING")
        or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"))


def imports(path: Path) -> list[tuple[str, list[str], bool]]:
    """``(module imported, names taken from it, at module top)`` for every import statement in ``path``."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: list[tuple[str, list[str], bool]] = []

    def visit(node: ast.AST, top: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if _type_checking_only(child):
                continue
            if isinstance(child, ast.Import):
                out.extend((alias.name, [], top) for alias in child.names)
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = package.split(".")
                    base = base[: len(base) - child.level + 1]
                    target = ".".join(base + ([child.module] if child.module else []))
                else:
                    target = child.module or ""
                out.append((target, [a.name for a in child.names], top))
            inner = top and not isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            visit(child, inner)

    visit(ast.parse(path.read_text(encoding="utf-8")), True)
    return out


def edges(path: Path) -> set[str]:
    """The lib_profile modules ``path`` imports (``from pkg import mod`` is an edge to ``pkg.mod``)."""
    out = set()
    for target, names, _top in imports(path):
        if not target.startswith("lib_profile"):
            continue
        subs = [f"{target}.{n}" for n in names if f"{target}.{n}" in MODULES]
        out.update(subs)
        if len(subs) < len(names) or not names:
            out.add(target)
    out.discard(module_name(path))
    return {m for m in out if m in MODULES}


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def strong(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                strong(w)
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
            strong(v)
    return found


def test_no_import_cycles():
    graph = {name: edges(path) for name, path in MODULES.items()}
    assert find_cycles(graph) == []


def test_the_cycle_finder_sees_a_cycle():
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert find_cycles({"a": {"b"}, "b": set()}) == []


def test_modules_are_small():
    files = [*MODULES.values(), *sorted((ROOT / "scripts").glob("*.py"))]
    too_long = {str(p.relative_to(ROOT)): n for p in files
                if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert too_long == {}, f"split these modules (each under {MAX_LINES} lines): {too_long}"


WEBUI_NAME = re.compile(r"modules\.|ad_[a-z_]+$")


def webui_names(path: Path) -> list[str]:
    """Strings naming a WebUI module (``"modules.shared"``, ``f"modules.{name}"``: the WebUI looked up by name with
    ``sys.modules.get`` or ``importlib.import_module`` rather than imported) or an ADetailer argument (``"ad_model"``)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and WEBUI_NAME.match(node.value):
            found.append(f"{node.value!r} (line {node.lineno})")
    return found


@pytest.mark.parametrize("name", sorted(MODULES))
def test_webui_modules_only_inside_functions_and_only_in_the_webui_corner(name):
    path = MODULES[name]
    rel = path.relative_to(ROOT).as_posix()
    webui = [(t, top) for t, _n, top in imports(path) if t == "modules" or t.startswith("modules.")]
    assert not [t for t, top in webui if top], f"{rel} imports the WebUI's modules at module top"
    if not rel.startswith(WEBUI_PLACES):
        assert webui == [], f"{rel} imports the WebUI's modules; only {' and '.join(WEBUI_PLACES)} may"
        assert webui_names(path) == [], f"{rel} names WebUI modules or ADetailer arguments; only {' and '.join(WEBUI_PLACES)} may"


def test_our_modules_are_imported_under_names_that_say_what_they_hold():
    """No one-letter alias of a lib_profile module (``from lib_profile.photos import reasons as R``) in the package,
    its tests or the benchmarks; ``torch.nn.functional as F`` stays, the field's own convention."""
    files = [*MODULES.values(), *sorted((ROOT / "tests").rglob("*.py")), *sorted((ROOT / "bench").rglob("*.py"))]
    short = []
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                for alias in node.names:
                    source = node.module if isinstance(node, ast.ImportFrom) and node.module else alias.name
                    if alias.asname and len(alias.asname) == 1 and source.startswith("lib_profile"):
                        short.append(f"{path.relative_to(ROOT)}:{node.lineno} {alias.name} as {alias.asname}")
    assert short == []
