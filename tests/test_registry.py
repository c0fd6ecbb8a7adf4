"""The plug-in registry: entry points, duplicates, broken plug-ins, optional dependencies,
training tasks."""

from __future__ import annotations

import importlib.metadata
import json
import os
import subprocess
import sys
import textwrap
import types
from dataclasses import dataclass
from pathlib import Path

import pytest
import v2a_plugins.rerankers.keep_first
from v2a_plugins.rerankers.keep_first import KeepFirst, KeepFirstConfig

from v2a import ComponentSpec, TrainingTaskSpec, hookimpl
from v2a.errors import PluginError
from v2a.registry import Registry

ROOT = Path(__file__).resolve().parents[1]

def plugin_module(name: str, *specs: ComponentSpec) -> types.ModuleType:
    """A plug-in module object whose hook registers ``specs``."""
    module = types.ModuleType(name)

    @hookimpl
    def v2a_register_components(register):
        for spec in specs:
            register(spec)

    module.v2a_register_components = v2a_register_components
    return module


def keep_first(name: str = "keep", **kwargs) -> ComponentSpec:
    kwargs.setdefault("build", KeepFirst)
    return ComponentSpec(kind="reranker", name=name, config=KeepFirstConfig, **kwargs)


def test_builtins_come_through_the_public_entry_point_group():
    eps = {ep.name: ep for ep in importlib.metadata.entry_points(group="v2a")}
    assert eps["keep_first"].value == "v2a_plugins.rerankers.keep_first"
    assert eps["mel"].value == "v2a_plugins.audio_encoders.mel"
    registry = Registry.from_environment()
    entry = registry.get("reranker", "none")
    assert entry.plugin.provider == "v2a"
    assert entry.plugin.version == importlib.metadata.version("v2a")
    assert entry.status == "ok"


def test_duplicate_name_is_rejected_naming_both_providers():
    registry = Registry()
    registry.register_module(plugin_module("first_pkg", keep_first("dup")))
    registry.register_module(plugin_module("second_pkg", keep_first("dup")))
    assert ("reranker", "dup") not in registry.entries
    assert any("first_pkg" in p and "second_pkg" in p for p in registry.problems)
    with pytest.raises(PluginError, match="first_pkg.*second_pkg"):
        registry.get("reranker", "dup")
    statuses = [r["status"] for r in registry.rows() if r["name"] == "dup"]
    assert len(statuses) == 2 and all(s.startswith("conflict") for s in statuses)


def test_same_name_for_different_kinds_is_fine():
    @dataclass
    class NoOptions:
        pass

    registry = Registry()
    registry.register_module(v2a_plugins.rerankers.keep_first)
    import v2a_plugins.audio_encoders.mel as ae

    registry.register_module(plugin_module("other", ComponentSpec(
        kind="audio_encoder", name="none", build=lambda c: ae.MelEncoder(ae.MelConfig()),
        config=NoOptions,
    )))
    assert registry.get("reranker", "none").plugin.name == "v2a_plugins.rerankers.keep_first"
    assert registry.get("audio_encoder", "none").plugin.name == "other"


def test_plugin_that_fails_to_import_is_reported_and_others_keep_working():
    registry = Registry()
    broken = importlib.metadata.EntryPoint(
        name="broken_thing", value="v2a_no_such_module_xyz.plugin", group="v2a"
    )
    good = importlib.metadata.EntryPoint(name="keep_first", value="v2a_plugins.rerankers.keep_first", group="v2a")
    registry.load_entry_point(broken)
    registry.load_entry_point(good)
    assert registry.get("reranker", "none").status == "ok"
    assert "broken_thing" in registry.plugins
    assert "failed to import" in registry.plugins["broken_thing"].error
    assert any("broken_thing" in p and "ModuleNotFoundError" in p for p in registry.problems)
    failed = [r for r in registry.rows() if r["name"] == "broken_thing"]
    assert failed and failed[0]["status"].startswith("failed to import")


