"""benchmarks/bench_pipeline.py at toy sizes, so that the script cannot rot, and the stage marks
it reads (:mod:`v2a.generate.stages`). Not a timed test: it checks which stages are reported,
not how long they take."""

from __future__ import annotations

import json

import pytest
import torch

from tests.test_sampler import load_benchmark
from v2a.generate import StageRecorder, stage
from v2a.generate import stages as stages_module




def load_bench():
    return load_benchmark("bench_pipeline")


@pytest.fixture
def restore_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_stages_cost_nothing_and_record_nothing_when_no_recorder_is_active():
    assert stages_module._active is None
    assert stage("sampling") is stage("codec decode")  # one shared do-nothing context
    with stage("sampling"):
        pass
    with StageRecorder() as recorder:
        with stage("sampling"):
            with stage("codec decode"):
                pass
        with stage("sampling"):
            pass
    with stage("sampling"):  # after the recorder: not recorded
        pass
    assert [i.name for i in recorder.intervals] == ["codec decode", "sampling", "sampling"]
    assert recorder.calls() == {"codec decode": 1, "sampling": 2}
    outer, inner = recorder.intervals[1], recorder.intervals[0]
    assert outer.start <= inner.start <= inner.end <= outer.end  # nested: the outer includes it
    assert all(seconds >= 0 for seconds in recorder.seconds().values())


def test_a_stage_that_raises_is_still_recorded_and_recorders_do_not_nest():
    with StageRecorder() as recorder:
        with pytest.raises(ValueError), stage("mux"):
            raise ValueError("broken")
        with pytest.raises(RuntimeError, match="already recording"), StageRecorder():
            pass
    assert recorder.calls() == {"mux": 1}
    assert stages_module._active is None


def test_quick_run_reports_every_stage_of_both_cases(tmp_path, capsys, restore_threads):
    for extra in ("dac", "open_clip", "torchvision"):  # the Hybrid's codec and encoders
        pytest.importorskip(extra, reason=f"the hybrid case needs {extra} (pip install 'v2a[all]')")
    bench = load_bench()
    out = tmp_path / "pipeline.json"
    results = bench.main(["--quick", "--threads", "1", "--json", str(out)])
    printed = capsys.readouterr().out
    tiny, hybrid = results
    common = {"load recipe", "load model", "video decode", "fuser", "sampling", "codec decode",
              "output stage", "write audio", "mux"}
    assert common | {"visual encoder motion"} == set(tiny.stages)  # one candidate: no reranking
    assert common | {"visual encoder clip", "visual encoder s3d", "candidate decode",
                     "reranker"} == set(hybrid.stages)
    assert tiny.stages["video decode"]["calls"] == 2  # 6 s in two 4 s windows
    assert hybrid.stages["video decode"]["calls"] == 2  # one read per visual encoder
    for result in results:
        assert result.seconds >= sum(s["seconds"] for s in result.stages.values())
        assert 0.1 < result.peak_rss_gb < 64
        assert result.side["one_call"] > 0 and result.side["one_per_call"] > 0
    assert hybrid.settings["forwards"] == 9 and hybrid.settings["recipe_forwards"] == 35
    assert list(hybrid.settings["decode_batch"].values())[0] in (1, 2)  # measured, B = 2
    assert "| sampling | 1 |" in printed and "| candidate decode | 1 |" in printed
    assert hybrid.settings["rows"] == 2 and hybrid.settings["recipe_rows"] == 20  # no guidance
    assert "(the recipe's sampling: fp32, scale 3, 35 forwards of 20 rows)" in printed
    assert f"{bench.cpu_model()}, " in printed and printed.count("load average") == 2
    saved = json.loads(out.read_text())
    assert [case["name"] for case in saved] == ["tiny", "hybrid"]
