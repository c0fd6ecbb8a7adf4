"""benchmarks/bench_generate.py (workload B1) at a tiny size, so that the script cannot rot.

Not a timed test: it checks that the script runs end to end, that the fast fp32 path returns the
reference loop's tokens, and that the FLOP count behind its GFLOP/s figure is right.
"""

from __future__ import annotations

import json
import os

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from tests.test_sampler import load_benchmark


@pytest.fixture
def restore_threads():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def dynamo_eager(monkeypatch):
    """``nn.Module.compile`` with dynamo's ``eager`` backend (traced as for inductor, run by the
    eager kernels): the compiled runs are exercised without paying inductor's compile time."""
    compile_module = torch.nn.Module.compile
    monkeypatch.setattr(torch.nn.Module, "compile",
                        lambda self, **options: compile_module(self, backend="eager", **options))
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def test_quick_run_prints_the_figures(tmp_path, capsys, restore_threads, dynamo_eager):
    bench = load_benchmark()
    out = tmp_path / "b1.json"
    result = bench.main(["--quick", "--threads", "1", "--json", str(out)])
    printed = capsys.readouterr().out
    assert "reference loop" in printed and "| sampler | bf16 | no |" in printed
    assert "| sampler | bf16 | yes |" in printed and "compile time" in printed
    assert f"CPU: {bench.cpu_model()}; load average" in printed and "attention (auto): " in printed
    # auto timed both paths for the self-attention shape of each precision
    assert {"float32 h2 l22 s22 d16", "bfloat16 h2 l22 s22 d16"} <= set(result["attention"]["chosen"])
    work = bench.QUICK
    reference = result["reference"]["codes"]
    assert reference.shape == (work.candidates, work.n_codebooks, work.num_frames)
    for precision in ("fp32", "bf16"):
        fast = result["fast"][precision]
        codes = fast["codes"]
        assert codes.shape == reference.shape and codes.dtype == torch.int64
        assert int(codes.min()) >= 0 and int(codes.max()) < work.codebook_size
        assert fast["speedup"] > 0 and fast["gflops"] > 0 and fast["matmul_gflops"] > 0
        assert 0.1 < fast["peak_rss_gb"] < 64
        compiled = result["compiled"][precision]
        assert compiled["compile_seconds"] is not None and fast["compile_seconds"] is None
        assert 0 < compiled["share_of_bf16_matmul"] and 0 < compiled["share_of_fp32_matmul"]
    assert result["fast"]["fp32"]["same_tokens"] == 1.0  # same algorithm, same random streams
    assert result["compiled"]["fp32"]["same_tokens"] == 1.0  # the eager backend: same kernels
    saved = json.loads(out.read_text())
    assert set(saved["fast"]) == {"fp32", "bf16"} and "codes" not in saved["reference"]
    assert set(saved["compiled"]) == {"fp32", "bf16"} and "codes" not in saved["compiled"]["bf16"]


def test_flop_count_matches_the_generator(restore_threads):
    """The analytic count equals torch's FLOP counter (attention through the math kernel, which
    the counter sees as matmuls)."""
    bench = load_benchmark()
    work = bench.QUICK
    generator, fuser, streams = bench.build(work)
    condition = fuser.fuse(streams, frame_rate=work.frame_rate, num_frames=work.num_frames)
    context = condition.context.length + 1
    rows = condition.index_select(torch.tensor([0, 0, 0]))
    codes = torch.zeros(3, work.n_codebooks, work.num_frames, dtype=torch.int64)
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH):
        with FlopCounterMode(display=False) as counter:
            prepared = generator.prepare(rows, drop=torch.tensor([False, True, False]))
        assert counter.get_total_flops() == bench.prepare_flops(work, 3, context)
        with FlopCounterMode(display=False) as counter:
            generator.predict(codes, torch.ones_like(codes, dtype=torch.bool), prepared)
        assert counter.get_total_flops() == bench.predict_flops(work, 3, context)


def test_compile_time_is_measured_with_an_empty_inductor_cache(monkeypatch, tmp_path):
    bench = load_benchmark()
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path))
    with bench.cold_compile_cache():
        folder = os.environ["TORCHINDUCTOR_CACHE_DIR"]
        assert folder != str(tmp_path) and os.listdir(folder) == []
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path) and not os.path.exists(folder)
