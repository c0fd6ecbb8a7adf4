"""The command line: exit codes, one-sentence errors, plug-in listing, recipe commands."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from v2a.cli import main


@pytest.fixture
def recipe_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "r.yaml"
    path.write_text("audio_encoder: {plugin: mel, n_mels: 32}\nreranker: none\n")
    return path


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_plugins_lists_kind_name_provider_version_status(capsys):
    code, out, _ = run(capsys, "plugins")
    assert code == 0
    header, *rows = out.splitlines()
    assert header.split() == ["kind", "name", "provider", "version", "status"]
    assert any(r.split()[:5] == ["reranker", "none", "v2a", "0.1.0", "ok"] for r in rows)
    code, out, _ = run(capsys, "plugins", "--json")
    listed = json.loads(out)["components"]
    assert any(
        (r["kind"], r["name"], r["provider"], r["status"]) == ("audio_encoder", "mel", "v2a", "ok")
        for r in listed
    )


def test_plugins_shows_broken_and_missing(capsys, use_registry):
    import importlib.metadata

    from v2a_plugins.rerankers.keep_first import KeepFirst, KeepFirstConfig

    from tests.test_registry import plugin_module
    from v2a import ComponentSpec

    use_registry.load_entry_point(importlib.metadata.EntryPoint(
        name="broken_thing", value="v2a_no_such_module_xyz", group="v2a"))
    use_registry.register_module(plugin_module("needy", ComponentSpec(
        kind="reranker", name="needy", build=KeepFirst, config=KeepFirstConfig,
        requires=("v2a_missing_dep_xyz",), install="pip install 'v2a[needy]'")))
    code, out, err = run(capsys, "plugins")
    assert code == 0
    assert "install with: pip install 'v2a[needy]'" in out
    assert "broken_thing" in out and "failed to import" in out
    assert "broken_thing" in err  # also warned about


def test_plugins_shows_the_options_of_one_component(capsys):
    code, out, _ = run(capsys, "plugins", "audio_encoder", "mel")
    assert code == 0
    assert "n_mels" in out and "int" in out and "default 64" in out
    code, _, err = run(capsys, "plugins", "audio_encoder", "mell")
    assert code == 2 and "did you mean 'mel'" in err


def test_plugins_shows_a_training_task_and_the_files_it_exports(capsys):
    code, out, _ = run(capsys, "plugins", "training_task", "generator")
    assert code == 0
    assert "fuser.safetensors" in out and "generator.safetensors" in out
    code, _, err = run(capsys, "plugins", "training_task", "generater")
    assert code == 2 and "did you mean 'generator'" in err


def test_recipe_show_and_check(capsys, recipe_file, use_registry):
    code, out, _ = run(capsys, "recipe", "show", str(recipe_file), "audio_encoder.n_mels=16")
    assert code == 0
    assert "n_mels: 16" in out and "hop_length: 256" in out  # defaults filled in
    code, out, _ = run(capsys, "recipe", "check", str(recipe_file))
    assert code == 0 and "ok (2 components)" in out


@pytest.mark.parametrize("overrides, fragment", [
    (["audio_encoder.n_melz=3"], "did you mean 'n_mels'"),
    (["training.lr=fast"], "expected float"),
    (["reranker=nnoe"], "did you mean 'none'"),
])
def test_bad_recipe_exits_2_with_one_line(capsys, recipe_file, use_registry, overrides, fragment):
    code, out, err = run(capsys, "recipe", "check", str(recipe_file), *overrides)
    assert code == 2
    assert out == ""
    assert len(err.strip().splitlines()) == 1 and fragment in err
    assert err.startswith("v2a: error: command line")


def test_check_notes_weights_files_that_do_not_exist(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    recipe = tmp_path / "r.yaml"
    recipe.write_text("codec: {plugin: spectral_rvq, weights: fitted/codec.safetensors}\n")
    code, out, err = run(capsys, "recipe", "check", str(recipe))
    assert code == 0 and "ok" in out
    assert "codec.weights names fitted/codec.safetensors, which does not exist yet" in err

    # a URL is not a missing file: it is fetched on first use, and found once it is cached
    monkeypatch.setenv("V2A_CACHE", str(tmp_path / "cache"))
    url = "https://example.org/codec.safetensors"
    recipe.write_text(f"codec: {{plugin: spectral_rvq, weights: {url}}}\n")
    code, out, err = run(capsys, "recipe", "check", str(recipe))
    assert code == 0 and f"names {url}, which is not downloaded yet" in err
    sha = "0" * 64
    cached = tmp_path / "cache" / "weights" / sha / "codec.safetensors"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"x")
    recipe.write_text(f"codec: {{plugin: spectral_rvq, weights: {url} sha256:{sha}}}\n")
    code, out, err = run(capsys, "recipe", "check", str(recipe))
    assert code == 0 and "weights names" not in err


def test_verbose_shows_the_traceback(capsys, recipe_file, use_registry):
    code, _, err = run(capsys, "recipe", "check", str(recipe_file), "training.lr=x", "--verbose")
    assert code == 2 and "Traceback" in err


def test_overrides_may_follow_options(capsys, recipe_file, use_registry):
    code, out, _ = run(capsys, "recipe", "show", str(recipe_file), "--verbose", "audio_encoder.n_mels=16")
    assert code == 0 and "n_mels: 16" in out
    with pytest.raises(SystemExit) as info:
        run(capsys, "recipe", "show", str(recipe_file), "--nonsense")
    assert info.value.code == 2 and "unrecognized arguments: --nonsense" in capsys.readouterr().err


def test_console_script_end_to_end(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("reranker: {plugin: none, sample_rat: 8000}\n")
    proc = subprocess.run(
        [sys.executable, "-m", "v2a", "recipe", "check", str(bad)],
        capture_output=True, text=True, cwd=tmp_path,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        "v2a: error: bad.yaml: reranker.sample_rat: not an option of reranker 'none'; "
        "did you mean 'sample_rate'?"
    )
    assert "Traceback" not in proc.stderr
