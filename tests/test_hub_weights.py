"""Weights from the Hugging Face Hub: ``hf://OWNER/REPO/PATH[@REVISION]`` (v2a.hub, the ``hf``
scheme of v2a.weights, the run folder's hub.json).

Every test uses the real huggingface_hub client against a local stand-in for the Hub on
127.0.0.1 (tests/hub_standin.py), with a fresh Hugging Face cache (``HF_HOME``) each: nothing
leaves the machine, and the stand-in counts the requests."""

from __future__ import annotations

import hashlib
import json
import logging
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save

import v2a.weights
from tests.hub_standin import hub_standin_fixture  # noqa: F401 (the hub_standin fixture)
from tests.test_train import MemoryClips, recipe as small_recipe
from v2a.cache import cache_identity, cache_key
from v2a.cli import main
from v2a.errors import RecipeError
from v2a.hub import (
    COMMITS_RECORD,
    HubError,
    HubRef,
    cached_hub_file,
    hub_file,
    hub_snapshot,
    parse_hub_ref,
    resolved_commits,
)
from v2a.recipe import build_frozen, load_recipe
from v2a.training import train
from v2a.weights import cached_file, content_sha256, load_trained, resolve_file

ROOT = Path(__file__).resolve().parent.parent
TINY_CODEC = ROOT / "recipes" / "tiny" / "codec.safetensors"
STATE = {"weight": torch.arange(6.0).reshape(2, 3), "bias": torch.tensor([0.5, -1.5])}
CHECKPOINT = save(STATE)
SHA256 = hashlib.sha256(CHECKPOINT).hexdigest()
REPO = "acme/nets"


def one_sentence(message: str) -> None:
    assert "\n" not in message and message.count("; ") <= 2 and message.count(". ") == 0, message


def warnings_of(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "v2a" and r.levelno == logging.WARNING]


@pytest.fixture
def loads(monkeypatch) -> list[str]:
    """The safetensors files v2a.weights loads (every plug-in loads through it)."""
    loaded: list[str] = []
    real = v2a.weights.load_file

    def load_file(path, *args, **kwargs):
        loaded.append(path)
        return real(path, *args, **kwargs)

    monkeypatch.setattr(v2a.weights, "load_file", load_file)
    return loaded


# -- values ---------------------------------------------------------------------------------------


def test_the_grammar_of_an_hf_value():
    ref = parse_hub_ref("hf://acme/nets/sub/w.safetensors@dev", need_path=True)
    assert ref == HubRef(repo_id="acme/nets", path="sub/w.safetensors", revision="dev")
    assert str(ref) == "hf://acme/nets/sub/w.safetensors@dev" and not ref.is_pinned
    assert parse_hub_ref(f"HF://acme/nets/w.pt@{'a' * 40}", need_path=True).is_pinned
    assert parse_hub_ref("hf://acme/nets", need_path=False) == HubRef("acme/nets", None, None)
    for bad in ("hf://acme", "hf://acme/nets", "hf://acme/nets/../w.pt", "hf://ac me/nets/w",
                "hf://acme/nets/a//b"):
        with pytest.raises(RecipeError) as info:
            parse_hub_ref(bad, need_path=True)
        one_sentence(str(info.value))
        assert info.value.exit_code == 2
    source = v2a.weights.parse_weights(f"hf://acme/nets/w.safetensors@main sha256:{SHA256}")
    assert (source.scheme, source.location, source.sha256) == (
        "hf", "hf://acme/nets/w.safetensors@main", SHA256)
    assert not source.is_local and source.file_name == "w.safetensors"


def test_a_dac_file_on_the_hub_is_told_apart_by_its_name_not_its_revision():
    """What a DAC checkpoint's properties are, before it is read, depends on its format: a
    .safetensors holds the options' architecture, a .pth its own; the revision is no part of
    the name."""
    from v2a_plugins.codecs.dac import DACConfig, dac_properties

    plain = dac_properties(DACConfig(model="16khz", weights="w.safetensors"))
    for value in ("hf://acme/nets/w.safetensors@main", f"hf://acme/nets/w.safetensors@{'a' * 40}"):
        assert dac_properties(DACConfig(model="16khz", weights=value)) == plain
    assert "latent_dim" not in dac_properties(DACConfig(model="16khz", weights="hf://a/b/w.pth@v1"))


# -- resolution -----------------------------------------------------------------------------------


