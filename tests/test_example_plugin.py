"""The example third-party plug-in, docs/examples/v2a-mulaw-codec, end to end.

Nothing here imports the package directly: once ``pip install``-ed, v2a must find it through its
entry point, list it with its provider and version, build it from a recipe and pass the
conformance kit, exactly as for any package on PyPI.

Without the package installed these tests are skipped (the reason says how to install it). CI
installs it and sets ``V2A_EXAMPLE_PLUGIN_INSTALLED=1``, which turns the skip into a failure.
"""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys

import pytest

from v2a.errors import PluginError, RecipeError
from v2a.recipe import load_recipe
from v2a.registry import DISABLE_AUTOLOAD_ENV, PLUGINS_ENV, Registry
from v2a.testing import from_registry, parametrize_with_checks

DIST = "v2a-mulaw-codec"
INSTALL = "pip install ./docs/examples/v2a-mulaw-codec"
REQUIRED_ENV = "V2A_EXAMPLE_PLUGIN_INSTALLED"


def installed_version() -> str | None:
    try:
        return importlib.metadata.version(DIST)
    except importlib.metadata.PackageNotFoundError:
        return None


VERSION = installed_version()
REQUIRED = os.environ.get(REQUIRED_ENV, "").strip() == "1"

needs_example = pytest.mark.skipif(
    VERSION is None and not REQUIRED,
    reason=f"the example plug-in {DIST} is not installed; install it with `{INSTALL}` "
    "(from the repository root)",
)
pytestmark = needs_example


@pytest.fixture
def autoload(monkeypatch):
    """The default environment: every installed plug-in is loaded."""
    monkeypatch.delenv(DISABLE_AUTOLOAD_ENV, raising=False)
    monkeypatch.delenv(PLUGINS_ENV, raising=False)


def test_example_is_installed():
    assert VERSION is not None, (
        f"{REQUIRED_ENV}=1 says {DIST} is installed, but it is not; install it with `{INSTALL}`"
    )


def test_its_entry_point_module_and_package_import_no_torch():
    """The example follows docs/writing-a-plugin.md's "Keep the entry-point module light": listing
    plug-ins with it installed pays no torch; the codec's module is imported by ``build``."""
    probe = ("import sys, v2a_mulaw, v2a_mulaw.plugin; print('torch' in sys.modules); "
             "from v2a_mulaw import MulawCodec; print('torch' in sys.modules, MulawCodec.__name__)")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False", "True", "MulawCodec"]


def test_v2a_plugins_lists_it_with_provider_and_version():
    env = {k: v for k, v in os.environ.items() if k not in (DISABLE_AUTOLOAD_ENV, PLUGINS_ENV)}
    done = subprocess.run(
        [sys.executable, "-m", "v2a", "plugins"], capture_output=True, text=True, env=env, timeout=120
    )
    assert done.returncode == 0, done.stderr
    rows = [line.split() for line in done.stdout.splitlines()]
    assert ["codec", "mulaw", DIST, VERSION, "ok"] in [r[:5] for r in rows], done.stdout
    assert "mulaw" not in done.stderr  # no warning about it


def test_registry_finds_it_through_the_entry_point(autoload):
    (ep,) = [ep for ep in importlib.metadata.entry_points(group="v2a") if ep.name == "mulaw"]
    assert ep.value == "v2a_mulaw.plugin"
    registry = Registry.from_environment()
    entry = registry.get("codec", "mulaw")
    assert (entry.plugin.provider, entry.plugin.version) == (DIST, VERSION)
    assert (entry.plugin.name, entry.plugin.module) == ("mulaw", "v2a_mulaw.plugin")
    assert entry.status == "ok"
    assert not [p for p in registry.problems if "mulaw" in p]

    codec = registry.build("codec", "mulaw", registry.config_for("codec", "mulaw", {"bits": 4}))
    assert (codec.n_codebooks, codec.codebook_size, codec.frame_rate) == (1, 16, 16000.0)
    with pytest.raises(PluginError, match="bits"):
        registry.config_for("codec", "mulaw", {"bits": "eight"})  # types are checked


def test_autoload_switches(monkeypatch):
    monkeypatch.setenv(DISABLE_AUTOLOAD_ENV, "1")
    monkeypatch.delenv(PLUGINS_ENV, raising=False)
    assert Registry.from_environment().entries == {}
    monkeypatch.setenv(PLUGINS_ENV, "mulaw")  # by entry-point name
    registry = Registry.from_environment()
    assert list(registry.entries) == [("codec", "mulaw")]
    assert list(registry.plugins) == ["mulaw"]


def test_recipes_name_it_and_its_options(autoload, tmp_path):
    registry = Registry.from_environment()
    path = tmp_path / "mulaw.yaml"
    path.write_text("codec: {plugin: mulaw, bits: 4}\n")
    recipe = load_recipe(path, registry=registry)
    assert recipe.components["codec"].as_data() == {"plugin": "mulaw", "sample_rate": 16000, "bits": 4}
    assert recipe.build("codec", registry).codebook_size == 16
    assert load_recipe(path, ["codec.bits=6"], registry=registry).build("codec", registry).codebook_size == 64
    with pytest.raises(RecipeError, match="bits must be between 1 and 16"):
        load_recipe(path, ["codec.bits=40"], registry=registry)  # the config's own __post_init__
    with pytest.raises(RecipeError, match="did you mean 'bits'"):
        load_recipe(path, ["codec.bitz=6"], registry=registry)


@parametrize_with_checks([from_registry("codec", "mulaw")])
def test_example_passes_the_conformance_kit(factory, check):
    check(factory)
