"""The trainer (v2a.training, `v2a train`): schedule, data order, learning, accumulation, EMA,
training tasks from the registry, checkpoints that resume exactly after SIGKILL, SIGTERM, and refusals.

In-process tests train the tiny MaskVAT-Hybrid (recipes/small) on clips held in memory (random
codes and features of the shapes the small recipe's encoders produce); the command-line tests
run `python -m v2a train` on a feature cache that `v2a extract` writes from generated videos
(with a few broken files among them, which must be reported as skipped).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import signal
import subprocess
import sys
import time
import types
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.media_fixtures import BROKEN_REASONS, write_broken, write_dataset
from v2a import TrainingTaskSpec, hookimpl
from v2a.cli import main
from v2a.datasets import LiveClips
from v2a.items import Batch, ClipItem, collate
from v2a.manifests import Clip, write_manifest
from v2a.recipe import load_recipe
from v2a.registry import Registry
from v2a.resources import estimate
from v2a.sequences import FeatureSequence
from v2a.tasks import exported_file_names
from v2a.training import (
    ClipOrder,
    MicroBatches,
    Trainer,
    TrainingError,
    TrainingTask,
    checkpoints,
    derived_seed,
    exported_weights,
    learning_rate,
    train,
)
from v2a.weights import save_state

ROOT = Path(__file__).resolve().parents[1]
SMALL = ROOT / "recipes" / "small" / "maskvat_hybrid_small.yaml"
FRAME_RATE = 44100 / 512  # the small recipe's DAC
# widths and rates of the small recipe's components: CLIP (embed_dim 32, 8 fps), S3D (1024-d,
# 25 fps / 8), BEATs (64-d, 6.25 Hz); 4 codebooks of 64
STREAMS = {"clip": (32, 8.0), "s3d": (1024, 3.125)}
AUDIO = (64, 6.25)
QUIET = ["data.num_workers=0", "training.eval_every=0", "training.sample_every=0",
         "training.log_every=1000"]


class MemoryClips(torch.utils.data.Dataset):
    """``n`` clips of random codes and features, held in memory (items for v2a.items.collate)."""

    def __init__(self, n: int, *, seed: int = 0, k: int = 4, vocab: int = 64, frames: int = 43,
                 split: str = "train"):
        g = torch.Generator().manual_seed(seed)
        seconds = frames / FRAME_RATE
        self.items = []
        for i in range(n):
            streams = {
                name: FeatureSequence(torch.randn(1, max(1, round(rate * seconds)), dim, generator=g), rate=rate)
                for name, (dim, rate) in STREAMS.items()
            }
            audio = FeatureSequence(torch.randn(1, max(1, round(AUDIO[1] * seconds)), AUDIO[0], generator=g),
                                    rate=AUDIO[1])
            self.items.append(ClipItem(
                clip=Clip(path=f"{split}{i}.mp4", split=split),
                codes=torch.randint(0, vocab, (k, frames), generator=g), streams=streams,
                audio_features=audio, frame_rate=FRAME_RATE,
            ))

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> ClipItem:
        return self.items[index]


def recipe(*overrides: str, base: Path = SMALL):
    return load_recipe(base, [*QUIET, *overrides])


def weights(run: Path, name: str = "model") -> dict[str, torch.Tensor]:
    return load_file(str(checkpoints(run)[-1][1] / f"{name}.safetensors"))


def assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"{len(different)} tensors differ, e.g. {different[:3]}"


# ---------------------------------------------------------------------------------------------
# Schedule and data order
# ---------------------------------------------------------------------------------------------


def test_learning_rate_warms_up_linearly_then_decays_by_a_cosine():
    lr = lambda s: learning_rate(s, lr=1.0, warmup=4, total=14, lr_min=0.1)  # noqa: E731
    assert [lr(s) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert lr(4) == pytest.approx(1.0)
    assert lr(9) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert lr(14) == pytest.approx(0.1) and lr(100) == pytest.approx(0.1)
    assert all(lr(s) >= lr(s + 1) for s in range(4, 20))


def test_every_epoch_is_a_permutation_and_slots_tile_each_step():
    order = ClipOrder(10, seed=3)
    epochs = [[order.at(e * 10 + i) for i in range(10)] for e in range(3)]
    assert all(sorted(e) == list(range(10)) for e in epochs)
    assert epochs[0] != epochs[1]  # reshuffled each epoch
    assert [order.at(i) for i in range(10)] == [ClipOrder(10, seed=3).at(i) for i in range(10)]

    def step_clips(world: int, accum: int, b: int, start: int = 0) -> list[list[int]]:
        """The clips of the first two steps, slot by slot, gathered over the ranks."""
        per_rank = []
        for rank in range(world):
            it = iter(MicroBatches(order, start=start, batch_size=b, grad_accum=accum, rank=rank,
                                   world_size=world))
            per_rank.append([next(it) for _ in range(2 * accum)])
        slots = []
        for step in range(2):
            for m in range(accum):
                for rank in range(world):
                    slots.append(per_rank[rank][step * accum + m])
        return slots

    # the same clips in the same slots whether a step is split over ranks or micro-batches
    assert step_clips(world=2, accum=1, b=3) == step_clips(world=1, accum=2, b=3)
    flat = [i for slot in step_clips(world=2, accum=2, b=2) for i in slot]
    assert flat == [order.at(i) for i in range(16)]  # the stream, in order, nothing twice
    # resuming at a position continues the same stream
    assert step_clips(world=1, accum=1, b=4, start=4)[0] == [order.at(i) for i in range(4, 8)]


# ---------------------------------------------------------------------------------------------
# Learning
# ---------------------------------------------------------------------------------------------


def test_a_few_steps_lower_the_loss_on_a_fixed_batch_and_log_audio(tmp_path):
    """Two clips, seen again and again: the validation terms on the same clips (fixed masks)
    drop well below chance, and TensorBoard gets every term and generated audio."""
    data = MemoryClips(2)
    common = ["training.lr=0.003", "training.warmup_steps=2", "training.ema=0",
              "training.condition_dropout=0.0", "training.batch_size=2"]
    start = train(recipe(*common, "training.steps=1", "training.eval_every=1"),
                  out_dir=tmp_path / "one", train_data=data, val_data=data, quiet=True)
    end = train(recipe(*common, "training.steps=40", "training.eval_every=40",
                       "training.sample_every=40", "training.num_sample_videos=2",
                       "training.log_every=20"),
                out_dir=tmp_path / "many", train_data=data, val_data=data, quiet=True)
    assert start.metrics["val/ce"] > math.log(64) - 0.2  # about chance after one step
    assert end.metrics["val/ce"] < start.metrics["val/ce"] - 1.0
    assert end.metrics["val/accuracy"] > 0.3
    assert end.metrics["train/loss"] < start.metrics["train/loss"]

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "many" / "tensorboard"), size_guidance={"audio": 0})
    events.Reload()
    scalars = set(events.Tags()["scalars"])
    for term in ("loss", "ce", "aux_regression", "aux_contrastive", "accuracy", "lr", "grad_norm"):
        assert f"train/{term}" in scalars and (term in ("lr", "grad_norm") or f"val/{term}" in scalars)
    assert "perf/data_wait_share" in scalars
    audio = events.Tags()["audio"]
    assert sorted(a.split("/")[0] for a in audio) == ["generated", "generated", "reference", "reference"]
    clip = events.Audio(audio[0])[0]
    assert clip.step == 40 and clip.sample_rate == 44100
    assert (tmp_path / "many" / "generator.safetensors").is_file()
    assert (tmp_path / "many" / "fuser.safetensors").is_file()


def collate_in_float64(items) -> Batch:
    """:func:`v2a.items.collate` (which gives float32 features), then the features in float64."""
    batch = collate(items)
    double = lambda seq: seq.replace(values=seq.values.double())  # noqa: E731
    return dataclasses.replace(batch, streams={k: double(s) for k, s in batch.streams.items()},
                               audio_features=double(batch.audio_features))


def test_gradient_accumulation_of_two_halves_equals_one_batch_twice_as_large(tmp_path, float64_by_default):
    """2 micro-batches of 2 clips == 1 batch of 4 clips. The masked objective draws a random mask
    ratio per clip and averages its cross-entropy over the hidden positions of a micro-batch, so
    the two are only equal when the masks are fixed: clips of one code frame of one codebook (the
    mask hides it: one loss position per clip), no condition dropout, and no InfoNCE term (its
    negatives are the other clips of the micro-batch, by definition).

    The model trains in float64. The two runs sum the same gradient in another order, and AdamW
    amplifies the difference: its step lr * m / (sqrt(v) + eps) changes by up to lr / eps = 1e6
    times a change of a gradient entry near 0. In float32 such an entry (terms of ~1e-3 that
    cancel to ~1e-8) is rounded by ~1e-7, and its step moves by a sizeable share of lr (weights
    5e-3 apart on some CPUs)."""
    data = MemoryClips(8, k=1, frames=1)
    fixed = ["codec.n_codebooks=1", "sampling.steps=[4]", "training.condition_dropout=0.0",
             "training.aux_contrastive_weight=0.0", "training.steps=3", "training.lr=0.01",
             "training.warmup_steps=0", "training.ema=0"]
    run = lambda name, *batching: train(  # noqa: E731
        recipe(*fixed, *batching), out_dir=tmp_path / name, train_data=data,
        collate_fn=collate_in_float64, quiet=True)
    halves = run("halves", "training.batch_size=2", "training.grad_accum=2")
    whole = run("whole", "training.batch_size=4")
    other = run("other", "training.batch_size=2")  # a control: other clips per step
    a, b, c = weights(halves.out_dir), weights(whole.out_dir), weights(other.out_dir)
    assert all(v.dtype == torch.float64 for v in a.values() if v.is_floating_point())
    # the gradient norm before clipping checks the gradient's scale, which Adam's steps ignore;
    # it and the loss are logged in float32 (2 terms a step, 3 steps): a few roundings of 6e-8
    for logged in ("train/loss", "train/grad_norm"):
        assert halves.metrics[logged] == pytest.approx(whole.metrics[logged], rel=1e-6)
    gap = max(float((a[k] - b[k]).abs().max()) for k in a)
    control = max(float((a[k] - c[k]).abs().max()) for k in a)
    # float64 sums in another order differ by at most ~1e3 terms * 2**-53 (1.1e-13 for gradients
    # of order 1); times lr / eps, per step, over 3 steps: 3.3e-7 (1e-12 measured). (The objective
    # rounds logits to float32 for its losses; float64 inputs 1e-16 apart round to the same
    # float32 value except with a chance of ~1e-9 each, so that adds nothing.)
    assert gap < 1e-6
    # other clips give other gradients, which Adam turns into steps of about lr = 1e-2
    assert control > 1e-3


def test_ema_weights_follow_their_recurrence_and_are_exported(tmp_path):
    run = train(recipe("training.ema=0.5", "training.steps=3", "training.checkpoint_every=1",
                       "training.keep_checkpoints=5", "training.lr=0.01"),
                out_dir=tmp_path, train_data=MemoryClips(4), quiet=True)
    steps = checkpoints(run.out_dir)
    assert [s for s, _ in steps] == [1, 2, 3]
    model = [load_file(str(p / "model.safetensors")) for _, p in steps]
    ema = [load_file(str(p / "ema.safetensors")) for _, p in steps]
    trained = [k for k in model[0] if not torch.equal(model[0][k], model[1][k])]
    assert trained
    for s in (1, 2):
        for k in trained:  # ema_s = 0.5 ema_{s-1} + 0.5 model_s
            torch.testing.assert_close(ema[s][k], 0.5 * ema[s - 1][k] + 0.5 * model[s][k],
                                       rtol=0, atol=1e-6)
        assert any(not torch.equal(ema[s][k], model[s][k]) for k in trained)
    exported = load_file(str(run.out_dir / "generator.safetensors"))
    assert_same(exported, {k[len("objective.generator."):]: v for k, v in ema[2].items()
                           if k.startswith("objective.generator.")})


def test_bf16_autocast_trains(tmp_path):
    run = train(recipe("training.precision=bf16", "training.steps=3"), out_dir=tmp_path,
                train_data=MemoryClips(4), quiet=True)
    assert math.isfinite(run.metrics["train/loss"])
    assert all(v.dtype == torch.float32 for v in weights(run.out_dir).values() if v.is_floating_point())


# ---------------------------------------------------------------------------------------------
# Training tasks come from the registry
# ---------------------------------------------------------------------------------------------


class QuietFuser(TrainingTask):
    """A toy task of a test plug-in: the recipe's fuser, trained to make its conditioning small
    (the mean square of every fused value)."""

    def __init__(self, recipe):
        super().__init__()
        self.fuser = recipe.build("fuser")

    def forward(self, batch, generator):
        fused = self.fuser.fuse(batch.streams, frame_rate=batch.frame_rate,
                                num_frames=batch.codes.shape[-1])
        parts = [s.values for s in (fused.aligned, fused.context) if s is not None]
        loss = torch.stack([p.float().pow(2).mean() for p in parts]).mean()
        return {"loss": loss, "parts": torch.tensor(float(len(parts)))}

    def exports(self):
        return {"fuser": self.fuser}


def toy_plugin() -> types.ModuleType:
    """A plug-in module whose hook registers the training task ``quiet_fuser``."""
    module = types.ModuleType("toy_training_plugin")

    @hookimpl
    def v2a_register_training_tasks(register):
        register(TrainingTaskSpec(name="quiet_fuser", build=QuietFuser,
                                  exports={"fuser": "quiet_fuser.safetensors"},
                                  description="the fuser's conditioning made small (tests only)"))

    module.v2a_register_training_tasks = v2a_register_training_tasks
    return module


@pytest.fixture
def with_toy_task(monkeypatch) -> Registry:
    """The installed plug-ins and the toy task's plug-in, as the process-wide registry."""
    registry = Registry.from_environment()
    registry.register_module(toy_plugin())
    monkeypatch.setattr("v2a.registry.override", registry)
    return registry


