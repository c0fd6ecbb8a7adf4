"""Text as a conditioning stream: the maskvat fuser with text, the recipe slot and its checks,
per-stream dropout in training (learned_words trained and exported), guidance against a
negative prompt, and generation from a prompt, with or without a video."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from v2a_plugins.fusers.maskvat import MaskVATFuser, MaskVATFuserConfig

from v2a.errors import RecipeError
from v2a.generate import VideoToAudio
from v2a.generate.errors import GenerationError
from v2a.interfaces import ConditionFuser
from v2a.items import Batch, ClipItem, collate
from v2a.manifests import Clip
from v2a.objective import stream_dropout
from v2a.recipe import load_recipe
from v2a.registry import default_registry
from v2a.sampler import candidate_generator, decode_level, initial_state, sample
from v2a.sequences import Conditioning, FeatureSequence, TextFeatures
from v2a.testing import from_registry, parametrize_with_checks
from v2a.training import train

ROOT = Path(__file__).resolve().parents[1]
TEXT_SMALL = ROOT / "recipes" / "small" / "maskvat_hybrid_text_small.yaml"
STREAMS = {"clip": 12, "s3d": 20}
TEXT = dict(streams=STREAMS, dim=16, heads=2, context_layers=1, text_dim=8, text_pooled_dim=6)

# Comparing the valid steps of two context sequences that differ only in masked-out steps: the
# attention sums the same terms plus exact zeros for the masked keys, but over a longer key
# axis, which the kernel may reduce in another order: float32 rounding of a few ulps of values
# of order 1 after the layer norms.
PADDING_TOL = 1e-5


@parametrize_with_checks([
    from_registry("fuser", "maskvat", **TEXT),
    from_registry("fuser", "maskvat", **{**TEXT, "context": False}),
    from_registry("fuser", "maskvat", **{**TEXT, "aligned": False}),
])
def test_conformance_with_text(factory, check):
    check(factory)


# -- helpers ----------------------------------------------------------------------------------


def fuser(seed: int = 0, **changes) -> MaskVATFuser:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return MaskVATFuser(MaskVATFuserConfig(**{**TEXT, **changes})).eval()


def video(b: int = 3, seed: int = 0) -> dict[str, FeatureSequence]:
    g = torch.Generator().manual_seed(seed)
    clip_mask = torch.arange(16)[None] < torch.tensor([16, 12, 16][:b])[:, None]
    return {"clip": FeatureSequence(torch.randn(b, 16, 12, generator=g), rate=8.0, mask=clip_mask),
            "s3d": FeatureSequence(torch.randn(b, 7, 20, generator=g), rate=3.125, start=0.16)}


def text(b: int = 3, seed: int = 5) -> TextFeatures:
    g = torch.Generator().manual_seed(seed)
    mask = torch.arange(4)[None] < torch.tensor([4, 2, 3][:b])[:, None]
    return TextFeatures.from_tensors(tokens=torch.randn(b, 4, 8, generator=g), mask=mask,
                                     pooled=torch.randn(b, 6, generator=g))


def valid_rows(seq: FeatureSequence) -> list[torch.Tensor]:
    """Each row's valid steps, in order."""
    mask = seq.valid_mask()
    return [seq.values[i][mask[i]] for i in range(seq.batch_size)]


def fuse(f, streams, **kwargs) -> Conditioning:
    return f(streams, frame_rate=50.0, num_frames=100, **kwargs)


# -- the fuser --------------------------------------------------------------------------------


def test_text_joins_the_context_and_the_aligned_sequence():
    f = fuser()
    assert f.accepts_text and not ConditionFuser.accepts_text
    plain, with_text = fuse(f, video()), fuse(f, video(), text=text())
    assert with_text.aligned.values.shape == (3, 100, 16)
    # the context: the null video token, 16 + 7 video steps, 4 text steps (their mask)
    assert with_text.context.values.shape == (3, 1 + 16 + 7 + 4, 16)
    assert with_text.context.valid_mask()[:, -4:].sum(dim=1).tolist() == [4, 2, 3]
    assert plain.context.values.shape == (3, 1 + 16 + 7, 16)
    assert not torch.allclose(plain.aligned.values, with_text.aligned.values)
    assert not torch.allclose(valid_rows(plain.context)[0], valid_rows(with_text.context)[0][:-4])