def test_a_branch_resolves_to_its_commit_with_a_warning_naming_it(hub_standin, caplog, loads):
    commit = hub_standin.add_file(REPO, "w.safetensors", CHECKPOINT)
    value = f"hf://{REPO}/w.safetensors"
    module = torch.nn.Linear(3, 2)
    load_trained(module, value, what="the test model")
    assert torch.equal(module.bias.detach(), STATE["bias"])
    assert warnings_of(caplog) == [f"{value} is not pinned: it resolved to commit {commit}; pin "
                                   f"it with {value}@{commit}"]
    assert resolved_commits() == {value: commit}
    assert len(loads) == 1
    # once per value: asked again (the Hub is asked each time), no second warning
    path = resolve_file(value, what="the test model")
    assert path.read_bytes() == CHECKPOINT and len(warnings_of(caplog)) == 1
    assert ("HEAD", f"/{REPO}/resolve/main/w.safetensors") in hub_standin.requests


def test_a_branch_that_moved_resolves_to_its_new_commit(hub_standin, caplog):
    first = hub_standin.add_file(REPO, "w.safetensors", CHECKPOINT)
    value = f"hf://{REPO}/w.safetensors"
    assert resolve_file(value, what="the test model").read_bytes() == CHECKPOINT
    moved = save({"weight": torch.zeros(2, 3), "bias": torch.ones(2)})
    second = hub_standin.add_file(REPO, "w.safetensors", moved)
    path = resolve_file(value, what="the test model")
    assert path.read_bytes() == moved and second in path.parts and first != second
    assert resolved_commits() == {value: second}
    assert [w.split(": it resolved to commit ")[1][:40] for w in warnings_of(caplog)] == [
        first, second]  # each commit said once
    # the cache holds both: pinning the first commit gives the first file, without a request
    count = len(hub_standin.requests)
    assert resolve_file(f"{value}@{first}", what="the test model").read_bytes() == CHECKPOINT
    assert hub_standin.requests_since(count) == []


def test_a_pinned_commit_warns_nothing_and_once_cached_needs_no_request(hub_standin, caplog):
    commit = hub_standin.add_file(REPO, "w.safetensors", CHECKPOINT)
    hub_standin.add_file(REPO, "w.safetensors", b"a later commit")  # main moves on
    value = f"hf://{REPO}/w.safetensors@{commit}"
    assert cached_file(value) is None
    path = resolve_file(value, what="the test model")
    assert path.read_bytes() == CHECKPOINT and warnings_of(caplog) == []
    count = len(hub_standin.requests)
    assert count > 0
    assert resolve_file(value, what="the test model") == path
    assert cached_file(value) == path and content_sha256(value) == SHA256
    assert hub_standin.requests_since(count) == []
    assert resolved_commits() == {value: commit}


def test_a_pinned_sha256_is_checked_before_anything_is_loaded(hub_standin, loads):
    commit = hub_standin.add_file(REPO, "w.safetensors", CHECKPOINT)
    module = torch.nn.Linear(3, 2)
    load_trained(module, f"hf://{REPO}/w.safetensors@{commit} sha256:{SHA256}", what="the model")
    assert torch.equal(module.weight.detach(), STATE["weight"]) and len(loads) == 1
    wrong = "0" * 64
    value = f"hf://{REPO}/w.safetensors@{commit} sha256:{wrong}"
    for _ in range(2):  # refused every time, never loaded
        with pytest.raises(HubError) as info:
            load_trained(torch.nn.Linear(3, 2), value, what="the model")
        message = str(info.value)
        one_sentence(message)
        assert f"hf://{REPO}/w.safetensors@{commit}" in message and SHA256 in message
        assert wrong in message and "nothing was loaded" in message
    assert len(loads) == 1  # only the first, right, one
    assert cached_file(value) is None  # the cache's copy is not of the pinned content


def test_a_copy_damaged_in_the_cache_is_fetched_again(hub_standin, loads):
    commit = hub_standin.add_file(REPO, "w.safetensors", CHECKPOINT)
    value = f"hf://{REPO}/w.safetensors@{commit} sha256:{SHA256}"
    path = resolve_file(value, what="the model")
    blob = path.resolve()
    blob.write_bytes(CHECKPOINT[:-1] + b"!")  # a flipped byte, under the name of the Hub's SHA-256
    assert cached_file(value) is None
    count = len(hub_standin.requests)
    again = resolve_file(value, what="the model")
    assert again.read_bytes() == CHECKPOINT
    assert ("GET", f"/{REPO}/resolve/{commit}/w.safetensors") in hub_standin.requests_since(count)


