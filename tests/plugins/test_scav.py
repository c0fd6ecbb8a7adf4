"""The SCAV reranker plug-in: contract, sequence distances, contrastive training, weights, and
its training task (`training.task: reranker`)."""

from __future__ import annotations

import math
import pickle
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from v2a_plugins.rerankers.scav import (
    DISTANCES,
    Scav,
    ScavTrainingTask,
    cosine_mean,
    dtw,
    interpolated_euclidean,
)

from tests.test_train import AUDIO, MemoryClips, assert_same, weights
from tests.test_train import recipe as small_recipe
from tests.unsafe_pickle import RunsCode
from v2a import FeatureSequence
from v2a.errors import UserError
from v2a.items import collate
from v2a.recipe import load_recipe
from v2a.registry import default_registry
from v2a.tasks import TrainingError
from v2a.testing import from_registry, parametrize_with_checks
from v2a.training import train as train_run
from v2a.weights import WeightsError

SR, SECONDS, FPS, VDIM = 8000, 2.0, 8.0, 16
#: A small log-mel front end (31.25 steps/s) in place of BEATs, to keep training fast.
MEL = {"plugin": "mel", "sample_rate": SR, "n_fft": 512, "hop_length": 256, "n_mels": 16}
#: A small configuration of the real BEATs architecture (random weights).
TINY_BEATS = {
    "plugin": "beats", "weights": "none", "encoder_layers": 1, "encoder_embed_dim": 32,
    "encoder_attention_heads": 2, "encoder_ffn_embed_dim": 64, "embed_dim": 16, "conv_pos": 8,
    "conv_pos_groups": 4, "num_buckets": 16, "max_distance": 32,
}
SMALL = dict(video_dim=VDIM, dim=32, layers=1, heads=2)
NAMES = ("interpolated_euclidean", "dtw", "cosine_mean")


@parametrize_with_checks(
    [from_registry("reranker", "scav", audio_encoder=MEL, distance=d, **SMALL) for d in NAMES]
    + [from_registry("reranker", "scav", audio_encoder=TINY_BEATS, **SMALL)]
)
def test_conformance(factory, check):
    check(factory)


# -- helpers ---------------------------------------------------------------------------------------


def build(**options) -> Scav:
    options = {"audio_encoder": MEL, **SMALL, **options}
    return default_registry().build_from("reranker", {"plugin": "scav", **options})


def envelope(times: torch.Tensor, events: torch.Tensor, width: float = 0.06) -> torch.Tensor:
    """``[b, t]``: a Gaussian bump at each of the ``events: [b, e]`` (seconds)."""
    return torch.exp(-0.5 * ((times[None, :, None] - events[:, None, :]) / width) ** 2).sum(-1)


def clips(b: int, gen: torch.Generator) -> tuple[FeatureSequence, torch.Tensor]:
    """Synthetic pairs: two events at random times; the video has a feature direction whose
    magnitude follows the events (plus noise and a per-clip offset), the audio is noise whose
    loudness follows them. Only the timing tells which audio belongs to which video."""
    events = 0.2 + 1.6 * torch.rand(b, 2, generator=gen)
    tv = torch.arange(int(SECONDS * FPS)) / FPS
    direction = F.normalize(torch.randn(VDIM, generator=torch.Generator().manual_seed(7)), dim=0)
    video = (
        3 * envelope(tv, events)[..., None] * direction
        + 0.3 * torch.randn(b, len(tv), VDIM, generator=gen)
        + torch.randn(b, 1, VDIM, generator=gen)
    )
    ta = torch.arange(int(SECONDS * SR)) / SR
    loudness = 0.01 + 0.5 * envelope(ta, events).clamp(max=1)
    wav = loudness * (2 * torch.rand(b, len(ta), generator=gen) - 1)
    return FeatureSequence(values=video, rate=FPS), wav.unsqueeze(1)


@torch.inference_mode()
def retrieval_accuracy(model: Scav, video: FeatureSequence, wav: torch.Tensor) -> float:
    """Share of videos whose nearest audio in the batch is their own."""
    model.eval()
    d = model.pairwise_distance(model.embed_video(video), model.embed_audio(wav))
    return (d.argmin(dim=1) == torch.arange(len(d))).float().mean().item()


