"""Start-up: the commands that only print help, the version or the recipe list import no torch.

Checked structurally, not by timing: each command runs in a fresh interpreter, which prints the
heavy modules that are in ``sys.modules`` when the command has finished. The package facades
(``v2a``, ``v2a.recipe``, ``v2a.evaluate``) import their torch-bound names on first use, and the
commands show a few engine constants in ``--help`` from their own copies; both are kept equal to
their sources here.
"""

from __future__ import annotations

import ast
import importlib
import importlib.metadata
import json
import subprocess
import sys
from pathlib import Path

import pytest

from v2a.cli import build_parser

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


def run_v2a(*argv: str) -> dict:
    """Run ``v2a ARGV...`` in a fresh interpreter: its exit code and the heavy modules loaded."""
    done = subprocess.run([sys.executable, "-c", PROBE, json.dumps(argv)], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


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


def test_a_command_that_runs_still_gets_torch():
    """The deferred imports happen: `v2a plugins` loads the plug-ins, which need torch."""
    result = run_v2a("plugins", "--json")
    assert result["code"] == 0
    assert "torch" in result["loaded"]


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


@pytest.mark.parametrize("package", ["v2a", "v2a.recipe", "v2a.evaluate"])
def test_lazy_names_resolve_to_their_homes(package):
    facade = importlib.import_module(package)
    homes = facade._HOME_OF
    assert set(homes) <= set(facade.__all__)
    assert type_checking_names(facade) == set(homes)
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
    from v2a.tasks import EXPORT_DTYPES

    assert generate.DEFAULT_CROSSFADE == DEFAULT_CROSSFADE
    assert demo.DEFAULT_MAX_SECONDS == DEFAULT_MAX_SECONDS
    assert extract.DEFAULT_SHARD_SIZE == DEFAULT_SHARD_SIZE
    assert extract.DTYPE_NAMES == tuple(DTYPES)
    assert export.EXPORT_DTYPE_NAMES == tuple(EXPORT_DTYPES)
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
