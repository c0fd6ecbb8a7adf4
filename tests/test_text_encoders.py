"""The ``text_encoder`` kind: its contract (:class:`v2a.interfaces.TextEncoder`), the conformance
kit's checks of it, and the two built-in plug-ins, ``learned_words`` and ``clip_text``."""

from __future__ import annotations

import importlib.util

import pytest
import torch
from safetensors.torch import save_file

from v2a import TextFeatures
from v2a.cli import main
from v2a.errors import UserError
from v2a.registry import default_registry
from v2a.sequences import FeatureSequence
from v2a.testing import (
    checks_for,
    from_registry,
    parametrize_with_checks,
)
from v2a.testing.inputs import batch_rows
from v2a_plugins.text_encoders.learned_words import (
    EMPTY_ID,
    FIRST_WORD_ID,
    UNKNOWN_ID,
    LearnedWordsConfig,
    LearnedWordsEncoder,
    words_of,
)

VOCABULARY = ["dog", "barks", "rain", "café", "door"]


def learned(**options) -> LearnedWordsEncoder:
    return LearnedWordsEncoder(LearnedWordsConfig(**{"vocabulary": VOCABULARY, "dim": 8,
                                                     "max_tokens": 6, **options}))


# -- the interface ------------------------------------------------------------------------------


def test_text_encoder_is_a_kind_the_registry_and_the_kit_know():
    registry = default_registry()
    assert registry.names("text_encoder") == ["clip_text", "learned_words", "t5"]
    assert [c.__name__ for c in checks_for(learned())][-5:] == [
        "check_text_encoder_output", "check_text_encoder_padding", "check_text_encoder_empty",
        "check_text_encoder_unicode", "check_text_encoder_truncation"]


def test_v2a_plugins_lists_the_text_encoders(capsys):
    assert main(["plugins"]) == 0
    rows = [line.split()[:2] for line in capsys.readouterr().out.splitlines()]
    assert ["text_encoder", "learned_words"] in rows and ["text_encoder", "clip_text"] in rows


def test_text_features_need_a_token_mask_and_one_pooled_row_per_text():
    tokens = torch.zeros(2, 3, 4)
    with pytest.raises(ValueError, match="need a mask"):
        TextFeatures(tokens=FeatureSequence(values=tokens, rate=1.0), pooled=torch.zeros(2, 4))
    with pytest.raises(ValueError, match="pooled must be"):
        TextFeatures.from_tensors(tokens=tokens, mask=torch.ones(2, 3, dtype=torch.bool),
                                  pooled=torch.zeros(3, 4))
    out = TextFeatures.from_tensors(tokens=tokens, mask=torch.ones(2, 3, dtype=torch.bool),
                                    pooled=torch.zeros(2, 5))
    assert out.tokens.rate == 1.0 and out.tokens.start == 0.0 and out.batch_size == 2


def test_batch_rows_splits_a_list_of_texts_like_a_tensor():
    assert batch_rows(["a", "b", "c"], slice(1, 2)) == ["b"]
    assert torch.equal(batch_rows(torch.arange(3), slice(1, 2)), torch.tensor([1]))


# -- learned_words ---------------------------------------------------------------------------------


@parametrize_with_checks([
    from_registry("text_encoder", "learned_words"),
    from_registry("text_encoder", "learned_words", vocabulary=VOCABULARY, dim=8, max_tokens=6),
])
def test_learned_words_conformance(factory, check):
    check(factory)


def test_words_are_normalised_runs_of_letters_digits_and_marks():
    assert words_of("The DOG, barks-twice: 3x!") == ["the", "dog", "barks", "twice", "3x"]
    assert words_of("Cafe\u0301") == words_of("café") == ["café"]  # a combining accent composes
    assert words_of("q\u0301 狗叫") == ["q\u0301", "狗叫"]  # a mark with no composed form stays
    assert words_of("") == words_of("🎉 ?! \u200b") == []