def train(model: Scav, steps: int, seed: int = 1) -> list[float]:
    gen = torch.Generator().manual_seed(seed)
    params = [p for p in model.parameters() if p.requires_grad]
    optimiser = torch.optim.Adam(params, lr=3e-3)
    losses = []
    model.train()
    for _ in range(steps):
        video, wav = clips(16, gen)
        loss = model.contrastive_loss(video, wav)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    return losses


EVAL = 48  # clips in the retrieval test: chance is 1 / 48


@pytest.fixture(scope="module")
def trained():
    """A small SCAV trained for 40 steps, with the accuracy of the same model untrained."""
    torch.manual_seed(0)
    model = build()
    video, wav = clips(EVAL, torch.Generator().manual_seed(99))
    before = retrieval_accuracy(model, video, wav)
    losses = train(model, steps=40)
    model.eval()
    return {"model": model, "before": before, "losses": losses, "video": video, "wav": wav}


# -- distances -------------------------------------------------------------------------------------


def features(b: int, t: int, rate: float, seed: int, mask=None) -> FeatureSequence:
    gen = torch.Generator().manual_seed(seed)
    return FeatureSequence(values=torch.randn(b, t, 8, generator=gen), rate=rate, mask=mask)


@pytest.mark.parametrize("distance", [interpolated_euclidean, dtw, cosine_mean])
def test_distance_zero_for_identical_and_symmetric(distance):
    mask = torch.arange(30).unsqueeze(0) < torch.tensor([[30], [20], [12]])
    x = features(3, 20, 8.0, seed=0)
    y = features(3, 30, 12.5, seed=1, mask=mask)
    assert torch.allclose(distance(x, x), torch.zeros(3), atol=1e-6)
    assert torch.allclose(distance(y, y), torch.zeros(3), atol=1e-6)
    xy, yx = distance(x, y), distance(y, x)
    assert bool((xy > 0.1).all()), xy
    assert torch.allclose(xy, yx, atol=1e-6)


@pytest.mark.parametrize("distance", [interpolated_euclidean, dtw, cosine_mean])
def test_distance_ignores_padded_steps(distance):
    mask = torch.arange(30).unsqueeze(0) < torch.tensor([[30], [20], [12]])
    x, y = features(3, 20, 8.0, seed=0), features(3, 30, 12.5, seed=1, mask=mask)
    noisy = y.replace(values=y.values.masked_fill(~mask.unsqueeze(-1), 1e4))
    assert torch.allclose(distance(x, y), distance(x, noisy), atol=1e-5)


@pytest.mark.parametrize("name", DISTANCES)
def test_pairwise_distance_matches_paired_rows(name):
    """The all-pairs form used in training equals the paired form used in scoring."""
    paired, pairwise = DISTANCES[name]
    x_mask = torch.arange(20).unsqueeze(0) < torch.tensor([[20], [15], [9]])
    y_mask = torch.arange(30).unsqueeze(0) < torch.tensor([[30], [7]])
    x, y = features(3, 20, 8.0, seed=0, mask=x_mask), features(2, 30, 12.5, seed=1, mask=y_mask)
    rows_x = torch.arange(3).repeat_interleave(2)
    rows_y = torch.arange(2).repeat(3)
    expected = paired(x.index_select(rows_x), y.index_select(rows_y)).reshape(3, 2)
    assert torch.allclose(pairwise(x, y), expected, atol=1e-5)


def test_dtw_matches_the_textbook_recursion():
    """The anti-diagonal recursion gives the cost / path length of the plain double loop."""

    def reference(a: torch.Tensor, b: torch.Tensor) -> float:
        cost = torch.cdist(a, b).double()
        n, m = cost.shape
        total = torch.full((n + 1, m + 1), math.inf, dtype=torch.float64)
        steps = torch.zeros(n + 1, m + 1)
        total[0, 0] = 0
        for i in range(1, n + 1):
            for j in range(1, m + 1):
                options = [(i - 1, j - 1), (i - 1, j), (i, j - 1)]  # ties: diagonal first
                pi, pj = min(options, key=lambda o: total[o].item())
                total[i, j] = cost[i - 1, j - 1] + total[pi, pj]
                steps[i, j] = steps[pi, pj] + 1
        return (total[n, m] / steps[n, m]).item()

    mask = torch.arange(11).unsqueeze(0) < torch.tensor([[11], [6], [1]])
    x, y = features(3, 7, 8.0, seed=2), features(3, 11, 6.25, seed=3, mask=mask)
    lengths = mask.sum(dim=1).tolist()
    expected = [reference(x.values[r], y.values[r, : lengths[r]]) for r in range(3)]
    assert torch.allclose(dtw(x, y).double(), torch.tensor(expected).double(), atol=1e-5)


