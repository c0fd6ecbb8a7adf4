"""What the CUDA path relies on, checked on the CPU: the gradient scaler (on for fp16 only, and
its scaling path exact), TF32 on CUDA devices only, and ``torch.compile`` as the recipe switches
``training.compile`` and ``sampling.compile`` (same state dict, same loss and tokens as eager).

Compiling with inductor takes over a minute on 2 cores, so the end-to-end comparison is marked
slow; the fast checks compile with dynamo's ``eager`` backend, which traces the layers exactly as
inductor would be given them and runs the traced graph with the same kernels as eager mode.
"""

from __future__ import annotations

import functools
import json
import math
import shutil
from pathlib import Path

import pytest
import torch

import v2a.training.trainer
from tests.test_sampler import L, condition_for, small_generator
from tests.test_train import MemoryClips, assert_same, recipe, weights
from v2a.generate import VideoToAudio
from v2a.recipe import load_recipe
from v2a.errors import RecipeError
from v2a.sampler import allow_tf32, compile_layers, require_compiler, sample
from v2a.training import Trainer, checkpoints, train
from v2a.training.trainer import loss_scaler

ROOT = Path(__file__).resolve().parents[1]
CPU = torch.device("cpu")
#: One step of the small recipe, nothing random but the seeded masks.
ONE_STEP = ("training.steps=1", "training.ema=0", "training.batch_size=4")
#: Sampling options with guidance, top-k and two candidates (every part of a decoding step).
DECODING = dict(steps=[3, 2], cfg_scale=2.0, top_k=8, candidates=2, seed=4)


@pytest.fixture
def dynamo_eager(monkeypatch):
    """``nn.Module.compile`` with dynamo's ``eager`` backend for one test (restored after): the
    layers are traced as for inductor, then run by the same kernels as without compiling."""
    compile_module = torch.nn.Module.compile
    monkeypatch.setattr(torch.nn.Module, "compile",
                        lambda self, **options: compile_module(self, backend="eager", **options))
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    yield torch._dynamo.utils.counters["stats"]  # "unique_graphs": the graphs dynamo captured
    torch._dynamo.reset()


# ---------------------------------------------------------------------------------------------
# Precision
# ---------------------------------------------------------------------------------------------


def test_the_gradient_scaler_is_enabled_for_fp16_only():
    assert [loss_scaler(p, CPU).is_enabled() for p in ("fp32", "bf16", "fp16")] == [False, False, True]
    built = Trainer(recipe("training.precision=bf16"), train_data=MemoryClips(2), quiet=True)
    built._build()
    assert not built.scaler.is_enabled()


def test_an_enabled_gradient_scaler_gives_the_weights_of_the_disabled_one(tmp_path, monkeypatch):
    """The fp16 step's path (loss scaled by 2**16, gradients unscaled before clipping, a step
    the scaler may skip, its scale updated and checkpointed) run on the CPU in fp32, where
    fp16 itself is refused. Scaling by a power of two is exact in floating point, and every
    backward operation is linear in the incoming gradient, so the unscaled gradients, hence
    the weights, are bit for bit those of the disabled scaler (short of subnormal gradients,
    below 1e-38)."""
    data = MemoryClips(4)
    steps = ("training.steps=3", "training.grad_accum=2", "training.batch_size=2",
             "training.ema=0.5")
    plain = train(recipe(*steps), out_dir=tmp_path / "plain", train_data=data, quiet=True)
    enabled = functools.partial(torch.amp.GradScaler, "cpu", enabled=True)
    monkeypatch.setattr(v2a.training.trainer, "loss_scaler", lambda precision, device: enabled())
    scaled = train(recipe(*steps), out_dir=tmp_path / "scaled", train_data=data, quiet=True)
    assert_same(weights(scaled.out_dir), weights(plain.out_dir))
    assert_same(weights(scaled.out_dir, "ema"), weights(plain.out_dir, "ema"))
    assert scaled.metrics["train/grad_norm"] == plain.metrics["train/grad_norm"]
    state = json.loads((checkpoints(scaled.out_dir)[-1][1] / "state.json").read_text())
    assert state["scaler"]["scale"] == 2.0**16  # no step overflowed, no growth yet (2000 steps)
    plain_state = json.loads((checkpoints(plain.out_dir)[-1][1] / "state.json").read_text())
    assert plain_state["scaler"] is None


def test_tf32_is_allowed_on_cuda_devices_only():
    matmul, cudnn = torch.backends.cuda.matmul, torch.backends.cudnn
    before = matmul.allow_tf32, cudnn.allow_tf32  # torch's switches (no monkeypatch for them)
    try:
        matmul.allow_tf32 = cudnn.allow_tf32 = False
        allow_tf32("cpu")
        assert not matmul.allow_tf32 and not cudnn.allow_tf32
        allow_tf32(torch.device("cuda", 1))  # the switches need no GPU to be set
        assert matmul.allow_tf32 and cudnn.allow_tf32
    finally:
        matmul.allow_tf32, cudnn.allow_tf32 = before


# ---------------------------------------------------------------------------------------------
# torch.compile
# ---------------------------------------------------------------------------------------------


def test_compiling_keeps_the_state_dict_and_leaves_copies_eager():
    eager = Trainer(recipe("training.ema=0.9"), train_data=MemoryClips(2), quiet=True)
    eager._build()
    compiled = Trainer(recipe("training.ema=0.9", "training.compile=true"),
                       train_data=MemoryClips(2), quiet=True)
    compiled._build()
    layers = dict(compiled.task.named_modules())
    names = compile_layers(compiled.task)  # again: nothing more is compiled
    assert names == ["fuser.encoder.0", "objective.generator.blocks.0",
                     "objective.generator.blocks.1"]
    assert all(layers[n]._compiled_call_impl is not None for n in names)
    assert not any(m._compiled_call_impl is not None for m in eager.task.modules())
    assert not any(m._compiled_call_impl is not None for m in compiled.ema.module.modules())
    assert compiled.task.state_dict().keys() == eager.task.state_dict().keys()
    assert_same(compiled.task.state_dict(), eager.task.state_dict())  # the same seeded init


