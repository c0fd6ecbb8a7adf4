"""Distributed training: `torchrun --nproc_per_node 2 -m v2a train` on the CPU (gloo).

The two ranks must end with identical weights (the trainer compares fingerprints of every rank's
model and EMA weights at each checkpoint and records them), only rank 0 writes, and the run must
compute what one process computes with the same clips per step: 2 ranks × ``grad_accum`` 1 is 1
process × ``grad_accum`` 2 (the same clips and the same random masks in each slot of a step).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from tests.test_train import SMALL, assert_same, recipe, weights, write_cache
from v2a.training import checkpoints, fingerprint, train

STEPS = 8


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> list[str]:
    return write_cache(tmp_path_factory.mktemp("data"), broken=())


def test_two_gloo_processes_agree_and_compute_what_one_process_accumulating_does(cache, tmp_path):
    out = tmp_path / "ddp"
    common = [*cache, f"training.steps={STEPS}", "training.batch_size=2", "training.lr=0.001",
              "training.warmup_steps=2", "training.checkpoint_every=4", "training.eval_every=4",
              "training.sample_every=0", "training.log_every=4", "data.num_workers=0"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         "-m", "v2a", "train", str(SMALL), *common, "--out", str(out), "--device", "cpu"],
        capture_output=True, text=True, env=env, timeout=120,
    )
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    assert "on 2 processes" in done.stdout and "4 clips per step" in done.stdout

    # all ranks agree, at every checkpoint, on the weights rank 0 wrote
    saved = checkpoints(out)
    assert [s for s, _ in saved] == [4, 8]
    for _, folder in saved:
        state = json.loads((folder / "state.json").read_text())
        assert state["world_size"] == 2
        prints = state["rank_fingerprints"]
        assert len(prints) == 2 and prints[0] == prints[1]
        assert prints[0]["model"] == fingerprint(load_file(str(folder / "model.safetensors")))
        assert prints[0]["ema"] == fingerprint(load_file(str(folder / "ema.safetensors")))
    assert len(list((out / "tensorboard").iterdir())) == 1  # one writer: rank 0
    ddp_state = json.loads((saved[-1][1] / "state.json").read_text())

    # one process, the same 4 clips per step as 2 micro-batches of 2 (in-process: no torchrun)
    one = train(recipe(*common, "training.grad_accum=2"), out_dir=tmp_path / "one", quiet=True)
    control = train(recipe(*common), out_dir=tmp_path / "control", quiet=True)  # 2 clips per step
    assert one.metrics["train/loss"] == pytest.approx(ddp_state["metrics"]["train/loss"], rel=1e-5)
    # the validation loss does not depend on how the validation clips are shared out
    assert one.metrics["val/loss"] == pytest.approx(ddp_state["metrics"]["val/loss"], rel=1e-5)
    # bit for bit: DDP averages the two ranks' gradients, (g0 + g1) / 2, and accumulation sums
    # the gradients of the halved losses, g0 / 2 + g1 / 2; scaling by a power of two is exact
    assert_same(weights(out), weights(one.out_dir))
    assert_same(weights(out, "ema"), weights(one.out_dir, "ema"))
    assert not all(torch.equal(v, weights(control.out_dir)[k]) for k, v in weights(out).items())
