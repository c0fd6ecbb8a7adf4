"""Resource estimates before heavy runs (:mod:`v2a.resources`): from components built on the
meta device, checked against the free memory and disk."""

from __future__ import annotations

import math

import pytest

from v2a import resources
from v2a.recipe import load_recipe
from v2a.resources import Estimate, available_memory, check_resources, estimate, free_disk
from v2a.tasks import build_task, trained_state

#: The paper recipe with every weights option at none (nothing is read or downloaded anyway).
NO_WEIGHTS = ["codec.weights=none", "visual_encoders.clip.weights=none",
              "visual_encoders.s3d.weights=none", "audio_encoder.weights=none",
              "reranker.weights=none", "reranker.audio_encoder.weights=none"]
GB = 1e9


def test_the_tiny_estimate_follows_the_documented_formula():
    """Every part from the task built for real: 16 bytes a trained parameter, an fp32 EMA copy
    of the state, bf16 activations of batch × frames × width × layers, and on disk at the peak
    3 checkpoints (800 steps, one every 200, keep 2 + the one being written), more than the 2
    and the exports a finished run holds."""
    recipe = load_recipe("tiny")
    task = build_task(recipe)
    trained = sum(p.numel() for p in task.parameters() if p.requires_grad)
    state = sum(t.numel() * 4 for t in trained_state(task).values())
    exports = sum(t.numel() * 4 for m in task.exports().values() for t in m.state_dict().values())
    found = estimate(recipe, task="train")
    assert found.parts == {
        "weights, gradients and AdamW moments": 16 * trained,
        "EMA": state,  # training.ema 0.99
        "frozen components": 0,  # features come from data.cache; no audio encoder
        "activations": 16 * math.ceil(4.0 * 62.5) * 128 * 4 * 2,  # batch 16, 4 s, bf16
        "process": resources.PROCESS_BYTES,
    }
    assert found.ram_bytes == sum(found.parts.values())
    checkpoint = state + state + 2 * 4 * trained
    assert exports < checkpoint and found.disk_bytes == 3 * checkpoint
    assert found.unsized == ()


def test_an_estimate_reads_no_weights():
    missing = ["generator.weights=/nowhere/generator.safetensors",
               "fuser.weights=/nowhere/fuser.safetensors"]
    assert estimate(load_recipe("tiny", missing), task="train") == estimate(
        load_recipe("tiny"), task="train")


def test_the_paper_hybrid_training_estimate_is_in_the_measured_range():
    """Measured on a CPU: about 16 GB of RAM in training, and an 11 GB run folder after 2 steps
    (one checkpoint). The estimate is a lower bound: 13.9 GB from cached features
    (585 M trained parameters at 16 + 4 bytes, BEATs frozen, bf16 activations); one checkpoint
    (model, EMA, two AdamW moments: 9.4 GB) and the exports (2.3 GB) on disk."""
    cached = load_recipe("maskvat_hybrid", [*NO_WEIGHTS, "data.cache=features", "training.steps=2"])
    found = estimate(cached, task="train")
    assert 580e6 * 16 < found.parts["weights, gradients and AdamW moments"] < 590e6 * 16
    assert 13 * GB < found.ram_bytes < 16.5 * GB
    assert 11 * GB < found.disk_bytes < 12 * GB
    # decoding clips on the fly adds the frozen encoders, once per worker (2)
    live = estimate(load_recipe("maskvat_hybrid", [*NO_WEIGHTS, "training.steps=2"]), task="train")
    assert 1 * GB < live.ram_bytes - found.ram_bytes < 3 * GB
    # a whole run: 100 checkpoints written, 2 kept plus the one being written
    full = estimate(load_recipe("maskvat_hybrid", [*NO_WEIGHTS, "data.cache=features"]),
                    task="train")
    assert 27 * GB < full.disk_bytes < 30 * GB and 9 * GB < full.disk_bytes / 3 < 10 * GB


def test_the_paper_hybrid_generation_estimate_counts_every_built_component():
    found = estimate(load_recipe("maskvat_hybrid", NO_WEIGHTS), task="generate")
    # DAC 77 M, S3D 8 M, fuser 8 M, generator 576 M, SCAV with BEATs 94 M parameters, fp32
    assert 3.0 * GB < found.parts["weights"] < 3.6 * GB
    assert found.disk_bytes == 0
    fewer = estimate(load_recipe("maskvat_hybrid", [*NO_WEIGHTS, "sampling.candidates=1"]),
                     task="generate")
    assert found.parts["activations"] == 10 * fewer.parts["activations"]


