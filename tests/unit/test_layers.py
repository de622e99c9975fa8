"""The architecture as rules: layers, import cycles, module and class sizes.

Every import is read with :mod:`ast`, including imports inside functions and under
``TYPE_CHECKING``: a cycle hidden in a function is still a cycle in the design. Each rule is
also run on a small synthetic tree that breaks it, so a rule that can no longer fail is caught.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# bottom to top: a module may import its own layer and the ones below it, never above
LAYERS = ("errors", "wire", "config", "core", "drivers", "runtime", "testing", "ops", "cli")
PURE_LAYERS = ("wire", "config", "core")
NO_IO = ("asyncio", "websockets", "socket", "serial", "serial_asyncio", "pymodbus", "ssl")
DRIVER_PACKAGES = ("edge_proxy_drivers", "pymodbus", "serial", "serial_asyncio")
MAX_MODULE_LINES = 700
MAX_CLASS_LINES = 350


@dataclass
class Module:
    """One source module and what it imports."""

    name: str
    path: Path
    tree: ast.Module
    imports: set[str] = field(default_factory=set)


def _module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def load(root: Path, package: str) -> dict[str, Module]:
    """Every module of ``package`` under ``root`` with its resolved imports."""
    modules: dict[str, Module] = {}
    for path in sorted((root / package).rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        modules[_module_name(root, path)] = Module(_module_name(root, path), path, tree)
    for mod in modules.values():
        is_pkg = mod.path.name == "__init__.py"
        for node in ast.walk(mod.tree):
            if isinstance(node, ast.Import):
                mod.imports.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = mod.name.split(".")
                    anchor = anchor if is_pkg else anchor[:-1]
                    anchor = anchor[: len(anchor) - (node.level - 1)]
                    base = ".".join([*anchor, base] if base else anchor)
                for alias in node.names:
                    sub = f"{base}.{alias.name}"
                    mod.imports.add(sub if sub in modules else base)
    return modules


def internal_graph(modules: dict[str, Module]) -> dict[str, set[str]]:
    """Import edges between the modules themselves (a module importing itself is ignored)."""
    return {
        name: {i for i in mod.imports if i in modules and i != name}
        for name, mod in modules.items()
    }


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0

    def visit(node: str) -> None:
        nonlocal counter
        index[node] = low[node] = counter
        counter += 1
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            comp = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                comp.append(top)
                if top == node:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def layer_of(name: str, package: str) -> str | None:
    """The layer a module of ``package`` belongs to (None for the package root itself)."""
    parts = name.split(".")
    if len(parts) < 2 or parts[0] != package:
        return None
    return parts[1] if parts[1] in LAYERS else None


def _top(name: str) -> str:
    return name.split(".", maxsplit=1)[0]


def layer_violations(modules: dict[str, Module], package: str) -> Iterator[str]:
    """Imports that go up the layers, I/O in the pure layers, driver packages in the core."""
    for mod in modules.values():
        layer = layer_of(mod.name, package)
        for imp in sorted(mod.imports):
            if _top(imp) in DRIVER_PACKAGES:
                yield f"{mod.name} imports {imp}: the core never imports a driver"
            if layer in PURE_LAYERS and _top(imp) in NO_IO:
                yield f"{mod.name} imports {imp}: {layer}/ is pure (no I/O)"
            target = layer_of(imp, package)
            if layer is None or target is None:
                continue
            if LAYERS.index(target) > LAYERS.index(layer):
                yield f"{mod.name} ({layer}) imports {imp} ({target}), a layer above it"


def size_violations(modules: Iterable[Module], root: Path) -> Iterator[str]:
    """Modules over MAX_MODULE_LINES lines and classes over MAX_CLASS_LINES lines."""
    for mod in modules:
        lines = len(mod.path.read_text(encoding="utf-8").splitlines())
        where = mod.path.relative_to(root)
        if lines > MAX_MODULE_LINES:
            yield f"{where}: {lines} lines (limit {MAX_MODULE_LINES})"
        for node in ast.walk(mod.tree):
            if isinstance(node, ast.ClassDef) and node.end_lineno is not None:
                length = node.end_lineno - node.lineno + 1
                if length > MAX_CLASS_LINES:
                    yield f"{where}: class {node.name} is {length} lines"


# ---------------------------------------------------------------------------- the project


@pytest.fixture(scope="module")
def project() -> dict[str, Module]:
    return load(ROOT, "edge_proxy")


@pytest.fixture(scope="module")
def drivers() -> dict[str, Module]:
    return load(ROOT / "drivers", "edge_proxy_drivers")


def test_every_module_is_in_a_layer(project: dict[str, Module]) -> None:
    top_level = {"edge_proxy", "edge_proxy.__main__"}
    stray = [n for n in project if n not in top_level and layer_of(n, "edge_proxy") is None]
    assert stray == []


def test_no_import_cycles(project: dict[str, Module], drivers: dict[str, Module]) -> None:
    assert cycles(internal_graph(project)) == []
    assert cycles(internal_graph(drivers)) == []


def test_layers_import_only_downwards(project: dict[str, Module]) -> None:
    assert list(layer_violations(project, "edge_proxy")) == []


def test_runtime_never_imports_ops_or_cli(project: dict[str, Module]) -> None:
    bad = [
        f"{m.name} imports {i}"
        for m in project.values()
        if layer_of(m.name, "edge_proxy") == "runtime"
        for i in m.imports
        if layer_of(i, "edge_proxy") in ("ops", "cli")
    ]
    assert bad == []


def test_modules_and_classes_are_small(
    project: dict[str, Module], drivers: dict[str, Module]
) -> None:
    assert list(size_violations([*project.values(), *drivers.values()], ROOT)) == []


def test_every_error_code_is_a_wire_name(project: dict[str, Module]) -> None:
    from edge_proxy.wire.names import REQUEST_ERROR_CODES

    used: set[str] = set()
    for mod in project.values():
        for node in ast.walk(mod.tree):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id == "RequestError"
                and node.args
                and isinstance(node.args[0], ast.Constant)
                and isinstance(node.args[0].value, str)
            ):
                used.add(node.args[0].value)
    assert used, "no RequestError found: the scan is broken"
    assert used <= set(REQUEST_ERROR_CODES), used - set(REQUEST_ERROR_CODES)


# ---------------------------------------------------------------------------- the rules can fail


def _tree(root: Path, files: dict[str, str]) -> dict[str, Module]:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return load(root, "pkg")


def test_a_cycle_through_a_function_level_import_is_found(tmp_path: Path) -> None:
    modules = _tree(
        tmp_path,
        {
            "pkg/__init__.py": "",
            "pkg/a.py": "from pkg import b\n",
            "pkg/b.py": "def f():\n    from . import a\n",
            "pkg/c.py": "import pkg.a\n",
        },
    )
    assert cycles(internal_graph(modules)) == [["pkg.a", "pkg.b"]]


def test_io_in_a_pure_layer_and_an_upward_import_are_found(tmp_path: Path) -> None:
    modules = _tree(
        tmp_path,
        {
            "pkg/__init__.py": "",
            "pkg/core/__init__.py": "",
            "pkg/core/x.py": "import asyncio\nfrom pkg.runtime import y\n",
            "pkg/runtime/__init__.py": "",
            "pkg/runtime/y.py": "from pkg.ops.z import thing\nimport edge_proxy_drivers.modbus\n",
            "pkg/ops/__init__.py": "",
            "pkg/ops/z.py": "thing = 1\n",
        },
    )
    found = list(layer_violations(modules, "pkg"))
    assert "pkg.core.x imports asyncio: core/ is pure (no I/O)" in found
    assert "pkg.core.x (core) imports pkg.runtime.y (runtime), a layer above it" in found
    assert "pkg.runtime.y (runtime) imports pkg.ops.z (ops), a layer above it" in found
    assert any("edge_proxy_drivers.modbus: the core never imports a driver" in f for f in found)


def test_a_long_module_and_a_long_class_are_found(tmp_path: Path) -> None:
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_CLASS_LINES + 1))
    filler = "\n".join(f"y{i} = {i}" for i in range(MAX_MODULE_LINES))
    modules = _tree(
        tmp_path, {"pkg/__init__.py": "", "pkg/big.py": f"class Big:\n{body}\n{filler}\n"}
    )
    found = list(size_violations(modules.values(), tmp_path))
    assert any("pkg/big.py:" in f and "lines (limit" in f for f in found)
    assert any("class Big is" in f for f in found)
