"""Command-line manners: option help in one vocabulary, bare ``v2a``, the exit codes, ``v2a
recipe cp`` and ``v2a recipe show --diff``."""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest
from v2a_plugins.rerankers.keep_first import KeepFirst

from tests.test_registry import plugin_module
from v2a import ComponentSpec
from v2a.cli import EXIT_CODES, build_parser, main
from v2a.recipe import dataclass_doc, field_docs, locate, yaml_value
from v2a.schema import describe
from v2a.recipe.copies import _rewrite, composed, copy_recipe
from v2a.registry import default_registry

ROOT = Path(__file__).resolve().parents[1]


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


# -- option help -------------------------------------------------------------------------------


@dataclass
class _Base:
    rate: int = 16000
    """Hz of the
    input."""


@dataclass
class _Documented(_Base):
    mode: Literal["fast", "exact"] = "fast"
    """how hard it tries"""
    size: int | None = None
    steps: list[int] = field(default_factory=lambda: [16, 8])
    """decoding steps"""
    widths: tuple[int, ...] = (2, 4)
    streams: dict[str, int] = field(default_factory=lambda: {"clip": 512})
    name: str = "none"
    floor: float = 1e-5
    flag: bool = True
    needed: str = field(kw_only=True)  # no default: required


def test_dataclass_doc_writes_types_and_defaults_as_a_recipe_does():
    rows = {row.name: row for row in dataclass_doc(_Documented)}
    assert [(r.type, r.default) for r in rows.values()] == [
        ("int", "16000"), ("fast | exact", "fast"), ("int | null", "null"),
        ("list[int]", "[16, 8]"), ("list[int]", "[2, 4]"), ("mapping[str, int]", "{clip: 512}"),
        ("str", "none"), ("float", "1.0e-5"), ("bool", "true"), ("str", "required"),
    ]
    # help is the attribute docstring, on one line; a base class's field keeps its own
    assert rows["rate"].help == "Hz of the input."
    assert rows["mode"].help == "how hard it tries" and rows["steps"].help == "decoding steps"
    assert rows["size"].help is None
    # the defaults shown read back as the values they are (PyYAML reads 1e-05 as text)
    import yaml
    assert yaml.safe_load(rows["floor"].default) == 1e-5
    assert yaml.safe_load(rows["size"].default) is None


def test_field_docs_of_a_class_without_source_is_empty():
    made = dataclasses.make_dataclass("Made", [("x", int, 1)])
    assert field_docs(made) == {} and dataclass_doc(made)[0].help is None


def builtin_configs():
    registry = default_registry()
    seen = {}
    for row in registry.rows():
        if row["kind"] == "training_task":
            continue
        spec = registry.get(row["kind"], row["name"]).spec
        if spec.config is not None and spec.config.__module__.startswith("v2a_plugins."):
            seen.setdefault(spec.config, f"{row['kind']} {row['name']}")
    return seen


def test_every_builtin_option_has_a_one_line_help():
    configs = builtin_configs()
    assert len(configs) >= 25  # every built-in plug-in with options, not a few
    lacking = [f"{label}: {row.name}" for config, label in configs.items()
               for row in dataclass_doc(config) if not row.help]
    assert not lacking, "give these config fields a docstring line: " + ", ".join(lacking)


def test_builtin_option_types_use_the_recipe_vocabulary():
    """No Python spellings (None, True, 'or'): what a recipe writes."""
    for config, label in builtin_configs().items():
        for row in dataclass_doc(config):
            assert " or " not in row.type and "None" not in row.type, (label, row)
            assert row.default not in ("None", "True", "False"), (label, row)


def test_plugins_shows_name_type_default_and_help(capsys):
    code, out, err = run(capsys, "plugins", "codec", "dac")
    assert code == 0 and err == ""
    lines = out.splitlines()
    at = next(i for i, line in enumerate(lines) if line.split()[:1] == ["chunk_seconds"])
    assert lines[at].split() == ["chunk_seconds", "float", "|", "null", "default", "30.0"]
    assert lines[at + 1].strip().startswith("encode audio longer than this in windows")
    at = next(i for i, line in enumerate(lines) if line.split()[:1] == ["n_codebooks"])
    assert lines[at].split() == ["n_codebooks", "int", "|", "null", "default", "null"]