def smooth_signal(times: torch.Tensor, seed: int) -> torch.Tensor:
    """``[1, t, 4]``: a sum of slow sinusoids (below 1 Hz), evaluated at ``times``."""
    gen = torch.Generator().manual_seed(seed)
    freq, phase = 0.2 + 0.8 * torch.rand(4, 3, generator=gen), 6.3 * torch.rand(4, 3, generator=gen)
    return torch.sin(2 * math.pi * freq * times[:, None, None] + phase).sum(-1).unsqueeze(0)


def test_interpolated_euclidean_is_invariant_to_the_sampling_rate():
    """One underlying signal sampled at 8 Hz and at 25 Hz (and 6.25 Hz with another start) is
    near zero distance apart, and far from another signal sampled at 25 Hz."""
    def at(rate: float, start: float, seed: int) -> FeatureSequence:
        times = start + torch.arange(int(10 * rate)) / rate
        return FeatureSequence(values=smooth_signal(times, seed), rate=rate, start=start)

    slow, fast, shifted_grid = at(8.0, 0.0, seed=0), at(25.0, 0.0, seed=0), at(6.25, 0.0875, seed=0)
    other = at(25.0, 0.0, seed=1)
    far = interpolated_euclidean(slow, other).item()
    assert far > 1.0
    assert interpolated_euclidean(slow, fast).item() < 0.03 * far
    assert interpolated_euclidean(shifted_grid, fast).item() < 0.03 * far


@pytest.mark.parametrize("shift", [0.3, 0.5])
def test_dtw_tolerates_a_time_shift_better_than_interpolated_euclidean(shift):
    """Three events, each with its own feature direction, against the same events ``shift``
    seconds later and against the events in another order: for the interpolated Euclidean
    distance the shifted copy is about as far as the reordered one; DTW warps the shift away."""
    times = torch.arange(80) / 8.0
    directions = F.normalize(torch.randn(3, 8, generator=torch.Generator().manual_seed(0)), dim=1)

    def seq(events: list[float], order: list[int]) -> FeatureSequence:
        bumps = envelope(times, torch.tensor(events).unsqueeze(1), width=0.2)  # [e, t]
        values = (3 * bumps.unsqueeze(2) * directions[order].unsqueeze(1)).sum(0, keepdim=True)
        return FeatureSequence(values=values, rate=8.0)

    original = seq([2.0, 5.0, 7.5], [0, 1, 2])
    shifted = seq([2.0 + shift, 5.0 + shift, 7.5 + shift], [0, 1, 2])
    reordered = seq([2.0, 5.0, 7.5], [2, 0, 1])
    relative = lambda d: (d(original, shifted) / d(original, reordered)).item()  # noqa: E731
    assert relative(interpolated_euclidean) > 0.75
    assert relative(dtw) < 0.5 * relative(interpolated_euclidean)


# -- the reranker ----------------------------------------------------------------------------------


def test_score_is_minus_the_distance_of_the_embeddings():
    model = build(distance="dtw").eval()
    video, wav = clips(2, torch.Generator().manual_seed(0))
    candidates = torch.stack([wav, wav.flip(0), 0.5 * wav], dim=1)  # [2, 3, 1, s]
    with torch.inference_mode():
        scores = model.score(candidates, {"clip": video})
        v = model.embed_video(video)
        for i in range(3):
            expected = -model.distance(v, model.embed_audio(candidates[:, i]))
            assert torch.allclose(scores[:, i], expected, atol=1e-5)