def test_plugin_whose_hook_raises_is_reported_by_name():
    module = types.ModuleType("raising")

    @hookimpl
    def v2a_register_components(register):
        raise RuntimeError("boom")

    module.v2a_register_components = v2a_register_components
    registry = Registry()
    registry.register_module(module)
    registry.register_module(v2a_plugins.rerankers.keep_first)
    assert "boom" in registry.plugins["raising"].error
    assert registry.names("reranker") == ["none"]


def test_plugin_with_a_misspelt_hook_argument_is_rejected():
    module = types.ModuleType("misspelt")

    @hookimpl
    def v2a_register_components(registr):  # wrong argument name
        pass

    module.v2a_register_components = v2a_register_components
    registry = Registry()
    registry.register_module(module)
    assert "not a valid v2a plug-in" in registry.plugins["misspelt"].error


def test_invalid_specs_are_ignored_with_a_problem():
    registry = Registry()
    registry.register_module(plugin_module(
        "odd",
        ComponentSpec(kind="codecc", name="x", build=KeepFirst, config=KeepFirstConfig),
        ComponentSpec(kind="reranker", name="y", build=KeepFirst, config=dict),
    ))
    registry.register_module(plugin_module(
        "shouty", ComponentSpec(kind="reranker", name="Bad Name", build=KeepFirst, config=KeepFirstConfig),
    ))
    assert registry.entries == {}
    assert any("'Bad Name': names use lowercase" in p for p in registry.problems)
    assert any("unknown kind 'codecc'" in p and "'codec'" in p for p in registry.problems)
    assert any("not a dataclass" in p for p in registry.problems)


def test_missing_optional_dependency_shows_how_to_install():
    registry = Registry()
    registry.register_module(plugin_module("needy", keep_first(
        "needy", requires=("v2a_missing_dep_xyz",), install="pip install 'v2a[needy]'"
    )))
    entry = registry.get("reranker", "needy")
    assert entry.status == "missing v2a_missing_dep_xyz; install with: pip install 'v2a[needy]'"
    with pytest.raises(PluginError, match=r"needs v2a_missing_dep_xyz.*pip install 'v2a\[needy\]'"):
        registry.build("reranker", "needy")


def test_unknown_name_suggests_the_closest():
    registry = Registry()
    registry.register_module(v2a_plugins.rerankers.keep_first)
    with pytest.raises(PluginError, match="did you mean 'none'"):
        registry.get("reranker", "nnoe")
    with pytest.raises(PluginError, match="did you mean 'reranker'"):
        registry.get("rerankr", "none")


def test_build_validates_config_and_checks_the_interface():
    registry = Registry()
    registry.register_module(v2a_plugins.rerankers.keep_first)
    config = registry.config_for("reranker", "none", {"sample_rate": 16000})
    built = registry.build("reranker", "none", config)
    assert isinstance(built, KeepFirst) and built.sample_rate == 16000
    with pytest.raises(PluginError, match="sample_rat.*did you mean 'sample_rate'"):
        registry.config_for("reranker", "none", {"sample_rat": 1})
    registry.register_module(plugin_module("liar", ComponentSpec(
        kind="codec", name="liar", build=KeepFirst, config=KeepFirstConfig,
    )))
    with pytest.raises(TypeError, match="does not implement AudioCodec"):
        registry.build("codec", "liar")


def test_autoload_switch_and_explicit_plugin_list(monkeypatch):
    monkeypatch.setenv("V2A_DISABLE_PLUGIN_AUTOLOAD", "1")
    monkeypatch.delenv("V2A_PLUGINS", raising=False)
    assert Registry.from_environment().entries == {}
    monkeypatch.setenv("V2A_PLUGINS", "keep_first, not_installed_anywhere")
    registry = Registry.from_environment()
    assert list(registry.entries) == [("reranker", "none")]
    assert any("not_installed_anywhere" in p for p in registry.problems)