def test_undocumented_options_of_a_third_party_plugin_are_noted_not_failed(capsys, use_registry):
    @dataclass
    class Bare:
        sample_rate: int = 8000
        gain: float = 1.0
        """linear gain"""

    use_registry.register_module(plugin_module("thirdparty", ComponentSpec(
        kind="reranker", name="bare", build=KeepFirst, config=Bare)))
    code, out, err = run(capsys, "plugins", "reranker", "bare")
    assert code == 0
    assert "linear gain" in out and "sample_rate" in out
    assert "reranker 'bare' documents no help for sample_rate" in err
    assert "gain" not in err


@pytest.mark.parametrize("section", ["data", "training", "sampling"])
def test_the_recipes_reference_writes_types_and_defaults_as_v2a_does(section):
    """docs/recipes.md's section tables use the vocabulary of ``v2a plugins`` (one vocabulary)."""
    import re

    from v2a.recipe import SECTIONS
    text = (ROOT / "docs" / "recipes.md").read_text()
    part = re.split(r"\n#+ ", text.split(f"### `{section}`", 1)[1], maxsplit=1)[0]
    documented = {name: (kind.replace("`", "").replace("\\|", "|"), default) for name, kind, default
                  in re.findall(r"^\| `(\w+)` \| (.*?) \| (.*?) \|", part, flags=re.M)}
    assert documented == {row.name: (row.type, row.default)
                          for row in dataclass_doc(SECTIONS[section])}


def test_the_plugin_guide_shows_what_v2a_plugins_prints_for_the_example_plugin(monkeypatch):
    """docs/writing-a-plugin.md's option listing is the example plug-in's source, as printed."""
    import importlib.util
    import re

    from v2a.commands.plugins import option_lines
    source = ROOT / "docs" / "examples" / "v2a-mulaw-codec" / "src" / "v2a_mulaw" / "codec.py"
    spec = importlib.util.spec_from_file_location("mulaw_codec_source", source)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)  # dataclasses look their module up
    spec.loader.exec_module(module)
    text = (ROOT / "docs" / "writing-a-plugin.md").read_text()
    block = re.search(r"```\n  (options \(types.*?)```", text, flags=re.S).group(1)
    shown = [line.removeprefix("  ") for line in block.rstrip().splitlines()]
    assert shown == option_lines(dataclass_doc(module.MulawConfig))


def test_describe_and_yaml_value_basics():
    assert describe(int | None) == "int | null" and describe(Literal["a", "b"]) == "a | b"
    assert yaml_value(None) == "null" and yaml_value(False) == "false" and yaml_value("") == "''"


# -- bare v2a, --help and the exit codes ---------------------------------------------------------


def test_bare_v2a_lists_every_command_and_exits_2(capsys):
    code, out, err = run(capsys)
    assert code == 2 and out == ""
    names = list(next(a for a in build_parser()._actions if a.dest == "command").choices)
    listed = [line.split()[0] for line in err.split("commands:\n", 1)[1].split("\n\n")[0]
              .splitlines()]
    assert listed == names and {"plugins", "recipe", "generate", "doctor"} <= set(names)
    assert "list the installed components" in err  # one line of help each


