"""The shape of the code base, checked with ``ast`` (docs/architecture.md says why):

* no import cycle among the modules of ``v2a/`` and ``plugins/``, and every import goes to the
  same layer of :data:`LAYERS` or one below (plug-ins: only to :data:`PLUGIN_MAY_IMPORT`);
* no ``from v2a… import`` / ``import v2a…`` inside a function body, except where a comment on
  that line starting ``# deferred:`` says which heavy optional dependency it keeps off import;
* no module over :data:`MAX_MODULE_LINES` lines, no function over :data:`MAX_FUNCTION_LINES`
  lines unless its first line carries a ``# long:`` comment saying why;
* the core names no plug-in: ``v2a/`` never imports ``v2a_plugins`` nor mentions a built-in
  component by its class or module name.
"""

from __future__ import annotations

import ast
import re
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = {"v2a": ROOT / "v2a", "v2a_plugins": ROOT / "plugins"}
MAX_MODULE_LINES = 600
MAX_FUNCTION_LINES = 80


def module_files() -> dict[str, Path]:
    """Dotted module name → file, for every module of the two packages."""
    found = {}
    for package, folder in PACKAGES.items():
        for path in sorted(folder.rglob("*.py")):
            parts = [package, *path.relative_to(folder).with_suffix("").parts]
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


MODULES = module_files()


def is_package(name: str) -> bool:
    return MODULES[name].name == "__init__.py"


def imported_modules(name: str, node: ast.Import | ast.ImportFrom) -> list[str]:
    """The project modules an import statement of module ``name`` loads (the innermost module
    each dotted name reaches: ``from v2a.media import probe`` is ``v2a.media.probe`` when that
    is a module, else ``v2a.media``)."""
    if isinstance(node, ast.Import):
        targets = [alias.name for alias in node.names]
    else:
        base = node.module or ""
        if node.level:
            package = name.split(".") if is_package(name) else name.split(".")[:-1]
            anchor = package[: len(package) - node.level + 1]
            base = ".".join([*anchor, *([node.module] if node.module else [])])
        targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base
                   for alias in node.names]
    found = []
    for target in targets:
        parts = target.split(".")
        while parts and ".".join(parts) not in MODULES:
            parts.pop()
        if parts and ".".join(parts) != name:
            found.append(".".join(parts))
    return found


def function_imports(tree: ast.AST) -> set[int]:
    """Line numbers of the import statements inside function bodies."""
    lines = set()
    for fn in ast.walk(tree):
        if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            lines.update(n.lineno for n in ast.walk(fn) if isinstance(n, (ast.Import, ast.ImportFrom)))
    return lines


def parsed(name: str) -> tuple[ast.Module, list[str]]:
    text = MODULES[name].read_text()
    return ast.parse(text), text.splitlines()


def import_graph() -> dict[str, set[str]]:
    """Module → the project modules its module-level code imports (``TYPE_CHECKING`` blocks
    included: a type-only import upwards is a cycle waiting for its first runtime use)."""
    graph: dict[str, set[str]] = defaultdict(set)
    for name in MODULES:
        tree, _ = parsed(name)
        inside = function_imports(tree)
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)) and node.lineno not in inside:
                graph[name].update(imported_modules(name, node))
        # importing a.b.c runs a/__init__ and a/b/__init__ first
        for target in list(graph[name]):
            parts = target.split(".")
            graph[name].update(".".join(parts[:i]) for i in range(1, len(parts))
                               if ".".join(parts[:i]) in MODULES and not name.startswith(".".join(parts[:i])))
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
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

    for node in sorted(set(graph).union(*graph.values())):
        if node not in index:
            visit(node)
    return found


def test_the_checker_finds_cycles_and_submodule_imports():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []
    node = ast.parse("from v2a.commands import generate").body[0]
    assert imported_modules("v2a.cli", node) == ["v2a.commands.generate"]


def test_no_import_cycle():
    found = cycles(import_graph())
    assert not found, "import cycles: " + "; ".join(" <-> ".join(c) for c in found)