def test_dropped_text_is_no_text():
    f = fuser()
    none = fuse(f, video())
    dropped = fuse(f, video(), text=text(), drop_text=torch.tensor([True, False, True]))
    assert torch.equal(dropped.aligned.values[[0, 2]], none.aligned.values[[0, 2]])
    for i in (0, 2):
        torch.testing.assert_close(valid_rows(dropped.context)[i], valid_rows(none.context)[i],
                                   atol=PADDING_TOL, rtol=0)
    assert not torch.equal(dropped.aligned.values[1], none.aligned.values[1])


def test_dropped_video_rows_do_not_depend_on_the_video():
    f = fuser()
    drop = torch.tensor([True, False, True])
    a = fuse(f, video(seed=0), text=text(), drop_video=drop)
    b = fuse(f, video(seed=1), text=text(), drop_video=drop)
    for part in ("aligned", "context"):
        x, y = getattr(a, part), getattr(b, part)
        assert torch.equal(x.values[[0, 2]], y.values[[0, 2]])
        assert not torch.allclose(x.values[1], y.values[1])
    assert bool(a.aligned.valid_mask()[[0, 2]].all())  # the null video covers every frame


def test_without_streams_every_row_is_text_only():
    f = fuser()
    alone = fuse(f, {}, text=text())
    dropped = fuse(f, video(), text=text(), drop_video=torch.ones(3, dtype=torch.bool))
    assert alone.aligned.values.shape == (3, 100, 16)
    torch.testing.assert_close(alone.aligned.values, dropped.aligned.values, atol=PADDING_TOL, rtol=0)
    assert alone.context.values.shape == (3, 1 + 4, 16)  # the null video token and the text
    for x, y in zip(valid_rows(alone.context), valid_rows(dropped.context)):
        torch.testing.assert_close(x, y, atol=PADDING_TOL, rtol=0)
    with pytest.raises(Exception, match="drop every row's video"):
        fuse(f, {}, text=text(), drop_video=torch.tensor([True, False, True]))


def test_a_fuser_without_text_keeps_its_weights_and_refuses_text():
    plain = MaskVATFuser(MaskVATFuserConfig(streams=STREAMS, dim=16, heads=2, context_layers=1))
    assert not plain.accepts_text
    new = ("text_project", "pooled_project", "null_video", "text_embedding", "null_video_token")
    assert not any(k.split(".")[0] in new for k in plain.state_dict())
    with pytest.raises(ValueError, match="does not accept text"):
        plain(video(), frame_rate=50.0, num_frames=100, text=text())
    with pytest.raises(ValueError, match="text_dim and text_pooled_dim together"):
        MaskVATFuserConfig(streams=STREAMS, dim=16, heads=2, text_dim=8)


def test_a_fuser_whose_fuse_predates_text_is_called_without_the_new_keywords():
    class Old(ConditionFuser):
        dim, provides_aligned, provides_context, stream_dims = 4, True, False, {"clip": 12}

        def fuse(self, streams, *, frame_rate, num_frames):
            values = torch.zeros(streams["clip"].batch_size, num_frames, 4)
            return Conditioning(aligned=FeatureSequence(values, rate=frame_rate))

    out = Old()(video(), frame_rate=50.0, num_frames=10)
    assert out.aligned.values.shape == (3, 10, 4)


# -- the recipe -------------------------------------------------------------------------------


def test_the_text_recipe_checks_and_its_mismatches_are_one_sentence():
    recipe = load_recipe(TEXT_SMALL)
    assert recipe.has("text_encoder") and recipe.training.task == "generator"
    cases = [
        (["fuser.text_dim=16"], "fuser.text_dim: is 16 but the text encoder (learned_words) has dim 32"),
        (["fuser.text_pooled_dim=7"], "has pooled_dim 32; set fuser.text_pooled_dim=32"),
        (["text_encoder=null", "fuser.text_dim=32", "fuser.text_pooled_dim=32"],
         "reads a text, but the recipe has no text_encoder"),
        (["fuser.text_dim=null", "fuser.text_pooled_dim=null"], "takes no text"),
    ]
    for overrides, words in cases:
        with pytest.raises(RecipeError) as info:
            load_recipe(TEXT_SMALL, overrides)
        assert words in str(info.value) and "\n" not in str(info.value)