def test_padded_video_steps_do_not_change_scores():
    model = build().eval()
    video, wav = clips(2, torch.Generator().manual_seed(0))
    mask = torch.arange(video.length).unsqueeze(0) < torch.tensor([[16], [10]])
    padded = video.replace(mask=mask)
    noisy = padded.replace(values=video.values.masked_fill(~mask.unsqueeze(-1), 1e4))
    candidates = torch.stack([wav, wav.flip(0)], dim=1)
    with torch.inference_mode():
        expected = model.score(candidates, {"clip": padded})
        assert torch.allclose(model.score(candidates, {"clip": noisy}), expected, atol=1e-5)


def test_missing_or_mismatched_stream_is_a_one_sentence_error():
    model = build().eval()
    video, wav = clips(1, torch.Generator().manual_seed(0))
    candidates = wav.unsqueeze(1)
    with pytest.raises(UserError, match="reads the visual stream 'clip', but the video has s3d"):
        model.score(candidates, {"s3d": video})
    narrow = video.replace(values=video.values[..., :8])
    with pytest.raises(UserError, match="is 8 wide, but the SCAV reranker's video_dim is 16"):
        model.score(candidates, {"clip": narrow})


def test_audio_encoder_is_frozen_and_projectors_train():
    model = build(audio_encoder=TINY_BEATS)
    assert model.sample_rate == 16000  # the audio encoder's
    model.train()
    assert not model.audio_encoder.training
    gen = torch.Generator().manual_seed(0)
    video = FeatureSequence(values=torch.randn(3, 8, VDIM, generator=gen), rate=8.0)
    model.contrastive_loss(video, 0.1 * torch.randn(3, 1, 16000, generator=gen)).backward()
    assert all(p.grad is None and not p.requires_grad for p in model.audio_encoder.parameters())
    assert all(p.grad is not None for p in model.projectors.parameters())
    assert model.projectors.log_temperature.grad.abs() > 0


# -- training --------------------------------------------------------------------------------------


def test_contrastive_training_learns_to_retrieve_the_matching_audio(trained):
    chance = 1 / EVAL
    assert trained["before"] < 5 * chance, trained["before"]  # untrained: near chance
    after = retrieval_accuracy(trained["model"], trained["video"], trained["wav"])
    assert after > 0.5, after  # chance is 0.02
    losses = trained["losses"]
    assert sum(losses[-5:]) / 5 < 0.5 * sum(losses[:5]) / 5


def test_select_picks_the_matching_candidate_after_training(trained):
    model = trained["model"]
    video, wav = clips(16, torch.Generator().manual_seed(5))
    n = 4
    gen = torch.Generator().manual_seed(6)
    others = torch.stack([torch.randperm(16, generator=gen) for _ in range(n)], dim=1)  # [16, n]
    truth = torch.randint(0, n, (16,), generator=gen)
    others[torch.arange(16), truth] = torch.arange(16)
    candidates = wav[others]  # [16, n, 1, s]: the matching audio at `truth`
    with torch.inference_mode():
        picked = model.select(candidates, {"clip": video})
    # a random "other" may itself be the match; count a pick right if it is the video's own audio
    right = (others[torch.arange(16), picked] == torch.arange(16)).float().mean().item()
    assert right > 0.75, right  # chance is about 0.25


def test_weights_round_trip(trained, tmp_path):
    model = trained["model"]
    path = tmp_path / "scav.safetensors"
    model.save_weights(path)
    loaded = build(weights=str(path)).eval()
    video, wav = clips(2, torch.Generator().manual_seed(3))
    candidates = torch.stack([wav, wav.flip(0)], dim=1)
    with torch.inference_mode():
        expected = model.score(candidates, {"clip": video})
        assert torch.equal(loaded.score(candidates, {"clip": video}), expected)
        # a whole-component state dict (as a trainer might save it) loads too
        torch.save(model.state_dict(), tmp_path / "scav.pt")
        whole = build(weights=str(tmp_path / "scav.pt")).eval()
        assert torch.equal(whole.score(candidates, {"clip": video}), expected)
    assert not torch.equal(build().eval().score(candidates, {"clip": video}), expected)


