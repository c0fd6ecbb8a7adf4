"""Where ``v2a generate`` spends its time: the stages of one video, timed inside the real pipeline.

The script runs what ``v2a generate`` runs for one video (:mod:`v2a.commands.generate`): the
recipe loaded, :meth:`VideoToAudio.from_recipe`, :meth:`VideoToAudio.generate`, the output stage
(:func:`v2a.output_stage.apply_output_stage`) and :func:`v2a.generate.write_outputs` (the audio
file and the mp4), with a :class:`v2a.generate.StageRecorder` active, so the pipeline's own
stage marks give the times: video decode, each visual encoder, fuser, sampling, candidate decode
(the reranker's input), reranker, codec decode (the chosen codes, the audio written), output
stage, write audio, mux. Peak memory: the resident memory (RSS, sampled every 5 ms) during each
stage and during the whole case.

Cases:

* **tiny**: ``recipes/tiny.yaml`` (bundled weights) on ``examples/shapes.mp4`` (6 s), as the
  README's first command runs it (one candidate, so no reranking).
* **hybrid**: ``recipes/maskvat_hybrid.yaml`` with random weights (DAC 44.1 kHz, CLIP ViT-B/32
  and S3D, the paper-scale Hybrid generator, SCAV over BEATs) on a ``v2a synth`` clip, B = 10
  candidates. On 2 CPU cores the recipe's sampling (fp32, guidance scale 3: 35 forwards of 20
  rows) alone would take well over half an hour, and the whole case at 10 s takes about 8
  minutes even with sampling reduced, so by default the clip lasts 4 s (``--hybrid-seconds 10``
  is the issue's size) and sampling runs in bf16 without guidance, one step per RVQ level
  (``--hybrid-precision``, ``--hybrid-cfg``, ``--hybrid-steps``; ``recipe`` keeps the
  recipe's value): 9 forwards of 10 rows. The table's heading says what was run and what the
  recipe would run; sampling time grows in proportion to forwards × rows. Every other stage runs
  as the recipe has it.

Besides the stages, a side measurement: 2 candidates of 2 s (random codes) decoded one row per
call and both in one call, with the codec of each case, as an in-run ratio (what
:class:`v2a.generate.candidates.CandidateDecoder` chooses between; the size it settled on is
printed too).

    python benchmarks/bench_pipeline.py                 # both cases (≤ 4 min on 2 cores)
    python benchmarks/bench_pipeline.py --case hybrid --hybrid-seconds 10   # the issue's size
    python benchmarks/bench_pipeline.py --case tiny
    python benchmarks/bench_pipeline.py --quick         # small sizes (what the test runs)

Run timings under the shared lock: ``flock /tmp/v2a-bench.lock python benchmarks/...``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from v2a.generate import (
    Outputs,
    Source,
    StageRecorder,
    VideoToAudio,
    plan_jobs,
    stage,
    write_outputs,
)
from v2a.media import write_video
from v2a.output_stage import OutputStage, apply_output_stage
from v2a.recipe import load_recipe
from v2a.sampler import guidance_parts, level_steps
from v2a.synth import synth_clip
from v2a.machine import cpu_model

ROOT = Path(__file__).resolve().parent.parent
#: The stages in pipeline order (the table lists those that ran, in this order).
STAGES = ("load recipe", "load model", "video decode", "visual encoder", "fuser", "sampling",
          "candidate decode", "reranker", "codec decode", "output stage", "write audio", "mux")


@dataclass(frozen=True, kw_only=True)
class Case:
    """One video through one recipe: ``video`` a file, or None for a ``v2a synth`` clip of
    ``seconds`` s; ``steps``/``candidates``/``cfg`` None keep the recipe's sampling values."""

    name: str
    recipe: str
    random_weights: bool = False
    overrides: tuple[str, ...] = ()
    video: str | None = None
    seconds: float = 10.0
    candidates: int | None = None
    steps: tuple[int, ...] | None = None
    cfg: float | None = None
    precision: str | None = None
    seed: int = 0