# -- training tasks -----------------------------------------------------------------------------


def task_module(name: str, *specs) -> types.ModuleType:
    """A plug-in module object whose training-task hook registers ``specs``."""
    module = types.ModuleType(name)

    @hookimpl
    def v2a_register_training_tasks(register):
        for spec in specs:
            register(spec)

    module.v2a_register_training_tasks = v2a_register_training_tasks
    return module


def task(name: str = "probe", **exports: str) -> TrainingTaskSpec:
    return TrainingTaskSpec(name=name, build=lambda recipe: None,
                            exports=exports or {"fuser": f"{name}.safetensors"},
                            description="a probe")


def test_training_tasks_register_through_their_own_hook_and_are_listed():
    registry = Registry()
    registry.register_module(task_module("probes", task("probe")))
    registry.register_module(v2a_plugins.rerankers.keep_first)
    assert registry.training_task("probe").exports == {"fuser": "probe.safetensors"}
    assert registry.training_task("probe").slots == ("fuser",)
    assert registry.training_task_names() == ["probe"] and ("reranker", "none") in registry.entries
    [row] = [r for r in registry.rows() if r["kind"] == "training_task"]
    assert (row["name"], row["plugin"], row["status"], row["description"]) == (
        "probe", "probes", "ok", "a probe")
    with pytest.raises(PluginError, match=r"no training task is named 'prob'; did you mean "
                                          r"'probe'\? \(see `v2a plugins`\)"):
        registry.training_task("prob")


def test_a_training_task_name_two_plugins_claim_is_disabled():
    registry = Registry()
    registry.register_module(task_module("first_pkg", task("dup")))
    registry.register_module(task_module("second_pkg", task("dup")))
    assert registry.training_task_names() == []
    assert any("training_task name 'dup'" in p and "first_pkg" in p and "second_pkg" in p
               for p in registry.problems)
    with pytest.raises(PluginError, match="training task 'dup' is provided by both .*first_pkg"
                                          ".*second_pkg"):
        registry.training_task("dup")
    statuses = [r["status"] for r in registry.rows() if r["name"] == "dup"]
    assert len(statuses) == 2 and all(s.startswith("conflict") for s in statuses)


def test_invalid_training_task_specs_are_ignored_with_a_problem():
    registry = Registry()
    registry.register_module(task_module(
        "bad", task("Bad Name"), task("nowhere", fuser="../fuser.safetensors"),
        task("pickled", fuser="fuser.pt"), keep_first("not_a_task"),
    ))
    assert registry.training_tasks == {}
    assert any("'Bad Name': names use lowercase" in p for p in registry.problems)
    assert any("'nowhere'" in p and "'../fuser.safetensors'" in p for p in registry.problems)
    assert any("'pickled'" in p and "ending .safetensors" in p for p in registry.problems)
    assert any("not a TrainingTaskSpec" in p for p in registry.problems)


def test_a_training_task_hook_that_raises_breaks_only_its_plugin():
    module = types.ModuleType("raising_tasks")

    @hookimpl
    def v2a_register_training_tasks(register):
        raise RuntimeError("boom")

    module.v2a_register_training_tasks = v2a_register_training_tasks
    registry = Registry()
    registry.register_module(module)
    registry.register_module(task_module("fine", task("probe")))
    assert "raised in v2a_register_training_tasks: RuntimeError: boom" in (
        registry.plugins["raising_tasks"].error)
    assert registry.training_task_names() == ["probe"]