#: The core's layers, bottom first (docs/architecture.md draws them). A unit is a top-level
#: module or package of ``v2a``; ``v2a`` itself is the package's public face (``from v2a
#: import ...``). A module may import from its own layer and the layers below, never above.
LAYERS = (
    ("foundation", {"errors", "log", "files", "lazy", "machine", "sequences", "schema", "interpolation", "hookspecs",
                    "masking", "metrics"}),
    ("contracts", {"interfaces", "downloads", "hub", "pretrained", "weights", "meta_device",
                   "distributed"}),
    ("registry", {"registry", "testing"}),
    ("recipes", {"recipe"}),
    ("tasks and media", {"tasks", "media", "v2a"}),
    ("features", {"features"}),
    ("manifests", {"manifests"}),
    ("items", {"items"}),
    ("converters", {"converters"}),
    ("cache", {"cache"}),
    ("datasets", {"datasets"}),
    ("models", {"objective", "sampler", "generator_task", "output_stage", "synth"}),
    ("planning", {"resources"}),
    ("engines", {"training", "generate", "evaluate", "demo", "export"}),
    ("commands", {"commands", "cli", "__main__"}),
)
#: What a plug-in may import of the core: what the public interfaces need, and the batch a
#: training task reads; never the data path's machinery, the engines or the commands.
PLUGIN_MAY_IMPORT = {"v2a", "machine", "errors", "log", "files", "sequences", "schema", "hookspecs",
                     "lazy", "masking", "metrics", "interfaces", "downloads", "weights", "pretrained",
                     "registry", "recipe", "tasks", "items", "media", "testing", "plugins"}


def unit_of(module: str) -> str:
    parts = module.split(".")
    if parts[0] == "v2a_plugins":
        return "plugins"
    return parts[1] if len(parts) > 1 else "v2a"


def layer_of(unit: str) -> int:
    return next(i for i, (_, units) in enumerate(LAYERS) if unit in units)


def test_every_core_module_has_a_layer():
    units = {unit_of(m) for m in MODULES} - {"plugins"}
    placed = set().union(*(u for _, u in LAYERS))
    assert units <= placed, f"give these a layer in LAYERS: {sorted(units - placed)}"


def test_imports_go_down_the_layers():
    upward = []
    for module, targets in import_graph().items():
        source = unit_of(module)
        for target in targets:
            unit = unit_of(target)
            if unit == source:
                continue
            if source == "plugins":
                if unit not in PLUGIN_MAY_IMPORT:
                    upward.append(f"{module} -> {target}")
            elif unit == "plugins" or layer_of(unit) > layer_of(source):
                upward.append(f"{module} ({LAYERS[layer_of(source)][0]}) -> {target}")
    assert not upward, "imports up the layers: " + "; ".join(sorted(upward))


def test_no_deferred_project_imports():
    offenders = []
    for name in MODULES:
        tree, lines = parsed(name)
        inside = function_imports(tree)
        for node in ast.walk(tree):
            if not isinstance(node, (ast.Import, ast.ImportFrom)) or node.lineno not in inside:
                continue
            if not imported_modules(name, node):
                continue  # a third-party module: deferring those is the point
            if "# deferred:" not in lines[node.lineno - 1]:
                offenders.append(f"{MODULES[name].relative_to(ROOT)}:{node.lineno}")
    assert not offenders, ("project imports inside functions (move them to the top, or say "
                           "'# deferred: <why>'): " + ", ".join(offenders))


def test_no_oversized_modules_or_functions():
    too_long = []
    for name, path in MODULES.items():
        tree, lines = parsed(name)
        if len(lines) > MAX_MODULE_LINES:
            too_long.append(f"{path.relative_to(ROOT)} has {len(lines)} lines")
        for fn in ast.walk(tree):
            if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = fn.end_lineno - fn.lineno + 1
                header = " ".join(lines[fn.lineno - 1 : fn.body[0].lineno])
                if length > MAX_FUNCTION_LINES and "# long:" not in header:
                    too_long.append(f"{path.relative_to(ROOT)}:{fn.lineno} {fn.name}() has "
                                    f"{length} lines")
    assert not too_long, "; ".join(too_long)


BUILT_IN_NAMES = re.compile(
    r"\b(v2a_plugins|scav|Scav|SCAV|DACCodec|EncodecCodec|ClipEncoder|S3DEncoder|BeatsEncoder|"
    r"MaskVATGenerator|MaskVATFuser|SpectralRVQ\w*)\b"
)


@pytest.mark.parametrize("name", sorted(n for n in MODULES if n.startswith("v2a.") or n == "v2a"))
def test_the_core_names_no_plugin(name):
    text = MODULES[name].read_text()
    found = sorted({m.group(0) for m in BUILT_IN_NAMES.finditer(text)})
    assert not found, f"{MODULES[name].relative_to(ROOT)} names {found}"