TINY = Case(name="tiny", recipe="tiny", video=str(ROOT / "examples" / "shapes.mp4"))
HYBRID = Case(name="hybrid", recipe=str(ROOT / "recipes" / "maskvat_hybrid.yaml"),
              random_weights=True, seconds=4.0, candidates=10, steps=(1,), cfg=1.0,
              precision="bf16")
#: ``--quick``: the tiny case as it is, and the Hybrid's plumbing at toy sizes (1 s, B = 2).
QUICK_HYBRID = replace(HYBRID, seconds=1.0, candidates=2, overrides=(
    "codec.model=16khz", "codec.decoder_dim=32",
    "visual_encoders.clip.image_size=32", "visual_encoders.clip.patch_size=16",
    "visual_encoders.clip.width=32", "visual_encoders.clip.layers=1",
    "visual_encoders.clip.heads=2", "visual_encoders.clip.embed_dim=16",
    "visual_encoders.clip.fps=2.0", "visual_encoders.s3d.crop=32",
    "fuser.streams={clip: 16, s3d: 1024}", "reranker.video_dim=16",
    "fuser.dim=32", "fuser.heads=2", "fuser.context_layers=1",
    "generator.width=32", "generator.layers=1", "generator.heads=2",
))


class Memory:
    """RSS of this process, sampled every ``interval`` s by a thread: ``samples`` of
    ``(perf_counter time, bytes)``."""

    def __init__(self, interval: float = 0.005):
        import psutil  # deferred: only the benchmark needs it

        self.process, self.interval = psutil.Process(), interval
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def _watch(self) -> None:
        while not self._stop.is_set():
            self.samples.append((time.perf_counter(), self.process.memory_info().rss))
            self._stop.wait(self.interval)

    def __enter__(self) -> Memory:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.samples.append((time.perf_counter(), self.process.memory_info().rss))

    def peak(self, spans: list[tuple[float, float]] | None = None) -> int:
        """The largest sample inside any of ``spans`` (all samples when None; 0 when none)."""
        inside = [rss for t, rss in self.samples
                  if spans is None or any(a <= t <= b for a, b in spans)]
        return max(inside, default=0)


@dataclass
class CaseResult:
    name: str
    seconds: float  # wall time of the whole case
    stages: dict[str, dict] = field(default_factory=dict)  # name → seconds, calls, peak_rss_gb
    peak_rss_gb: float = 0.0
    settings: dict = field(default_factory=dict)
    side: dict = field(default_factory=dict)


def clip_for(case: Case, folder: Path) -> Path:
    """The case's video: its file, or a ``v2a synth`` clip (seed 0, clip 0) written with the
    project's media writer."""
    if case.video is not None:
        return Path(case.video)
    clip = synth_clip(0, 0, seconds=case.seconds, fps=25.0, size=128)
    return write_video(folder / f"{case.name}_clip.mp4", clip.frames, clip.fps)