def test_known_words_have_their_ids_and_unknown_words_share_unk():
    encoder = learned()
    dog, barks = FIRST_WORD_ID, FIRST_WORD_ID + 1
    assert encoder.token_ids("Dog BARKS") == [dog, barks]
    assert encoder.token_ids("a dog meows") == [UNKNOWN_ID, dog, UNKNOWN_ID]
    assert encoder.token_ids("Cafe\u0301") == [FIRST_WORD_ID + 3]
    out = encoder.encode(["dog barks", "cat barks"])
    assert not torch.equal(out.tokens.values[0, 0], out.tokens.values[1, 0])  # dog vs <unk>
    assert torch.equal(out.tokens.values[0, 1], out.tokens.values[1, 1])  # barks, same place


def test_a_text_without_words_is_one_empty_token():
    encoder = learned()
    assert encoder.token_ids("") == encoder.token_ids("?! 🎉") == [EMPTY_ID]
    out = encoder.encode(["", "dog barks"])
    assert out.tokens.mask.tolist() == [[True, False], [True, True]]
    empty = encoder.word_embedding.weight[EMPTY_ID] + encoder.position_embedding.weight[0]
    assert torch.equal(out.tokens.values[0, 0], empty) and torch.equal(out.pooled[0], empty)


def test_only_the_first_max_tokens_words_count():
    encoder = learned(max_tokens=3)
    assert encoder.token_ids("dog barks rain door") == [FIRST_WORD_ID, FIRST_WORD_ID + 1,
                                                        FIRST_WORD_ID + 2]
    out = encoder.encode(["dog barks rain door café", "dog"])
    assert out.tokens.values.shape == (2, 3, 8) and out.tokens.mask[0].all()


def test_pooled_is_the_mean_of_the_real_tokens_and_padding_is_zero():
    encoder = learned()
    out = encoder.encode(["dog barks rain", "door"])
    values, mask = out.tokens.values, out.tokens.mask
    assert mask.tolist() == [[True] * 3, [True, False, False]]
    assert torch.equal(values[1, 1:], torch.zeros(2, 8))
    # the mean of three float32 vectors: the sum's rounding (2 ulps) and the division's (1 ulp)
    torch.testing.assert_close(out.pooled[0], values[0].mean(0), rtol=4e-7, atol=4e-7)
    assert torch.equal(out.pooled[1], values[1, 0])


def test_learned_words_trains_with_the_model():
    encoder = learned()
    assert all(p.requires_grad for p in encoder.parameters())
    encoder.encode(["dog barks"]).pooled.sum().backward()
    assert encoder.word_embedding.weight.grad[FIRST_WORD_ID].abs().sum() > 0
    assert encoder.word_embedding.weight.grad[FIRST_WORD_ID + 2].abs().sum() == 0  # rain: unused


def test_learned_words_loads_its_weights_file(tmp_path):
    trained = learned()
    path = tmp_path / "text.safetensors"
    save_file({k: v.contiguous() for k, v in trained.state_dict().items()}, str(path))
    registry = default_registry()
    config = registry.config_for("text_encoder", "learned_words",
                                 {"vocabulary": VOCABULARY, "dim": 8, "max_tokens": 6,
                                  "weights": str(path)})
    loaded = registry.build("text_encoder", "learned_words", config)
    assert torch.equal(loaded.encode(["dog"]).pooled, trained.encode(["dog"]).pooled)
    wrong = registry.config_for("text_encoder", "learned_words",
                                {"vocabulary": VOCABULARY, "dim": 16, "weights": str(path)})
    with pytest.raises(UserError, match="does not fit the learned_words text encoder"):
        registry.build("text_encoder", "learned_words", wrong)


@pytest.mark.parametrize("vocabulary, message", [
    (["dog", "hot dog"], r"vocabulary\[1\]: must be one word"),
    (["dog", "?!"], r"vocabulary\[1\]: must be one word"),
    (["Dog", "dog"], r"vocabulary\[1\]: 'dog' repeats vocabulary\[0\]"),
])
def test_a_bad_vocabulary_is_a_user_error(vocabulary, message):
    with pytest.raises(UserError, match=message):
        default_registry().config_for("text_encoder", "learned_words", {"vocabulary": vocabulary})


