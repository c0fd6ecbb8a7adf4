"""The ``t5`` text encoder plug-in (T5 / Flan-T5's encoder through transformers), at a small size
with random weights: nothing is downloaded."""

from __future__ import annotations

import importlib.util
import sys

import pytest
import torch

from v2a.errors import PluginError, UserError
from v2a.registry import Registry, default_registry
from v2a.testing import from_registry, parametrize_with_checks
from v2a.weights import WeightsError

transformers = pytest.importorskip("transformers")

from v2a_plugins.text_encoders import t5  # noqa: E402  (after the importorskip)

#: A real T5 encoder, small: 2 layers of width 32 in 4 heads.
SMALL = dict(weights="none", d_model=32, layers=2, heads=4, d_ff=64, max_tokens=16)
TEXTS = ["a dog barks", "", "Rain on a tin roof, then thunder!", "狗在雨中叫 🎉"]


def small(seed=0, **options) -> t5.T5TextEncoder:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return t5.T5TextEncoder(t5.T5TextConfig(**{**SMALL, **options}))


def saved_folder(encoder: t5.T5TextEncoder, path) -> str:
    encoder.model.save_pretrained(path)
    encoder.tokenizer.save_pretrained(path)
    return str(path)


@parametrize_with_checks([
    from_registry("text_encoder", "t5", **SMALL),
    from_registry("text_encoder", "t5", **{**SMALL, "max_tokens": 5, "vocab_size": 120}),
])
def test_t5_conformance(factory, check):
    check(factory)


def test_t5_is_registered_with_its_extra():
    spec = default_registry().get("text_encoder", "t5").spec
    assert spec.requires == ("transformers",) and spec.install == "pip install 'v2a[t5]'"


def test_every_text_ends_with_a_real_end_of_sequence_token():
    encoder = small()
    ids, attention = encoder.tokenize(TEXTS)
    eos = encoder.tokenizer.eos_token_id
    lengths = attention.sum(1)
    assert ids[torch.arange(len(TEXTS)), lengths - 1].tolist() == [eos] * len(TEXTS)
    # the empty prompt is the end-of-sequence token alone, and it counts as real
    assert ids[1, :1].tolist() == [eos] and lengths[1] == 1
    # "a dog barks": a word start before each word, one piece per character, then </s>
    assert lengths[0] == len("a dog barks") + 1 + 1
    out = encoder.encode(TEXTS)
    assert torch.equal(out.tokens.mask, attention.bool())
    assert not out.tokens.values[~out.tokens.mask].any()  # padding is zero
    assert out.tokens.values.shape == (4, int(lengths.max()), 32) and encoder.dim == 32


def test_pooled_is_the_mean_of_the_real_tokens():
    encoder = small()
    out = encoder.encode(TEXTS)
    for i in range(len(TEXTS)):
        real = out.tokens.values[i][out.tokens.mask[i]]
        # float32 means of at most 30 vectors: the sum over padded zeros adds exact zeros, so
        # only the summation order may differ from Tensor.mean (~sqrt(30) ulps); 1e-6 holds it
        torch.testing.assert_close(out.pooled[i], real.mean(0), rtol=1e-6, atol=1e-6)
    assert encoder.pooled_dim == 32


def test_a_long_text_is_cut_at_max_tokens_and_keeps_its_end_of_sequence():
    encoder = small(max_tokens=6)
    ids, attention = encoder.tokenize(["abcdefghij", "abcde"])
    # both give the word start and the first four letters, then </s>: one and the same row
    assert attention.tolist() == [[1] * 6, [1] * 6]
    assert torch.equal(ids[0], ids[1]) and ids[0, -1] == encoder.tokenizer.eos_token_id
    out = encoder.encode(["abcdefghij", "abcde"])
    # the same ids in one batch: the same float32 arithmetic row by row, bit for bit on a CPU
    assert torch.equal(out.tokens.values[0], out.tokens.values[1])


def test_characters_outside_the_offline_vocabulary_are_unknown_tokens():
    encoder = small()
    ids, attention = encoder.tokenize(["狗 x"])
    pieces = encoder.tokenizer.convert_ids_to_tokens(ids[0][attention[0].bool()].tolist())
    assert pieces == [t5.WORD_START, t5.UNKNOWN, t5.WORD_START, "x", t5.EOS]


def test_frozen_unless_trainable():
    encoder = small()
    assert not any(p.requires_grad for p in encoder.parameters())
    torch.nn.ModuleDict({"text": encoder}).train()  # the model around it trains
    assert not encoder.training and not encoder.model.training  # its dropout stays off
    trainable = small(trainable=True)
    assert all(p.requires_grad for p in trainable.parameters())
    torch.nn.ModuleDict({"text": trainable}).train()
    assert trainable.model.training
    trainable.encode(["a dog"]).pooled.sum().backward()
    assert trainable.model.get_input_embeddings().weight.grad.abs().sum() > 0