def test_the_core_generator_task_comes_through_the_entry_point_group(monkeypatch):
    eps = {ep.name: ep for ep in importlib.metadata.entry_points(group="v2a")}
    assert eps["generator_task"].value == "v2a.generator_task"
    spec = Registry.from_environment().training_task("generator")
    assert spec.exports == {"fuser": "fuser.safetensors", "generator": "generator.safetensors"}
    assert spec.optional_exports == {"text_encoder": "text_encoder.safetensors"}
    # without autoload it comes when named, like any plug-in
    monkeypatch.setenv("V2A_DISABLE_PLUGIN_AUTOLOAD", "1")
    monkeypatch.setenv("V2A_PLUGINS", "generator_task")
    registry = Registry.from_environment()
    assert registry.training_task_names() == ["generator"]
    assert registry.entries == {}


# -- plug-ins that must not take over ---------------------------------------------------------


def write_distribution(site: Path, name: str, entry_points: dict[str, str],
                       modules: dict[str, str], version: str = "1.0") -> None:
    """An installed distribution in ``site`` (a folder for sys.path): its ``*.dist-info`` with
    METADATA and the ``v2a`` entry points, and its modules (dotted name -> source)."""
    info = site / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    lines = "".join(f"{ep} = {target}\n" for ep, target in entry_points.items())
    (info / "entry_points.txt").write_text(f"[v2a]\n{lines}")
    for dotted, source in modules.items():
        *packages, module = dotted.split(".")
        folder = site.joinpath(*packages)
        folder.mkdir(parents=True, exist_ok=True)
        for depth in range(1, len(packages) + 1):
            site.joinpath(*packages[:depth], "__init__.py").touch()
        (folder / f"{module}.py").write_text(textwrap.dedent(source))


def v2a_plugins_json(site: Path) -> tuple[int, dict, str]:
    """`v2a --json plugins` in a fresh process that sees the distributions in ``site`` first
    (PYTHONPATH comes before site-packages), with every plug-in autoloaded."""
    env = {k: v for k, v in os.environ.items() if k not in ("V2A_DISABLE_PLUGIN_AUTOLOAD", "V2A_PLUGINS")}
    env["PYTHONPATH"] = os.pathsep.join([str(site), str(ROOT)])
    done = subprocess.run([sys.executable, "-m", "v2a", "plugins", "--json"], capture_output=True,
                          text=True, env=env, timeout=120)
    listing = json.loads(done.stdout) if done.returncode == 0 else {}
    return done.returncode, listing, done.stderr


IMPOSTOR = """\
    from v2a import ComponentSpec, TrainingTaskSpec, hookimpl
    from v2a_plugins.visual_encoders.colour_motion import ColourMotionConfig, ColourMotionEncoder
    from v2a_plugins.rerankers.keep_first import KeepFirst, KeepFirstConfig

    @hookimpl
    def v2a_register_components(register):
        register(ComponentSpec(kind="visual_encoder", name="colour_motion", build=ColourMotionEncoder,
                               config=ColourMotionConfig, description="not the real one"))
        register(ComponentSpec(kind="reranker", name="other_keep", build=KeepFirst,
                               config=KeepFirstConfig))
"""


def test_an_entry_point_named_like_a_builtins_does_not_replace_it(tmp_path):
    write_distribution(tmp_path, "other-pkg", {"colour_motion": "other_pkg.plugin"},
                       {"other_pkg.plugin": IMPOSTOR})
    code, listing, err = v2a_plugins_json(tmp_path)
    assert code == 0, err
    rows = listing["components"]
    claims = [r for r in rows if (r["kind"], r["name"]) == ("visual_encoder", "colour_motion")]
    # both plug-ins were loaded, each known by its distribution, and the name is disabled
    assert sorted((r["provider"], r["plugin"]) for r in claims) == [
        ("other-pkg", "other-pkg:colour_motion"), ("v2a", "v2a:colour_motion")]
    assert all(r["status"] == "conflict: name claimed by v2a and other-pkg" for r in claims)
    assert not [r for r in rows if r["name"] == "colour_motion" and r["status"] == "ok"]
    (problem,) = [p for p in listing["problems"] if "colour_motion" in p]
    assert "claimed by v2a" in problem and "other-pkg 1.0 (other_pkg.plugin)" in problem
    assert "disabled until one of them is uninstalled" in problem
    # the rest of the impostor's package is a plug-in like any other
    (other,) = [r for r in rows if r["name"] == "other_keep"]
    assert (other["provider"], other["status"]) == ("other-pkg", "ok")