# -- clip_text -------------------------------------------------------------------------------------

HAVE_OPEN_CLIP = importlib.util.find_spec("open_clip") is not None
needs_open_clip = pytest.mark.skipif(not HAVE_OPEN_CLIP, reason="open_clip is not installed")

#: A real open_clip text tower, small: 2 layers of width 32 in 2 heads, a 24-wide joint space.
SMALL = dict(width=32, layers=2, heads=2, embed_dim=24)
TEXTS = ["a dog barks", "", "rain on a tin roof while thunder rolls far away", "狗在雨中叫 🎉"]


def small_clip(seed=0, **options):
    from v2a_plugins.text_encoders.clip_text import ClipTextConfig, ClipTextEncoder

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return ClipTextEncoder(ClipTextConfig(**{"weights": "none", **SMALL, **options}))


def open_clip_model(seed=0, context_length=77):
    """A whole open_clip CLIP model with the SMALL text tower (and a token vision tower): what
    a user would save."""
    import open_clip

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return open_clip.create_model(
            "ViT-B-32", pretrained=None, embed_dim=24, quick_gelu=True,
            vision_cfg=dict(image_size=16, patch_size=16, width=8, layers=1, head_width=8),
            text_cfg=dict(context_length=context_length, vocab_size=49408, width=32, heads=2,
                          layers=2),
        ).eval()


def saved(state, path):
    save_file({k: v.detach().contiguous() for k, v in state.items()}, str(path))
    return str(path)


@parametrize_with_checks([
    from_registry("text_encoder", "clip_text", weights="none", **SMALL),
    from_registry("text_encoder", "clip_text", weights="none", normalize=True, context_length=16,
                  **SMALL),
] if HAVE_OPEN_CLIP else [])
def test_clip_text_conformance(factory, check):
    check(factory)


@needs_open_clip
def test_pooled_is_what_open_clip_encode_text_returns(tmp_path):
    import open_clip

    model = open_clip_model()
    path = saved(model.state_dict(), tmp_path / "clip.safetensors")  # vision keys included
    encoder = small_clip(weights=path, quick_gelu=True).to(torch.float64)
    model = model.to(torch.float64)
    with torch.inference_mode():
        ours = encoder.encode(TEXTS)
        theirs = model.encode_text(open_clip.tokenize(TEXTS))
    # Both in float64 on the same weights; ours runs the causal transformer on the batch's
    # longest text instead of all 77 steps, which only changes the matrix kernels' blocking
    # (masked keys add exact zeros to the softmax). Reordered float64 sums of at most 77 * 32
    # terms differ by ~1e-14 relative; 1e-10 is far above that and far below a wrong token.
    torch.testing.assert_close(ours.pooled, theirs, rtol=1e-10, atol=1e-10)


@needs_open_clip
def test_tokens_run_from_start_to_end_of_text_and_the_end_is_pooled():
    encoder = small_clip()
    out = encoder.encode(TEXTS)
    lengths = [len(encoder.tokenizer.encode(text)) + 2 for text in TEXTS]  # + SOT and EOT
    assert out.tokens.mask.sum(1).tolist() == lengths
    assert out.tokens.length == max(lengths) and out.tokens.values.shape[2] == 32
    end = out.tokens.values[torch.arange(4), torch.tensor(lengths) - 1]  # [4, width]
    # the same float32 product of the same vectors, batched alike: bitwise equal on a CPU
    assert torch.equal(end @ encoder.text_projection, out.pooled)
    assert not out.tokens.values[~out.tokens.mask].any()  # padding is zero