def run_case(case: Case, folder: Path) -> CaseResult:
    """``v2a generate`` of the case's video into ``folder``, stage by stage."""
    video = clip_for(case, folder)
    source = Source(video=video)
    recorder = StageRecorder()
    start = time.perf_counter()
    with Memory() as memory, recorder:
        with stage("load recipe"):
            recipe = load_recipe(case.recipe, list(case.overrides),
                                 random_weights=case.random_weights)
        jobs, _ = plan_jobs([source], folder / "out", "wav", overwrite=True)
        with Outputs(jobs, overwrite=True):
            with stage("load model"):
                model = VideoToAudio.from_recipe(recipe, warn=lambda _: None)
            audio, sr = model.generate(video, seed=case.seed, candidates=case.candidates,
                                       steps=None if case.steps is None else list(case.steps),
                                       cfg=case.cfg, precision=case.precision)
            with stage("output stage"):
                audio, _ = apply_output_stage(audio, sr, OutputStage())
            write_outputs(jobs[0], audio, sr)
    result = CaseResult(name=case.name, seconds=time.perf_counter() - start,
                        peak_rss_gb=memory.peak() / 1e9)
    spans: dict[str, list[tuple[float, float]]] = {}
    for interval in recorder.intervals:
        spans.setdefault(interval.name, []).append((interval.start, interval.end))
    for name, seconds in recorder.seconds().items():
        result.stages[name] = {"seconds": seconds, "calls": recorder.calls()[name],
                               "peak_rss_gb": memory.peak(spans[name]) / 1e9}
    options = model.sampling_options(candidates=case.candidates, cfg=case.cfg,
                                     precision=case.precision,
                                     steps=None if case.steps is None else list(case.steps))
    full = model.sampling_options()
    k = int(model.codec.n_codebooks)
    rows = lambda o: o["candidates"] * len(guidance_parts(o["cfg_scale"]))  # noqa: E731
    result.settings = {
        "recipe": case.recipe, "video": str(video), "seconds": round(audio.shape[-1] / sr, 3),
        "sample_rate": sr, "candidates": options["candidates"],
        "reranker": type(model.reranker).__name__ if model.reranker is not None else None,
        "forwards": sum(level_steps(options["steps"], k)), "rows": rows(options),
        "recipe_forwards": sum(level_steps(full["steps"], k)), "recipe_rows": rows(full),
        "precision": options["precision"], "recipe_precision": full["precision"],
        "cfg": options["cfg_scale"], "recipe_cfg": full["cfg_scale"],
        "decode_batch": {f"{frames} frames": rows for (frames, _), rows
                         in model.decode_candidates.settled.items()},
        "codec_precisions": getattr(model.codec, "precisions", None),
    }
    result.side = side_measurement(model, case)
    return result


def side_measurement(model: VideoToAudio, case: Case, *, rows: int = 2,
                     seconds: float = 2.0) -> dict:
    """Seconds to decode ``rows`` candidates of ``seconds`` s (random codes) one row per call
    and in one call, with the case's codec (after a warm-up call of each shape)."""
    frames = max(1, round(seconds * float(model.codec.frame_rate)))
    generator = torch.Generator().manual_seed(case.seed)
    codes = torch.randint(0, int(model.codec.codebook_size),
                          (rows, int(model.codec.n_codebooks), frames), generator=generator)
    timed = {}
    with torch.inference_mode():
        model.codec.decode(codes[:1])
        model.codec.decode(codes)
        start = time.perf_counter()
        for row in range(rows):
            model.codec.decode(codes[row:row + 1])
        timed["one_per_call"] = time.perf_counter() - start
        start = time.perf_counter()
        model.codec.decode(codes)
        timed["one_call"] = time.perf_counter() - start
    return {"rows": rows, "seconds": seconds, **timed}


def recipe_sampling(settings: dict) -> dict:
    """The sampling settings of a case as the recipe has them (the ``recipe_*`` entries)."""
    return {name: settings[f"recipe_{name}"] for name in ("precision", "cfg", "forwards", "rows")}


