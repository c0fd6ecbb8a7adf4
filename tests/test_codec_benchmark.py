"""``benchmarks/bench_codecs.py --quick``: the codec benchmark runs and reports every figure
(how fast anything is is not tested)."""

from __future__ import annotations

import math

import pytest
import torch
from tests.test_sampler import load_benchmark as load_script

pytest.importorskip("dac")
pytest.importorskip("encodec")




def load_benchmark():
    return load_script("bench_codecs")


@pytest.fixture
def restore_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_quick_run_prints_the_table(capsys, restore_threads):
    bench = load_benchmark()
    rows = bench.main(["--quick", "--threads", "1", "--steps"])
    printed = capsys.readouterr().out
    assert f"CPU: {bench.cpu_model()}" in printed and "load average" in printed
    assert "| codec | model | encode fp32 | encode bf16 | decode fp32 | decode bf16 |" in printed
    assert [(r["codec"], r["variant"]) for r in rows] == [
        ("dac 44khz 9x1024", "before"), ("dac 44khz 9x1024", "folded"),
        ("dac 44khz 9x1024", "folded + channels-last"), ("dac 44khz 9x1024", "after"),
        ("encodec 24khz 6kbps", "before"), ("encodec 24khz 6kbps", "after")]
    for row in rows:
        for figure in ("encode_fp32", "encode_bf16", "decode_fp32", "decode_bf16"):
            assert 0 < row[figure] < math.inf
        # bf16 differs from fp32, but decodes the same codes to a close waveform
        assert 10 < row["snr_decode_db"] < 100
        assert f"| {row['codec']} | {row['variant']} | {row['encode_fp32']:.2f} |" in printed
    assert "dac 44khz 9x1024: after / before, best precision each: encode" in printed


def test_before_is_the_library_model_and_after_the_rewritten_one():
    bench = load_benchmark()
    label, name, options, loader = bench.CODECS[0]
    options = {**options, **bench.QUICK_OPTIONS["dac"]}
    before, after = bench.build(name, options, loader, "before"), bench.build(name, options, loader, "after")
    assert any(k.endswith("weight_g") for k in before.state_dict())
    assert not any(k.endswith("weight_g") for k in after.state_dict())
    assert type(before.model.decoder.model[0]) is torch.nn.Conv1d
    assert type(after.model.decoder.model[0]).__name__ == "ChannelsLastConv1d"