@needs_open_clip
def test_a_long_text_keeps_its_first_tokens_and_ends_with_end_of_text():
    encoder = small_clip(context_length=8)
    assert encoder.max_tokens == 8
    long, prefix = "one two three four five six seven eight nine ten", "one two three four five six"
    out = encoder.encode([long, prefix])
    assert out.tokens.mask.tolist() == [[True] * 8, [True] * 8]
    # the prefix's tokens are the truncated long text's (SOT, six words, EOT), so a causal tower
    # gives both rows the same states: the same float32 arithmetic in one batch, where only a
    # row's place in the kernels' blocking may reorder a sum (~1e-7 relative); 1e-5 holds that
    torch.testing.assert_close(out.tokens.values[0], out.tokens.values[1], rtol=1e-5, atol=1e-5)


@needs_open_clip
def test_clip_text_loads_the_accepted_checkpoint_layouts(tmp_path):
    model = open_clip_model(seed=3)
    reference = small_clip(weights=saved(model.state_dict(), tmp_path / "full.safetensors"),
                           quick_gelu=True)
    expected = reference.encode(TEXTS).pooled
    training = tmp_path / "epoch_1.pt"
    torch.save({"epoch": 1, "state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}},
               training)
    own = saved(reference.state_dict(), tmp_path / "own.safetensors")
    for path in (str(training), own):
        loaded = small_clip(weights=path, quick_gelu=True)
        assert torch.equal(loaded.encode(TEXTS).pooled, expected), path
    assert not any(p.requires_grad for p in reference.parameters())  # frozen
    with pytest.raises(UserError, match="does not fit the CLIP ViT-B-32 text tower"):
        small_clip(weights=own, width=64)


@needs_open_clip
@pytest.mark.parametrize("options, message", [
    (dict(weights="pretrained", width=32), "shape a new text tower"),
    (dict(model="ViT-B-33"), "open_clip has no model named 'ViT-B-33'"),
    (dict(model="mt5-base-ViT-B-32"), "Hugging Face text tower or tokenizer"),
    (dict(heads=3, width=None), r"heads \(3\) must divide the text width of ViT-B-32 \(512\)"),
])
def test_clip_text_option_mistakes_are_user_errors(options, message):
    with pytest.raises(UserError, match=message):
        small_clip(**options)


@needs_open_clip
def test_declared_sizes_match_open_clip_configs():
    import open_clip
    from v2a_plugins.text_encoders.clip_text import MODEL_SIZES, ClipTextConfig, clip_text_properties

    for model, sizes in MODEL_SIZES.items():
        named = open_clip.get_model_config(model)
        text = named["text_cfg"]
        assert sizes == (text["width"], named["embed_dim"], text["context_length"]), model
        assert clip_text_properties(ClipTextConfig(model=model + "-quickgelu")) == dict(
            dim=sizes[0], pooled_dim=sizes[1], max_tokens=sizes[2])


@needs_open_clip
def test_the_tokenizer_vocabulary_ships_inside_open_clip():
    from pathlib import Path

    import open_clip
    from open_clip.tokenizer import default_bpe

    vocabulary = Path(default_bpe())
    assert vocabulary.is_file() and Path(open_clip.__file__).parent in vocabulary.parents


@needs_open_clip
def test_quick_gelu_follows_the_pretrained_tag():
    import open_clip

    assert isinstance(small_clip().transformer.resblocks[0].mlp.gelu, open_clip.model.QuickGELU)
    laion = small_clip(pretrained="laion2b_s34b_b79k")  # trained with plain GELU
    assert not isinstance(laion.transformer.resblocks[0].mlp.gelu, open_clip.model.QuickGELU)


@needs_open_clip
def test_a_failed_download_is_one_sentence(monkeypatch):
    import open_clip

    def offline(*args, **kwargs):
        raise OSError("no network")

    monkeypatch.setattr(open_clip, "download_pretrained", offline)
    with pytest.raises(UserError, match="could not download the open_clip weights ViT-B-32/openai"):
        small_clip(weights="pretrained", width=None, layers=None, heads=None, embed_dim=None)