# -- training ---------------------------------------------------------------------------------


FRAME_RATE = 44100 / 512
CAPTIONS = ["a dog barks", None, "rain falls on water", "people talk"]


def text_clips(n: int = 4, frames: int = 22) -> list[ClipItem]:
    g = torch.Generator().manual_seed(0)
    seconds = frames / FRAME_RATE
    items = []
    for i in range(n):
        streams = {name: FeatureSequence(torch.randn(1, max(1, round(rate * seconds)), dim,
                                                     generator=g), rate=rate)
                   for name, (dim, rate) in {"clip": (32, 8.0), "s3d": (1024, 3.125)}.items()}
        items.append(ClipItem(clip=Clip(path=f"c{i}.mp4", split="train", caption=CAPTIONS[i % 4]),
                              codes=torch.randint(0, 64, (4, frames), generator=g),
                              streams=streams, audio_features=None, frame_rate=FRAME_RATE))
    return items


QUIET = ["data.num_workers=0", "training.eval_every=0", "training.sample_every=0",
         "training.log_every=1000", "training.aux_regression_weight=0", "training.batch_size=4",
         "training.ema=0", "training.steps=3", "training.lr=0.01", "training.warmup_steps=0"]


def test_stream_dropout_is_seeded_and_independent_per_stream():
    a = stream_dropout(1000, video=0.1, text=0.5, generator=torch.Generator().manual_seed(3))
    b = stream_dropout(1000, video=0.1, text=0.5, generator=torch.Generator().manual_seed(3))
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    # binomial(1000, p): 0.1 ± 4.5 sigma (sigma 0.0095) and 0.5 ± 4.5 sigma (sigma 0.016)
    assert abs(float(a[0].float().mean()) - 0.1) < 0.043
    assert abs(float(a[1].float().mean()) - 0.5) < 0.072
    none = stream_dropout(8, video=0.0, text=0.0)
    assert not bool(none[0].any() or none[1].any())


def test_training_with_learned_words_is_deterministic_and_exports_the_encoder(tmp_path):
    data = text_clips()
    batch = collate(data)
    assert batch.captions == CAPTIONS
    first = train(load_recipe(TEXT_SMALL, QUIET), out_dir=tmp_path / "a", train_data=data,
                  quiet=True)
    again = train(load_recipe(TEXT_SMALL, QUIET), out_dir=tmp_path / "b", train_data=data,
                  quiet=True)
    assert math.isfinite(first.metrics["train/loss"])
    assert again.metrics["train/loss"] == first.metrics["train/loss"]
    exported = load_file(str(tmp_path / "a" / "text_encoder.safetensors"))
    repeated = load_file(str(tmp_path / "b" / "text_encoder.safetensors"))
    assert exported.keys() == repeated.keys()
    assert all(torch.equal(exported[k], repeated[k]) for k in exported)
    fresh = default_registry().build_from("text_encoder", load_recipe(TEXT_SMALL).choice(
        "text_encoder").as_data())
    init = fresh.state_dict()
    assert set(exported) == set(init)
    # the words of the captions were trained: their embedding rows moved
    assert not torch.allclose(exported["word_embedding.weight"].float(),
                              init["word_embedding.weight"].float())
    for name in ("fuser", "generator"):
        assert (tmp_path / "a" / f"{name}.safetensors").is_file()


def test_the_generator_task_exports_a_learned_text_encoder_only_when_there_is_one():
    from v2a.generator_task import GeneratorTask
    from v2a.registry import default_registry
    from v2a.tasks import checked_exports

    spec = default_registry().training_task("generator")
    learned = GeneratorTask(load_recipe(TEXT_SMALL, QUIET))
    assert set(checked_exports(spec, learned)) == {"fuser", "generator", "text_encoder"}
    assert learned.text_encoder not in learned.frozen
    plain = GeneratorTask(load_recipe(ROOT / "recipes" / "small" / "maskvat_hybrid_small.yaml",
                                      QUIET))
    assert set(checked_exports(spec, plain)) == {"fuser", "generator"}