def test_a_task_a_plugin_registers_by_hook_trains_and_exports_its_declared_file(
        tmp_path, with_toy_task):
    r = recipe("training.task=quiet_fuser", "training.steps=2", "training.ema=0", "training.lr=0.01")
    torch.manual_seed(derived_seed(r.training.seed, "init"))  # as the trainer seeds its build
    fuser = r.build("fuser")
    start = {k: v.clone() for k, v in fuser.state_dict().items()}
    run = train(r, out_dir=tmp_path, train_data=MemoryClips(4), quiet=True)
    assert run.step == 2 and math.isfinite(run.metrics["train/loss"])
    assert run.metrics["train/parts"] >= 1  # the toy's own term is logged like any other
    path = tmp_path / "quiet_fuser.safetensors"
    assert run.exported == [path] and exported_weights(tmp_path, "fuser") == path
    exported = load_file(str(path))
    assert exported.keys() == start.keys()  # the fuser's own state dict: its weights option loads it
    assert any(not torch.equal(exported[k], start[k]) for k in start)  # 2 steps trained it
    assert_same({k[len("fuser."):]: v for k, v in weights(tmp_path).items()}, exported)
    state = json.loads((checkpoints(tmp_path)[-1][1] / "state.json").read_text())
    assert state["task"] == "quiet_fuser"
    # the resource estimate sizes the registered task: 16 bytes a trained parameter
    trained = sum(p.numel() for p in fuser.parameters())
    assert estimate(r, task="train").parts["weights, gradients and AdamW moments"] == 16 * trained


