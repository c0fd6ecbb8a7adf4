"""Start-up: the commands that only print help, the version or the recipe list import no torch;
nor do the ones that list the plug-ins or load and check a recipe (``v2a plugins``, ``v2a recipe
check|show``), unless a recipe's trained weights file is compared with its model on the meta
device, which needs torch.

Checked structurally, not by timing: each command runs in a fresh interpreter, which prints the
heavy modules that are in ``sys.modules`` when the command has finished. The package facades
(``v2a``, ``v2a.recipe``, ``v2a.evaluate``, ``v2a.tasks``, ``v2a.generator_task``) import their
torch-bound names on first use, and the commands show a few engine constants in ``--help`` from
their own copies; both are kept equal to their sources here. The plug-in commands run with the
built-in plug-ins only (the distribution ``v2a``'s entry points): a third-party plug-in whose
module imports torch at its top makes them pay for torch, and still works.
"""

from __future__ import annotations

import ast
import importlib
import importlib.metadata
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import get_args

import pytest

from v2a.cli import build_parser
from v2a.registry import DISABLE_AUTOLOAD_ENV, ENTRY_POINT_GROUP, PLUGINS_ENV

HEAVY = ("torch", "numpy", "av", "safetensors")

PROBE = """
import json, runpy, sys
sys.argv = ["v2a", *json.loads(sys.argv[1])]
try:
    runpy.run_module("v2a", run_name="__main__", alter_sys=True)
except SystemExit as exc:
    code = exc.code
print(json.dumps({"code": code, "loaded": [m for m in %r if m in sys.modules]}))
""" % (HEAVY,)


def run_v2a(*argv: str, env: dict[str, str] | None = None) -> dict:
    """Run ``v2a ARGV...`` in a fresh interpreter (with ``env`` added to the environment): its
    exit code and the heavy modules loaded."""
    done = subprocess.run([sys.executable, "-c", PROBE, json.dumps(argv)], capture_output=True,
                          text=True, timeout=120, env={**os.environ, **(env or {})})
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def builtin_entry_points() -> list[importlib.metadata.EntryPoint]:
    """The ``v2a`` entry points of the installed distribution ``v2a`` (the core's training task
    and the built-in plug-ins)."""
    eps = [ep for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)
           if ep.dist is not None and ep.dist.metadata["Name"] == "v2a"]
    assert len(eps) > 10 and "v2a.generator_task" in {ep.value for ep in eps}
    return eps


def builtins_only() -> dict[str, str]:
    """The environment that loads the built-in plug-ins and no others."""
    names = ",".join(ep.name for ep in builtin_entry_points())
    return {DISABLE_AUTOLOAD_ENV: "1", PLUGINS_ENV: names}


def command_names() -> list[str]:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    return list(sub.choices)


@pytest.mark.parametrize("argv,code", [
    (("--help",), 0),
    ((), 2),  # bare v2a: the command list, as a usage error
    (("--version",), 0),
    (("recipe", "list"), 0),
])
def test_help_version_and_recipe_list_import_no_torch(argv, code):
    result = run_v2a(*argv)
    assert result["code"] == code
    assert "torch" not in result["loaded"]
    assert "av" not in result["loaded"] and "safetensors" not in result["loaded"]


def test_every_command_help_imports_no_torch():
    names = command_names()
    assert {"generate", "train", "evaluate", "doctor", "download"} <= set(names)
    for name in names:
        result = run_v2a(name, "--help")
        assert result["code"] == 0, name
        assert "torch" not in result["loaded"], f"`v2a {name} --help` imports torch"
        assert "av" not in result["loaded"], f"`v2a {name} --help` imports PyAV"


# -- listing plug-ins and checking recipes --------------------------------------------------------


def recipes_by_trained_weights() -> tuple[list[str], list[str]]:
    """The built-in recipes split by whether a component's ``weights`` option names a
    ``.safetensors`` file that is here (``v2a recipe check`` then compares its tensors with the
    model built on the meta device): ``(without, with)``."""
    from v2a.recipe import builtin_recipe_names, load_recipe
    from v2a.weights import NONE, PRETRAINED, cached_file

    without, trained = [], []
    for name in builtin_recipe_names():
        recipe = load_recipe(name, check_weights=False)
        files = [choice.options.get("weights") for _, choice in recipe.all_components()]
        named = [cached_file(w) for w in files
                 if isinstance(w, str) and w.strip().lower() not in (NONE, PRETRAINED)]
        has_trained = any(path is not None and path.suffix == ".safetensors" for path in named)
        (trained if has_trained else without).append(name)
    return without, trained


WITHOUT_TRAINED, WITH_TRAINED = recipes_by_trained_weights()


@pytest.mark.parametrize("argv", [("plugins",), ("plugins", "--json"),
                                  ("recipe", "show", "maskvat_hybrid"),
                                  ("recipe", "show", "--diff", "maskvat_hybrid")])