def test_offline_a_cached_file_needs_no_request_and_a_missing_one_says_what_to_do(hub_standin,
                                                                                 caplog):
    commit = hub_standin.add_file(REPO, "w.safetensors", CHECKPOINT)
    value = f"hf://{REPO}/w.safetensors"
    path = resolve_file(value, what="the model")
    hub_standin.set_offline(True)
    count = len(hub_standin.requests)
    assert resolve_file(value, what="the model") == path
    assert resolve_file(f"{value}@{commit}", what="the model") == path
    assert hub_standin.requests_since(count) == []
    with pytest.raises(HubError) as info:
        resolve_file(f"hf://{REPO}/other.safetensors", what="the model")
    message = str(info.value)
    one_sentence(message)
    assert "HF_HUB_OFFLINE" in message and "v2a download" in message
    with pytest.raises(HubError, match="HF_HUB_OFFLINE is set"):  # pinned, not cached: the same
        resolve_file(f"hf://{REPO}/other.safetensors@{commit}", what="the model")
    assert hub_standin.requests_since(count) == []


def test_an_unreachable_hub_falls_back_to_the_cache_and_says_so(hub_standin, caplog):
    commit = hub_standin.add_file(REPO, "w.safetensors", CHECKPOINT)
    value = f"hf://{REPO}/w.safetensors"
    path = resolve_file(value, what="the model")
    hub_standin.stop()
    caplog.clear()
    assert resolve_file(value, what="the model") == path
    [said] = warnings_of(caplog)
    assert "could not be reached" in said and commit in said and "cache" in said
    with pytest.raises(HubError) as info:
        resolve_file(f"hf://{REPO}/other.safetensors", what="the model")
    one_sentence(str(info.value))
    assert "could not be reached" in str(info.value) and "not in the Hugging Face cache" in str(
        info.value)
    with pytest.raises(HubError) as info:  # pinned and not cached: the same, with the reason
        resolve_file(f"hf://{REPO}/other.safetensors@{commit}", what="the model")
    one_sentence(str(info.value))
    assert "could not be reached" in str(info.value) and "Connection refused" in str(info.value)


@pytest.mark.parametrize("value, words", [
    ("hf://acme/absent/w.safetensors", ["no repository acme/absent", "hf auth login", "HF_TOKEN"]),
    (f"hf://{REPO}/absent.safetensors", ["no file 'absent.safetensors'", "default branch"]),
    (f"hf://{REPO}/w.safetensors@nope", ["no revision 'nope'"]),
    (f"hf://{REPO}/w.safetensors@{'0' * 40}", [f"no revision '{'0' * 40}'"]),
])
def test_a_missing_repo_file_or_revision_is_one_sentence(hub_standin, value, words):
    hub_standin.add_file(REPO, "w.safetensors", CHECKPOINT)
    with pytest.raises(HubError) as info:
        resolve_file(value, what="the model")
    message = str(info.value)
    one_sentence(message)
    assert all(w in message for w in words), message
    assert info.value.exit_code == 1


def test_a_private_repo_needs_a_token(hub_standin, monkeypatch):
    commit = hub_standin.add_file(REPO, "w.safetensors", CHECKPOINT)
    hub_standin.make_private(REPO, token="hf_secret")
    with pytest.raises(HubError, match="HF_TOKEN"):
        hub_file(parse_hub_ref(f"hf://{REPO}/w.safetensors", need_path=True), what="the model")
    monkeypatch.setenv("HF_TOKEN", "hf_secret")
    path, got = hub_file(parse_hub_ref(f"hf://{REPO}/w.safetensors", need_path=True),
                         what="the model")
    assert path.read_bytes() == CHECKPOINT and got == commit


def test_a_whole_repository_is_a_snapshot_folder(hub_standin):
    hub_standin.add_file(REPO, "recipe.yaml", b"name: x\n")
    commit = hub_standin.add_file(REPO, "weights/fuser.safetensors", CHECKPOINT)
    folder, got = hub_snapshot(parse_hub_ref(f"hf://{REPO}", need_path=False), what="the model")
    assert got == commit
    assert (folder / "recipe.yaml").read_bytes() == b"name: x\n"
    assert (folder / "weights" / "fuser.safetensors").read_bytes() == CHECKPOINT
    assert cached_hub_file(parse_hub_ref(f"hf://{REPO}/recipe.yaml", need_path=True)) == (
        folder / "recipe.yaml")
    sub, _ = hub_snapshot(parse_hub_ref(f"hf://{REPO}/weights@{commit}", need_path=False),
                          what="the model")
    assert sub == folder / "weights"
    hub_standin.set_offline(True)
    count = len(hub_standin.requests)
    assert hub_snapshot(parse_hub_ref(f"hf://{REPO}", need_path=False), what="the model") == (
        folder, commit)
    with pytest.raises(HubError, match="HF_HUB_OFFLINE is set"):
        hub_snapshot(parse_hub_ref("hf://acme/elsewhere", need_path=False), what="the model")
    assert hub_standin.requests_since(count) == []