def test_exported_weights_finds_the_file_a_run_holds_for_a_slot(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    assert exported_weights(run, "fuser") is None
    save_state({"w": torch.zeros(1)}, run / "fuser.safetensors")  # a generator task's export
    save_state({"w": torch.zeros(1)}, run / "scav.safetensors")  # a reranker task's export
    assert exported_weights(run, "fuser") == run / "fuser.safetensors"
    assert exported_weights(run, "reranker") == run / "scav.safetensors"
    assert exported_weights(run, "generator") is None  # not exported by this run
    assert exported_weights(run, "codec") is None  # no task trains it
    assert exported_file_names("generator") == ["generator.safetensors"]


@pytest.mark.parametrize("command", ["train", "check"])
def test_an_unknown_training_task_is_refused_by_name_with_the_nearest(tmp_path, capsys, command):
    argv = (["train", str(SMALL), "training.task=generatr", "--out", str(tmp_path), "--device",
             "cpu"] if command == "train" else ["recipe", "check", str(SMALL), "training.task=generatr"])
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"v2a: error: {load_recipe(SMALL).source}: training.task: no training "
                          "task is named 'generatr'; did you mean 'generator'")
    assert err.endswith("? (see `v2a plugins`)") and len(err.splitlines()) == 1


# ---------------------------------------------------------------------------------------------
# Refusals
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("overrides, words", [
    (["training.stepz=3"], "training.stepz"),
    (["generator=null"], "has no generator, which the generator task trains; to train its reranker"),
    (["training.task=critic"], "training.task"),
    (["training.grad_accum=0", "data.cache=nowhere"], "grad_accum"),
    ([], "names no data"),
])
def test_a_bad_recipe_exits_2_with_one_sentence(tmp_path, capsys, overrides, words):
    code = main(["train", str(SMALL), *overrides, "--out", str(tmp_path / "run"), "--device", "cpu"])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert words in err and err.startswith("v2a: error:") and len(err.splitlines()) == 1