def test_weights_errors(tmp_path):
    with pytest.raises(WeightsError, match=r"does not exist .*v2a train recipes/scav.yaml"):
        build(weights=str(tmp_path / "missing.safetensors"))
    with pytest.raises(WeightsError, match="no published SCAV checkpoint"):
        build(weights="pretrained")
    path = tmp_path / "wide.safetensors"
    build(dim=64).save_weights(path)
    with pytest.raises(WeightsError, match="does not fit the SCAV projectors"):
        build(weights=str(path))

    evil = tmp_path / "evil.pt"
    evil.write_bytes(pickle.dumps({"video.input.weight": RunsCode("pwned")}, protocol=2))
    with pytest.raises(WeightsError, match="refused"):
        build(weights=str(evil))


def test_shipped_recipe_validates():
    recipe = load_recipe(Path(__file__).parents[2] / "recipes" / "scav.yaml")
    reranker = recipe.choice("reranker")
    assert reranker.plugin == "scav" and reranker.nested["audio_encoder"].plugin == "beats"
    assert reranker.config.distance == "interpolated_euclidean"
    clip = recipe.choice("visual_encoders.clip").config
    assert (clip.model, clip.pretrained, clip.fps) == ("ViT-B-32", "openai", 8.0)


# -- the training task (training.task: reranker) ---------------------------------------------------


def test_reranker_loss_is_scavs_contrastive_loss_on_the_audio_features():
    task = ScavTrainingTask(small_recipe("training.task=reranker"))
    scav = task.reranker
    g = torch.Generator().manual_seed(0)
    wav = torch.randn(3, 1, 16000, generator=g) * 0.1
    video = FeatureSequence(torch.randn(3, 8, 32, generator=g), rate=8.0)
    batch = collate([MemoryClips(1).items[0]] * 3)
    batch.streams = {"clip": video}
    batch.audio_features = scav.audio_encoder.encode(wav)
    with torch.no_grad():
        ours = task(batch, g)["loss"]
        theirs = scav.contrastive_loss(video, wav)
    torch.testing.assert_close(ours, theirs)


def test_reranker_training_learns_pairs_and_exports_weights_scav_loads(tmp_path):
    """Audio features that are a fixed function of the video stream: after training, each video
    retrieves its own audio among the batch far above chance."""
    data = MemoryClips(8)
    mix = torch.randn(32, AUDIO[0], generator=torch.Generator().manual_seed(9))
    for item in data.items:  # audio features: the CLIP stream mixed linearly, resampled
        clip = item.streams["clip"]
        item.audio_features = FeatureSequence(clip.values @ mix, rate=clip.rate).resample(
            AUDIO[1], item.audio_features.length)
    run = train_run(small_recipe("training.task=reranker", "training.batch_size=8",
                                 "training.steps=30", "training.lr=0.003", "training.ema=0",
                                 "training.warmup_steps=2", "training.eval_every=30"),
                    out_dir=tmp_path, train_data=data, val_data=data, quiet=True)
    assert run.metrics["val/accuracy"] >= 0.75  # chance: 1/8
    path = run.out_dir / "scav.safetensors"
    assert run.exported == [path]
    r = small_recipe()
    options = {**r.choice("reranker").as_data(), "weights": str(path)}
    loaded = default_registry().build_from("reranker", options)
    exported = load_file(str(path))
    assert_same(loaded.projectors.state_dict(), exported)
    prefix = "reranker.projectors."  # the last checkpoint's weights (no EMA): the exported ones
    assert_same({k[len(prefix):]: v for k, v in weights(run.out_dir).items() if k.startswith(prefix)},
                exported)


def test_the_reranker_task_trains_only_scav():
    with pytest.raises(TrainingError, match=r"^the reranker 'none' cannot be trained by `v2a "
                                            r"train` \(it has no contrastive loss\)"):
        ScavTrainingTask(small_recipe("training.task=reranker", "reranker=none"))


def test_the_plugin_registers_the_reranker_task_with_its_export_file():
    spec = default_registry().training_task("reranker")
    assert spec.exports == {"reranker": "scav.safetensors"}
    assert isinstance(spec.build(small_recipe("training.task=reranker")), ScavTrainingTask)