def test_a_saved_folder_loads_offline_and_gives_the_same_outputs(tmp_path, monkeypatch):
    encoder = small(seed=3)
    folder = saved_folder(encoder, tmp_path / "t5")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    loaded = small(weights=folder)
    assert loaded.dim == 32 and loaded.max_tokens == 16
    assert torch.equal(loaded.tokenize(TEXTS)[0], encoder.tokenize(TEXTS)[0])
    ours, theirs = loaded.encode(TEXTS), encoder.encode(TEXTS)
    # the same weights, ids and float32 arithmetic: bit for bit on one machine
    assert torch.equal(ours.tokens.values, theirs.tokens.values)
    assert torch.equal(ours.pooled, theirs.pooled)
    assert t5.t5_text_properties(t5.T5TextConfig(weights=folder)) == dict(
        max_tokens=128, dim=32, pooled_dim=32)  # the folder's config.json gives the width


def test_a_folder_that_is_not_a_t5_checkpoint_is_one_sentence(tmp_path):
    with pytest.raises(WeightsError, match=r"the T5 weights .*missing are not a folder"):
        small(weights=str(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(WeightsError, match=r"^could not read .*empty as a T5 checkpoint"):
        small(weights=str(tmp_path / "empty"))


@pytest.mark.skipif(importlib.util.find_spec("sentencepiece") is not None,
                    reason="the hint is for installs without sentencepiece")
def test_a_tokenizer_that_needs_sentencepiece_says_so(tmp_path):
    folder = tmp_path / "t5"
    saved_folder(small(), folder)
    (folder / "tokenizer.json").unlink()  # what the t5-v1_1 checkpoints ship: spiece.model only
    (folder / "spiece.model").write_bytes(b"not read without sentencepiece")
    with pytest.raises(WeightsError, match=r"^could not load the tokenizer of the T5 checkpoint "
                       r".*; a tokenizer that is only a SentencePiece spiece.model \(no "
                       r"tokenizer.json\) also needs: pip install sentencepiece$"):
        small(weights=str(folder))


def test_pretrained_asks_transformers_for_the_checkpoint_by_name(monkeypatch):
    reference = small(seed=5)
    asked = []

    def model_from(source, **options):
        asked.append(("model", source, options))
        return reference.model

    def tokenizer_from(source, **options):
        asked.append(("tokenizer", source, options))
        return reference.tokenizer

    monkeypatch.setattr(transformers.T5EncoderModel, "from_pretrained", model_from)
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", tokenizer_from)
    encoder = small(weights="pretrained", checkpoint="google/flan-t5-base")
    assert asked == [("model", "google/flan-t5-base", {"local_files_only": False}),
                     ("tokenizer", "google/flan-t5-base", {"local_files_only": False})]
    assert encoder.model is reference.model and encoder.dim == 32


def test_a_failed_download_is_one_sentence(monkeypatch):
    def offline(source, **options):
        raise OSError("We couldn't connect to 'https://huggingface.co' to load the files.")

    monkeypatch.setattr(transformers.T5EncoderModel, "from_pretrained", offline)
    with pytest.raises(WeightsError, match=r"^could not download the T5 checkpoint "
                       r"google/flan-t5-large from the Hugging Face hub \(OSError: We couldn't "
                       r"connect .*\); download it on a machine with internet"):
        small(weights="pretrained")


def test_declared_widths_need_no_download():
    properties = t5.t5_text_properties
    assert properties(t5.T5TextConfig()) == dict(max_tokens=128, dim=1024, pooled_dim=1024)
    assert properties(t5.T5TextConfig(checkpoint="google/flan-t5-base"))["dim"] == 768
    assert properties(t5.T5TextConfig(checkpoint="someone/own-t5")) == dict(max_tokens=128)
    assert properties(t5.T5TextConfig(weights="none", d_model=48, heads=4))["dim"] == 48


@pytest.mark.parametrize("options, message", [
    (dict(heads=5), r"heads: must divide d_model 32, got 5"),
    (dict(vocab_size=50), rf"vocab_size: must be at least {len(t5.RANDOM_PIECES)}"),
    (dict(max_tokens=1), r"max_tokens"),
])
def test_option_mistakes_are_user_errors(options, message):
    with pytest.raises(UserError, match=message):
        default_registry().config_for("text_encoder", "t5", {**SMALL, **options})


def test_without_transformers_the_plugin_says_which_extra_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)  # `import transformers` fails
    with pytest.raises(t5.T5NotInstalledError) as caught:
        small()
    assert str(caught.value) == ("the t5 text encoder needs the transformers package, which is "
                                 "not installed; install it with: pip install 'v2a[t5]'")
    registry = Registry()
    registry.register_module(t5)
    with pytest.raises(PluginError, match=r"^text_encoder 't5' needs transformers, which is "
                       r"not installed: pip install 'v2a\[t5\]'$"):
        registry.build("text_encoder", "t5", t5.T5TextConfig(**SMALL))