def test_features_of_another_width_than_the_fuser_reads_are_refused(tmp_path):
    """A cache written by an older version of an encoder: one sentence naming the stream."""
    name, (width, _) = next(iter(STREAMS.items()))
    data = MemoryClips(2)
    for item in data.items:  # features of an encoder whose width has changed since extraction
        old = item.streams[name]
        item.streams[name] = FeatureSequence(torch.randn(*old.values.shape[:2], width + 3),
                                             rate=old.rate)
    with pytest.raises(TrainingError, match=rf"hold {width + 3}-wide features of visual stream "
                                            rf"'{name}' but the fuser reads it {width} wide"):
        train(recipe(), out_dir=tmp_path, train_data=data, quiet=True)


def test_an_existing_run_needs_resume_and_the_same_recipe(tmp_path):
    data = MemoryClips(4)
    train(recipe("training.steps=2"), out_dir=tmp_path, train_data=data, quiet=True)
    with pytest.raises(TrainingError, match="pass --resume"):
        train(recipe("training.steps=4"), out_dir=tmp_path, train_data=data, quiet=True)
    with pytest.raises(TrainingError, match=r"another recipe \(training.lr: 0.0001 then, 0.001 now\)"):
        train(recipe("training.steps=4", "training.lr=0.001"), out_dir=tmp_path, resume=True,
              train_data=data, quiet=True)
    with pytest.raises(TrainingError, match="trained on 4 clips"):
        train(recipe("training.steps=4"), out_dir=tmp_path, resume=True, train_data=MemoryClips(5),
              quiet=True)
    more = train(recipe("training.steps=4"), out_dir=tmp_path, resume=True, train_data=data, quiet=True)
    assert more.step == 4 and [s for s, _ in checkpoints(tmp_path)] == [2, 4]


