"""``benchmarks/bench_generate.py --peer soundstorm``: soundstorm-pytorch timed in the same run.

Not a timed test: it checks that the peer runs on the quick workload's token shape, that its
forwards and rows are the ones the comparison divides by, that a missing install exits with
status 2 and the install line before anything runs, and that the inert placeholders refuse use.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import warnings

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.peers import soundstorm as peer
from tests.test_sampler import load_benchmark

INSTALLED = importlib.util.find_spec("soundstorm_pytorch") is not None


@pytest.fixture
def restore_threads():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.skipif(not INSTALLED, reason="soundstorm-pytorch is not installed (an optional peer: "
                    "pip install --no-deps soundstorm-pytorch==0.6.1 beartype==0.23.1 "
                    "hyper-connections==0.4.11 torch-einops-utils==0.2.0)")
def test_quick_run_times_the_peer_on_the_same_token_shape(tmp_path, capsys, restore_threads):
    bench = load_benchmark()
    out = tmp_path / "b1.json"
    result = bench.main(["--quick", "--threads", "1", "--precision", "bf16", "--no-reference",
                         "--compile", "off",  # eager only: compiling is bench_generate's own test
                         "--peer", "soundstorm", "--json", str(out)])
    printed = capsys.readouterr().out
    assert "| soundstorm-pytorch 0.6.1 | bf16 autocast |" in printed
    assert "| v2a sampler | bf16 |" in printed and "load average" in printed
    work, figures = bench.QUICK, result["peer"]
    # soundstorm: steps[0] forwards on the first level, one on each later level, B rows each
    assert figures["forwards"] == work.steps[0] + work.n_codebooks - 1 == 6
    assert figures["row_forwards"] == work.candidates * figures["forwards"]
    assert figures["codes_shape"] == [work.candidates, work.num_frames * work.n_codebooks]
    # v2a: the same decoding steps, candidates x 2 guidance passes rows per predict
    v2a = figures["v2a"]["bf16"]
    assert (v2a["rows"], v2a["forwards"]) == (2 * work.candidates, figures["forwards"])
    per_row = result["fast"]["bf16"]["seconds"] / (v2a["rows"] * v2a["forwards"])
    assert v2a["seconds_per_row_forward"] == per_row
    assert v2a["peer_over_v2a"] == figures["seconds_per_row_forward"] / per_row
    assert figures["gflops"] == (
        figures["flops_per_row_forward"] * figures["row_forwards"] / figures["seconds"] / 1e9)
    assert set(figures["inert"]) <= set(peer.INERT_MODULES)
    for package in peer.INERT_MODULES:  # the placeholders served soundstorm's import only
        module = sys.modules.get(package)
        assert module is None or not (module.__doc__ or "").startswith("Inert placeholder")
        assert (package in figures["inert"]) == (package not in sys.modules)
    saved = json.loads(out.read_text())
    assert saved["peer"]["forwards"] == 6


@pytest.mark.skipif(not INSTALLED, reason="soundstorm-pytorch is not installed")
def test_the_peer_at_b1_has_62m_parameters_besides_its_embeddings():
    """B1's sizes give the Conformer the issue measured (62 M parameters, embeddings aside)."""
    model = peer.build(load_benchmark().B1)
    embeddings = model.net.code_embeds.weight.numel()
    assert embeddings == 9 * 1025 * 512  # 1024 codes and a mask token per level
    assert 62.0e6 < sum(p.numel() for p in model.parameters()) - embeddings < 62.2e6


def test_a_missing_peer_exits_2_with_the_install_line(monkeypatch, capsys, restore_threads):
    bench = load_benchmark()
    monkeypatch.setitem(sys.modules, "soundstorm_pytorch", None)  # import finds nothing
    with pytest.raises(SystemExit) as stop:
        bench.main(["--quick", "--peer", "soundstorm"])
    assert stop.value.code == 2
    captured = capsys.readouterr()
    assert captured.out == ""  # nothing ran
    assert "pip install --no-deps soundstorm-pytorch==0.6.1" in captured.err
    assert captured.err.count("\n") == 1
    assert torch.get_num_threads() == 1  # refused before the benchmark set its thread count


def test_steps_other_than_n_then_1_are_refused():
    bench = load_benchmark()
    with pytest.raises(ValueError, match=r"must be \(n, 1\)"):
        peer.build(bench.Workload(steps=(16, 2)))


def test_inert_placeholders_import_and_refuse_use(monkeypatch):
    for name in ("audiolm_pytorch", "audiolm_pytorch.data", "audiolm_pytorch.optimizer"):
        monkeypatch.setitem(sys.modules, name, None)  # restored after the test
    peer._make_inert("audiolm_pytorch")
    from audiolm_pytorch import SoundStream
    from audiolm_pytorch.data import get_dataloader

    assert isinstance(SoundStream, type)  # annotations such as `SoundStream | None` resolve
    with pytest.raises(peer.NotInstalledForTheBenchmark, match="audiolm_pytorch.SoundStream"):
        SoundStream()
    with pytest.raises(peer.NotInstalledForTheBenchmark, match="get_dataloader"):
        get_dataloader("folder", batch_size=1)


@pytest.mark.skipif(not INSTALLED, reason="soundstorm-pytorch is not installed")
def test_the_flop_count_includes_attention_and_the_meta_copy_counts_the_same(restore_threads):
    work = load_benchmark().QUICK
    model = peer.build(work)
    tokens = torch.zeros(1, work.num_frames * work.n_codebooks, dtype=torch.long)
    counted = peer.forward_flops(model, tokens)
    with torch.device("meta"):
        assert peer.forward_flops(peer.build(work), tokens.to("meta")) == counted
    assert all(m.flash for m in model.modules() if type(m).__name__ == "Attend")  # restored
    with warnings.catch_warnings(), torch.no_grad(), FlopCounterMode(display=False) as unseen:
        warnings.simplefilter("ignore", FutureWarning)  # the package's torch.backends.cuda.sdp_kernel
        model.net(tokens)  # the CPU kernel of scaled_dot_product_attention: not counted
    # what the written-out attention adds: q kᵀ and (softmax) v, 2 FLOPs per multiply-add, per
    # layer, over the frames (the levels' tokens are summed into one position per frame)
    attention = work.layers * 2 * 2 * work.num_frames**2 * work.width
    assert counted - unseen.get_total_flops() == attention