def test_compiled_training_traces_and_matches_eager(tmp_path, dynamo_eager):
    data = MemoryClips(4)
    eager = train(recipe(*ONE_STEP), out_dir=tmp_path / "eager", train_data=data, quiet=True)
    compiled = train(recipe(*ONE_STEP, "training.compile=true"), out_dir=tmp_path / "compiled",
                     train_data=data, quiet=True)
    assert dynamo_eager["unique_graphs"] == 2  # the fuser's encoder layer, one generator block
    for term in ("train/loss", "train/grad_norm"):
        assert compiled.metrics[term] == eager.metrics[term]
    assert_same(weights(compiled.out_dir), weights(eager.out_dir))


def test_compiled_sampling_traces_and_matches_eager(dynamo_eager):
    generator = small_generator("hybrid", seed=1)
    condition = condition_for(generator)
    eager = sample(generator, condition, num_frames=L, **DECODING)
    for precision in ("fp32", "bf16"):
        expected = eager if precision == "fp32" else sample(
            generator, condition, num_frames=L, precision=precision, **DECODING)
        got = sample(generator, condition, num_frames=L, precision=precision, compile=True,
                     **DECODING)
        assert torch.equal(got, expected)
    assert dynamo_eager["unique_graphs"] == 2  # one block, in fp32 and in bf16
    # fp32 compiles the generator itself, bf16 its cached copy; the state dict is unchanged
    assert generator.blocks[0]._compiled_call_impl is not None
    assert "blocks.0.qkv.weight" in generator.state_dict()


def test_generate_compiles_the_generator_when_the_recipe_asks(dynamo_eager):
    """``sampling.compile`` reaches :func:`v2a.sampler.sample` from ``VideoToAudio.generate``
    (the bundled tiny model: its generator decodes in fp32, so its own blocks are compiled)."""
    frames = torch.randint(0, 256, (25, 64, 64, 3), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(0))  # 1 s at 25 fps
    tiny = ROOT / "recipes" / "tiny.yaml"
    eager = VideoToAudio.from_recipe(load_recipe(tiny))
    compiled = VideoToAudio.from_recipe(load_recipe(tiny, ["sampling.compile=true"]))
    assert compiled.sampling_options()["compile"] and not eager.sampling_options()["compile"]
    wav, _ = compiled.generate(frames, fps=25.0, seed=3)
    assert torch.equal(wav, eager.generate(frames, fps=25.0, seed=3)[0])
    assert all(b._compiled_call_impl is not None for b in compiled.generator.blocks)
    assert not any(m._compiled_call_impl is not None for m in eager.generator.modules())


def test_compiling_on_a_cpu_without_a_compiler_is_refused_in_one_sentence(tmp_path, monkeypatch):
    monkeypatch.delenv("CXX", raising=False)
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(RecipeError, match=r"^training.compile=true on a CPU needs a C\+\+ "
                       r"compiler \(g\+\+ or c\+\+ or clang\+\+\).*set training.compile=false$"):
        train(recipe(*ONE_STEP, "training.compile=true"), out_dir=tmp_path / "run",
              train_data=MemoryClips(4), quiet=True)
    assert not (tmp_path / "run").exists()  # refused before anything is written
    generator = small_generator("hybrid")
    with pytest.raises(RecipeError, match="sampling.compile=true on a CPU needs a C"):
        sample(generator, condition_for(generator), num_frames=L, compile=True, **DECODING)
    require_compiler("cuda", "sampling.compile")  # GPUs compile with Triton
    monkeypatch.setenv("CXX", "/opt/bin/my-g++")
    with pytest.raises(RecipeError, match=r"C\+\+ compiler \(/opt/bin/my-g\+\+\)"):
        require_compiler("cpu", "training.compile")


@pytest.mark.slow
def test_inductor_training_and_sampling_match_eager(tmp_path):
    """Inductor's kernels (fused element-wise work, its own reductions for layer norms and
    softmax) round differently from eager ones: in float32 each of the few dozen reductions of a
    step (over at most 256 values, the MLP width) may move by ~256 * 2**-24 = 1.5e-5 relative in
    the worst case, and the loss and gradient norm sum them: a relative tolerance of 1e-4.
    Tokens are compared exactly: a difference of ~1e-6 in a logit flips a token only when two
    Gumbel-perturbed scores lie closer than that, a chance of ~1e-6 per sampled position (a few
    hundred here)."""
    data = MemoryClips(4)
    eager = train(recipe(*ONE_STEP), out_dir=tmp_path / "eager", train_data=data, quiet=True)
    compiled = train(recipe(*ONE_STEP, "training.compile=true"), out_dir=tmp_path / "compiled",
                     train_data=data, quiet=True)
    for term in ("train/loss", "train/grad_norm"):
        assert math.isclose(compiled.metrics[term], eager.metrics[term], rel_tol=1e-4)
    assert weights(compiled.out_dir).keys() == weights(eager.out_dir).keys()

    generator = small_generator("hybrid", seed=1)
    condition = condition_for(generator)
    expected = sample(generator, condition, num_frames=L, **DECODING)
    assert torch.equal(sample(generator, condition, num_frames=L, compile=True, **DECODING),
                       expected)
    torch._dynamo.reset()