def test_help_states_the_exit_codes(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert EXIT_CODES in out
    for code in ("0", "1", "2", "130"):
        assert any(line.split()[:1] == [code] for line in EXIT_CODES.splitlines())


def test_a_bad_option_exits_2(capsys):
    with pytest.raises(SystemExit) as info:
        main(["recipe", "list", "--no-such-option"])
    assert info.value.code == 2


def test_a_bad_recipe_exits_2(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bad.yaml").write_text("reranker: {plugin: none, sample_rat: 8000}\n")
    code, _, err = run(capsys, "recipe", "check", "bad.yaml")
    assert code == 2 and "did you mean 'sample_rate'" in err


def test_a_command_line_naming_too_little_exits_2(capsys):
    code, _, err = run(capsys, "plugins", "codec")
    assert code == 2 and "give both a kind and a name" in err


def test_a_missing_video_is_a_run_time_error_exit_1(capsys, tmp_path):
    code, _, err = run(capsys, "generate", "--recipe", "tiny", str(tmp_path / "missing.mp4"),
                       "-o", str(tmp_path / "out"))
    assert code == 1 and err.strip() == f"v2a: error: {tmp_path / 'missing.mp4'} does not exist"


def test_ctrl_c_exits_130(capsys, monkeypatch):
    from v2a.commands import recipe as recipe_command

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(recipe_command, "list_recipes", interrupted)
    code, _, err = run(capsys, "recipe", "list")
    assert code == 130 and err.strip() == "v2a: interrupted"


def test_the_docs_give_the_exit_codes():
    for doc in ("README.md", "docs/recipes.md"):
        text = (ROOT / doc).read_text()
        assert "130" in text and "exit code" in text.lower(), doc


# -- v2a recipe cp ------------------------------------------------------------------------------


def shown(capsys, ref: str) -> list[str]:
    code, out, err = run(capsys, "recipe", "show", ref)
    assert code == 0, err
    return out.splitlines()[1:]  # the first line names the file


@pytest.mark.parametrize("name", ["tiny", "maskvat_hybrid_text_small"])
def test_recipe_cp_copies_a_shipped_recipe_that_checks_and_shows_the_same(
        capsys, tmp_path, monkeypatch, name):
    monkeypatch.chdir(tmp_path)
    code, out, err = run(capsys, "recipe", "cp", name)
    assert code == 0, err
    copy = tmp_path / f"{Path(name).name}.yaml"
    assert copy.is_file() and f"to {copy.name}" in out
    code, out, err = run(capsys, "recipe", "check", copy.name)
    assert code == 0 and "ok" in out, err
    assert shown(capsys, copy.name) == shown(capsys, name)
    # the copy is the text the user would edit, comments and all
    assert locate(name).read_text().splitlines()[0] == copy.read_text().splitlines()[0]


def test_recipe_cp_pulls_in_every_file_and_keeps_shipped_weights(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, _ = run(capsys, "recipe", "cp", "maskvat_hybrid_text_small", "mine/")
    assert code == 0
    names = sorted(p.name for p in (tmp_path / "mine").iterdir())
    assert names == ["maskvat_base.yaml", "maskvat_hybrid.yaml", "maskvat_hybrid_small.yaml",
                     "maskvat_hybrid_text_small.yaml", "maskvat_small.yaml"]
    assert "extends: [maskvat_hybrid.yaml, maskvat_small.yaml]" in (
        tmp_path / "mine" / "maskvat_hybrid_small.yaml").read_text()
    run(capsys, "recipe", "cp", "tiny", "t.yaml")
    shipped = locate("tiny").parent / "tiny" / "codec.safetensors"
    assert f"weights: {shipped.resolve()}" in (tmp_path / "t.yaml").read_text()


def test_recipe_cp_refuses_to_overwrite_unless_forced(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tiny.yaml").write_text("# mine\n")
    code, _, err = run(capsys, "recipe", "cp", "tiny")
    assert code == 1 and "tiny.yaml already exists; pass --force" in err
    assert (tmp_path / "tiny.yaml").read_text() == "# mine\n"
    code, _, _ = run(capsys, "recipe", "cp", "tiny", "--force")
    assert code == 0 and "name: tiny" in (tmp_path / "tiny.yaml").read_text()
    code, _, err = run(capsys, "recipe", "cp", "tiny.yaml", "tiny.yaml")
    assert code == 1 and "onto itself" in err


def test_recipe_cp_rewrites_component_files_and_relative_weights(tmp_path, monkeypatch):
    """A recipe of one's own: a base in another folder, a component YAML with ``./`` weights."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "lib" / "parts").mkdir(parents=True)
    (tmp_path / "lib" / "parts" / "codec.yaml").write_text(
        "plugin: spectral_rvq\nn_codebooks: 2\nweights: ./codec.safetensors  # beside me\n")
    (tmp_path / "lib" / "base.yaml").write_text("reranker: none\ncodec: 'parts/codec.yaml'\n")
    (tmp_path / "work").mkdir()
    (tmp_path / "work" / "r.yaml").write_text(
        "extends: ../lib/base.yaml  # base.yaml holds the codec\naudio_encoder: mel\n")
    copied = copy_recipe("work/r.yaml", tmp_path / "out" / "copy.yaml")
    assert [c.name for _, c in copied.files] == ["copy.yaml", "base.yaml", "codec.yaml"]
    assert (tmp_path / "out" / "copy.yaml").read_text() == (
        "extends: base.yaml  # base.yaml holds the codec\naudio_encoder: mel\n")
    assert "codec: 'codec.yaml'" in (tmp_path / "out" / "base.yaml").read_text()
    weights = str((tmp_path / "lib" / "parts" / "codec.safetensors").resolve())
    assert copied.weights == [("./codec.safetensors", weights)]
    assert composed(tmp_path / "out" / "copy.yaml") == composed(tmp_path / "work" / "r.yaml")


def test_rewrite_changes_only_references_and_keeps_them_quoted():
    text = ("extends: [a.yaml, \"../b.yaml\"]  # a.yaml first\ndescription: a.yaml and more\n"
            "codec: a.yaml\nvisual_encoders:\n  clip: 'a.yaml'\n"
            "reranker: {plugin: scav, audio_encoder: {plugin: beats, weights: ./w.pt}}\n")
    assert _rewrite(text, {"a.yaml": "A.yaml", "../b.yaml": "b.yaml", "./w.pt": "/x/w.pt"}) == (
        "extends: [A.yaml, 'b.yaml']  # a.yaml first\ndescription: a.yaml and more\n"
        "codec: A.yaml\nvisual_encoders:\n  clip: 'A.yaml'\n"
        "reranker: {plugin: scav, audio_encoder: {plugin: beats, weights: /x/w.pt}}\n")
    # a component file names no further files: only its weights are references
    assert _rewrite("codec: a.yaml\nweights: ./w.pt\n", {"a.yaml": "A", "./w.pt": "/w"},
                    component=True) == "codec: a.yaml\nweights: /w\n"
    # a new value YAML would read as something else is quoted
    assert _rewrite("extends: a.yaml\n", {"a.yaml": "null"}) == "extends: 'null'\n"


# -- v2a recipe show --diff ---------------------------------------------------------------------


def test_show_diff_prints_what_a_recipe_changes(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "parent.yaml").write_text(
        "codec: {plugin: spectral_rvq, n_codebooks: 4}\nreranker: none\n")
    (tmp_path / "child.yaml").write_text(
        "extends: parent.yaml\nname: child\ncodec: {n_codebooks: 2}\naudio_encoder: mel\n")
    code, out, _ = run(capsys, "recipe", "show", "--diff", "child.yaml", "codec.compression=0.5")
    assert code == 0
    header, *lines = out.splitlines()
    assert header.startswith("# child.yaml with codec.compression=0.5 against what it extends "
                             "(parent.yaml)")
    # a slot the parent lacks is one change, shown resolved (every default filled in)
    assert lines[0] == ("audio_encoder: absent -> {plugin: mel, sample_rate: 16000, n_fft: 1024, "
                        "hop_length: 256, n_mels: 64, f_min: 0.0, f_max: null, floor: 1.0e-5}")
    assert lines[1:] == ["codec.compression: 0.3 -> 0.5", "codec.n_codebooks: 4 -> 2"]


def test_show_diff_of_a_recipe_that_extends_nothing_says_so(capsys):
    code, out, _ = run(capsys, "recipe", "show", "--diff", "tiny")
    assert code == 0 and "extends no recipe" in out


def test_show_diff_when_the_parent_alone_does_not_validate(capsys):
    """maskvat_hybrid_small's two bases only fit together with its own fuser widths."""
    code, out, _ = run(capsys, "recipe", "show", "--diff", "maskvat_hybrid_small")
    assert code == 0
    assert "compared as written, defaults not filled in" in out
    assert "fuser.streams.clip: 512 -> 32" in out.splitlines()


def test_a_reader_that_leaves_early_gets_no_traceback():
    """``v2a plugins | head -1``: the pipe closes under the writer; v2a stops quietly, exit 0."""
    import subprocess

    command = f"{sys.executable} -m v2a plugins codec dac | head -1"
    done = subprocess.run(["bash", "-o", "pipefail", "-c", command], capture_output=True,
                          text=True, timeout=120)
    assert done.stdout.startswith("codec 'dac'") and done.stdout.count("\n") == 1
    assert "Traceback" not in done.stderr and "BrokenPipe" not in done.stderr, done.stderr
    assert done.returncode == 0