def test_training_conditions_on_the_captions(tmp_path):
    """The task's conditioning of a batch changes with its captions, and a clip without a
    caption is fused as if its text were dropped."""
    from v2a.generator_task import GeneratorTask

    torch.manual_seed(0)
    task = GeneratorTask(load_recipe(TEXT_SMALL, QUIET)).eval()
    batch = collate(text_clips())
    other = Batch(**{**vars(batch), "captions": ["music plays", None, "a bird", "an engine"]})
    a, b = task.condition(batch), task.condition(other)
    assert not torch.equal(a.aligned.values[0], b.aligned.values[0])
    assert torch.equal(a.aligned.values[1], b.aligned.values[1])  # no caption in either


# -- guidance against a negative prompt -------------------------------------------------------


def small_hybrid():
    torch.manual_seed(0)
    generator = default_registry().build_from("generator", {
        "plugin": "maskvat_hybrid", "width": 32, "layers": 2, "heads": 2, "n_codebooks": 3,
        "codebook_size": 16, "condition_dim": 16}).eval()
    with torch.no_grad():
        for p in generator.parameters():
            if p.dim() == 2 and float(p.abs().max()) == 0.0:
                p.normal_(0.0, 0.3)  # the zero-initialised output layers: let conditioning show
    return generator


def reference_with_negative(generator, condition, negative, *, num_frames, seed, **options):
    """The guided decoding, one row at a time, with the negative conditioning's logits as the
    unconditional ones (prepared without dropping)."""
    from v2a.sampler import Decoding

    decoding = Decoding(**options)
    out = []
    with torch.no_grad():
        for v in range(condition.batch_size):
            row = torch.tensor([v])

            def logits(codes, hidden, level):
                cond = generator(codes, hidden, condition.index_select(row))[:, level]
                uncond = generator(codes, hidden, negative.index_select(row))[:, level]
                return cond, uncond

            codes, hidden = initial_state(None, batch=1, n_codebooks=3, num_frames=num_frames,
                                          candidates=1, device="cpu")
            rng = [candidate_generator(seed, 0)]  # one stream through every level
            for q in range(3):
                decode_level(codes, hidden, level=q, steps=decoding.per_level(3)[q],
                             generators=rng, vocab=16,
                             decoding=decoding, logits=logits)
            out.append(codes)
    return torch.cat(out)


def test_a_negative_conditioning_replaces_the_dropped_one_in_guidance():
    generator, f = small_hybrid(), fuser()
    with torch.no_grad():
        condition = fuse(f, video(2), text=text(2))
        negative = f(video(2), frame_rate=50.0, num_frames=100, text=text(2, seed=9),
                     drop_video=torch.ones(2, dtype=torch.bool))
    options = dict(steps=[3, 2, 1], cfg_scale=3.0, seed=4)
    plain = sample(generator, condition, num_frames=100, **options)
    guided = sample(generator, condition, num_frames=100, negative=negative, **options)
    assert not torch.equal(plain, guided)
    reference = reference_with_negative(generator, condition, negative, num_frames=100, **options)
    assert torch.equal(guided, reference)
    # without guidance the negative is never read
    assert torch.equal(sample(generator, condition, num_frames=100, negative=negative,
                              steps=[3, 2, 1], cfg_scale=1.0, seed=4),
                       sample(generator, condition, num_frames=100, steps=[3, 2, 1],
                              cfg_scale=1.0, seed=4))


# -- generation -------------------------------------------------------------------------------


