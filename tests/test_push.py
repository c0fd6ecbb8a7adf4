"""`v2a push DIR --repo OWNER/NAME` with the real huggingface_hub client against the local Hub
stand-in (tests/hub_standin.py), then `v2a generate --recipe hf://OWNER/NAME` through the same
stand-in: the same audio as the folder gives, a weights file whose content does not match the
recipe's sha256 refused, branches and pinned commits; and the refusals made before anything is
uploaded (not an export, no token) or by the Hub (a token that may not write)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from tests.hub_standin import hub_standin_fixture  # noqa: F401  (the hub_standin fixture)
from v2a.cli import main
from v2a.media import load_audio

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "recipes" / "tiny"  # the bundled model, an export (tests/test_export.py)
VIDEO = ROOT / "examples" / "shapes.mp4"
WRITER = "hf_writer_token"
#: one second of the example: enough to compare, two windows' worth of time saved
SHORT = ["--duration", "1.0"]


@pytest.fixture
def writer(hub_standin, monkeypatch):
    """The stand-in with a token that may write, set as huggingface_hub reads it (HF_TOKEN)."""
    hub_standin.allow_writes(WRITER)
    monkeypatch.setenv("HF_TOKEN", WRITER)
    return hub_standin


def audio(folder: Path) -> torch.Tensor:
    return load_audio(folder / "shapes.wav", sample_rate=16000)


def test_a_pushed_export_generates_from_the_hub_as_from_the_folder(writer, tmp_path, capsys):
    assert main(["push", str(TINY), "--repo", "acme/tiny", "--message", "the tiny model"]) == 0
    out = capsys.readouterr().out
    commit = writer.commits("acme/tiny")[-1]
    assert f"commit {commit}" in out and f"hf://acme/tiny@{commit}" in out
    files = writer.files("acme/tiny")
    local = {p.name: p.read_bytes() for p in TINY.iterdir()}
    assert {k: v for k, v in files.items() if k != ".gitattributes"} == local  # all, unchanged
    assert main(["push", str(TINY), "--repo", "acme/tiny"]) == 0  # again: the repo exists
    assert writer.commits("acme/tiny")[-1] == commit  # and nothing changed, so no new commit

    assert main(["generate", "--recipe", "hf://acme/tiny", str(VIDEO), "-o",
                 str(tmp_path / "hub"), *SHORT]) == 0
    err = capsys.readouterr().err
    assert f"resolved to commit {commit}" in err  # unpinned: the warning names the commit
    assert main(["generate", "--recipe", str(TINY), str(VIDEO), "-o", str(tmp_path / "folder"),
                 *SHORT]) == 0
    assert torch.equal(audio(tmp_path / "hub"), audio(tmp_path / "folder"))


def test_a_weights_file_that_does_not_match_its_sha256_is_refused(writer, tmp_path, capsys):
    assert main(["push", str(TINY), "--repo", "acme/tiny"]) == 0
    good = writer.commits("acme/tiny")[-1]
    tampered = bytearray((TINY / "generator.safetensors").read_bytes())
    tampered[-1] ^= 1  # one bit of one weight: still a valid safetensors file
    writer.add_file("acme/tiny", "generator.safetensors", bytes(tampered))
    capsys.readouterr()
    assert main(["generate", "--recipe", "hf://acme/tiny", str(VIDEO), "-o",
                 str(tmp_path / "bad"), *SHORT]) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "generator.safetensors" in err and "not the pinned" in err
    assert not (tmp_path / "bad" / "shapes.wav").exists()
    # the commit pushed before it is still good, pinned
    assert main(["generate", "--recipe", f"hf://acme/tiny@{good}", str(VIDEO), "-o",
                 str(tmp_path / "good"), *SHORT]) == 0


def test_a_push_to_a_branch_of_a_private_repository(writer, tmp_path, capsys):
    assert main(["push", str(TINY), "--repo", "acme/private", "--private",
                 "--revision", "dev"]) == 0
    assert set(writer.files("acme/private", "main")) == {".gitattributes"}  # main untouched
    assert "recipe.yaml" in writer.files("acme/private", "dev")
    assert main(["recipe", "show", "hf://acme/private@dev"]) == 0  # with the token
    assert "name: tiny" in capsys.readouterr().out
    writer.monkeypatch.delenv("HF_TOKEN")
    shutil.rmtree(writer.home)  # nothing cached: the Hub must be asked, without a token
    assert main(["recipe", "show", "hf://acme/private@dev"]) == 1
    assert "no repository acme/private" in capsys.readouterr().err


def test_a_folder_that_is_not_an_export_is_refused_before_anything_is_sent(writer, tmp_path,
                                                                          capsys):
    folder = tmp_path / "model"
    shutil.copytree(TINY, folder)
    (folder / "README.md").unlink()
    assert main(["push", str(folder), "--repo", "acme/tiny"]) == 1
    assert "has no README.md" in capsys.readouterr().err
    shutil.copy(TINY / "README.md", folder)
    (folder / "fuser.safetensors").write_bytes(b"not the fuser")
    assert main(["push", str(folder), "--repo", "acme/tiny"]) == 1
    assert "not the pinned" in capsys.readouterr().err
    shutil.copy(TINY / "fuser.safetensors", folder)
    recipe = (folder / "recipe.yaml").read_text()  # a file of this machine, not of the folder
    (folder / "recipe.yaml").write_text(recipe.replace("./fuser.safetensors",
                                                       str(TINY / "fuser.safetensors")))
    assert main(["push", str(folder), "--repo", "acme/tiny"]) == 1
    assert "which is not a ./ file of the folder" in capsys.readouterr().err
    assert writer.requests == [] and "acme/tiny" not in writer.repos


def test_without_a_token_or_with_one_that_may_not_write_the_push_is_refused(hub_standin,
                                                                           monkeypatch, capsys):
    assert main(["push", str(TINY), "--repo", "acme/tiny"]) == 1
    err = capsys.readouterr().err.strip()
    assert "no Hugging Face token" in err and len(err.splitlines()) == 1
    assert hub_standin.requests == []
    monkeypatch.setenv("HF_TOKEN", "hf_reader_token")
    assert main(["push", str(TINY), "--repo", "acme/tiny"]) == 1
    err = capsys.readouterr().err.strip()
    assert "may not write to acme/tiny" in err and len(err.splitlines()) == 1
    assert "acme/tiny" not in hub_standin.repos


def test_a_repo_that_is_not_owner_slash_name_is_refused(writer, capsys):
    assert main(["push", str(TINY), "--repo", "acme/tiny@dev"]) == 1
    assert "--repo takes OWNER/NAME" in capsys.readouterr().err