def test_listing_plugins_and_showing_a_recipe_import_no_torch(argv):
    result = run_v2a(*argv, env=builtins_only())
    assert result["code"] == 0
    assert not {"torch", "av", "safetensors"} & set(result["loaded"]), result["loaded"]


@pytest.mark.parametrize("recipe", WITHOUT_TRAINED)
def test_checking_a_recipe_without_trained_weights_imports_no_torch(recipe):
    result = run_v2a("recipe", "check", recipe, env=builtins_only())
    assert result["code"] == 0
    assert not {"torch", "av", "safetensors"} & set(result["loaded"]), result["loaded"]


def test_the_recipes_are_split_by_what_they_load():
    assert {"maskvat_hybrid", "scav"} <= set(WITHOUT_TRAINED)
    assert "tiny" in WITH_TRAINED  # its fuser and generator ship as .safetensors files


@pytest.mark.parametrize("recipe", WITH_TRAINED)
def test_checking_trained_weights_still_builds_on_the_meta_device(recipe):
    """The deferred imports happen: comparing a trained file's shapes needs torch."""
    result = run_v2a("recipe", "check", recipe, env=builtins_only())
    assert result["code"] == 0
    assert "torch" in result["loaded"] and "safetensors" in result["loaded"]


MODULE_PROBE = """
import json, sys, traceback
first = {}

class FirstImporter:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" and not first:
            first["chain"] = [f.filename for f in traceback.extract_stack()
                              if "importlib" not in f.filename and f.filename != "<string>"]
        return None

sys.meta_path.insert(0, FirstImporter())
__import__(sys.argv[1])
print(json.dumps({"torch": "torch" in sys.modules, "chain": first.get("chain", [])}))
"""


def torch_importers(module: str) -> list[str] | None:
    """Import ``module`` in a fresh interpreter: ``None`` when torch was not imported, else the
    project files on the stack when it first was (who imported it)."""
    done = subprocess.run([sys.executable, "-c", MODULE_PROBE, module], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    if not result["torch"]:
        return None
    root = str(Path(__file__).resolve().parent.parent)
    return [f.replace(root + os.sep, "") for f in result["chain"] if "site-packages" not in f]


@pytest.mark.parametrize("module", sorted({ep.value.partition(":")[0]
                                           for ep in builtin_entry_points()}))
def test_each_builtin_entry_point_module_imports_no_torch(module):
    """Every module the registry imports to list the plug-ins is light: its implementation is
    in another module, imported when the component is built."""
    chain = torch_importers(module)
    assert chain is None, f"importing {module} imports torch, through {' -> '.join(chain)}"


@pytest.mark.parametrize("module", ["v2a.registry", "v2a.weights", "v2a.pretrained", "v2a.tasks",
                                    "v2a.generator_task", "v2a.recipe.config",
                                    "v2a.recipe.consistency", "v2a.recipe.validation",
                                    "v2a.recipe.load", "v2a.recipe.copies",
                                    "v2a.commands.recipe", "v2a.commands.plugins"])
def test_the_core_modules_that_list_plugins_and_check_recipes_import_no_torch(module):
    chain = torch_importers(module)
    assert chain is None, f"importing {module} imports torch, through {' -> '.join(chain)}"


HEAVY_PLUGIN = """
import torch  # at the module's top: the plug-in pays for torch, and works

from v2a import ComponentSpec, hookimpl
from tests.components_for_tests import MeanColour, MeanColourConfig


@hookimpl
def v2a_register_components(register):
    register(ComponentSpec(kind="visual_encoder", name="heavy_colour", build=MeanColour,
                           config=MeanColourConfig, description="imports torch at its top"))
"""

HEAVY_PROBE = """
import importlib.metadata, json, sys
from v2a.registry import Registry
registry = Registry()
registry.load_entry_point(importlib.metadata.EntryPoint(name="heavy", value="heavy_plugin",
                                                        group="v2a"))
component = registry.build("visual_encoder", "heavy_colour")
print(json.dumps({"problems": registry.problems, "built": type(component).__name__,
                  "status": registry.get("visual_encoder", "heavy_colour").status}))
"""


def test_a_plugin_whose_module_imports_torch_still_works(tmp_path):
    (tmp_path / "heavy_plugin.py").write_text(HEAVY_PLUGIN)
    root = str(Path(__file__).resolve().parent.parent)
    done = subprocess.run([sys.executable, "-c", HEAVY_PROBE], capture_output=True, text=True,
                          timeout=120, cwd=tmp_path,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), root])})
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result == {"problems": [], "built": "MeanColour", "status": "ok"}


def test_the_registry_kind_names_are_the_interfaces_kinds():
    from v2a.interfaces import KINDS
    from v2a.registry import KIND_NAMES
    assert KIND_NAMES == tuple(KINDS)