def test_two_distributions_with_one_entry_point_name_are_both_loaded(monkeypatch, tmp_path):
    """Not only in `v2a plugins`: every registry loads both, and a recipe cannot use the name."""
    write_distribution(tmp_path, "other-pkg", {"colour_motion": "other_pkg.plugin"},
                       {"other_pkg.plugin": IMPOSTOR})
    monkeypatch.syspath_prepend(str(tmp_path))  # also what importlib.metadata searches
    monkeypatch.setenv("V2A_DISABLE_PLUGIN_AUTOLOAD", "1")
    monkeypatch.setenv("V2A_PLUGINS", "colour_motion")  # every entry point of that name
    try:
        registry = Registry.from_environment()
    finally:  # the test's package leaves with its folder
        for name in [m for m in sys.modules if m.split(".")[0] == "other_pkg"]:
            del sys.modules[name]
    assert sorted(registry.plugins) == ["other-pkg:colour_motion", "v2a:colour_motion"]
    with pytest.raises(PluginError, match=r"provided by both .*other-pkg 1\.0 .*; uninstall one") as error:
        registry.build("visual_encoder", "colour_motion")
    assert "v2a_plugins.visual_encoders.colour_motion" in str(error.value)
    assert registry.get("reranker", "other_keep").plugin.provider == "other-pkg"


EXITS_AT_IMPORT = """\
    import sys

    sys.exit(3)
"""
EXITS_IN_HOOK = """\
    import sys

    from v2a import hookimpl

    @hookimpl
    def v2a_register_components(register):
        sys.exit()
"""


def test_a_plugin_calling_sys_exit_is_reported_as_broken(tmp_path):
    write_distribution(tmp_path, "exiting-pkg",
                       {"exits_at_import": "exiting_pkg.at_import",
                        "exits_in_hook": "exiting_pkg.in_hook"},
                       {"exiting_pkg.at_import": EXITS_AT_IMPORT, "exiting_pkg.in_hook": EXITS_IN_HOOK})
    code, listing, err = v2a_plugins_json(tmp_path)
    assert code == 0, err
    status = {r["name"]: r["status"] for r in listing["components"] if r["provider"] == "exiting-pkg"}
    assert status == {
        "exits_at_import": "failed to import: it called sys.exit(3)",
        "exits_in_hook": "raised in v2a_register_components: it called sys.exit()",
    }
    assert any("'exits_at_import' from exiting-pkg failed to import" in p for p in listing["problems"])
    ok = {(r["kind"], r["name"]) for r in listing["components"] if r["status"] == "ok"}
    assert {("reranker", "none"), ("visual_encoder", "colour_motion")} <= ok  # the others work


def test_ctrl_c_while_a_plugin_imports_still_stops_the_program(monkeypatch, tmp_path):
    (tmp_path / "v2a_test_interrupted.py").write_text("raise KeyboardInterrupt\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    registry = Registry()
    with pytest.raises(KeyboardInterrupt):
        registry.load_entry_point(importlib.metadata.EntryPoint(
            name="interrupted", value="v2a_test_interrupted", group="v2a"))


def test_sys_exit_while_building_is_a_plugin_error_naming_it():
    def build(config):
        sys.exit(2)

    registry = Registry()
    registry.register_module(plugin_module("quitter", keep_first("quitter", build=build)))
    with pytest.raises(PluginError, match=r"reranker 'quitter' from \(registered in code\) - "
                                          r"\(quitter\) is broken: building it called sys.exit\(2\); "
                                          "report this to its provider"):
        registry.build("reranker", "quitter")
