"""benchmarks/device_check.py: every measurement ends in the JSON and the table with its figures
or the reason it has none, one failure does not stop the others, and ``--quick`` runs the whole
script on the CPU."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "device_check.py"


def load_script():
    spec = importlib.util.spec_from_file_location("device_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_a_failing_part_is_reported_and_the_rest_still_run():
    dc = load_script()
    run = dc.Run(budget=60.0)

    def broken() -> dict:
        raise RuntimeError("CUDA error: out of memory\nmore lines")

    run.measure("first", "fails", broken)
    run.measure("second", "works", lambda: {"frames_per_s": 12})
    run.measure("third", "not here", lambda: {"x": 1}, skip="needs 2 GPUs; this machine has 1")
    run.budget = 0.0
    run.measure("fourth", "too late", lambda: {"x": 1})
    first, second, third, fourth = run.results
    assert first.error == "RuntimeError: CUDA error: out of memory" and not first.values
    assert second.values == {"frames_per_s": 12.0} and second.error is None
    assert third.skipped == "needs 2 GPUs; this machine has 1" and not third.values
    assert fourth.skipped.startswith("out of time")
    env = {"device": "cuda:0", "device_name": "NVIDIA H200", "torch": "2.x", "cuda": "13.0",
           "cudnn": 1, "gpus": 1, "cpus": 16, "date": "today"}
    table = dc.markdown(env, run.results)
    assert "| first | fails | | failed: RuntimeError: CUDA error: out of memory |" in table
    assert "| second | works | frames_per_s | 12 |" in table
    assert "| third | not here | | skipped: needs 2 GPUs; this machine has 1 |" in table
    assert table.startswith("device: NVIDIA H200; torch 2.x, CUDA 13.0")


def test_the_two_process_parts_say_why_they_skip_on_one_gpu(monkeypatch):
    dc = load_script()
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert dc.two_ranks_skip(torch.device("cuda")) == "needs 2 GPUs; this machine has 1"
    assert dc.two_ranks_skip(torch.device("cpu")) is None  # gloo on the CPU (--quick)


def test_quick_writes_every_measurement_to_the_json_and_the_table(tmp_path):
    """The whole script at small sizes on the CPU (~30 s on 2 idle cores, ~100 s on busy ones);
    in the default run, since CI must show that the script the first GPU runs works."""
    done = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((tmp_path / "device_check.json").read_text())
    table = (tmp_path / "device_check.md").read_text()
    dc = load_script()
    assert [m["name"] for m in report["measurements"]] == list(dc.MEASUREMENTS)
    assert report["mode"] == "quick" and report["environment"]["torch"] == torch.__version__
    for m in report["measurements"]:
        assert m["error"] is None, m
        assert m["values"] or m["skipped"], m  # figures, or the reason there are none
        for figure, value in m["values"].items():
            assert value >= 0 and f"| {m['name']} | {m['what']} | {figure} |" in table
        if m["skipped"]:
            assert f"| {m['name']} | {m['what']} | | skipped: {m['skipped']} |" in table
    measured = {m["name"] for m in report["measurements"] if m["values"]}
    assert {"cache", "train", "generate"} <= measured  # the first parts never run out of time
    train = next(m for m in report["measurements"] if m["name"] == "train")["values"]
    assert set(train) >= {"steps_per_s", "peak_memory_gb"}
    generate = next(m for m in report["measurements"] if m["name"] == "generate")["values"]
    assert generate["samples"] == 44100  # 1 s of DAC 44.1 kHz
    assert str(tmp_path / "device_check.json") in done.stdout