def table(result: CaseResult) -> str:
    """The case as a markdown table: stages in pipeline order, their share of the case's time."""
    s = result.settings
    order = sorted(result.stages, key=lambda n: next(
        (i for i, prefix in enumerate(STAGES) if n.startswith(prefix)), len(STAGES)))
    recipe = Path(s["recipe"])
    shown = recipe.relative_to(ROOT) if recipe.is_relative_to(ROOT) else recipe
    lines = [f"**{result.name}**: {shown} on {Path(s['video']).name} ({s['seconds']:g} s "
             f"at {s['sample_rate']} Hz), B = {s['candidates']}"
             f"{' reranked by ' + s['reranker'] if s['reranker'] and s['candidates'] > 1 else ''}, "
             f"{s['precision']} sampling, guidance scale {s['cfg']:g}: {s['forwards']} forwards "
             f"of {s['rows']} rows" + ("" if s == {**s, **recipe_sampling(s)} else
                f" (the recipe's sampling: {s['recipe_precision']}, scale {s['recipe_cfg']:g}, "
                f"{s['recipe_forwards']} forwards of {s['recipe_rows']} rows)"),
             "", "| stage | calls | seconds | share | peak RSS (GB) |", "| --- | ---: | ---: | ---: | ---: |"]
    for name in order:
        st = result.stages[name]
        peak = f"{st['peak_rss_gb']:.2f}" if st["peak_rss_gb"] else "–"  # no sample: < 5 ms
        lines.append(f"| {name} | {st['calls']} | {st['seconds']:.2f} | "
                     f"{100 * st['seconds'] / result.seconds:.1f} % | {peak} |")
    other = result.seconds - sum(st["seconds"] for st in result.stages.values())
    lines.append(f"| other (planning, locks, glue) | | {other:.2f} | "
                 f"{100 * other / result.seconds:.1f} % | |")
    lines.append(f"| **whole case** | | **{result.seconds:.2f}** | 100 % | "
                 f"**{result.peak_rss_gb:.2f}** |")
    side = result.side
    lines += ["", f"Candidate decode, {side['rows']} rows × {side['seconds']:g} s of random codes: "
              f"one row per call {side['one_per_call']:.2f} s, one call {side['one_call']:.2f} s "
              f"(one call / one per call = {side['one_call'] / side['one_per_call']:.2f}); "
              f"the pipeline's measured batch size: {s['decode_batch'] or 'not used'}."]
    if s.get("codec_precisions"):
        lines.append(f"Codec precisions (the recipe's options, `auto` measured once per machine "
                     f"and cached): {s['codec_precisions']}.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[CaseResult]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--case", choices=("tiny", "hybrid", "all"), default="all")
    parser.add_argument("--quick", action="store_true", help="the hybrid at toy sizes")
    parser.add_argument("--hybrid-seconds", type=float, default=None,
                        help="the hybrid's clip length (default 4; the issue's size is 10)")
    parser.add_argument("--hybrid-candidates", type=int, default=None, help="default 10")
    parser.add_argument("--hybrid-steps", default="1",
                        help="sampling steps per RVQ level for the hybrid, comma-separated "
                             "(default 1; 'recipe' keeps the recipe's schedule)")
    parser.add_argument("--hybrid-cfg", default="1",
                        help="the hybrid's guidance scale (default 1: no guidance, half the "
                             "rows; 'recipe' keeps the recipe's)")
    parser.add_argument("--hybrid-precision", default="bf16",
                        help="the hybrid's sampling precision (default bf16; 'recipe' keeps "
                             "the recipe's)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    hybrid = QUICK_HYBRID if args.quick else HYBRID
    steps = None if args.hybrid_steps == "recipe" else tuple(
        int(s) for s in args.hybrid_steps.split(","))
    hybrid = replace(
        hybrid, steps=steps,
        seconds=args.hybrid_seconds or hybrid.seconds,
        candidates=args.hybrid_candidates or hybrid.candidates,
        cfg=None if args.hybrid_cfg == "recipe" else float(args.hybrid_cfg),
        precision=None if args.hybrid_precision == "recipe" else args.hybrid_precision)
    cases = {"tiny": [TINY], "hybrid": [hybrid], "all": [TINY, hybrid]}[args.case]
    load = os.getloadavg()
    print(f"# v2a generate, stage by stage: {cpu_model()}, {os.cpu_count()} cores, "
          f"{torch.get_num_threads()} torch threads, torch {torch.__version__}, "
          f"load average {load[0]:.2f} at the start", flush=True)
    results = []
    with tempfile.TemporaryDirectory(prefix="v2a-bench-pipeline-") as tmp:
        for case in cases:
            folder = Path(tmp) / case.name
            folder.mkdir()
            results.append(run_case(case, folder))
            print("\n" + table(results[-1]), flush=True)
    print(f"\nload average {os.getloadavg()[0]:.2f} at the end")
    if args.json:
        args.json.write_text(json.dumps([r.__dict__ for r in results], indent=2,
                                        default=str))
    return results


if __name__ == "__main__":
    main()
    sys.exit(0)