# -- the lazy package facades ----------------------------------------------------------------------


def type_checking_names(module) -> set[str]:
    """The names the module's ``if TYPE_CHECKING:`` block imports."""
    tree = ast.parse(Path(module.__file__).read_text())
    names = set()
    for node in tree.body:
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            for stmt in ast.walk(node):
                if isinstance(stmt, ast.ImportFrom):
                    names.update(alias.asname or alias.name for alias in stmt.names)
    return names


#: Facades whose ``TYPE_CHECKING`` block imports other names too (type hints).
TYPE_HINTS = {"v2a.tasks": {"Tensor", "nn", "Recipe"}, "v2a.generator_task": {"Recipe"}}


@pytest.mark.parametrize("package", ["v2a", "v2a.recipe", "v2a.evaluate", "v2a.tasks",
                                     "v2a.generator_task"])
def test_lazy_names_resolve_to_their_homes(package):
    facade = importlib.import_module(package)
    homes = facade._HOME_OF
    assert set(homes) <= set(facade.__all__)
    assert type_checking_names(facade) == set(homes) | TYPE_HINTS.get(package, set())
    for name in facade.__all__:
        value = getattr(facade, name)
        if name in homes:
            assert value is getattr(importlib.import_module(homes[name]), name), name
    assert set(facade.__all__) <= set(dir(facade))
    with pytest.raises(AttributeError, match="no_such_name"):
        getattr(facade, "no_such_name")


def test_from_v2a_import_still_works():
    from v2a import ComponentSpec, FeatureSequence, hookimpl
    from v2a.registry import ComponentSpec as home
    assert ComponentSpec is home and FeatureSequence.__name__ == "FeatureSequence"
    assert callable(hookimpl)


# -- the engine constants the commands' --help shows --------------------------------------------


def test_help_constants_equal_their_engines():
    from v2a.cache import DEFAULT_SHARD_SIZE, DTYPES
    from v2a.commands import demo, export, extract, generate, manifest
    from v2a.converters import MUSIC_PATTERN, VGGSOUND_PATTERN
    from v2a.demo import DEFAULT_MAX_SECONDS
    from v2a.generate.editing import DEFAULT_CROSSFADE
    from v2a.recipe.config import ExportDtype
    from v2a.tasks import EXPORT_DTYPES

    assert generate.DEFAULT_CROSSFADE == DEFAULT_CROSSFADE
    assert demo.DEFAULT_MAX_SECONDS == DEFAULT_MAX_SECONDS
    assert extract.DEFAULT_SHARD_SIZE == DEFAULT_SHARD_SIZE
    assert extract.DTYPE_NAMES == tuple(DTYPES)
    assert export.EXPORT_DTYPE_NAMES == tuple(EXPORT_DTYPES) == get_args(ExportDtype)
    assert manifest.VGGSOUND_PATTERN == VGGSOUND_PATTERN
    assert manifest.MUSIC_PATTERN == MUSIC_PATTERN


# -- the benchmark -------------------------------------------------------------------------------


def test_the_startup_benchmark_quick_run_prints_its_table(capsys):
    """``benchmarks/bench_startup.py --quick``: one run of each light command, in a table that
    says torch was not imported by any v2a command in it (and was by ``import torch``)."""
    import importlib.util

    path = Path(__file__).resolve().parent.parent / "benchmarks" / "bench_startup.py"
    spec = importlib.util.spec_from_file_location("bench_startup", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert bench.main(["--quick"]) == 0
    printed = capsys.readouterr().out
    assert "load average" in printed and "CPU:" in printed
    rows = {line.split("|")[1].strip(" `"): line.split("|")[3].strip()
            for line in printed.splitlines() if line.startswith("| `")}
    assert rows["python -c 'import torch'"] == "yes"
    v2a_rows = {k: v for k, v in rows.items() if k.startswith("v2a ")}
    assert set(v2a_rows) == {"v2a --version", "v2a --help", "v2a generate --help",
                             "v2a recipe list"}
    assert set(v2a_rows.values()) == {"no"}


def test_a_distributions_metadata_is_parsed_once_for_all_its_entry_points():
    """Loading the plug-ins names each one's distribution; the metadata file behind it is
    parsed once per distribution, not once per entry point (three times each, before)."""
    from v2a.registry import distribution_of, plugin_names

    class CountingDistribution:
        reads = 0

        @property
        def metadata(self):
            type(self).reads += 1
            return {"Name": "some-plugins", "Version": "1.2"}

    dist = CountingDistribution()
    eps = [importlib.metadata.EntryPoint(name=f"p{i}", value=f"pkg.p{i}", group="v2a")._for(dist)
           for i in range(5)]
    assert plugin_names(eps) == [f"p{i}" for i in range(5)]
    assert [distribution_of(ep) for ep in eps] == [("some-plugins", "1.2")] * 5
    assert CountingDistribution.reads == 1