def test_describe_is_one_line_with_the_totals():
    text = estimate(load_recipe("tiny"), task="train").describe()
    assert text.startswith("train: about 0.55 GB of RAM (weights, gradients and AdamW moments ")
    assert "\n" not in text and text.endswith("GB of disk")


def test_an_unknown_task_is_a_bug_of_the_caller():
    with pytest.raises(ValueError, match="train, generate"):
        estimate(load_recipe("tiny"), task="fit")


# -- free resources -------------------------------------------------------------------------------

ESTIMATE = Estimate(task="train", ram_bytes=16 * 10**9, disk_bytes=int(11.7e9))


@pytest.fixture
def free(monkeypatch):
    """Set the free RAM and disk check_resources sees."""

    def set_free(ram, disk):
        monkeypatch.setattr(resources, "available_memory", lambda: ram)
        monkeypatch.setattr(resources, "free_disk", lambda folder: disk)

    return set_free


def test_check_resources_is_silent_when_there_is_enough(free, tmp_path):
    free(ram=17 * 10**9, disk=12 * 10**9)
    assert check_resources(ESTIMATE, folder=tmp_path) is None
    free(ram=None, disk=None)  # a system that does not say is not second-guessed
    assert check_resources(ESTIMATE, folder=tmp_path) is None


def test_check_resources_names_what_is_short(free):
    free(ram=int(5.2e9), disk=100 * 10**9)
    assert check_resources(ESTIMATE, folder="runs/x") == (
        "this train run expects about 16 GB of RAM, and 5.2 GB are free; lower "
        "training.batch_size or training.keep_checkpoints, or use a smaller model"
    )
    free(ram=64 * 10**9, disk=int(0.8e9))
    assert check_resources(ESTIMATE, folder="runs/x") == (
        "this train run expects about 12 GB of disk in runs/x, and 0.8 GB is free there; lower "
        "training.batch_size or training.keep_checkpoints, or use a smaller model"
    )
    free(ram=int(5.2e9), disk=int(0.8e9))
    both = check_resources(ESTIMATE, folder="runs/x")
    assert "16 GB of RAM, and 5.2 GB are free and about 12 GB of disk" in both


def test_generation_needs_no_disk(free):
    free(ram=64 * 10**9, disk=0)
    generation = Estimate(task="generate", ram_bytes=10**9, disk_bytes=0)
    assert check_resources(generation, folder=".") is None
    free(ram=10**8, disk=0)
    assert check_resources(generation, folder=".").endswith(
        "use fewer sampling.candidates or a smaller model")


def test_available_memory_reads_memavailable(tmp_path):
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       16384000 kB\nMemFree:  1000 kB\n"
                       "MemAvailable:    5242880 kB\n")
    assert available_memory(meminfo) == 5242880 * 1024
    fallback = available_memory(tmp_path / "absent")  # sysconf where there is no /proc
    assert fallback is None or fallback > 0


def test_free_disk_of_a_folder_not_made_yet_is_its_parents(tmp_path):
    assert free_disk(tmp_path / "run" / "not" / "yet") == free_disk(tmp_path)
    assert free_disk(tmp_path) > 0


def test_a_module_first_imported_during_a_meta_build_keeps_real_tensors(tmp_path, monkeypatch):
    """DAC's dependencies import torchaudio's Kaldi module, which makes a tensor at import: had
    that import run on the meta device, every later filterbank would fail (seen with BEATs)."""
    import importlib
    import sys

    import torch

    from v2a.meta_device import build_on_meta

    (tmp_path / "made_at_import.py").write_text("import torch\nEPSILON = torch.tensor(1e-7)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "made_at_import", raising=False)

    def build():
        importlib.import_module("made_at_import")
        return torch.nn.Linear(3, 4)

    module = build_on_meta(build)
    assert module.weight.device.type == "meta"  # the build itself ran on the meta device
    assert sys.modules["made_at_import"].EPSILON.device.type == "cpu"
    assert build_on_meta(lambda: torch.zeros(2).tolist()) is None  # reads values: cannot