# -- components and runs --------------------------------------------------------------------------


def test_a_codec_is_built_from_an_hf_value(hub_standin, loads):
    """The tiny recipe's spectral codec, from the Hub, pinned by commit and sha256: the codec
    built from the local file, and one cache key for both."""
    data = TINY_CODEC.read_bytes()
    sha256 = hashlib.sha256(data).hexdigest()
    commit = hub_standin.add_file("acme/tiny", "codec.safetensors", data)

    def tiny(weights: str):
        return load_recipe(ROOT / "recipes" / "tiny.yaml", [f"codec.weights={weights}"])

    value = f"hf://acme/tiny/codec.safetensors@{commit} sha256:{sha256}"
    from_hub = build_frozen(tiny(value).choice("codec")).state_dict()
    from_file = build_frozen(tiny(str(TINY_CODEC)).choice("codec")).state_dict()
    assert from_hub.keys() == from_file.keys()
    assert all(torch.equal(from_hub[k], v) for k, v in from_file.items())
    assert cache_key(cache_identity(tiny(value))) == cache_key(cache_identity(tiny(str(TINY_CODEC))))
    loaded = len(loads)
    with pytest.raises(HubError, match="nothing was loaded"):
        build_frozen(tiny(f"hf://acme/tiny/codec.safetensors@{commit} sha256:{'1' * 64}")
                     .choice("codec"))
    assert len(loads) == loaded


def test_the_run_folder_records_the_commits_and_a_resumed_run_keeps_them(hub_standin, tmp_path,
                                                                         caplog):
    data = MemoryClips(2)
    first = train(small_recipe("training.steps=1"), out_dir=tmp_path / "from_scratch",
                  train_data=data, quiet=True)
    assert not (first.out_dir / COMMITS_RECORD).exists()  # no hf:// values: no record
    fuser = (first.out_dir / "fuser.safetensors").read_bytes()
    commit = hub_standin.add_file(REPO, "fuser.safetensors", fuser)
    value = f"hf://{REPO}/fuser.safetensors"
    run = tmp_path / "fine_tuned"
    train(small_recipe("training.steps=1", f"fuser.weights={value}"), out_dir=run,
          train_data=data, quiet=True)
    record = json.loads((run / COMMITS_RECORD).read_text())
    assert record == {"weights_commits": {value: commit}}
    train(small_recipe("training.steps=2", f"fuser.weights={value}"), out_dir=run, resume=True,
          train_data=data, quiet=True)
    assert json.loads((run / COMMITS_RECORD).read_text()) == record
    moved = hub_standin.add_file(REPO, "fuser.safetensors", fuser + b"")  # a new commit, same file
    caplog.clear()
    train(small_recipe("training.steps=3", f"fuser.weights={value}"), out_dir=run, resume=True,
          train_data=data, quiet=True)
    assert json.loads((run / COMMITS_RECORD).read_text()) == {
        "weights_commits": {value: moved}, "earlier_commits": {value: [commit]}}
    assert any(f"this run began with commit {commit}" in w and f"{value}@{commit}" in w
               for w in warnings_of(caplog))


def test_recipe_check_says_an_uncached_hf_value_is_fetched_on_first_use(hub_standin, capsys):
    commit = hub_standin.add_file("acme/tiny", "codec.safetensors", TINY_CODEC.read_bytes())
    code = main(["recipe", "check", "tiny", f"codec.weights=hf://acme/tiny/codec.safetensors@{commit}"])
    err = capsys.readouterr().err
    assert code == 0
    assert (f"codec.weights names hf://acme/tiny/codec.safetensors@{commit}, which is not "
            "downloaded yet (it is fetched on first use)") in err
    assert hub_standin.requests == []


def test_without_huggingface_hub_an_hf_value_says_what_to_install(monkeypatch):
    for name in ("huggingface_hub", "huggingface_hub.constants", "huggingface_hub.errors"):
        monkeypatch.setitem(sys.modules, name, None)  # as if it were not installed
    value = f"hf://{REPO}/w.safetensors@{'a' * 40}"
    assert cached_file(value) is None
    with pytest.raises(HubError) as info:
        resolve_file(value, what="the model")
    one_sentence(str(info.value))
    assert "pip install 'v2a[hub]'" in str(info.value)