RECIPE = """\
name: tiny_text
codec: {plugin: spectral_rvq, sample_rate: 8000, n_fft: 256, hop_length: 128, n_codebooks: 2,
        codebook_size: 16}
visual_encoders:
  motion: {plugin: colour_motion, fps: 4.0, grid: 2, size: 16, orientations: 2}
text_encoder: {plugin: learned_words, vocabulary: [dog, rain], dim: 8, max_tokens: 8}
fuser: {plugin: maskvat, streams: {motion: 37}, dim: 16, context_layers: 1, heads: 2,
        text_dim: 8, text_pooled_dim: 8}
generator: {plugin: maskvat_hybrid, n_codebooks: 2, codebook_size: 16, condition_dim: 16,
            width: 32, layers: 1, heads: 2, dropout: 0.0, max_frames: 256}
data: {clip_seconds: 2.0, num_workers: 0}
sampling: {steps: [2, 1], candidates: 1}
"""


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    path = tmp_path_factory.mktemp("text") / "tiny_text.yaml"
    path.write_text(RECIPE)
    built = VideoToAudio.from_recipe(load_recipe(path), warn=lambda _: None)
    with torch.no_grad():  # let the conditioning show in the random generator's output
        for p in built.generator.parameters():
            if p.dim() == 2 and float(p.abs().max()) == 0.0:
                p.normal_(0.0, 0.3)
    return built


def frames(seconds: float = 1.5, fps: float = 8.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.rand(round(seconds * fps), 3, 24, 32, generator=g)


def test_generate_with_a_prompt_and_a_negative_prompt(model):
    silent, rate = model.generate(frames(), fps=8.0, seed=1)
    dog, _ = model.generate(frames(), fps=8.0, seed=1, prompt="a dog")
    against, _ = model.generate(frames(), fps=8.0, seed=1, prompt="a dog", negative_prompt="rain")
    assert rate == 8000 and silent.shape == dog.shape == against.shape == (1, 12000)
    assert not torch.equal(silent, dog) and not torch.equal(dog, against)
    assert torch.equal(dog, model.generate(frames(), fps=8.0, seed=1, prompt="a dog")[0])


def test_generate_from_a_prompt_alone(model):
    wav, rate = model.generate(None, prompt="rain", duration=3.0, seed=2)
    assert wav.shape == (1, 24000) and bool(torch.isfinite(wav).all())
    assert torch.equal(wav, model.generate(None, prompt="rain", duration=3.0, seed=2)[0])
    assert not torch.equal(wav, model.generate(None, prompt="dog", duration=3.0, seed=2)[0])
    with pytest.raises(GenerationError, match="needs a duration"):
        model.generate(None, prompt="rain")
    with pytest.raises(GenerationError, match="give a video, a prompt, or both"):
        model.generate(None, duration=2.0)


def test_a_prompt_for_a_recipe_without_a_text_encoder_is_one_sentence(tmp_path):
    path = tmp_path / "plain.yaml"
    plain = RECIPE.replace("text_encoder: {plugin: learned_words, vocabulary: [dog, rain], dim: 8, "
                           "max_tokens: 8}\n", "").replace(",\n        text_dim: 8, text_pooled_dim: 8", "")
    path.write_text(plain)
    model = VideoToAudio.from_recipe(load_recipe(path), warn=lambda _: None)
    with pytest.raises(GenerationError, match="has no text_encoder, so it cannot follow a prompt"):
        model.generate(frames(), fps=8.0, prompt="a dog")


def test_a_run_folder_gives_the_text_encoder_it_trained(model, tmp_path):
    """``--checkpoint RUN`` loads the run's text_encoder.safetensors beside its fuser and
    generator (strictly), so the prompt means what it meant in training."""
    from v2a.weights import save_state

    recipe = model.recipe
    run = tmp_path / "run"
    run.mkdir()
    (run / "recipe.yaml").write_text(recipe.to_yaml())
    trained = {}
    for slot in ("fuser", "generator", "text_encoder"):
        state = {k: v + 0.5 for k, v in model.components[slot].state_dict().items()}
        save_state(state, run / f"{slot}.safetensors")
        trained[slot] = state
    loaded = VideoToAudio.from_recipe(recipe, run, warn=lambda _: None)
    for name, value in loaded.text_encoder.state_dict().items():
        assert torch.equal(value, trained["text_encoder"][name])
    (run / "text_encoder.safetensors").unlink()  # a run of a frozen encoder exports none
    kept = VideoToAudio.from_recipe(recipe, run, warn=lambda _: None)
    fresh = model.text_encoder.state_dict()
    assert all(torch.equal(v, fresh[k]) for k, v in kept.text_encoder.state_dict().items())