# ---------------------------------------------------------------------------------------------
# The command line on a feature cache: SIGKILL, SIGTERM, skipped clips
# ---------------------------------------------------------------------------------------------

BROKEN = ("empty", "not_media", "no_audio")
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
STEPS = 60


def write_cache(root: Path, broken: tuple[str, ...] = BROKEN) -> list[str]:
    """Overrides pointing the small recipe at a cache of 8 generated 1 s videos (6 train, 2 val)
    and the ``broken`` files, written by `v2a extract` below ``root``."""
    from v2a.cache import extract

    videos = write_dataset(root / "videos", 8, seconds=1.0)
    bad = write_broken(root / "videos", seconds=1.0) if broken else {}
    clips = [Clip(path=p.name, split="val" if i >= 6 else "train") for i, p in enumerate(videos)]
    clips += [Clip(path=bad[kind].name) for kind in broken]
    write_manifest(clips, root / "manifest.csv")
    overrides = [f"data.manifest={root / 'manifest.csv'}", f"data.root={root / 'videos'}",
                 f"data.cache={root / 'cache'}", "data.clip_seconds=1.0"]
    summary = extract(load_recipe(SMALL, overrides), workers=0, progress=False)
    assert summary.clips == 8 and len(summary.skipped) == len(broken)
    return overrides


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> list[str]:
    return write_cache(tmp_path_factory.mktemp("data"))


