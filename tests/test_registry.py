"""The plug-in registry: entry points, duplicates, broken plug-ins, optional dependencies."""

from __future__ import annotations

import importlib.metadata
import types
from dataclasses import dataclass

import pytest

import v2a_plugins.rerankers
from v2a import ComponentSpec, hookimpl
from v2a.errors import PluginError
from v2a.registry import Registry
from v2a_plugins.rerankers import KeepFirst, KeepFirstConfig


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
    return ComponentSpec(kind="reranker", name=name, build=KeepFirst, config=KeepFirstConfig, **kwargs)


def test_builtins_come_through_the_public_entry_point_group():
    eps = {ep.name: ep for ep in importlib.metadata.entry_points(group="v2a")}
    assert eps["rerankers"].value == "v2a_plugins.rerankers"
    assert eps["audio_encoders"].value == "v2a_plugins.audio_encoders"
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
    registry.register_module(v2a_plugins.rerankers)
    import v2a_plugins.audio_encoders as ae

    registry.register_module(plugin_module("other", ComponentSpec(
        kind="audio_encoder", name="none", build=lambda c: ae.MelEncoder(ae.MelConfig()),
        config=NoOptions,
    )))
    assert registry.get("reranker", "none").plugin.name == "v2a_plugins.rerankers"
    assert registry.get("audio_encoder", "none").plugin.name == "other"


def test_plugin_that_fails_to_import_is_reported_and_others_keep_working():
    registry = Registry()
    broken = importlib.metadata.EntryPoint(
        name="broken_thing", value="v2a_no_such_module_xyz.plugin", group="v2a"
    )
    good = importlib.metadata.EntryPoint(name="rerankers", value="v2a_plugins.rerankers", group="v2a")
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
    registry.register_module(v2a_plugins.rerankers)
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
    registry.register_module(v2a_plugins.rerankers)
    with pytest.raises(PluginError, match="did you mean 'none'"):
        registry.get("reranker", "nnoe")
    with pytest.raises(PluginError, match="did you mean 'reranker'"):
        registry.get("rerankr", "none")


def test_build_validates_config_and_checks_the_interface():
    registry = Registry()
    registry.register_module(v2a_plugins.rerankers)
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
    monkeypatch.setenv("V2A_PLUGINS", "rerankers, not_installed_anywhere")
    registry = Registry.from_environment()
    assert list(registry.entries) == [("reranker", "none")]
    assert any("not_installed_anywhere" in p for p in registry.problems)