def command(cache: list[str], out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "v2a", "train", str(SMALL), *cache, f"training.steps={STEPS}",
            "data.num_workers=1", "training.eval_every=20", "training.sample_every=0",
            "training.lr=0.001", *extra, "--out", str(out)]


def run_to_end(args: list[str], log: Path) -> None:
    with open(log, "a") as f:
        done = subprocess.run(args, stdout=f, stderr=subprocess.STDOUT, env=ENV, timeout=120)
    assert done.returncode == 0, log.read_text()[-3000:]


@pytest.fixture(scope="module")
def reference(cache, tmp_path_factory) -> Path:
    """A run never interrupted."""
    out = tmp_path_factory.mktemp("reference")
    run_to_end(command(cache, out, "training.checkpoint_every=1000"), out / "log.txt")
    return out


def test_skipped_clips_are_reported_with_their_reason(reference):
    lines = (reference / "skipped.tsv").read_text().splitlines()
    assert len(lines) == len(BROKEN)
    for kind in BROKEN:
        [line] = [x for x in lines if f"broken_{kind}.mp4\t" in x]
        assert BROKEN_REASONS[kind] in line
    assert f"{len(BROKEN)} clips were skipped" in (reference / "log.txt").read_text()


def test_decoding_on_the_fly_trains_and_reports_the_broken_clips(cache, tmp_path):
    """Without a cache the clips are decoded and encoded while training (v2a.datasets.LiveClips);
    the broken files among them are skipped, and reported exactly, with the reason."""
    live = [o for o in cache if not o.startswith("data.cache=")]
    trainer = Trainer(recipe(*live, "training.steps=3", "training.batch_size=3"), out_dir=tmp_path,
                      quiet=True)
    assert isinstance(trainer.train_data, LiveClips)
    run = trainer.run()
    assert run.step == 3 and math.isfinite(run.metrics["train/loss"])
    lines = (tmp_path / "skipped.tsv").read_text().splitlines()  # one epoch: 6 good + 3 broken
    assert sorted(line.split("\t")[0] for line in lines) == sorted(f"broken_{k}.mp4" for k in BROKEN)
    for kind in BROKEN:
        assert any(BROKEN_REASONS[kind] in line for line in lines if f"broken_{kind}" in line)


def test_a_run_killed_with_sigkill_resumes_to_the_same_weights(cache, reference, tmp_path):
    log = tmp_path / "log.txt"
    with open(log, "w") as f:
        proc = subprocess.Popen(command(cache, tmp_path, "training.checkpoint_every=4"),
                                stdout=f, stderr=subprocess.STDOUT, env=ENV)
        deadline = time.monotonic() + 60
        while not checkpoints(tmp_path) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, log.read_text()[-2000:]
    last = checkpoints(tmp_path)[-1][0]
    assert 0 < last < STEPS  # killed mid-run, after a checkpoint

    run_to_end(command(cache, tmp_path, "training.checkpoint_every=4", "--resume"), log)
    assert f"resumed from {tmp_path / 'checkpoints' / f'step_{last:08d}'}" in log.read_text()
    for name in ("model", "ema", "optimizer"):
        assert_same(weights(tmp_path, name), weights(reference, name))
    assert_same(load_file(str(tmp_path / "generator.safetensors")),
                load_file(str(reference / "generator.safetensors")))


def test_sigterm_saves_a_checkpoint_then_resume_finishes_the_same(cache, reference, tmp_path):
    log = tmp_path / "log.txt"
    with open(log, "w") as f:
        proc = subprocess.Popen(command(cache, tmp_path, "training.checkpoint_every=1000",
                                        "training.log_every=1"),
                                stdout=f, stderr=subprocess.STDOUT, env=ENV)
        deadline = time.monotonic() + 60
        while "step 3/" not in log.read_text() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, log.read_text()[-2000:]
    [(step, folder)] = checkpoints(tmp_path)  # no periodic checkpoint: the signal's
    assert 3 <= step < STEPS
    assert json.loads((folder / "state.json").read_text())["step"] == step
    assert f"SIGTERM: stopped at step {step}" in log.read_text()

    run_to_end(command(cache, tmp_path, "training.checkpoint_every=1000", "--resume"), log)
    assert_same(weights(tmp_path), weights(reference))
