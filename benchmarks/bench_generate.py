"""Workload B1: generation speed of the sampler against a plain reference loop, in one run.

B1 (issue 4): MaskVAT-Hybrid (``maskvat_hybrid``, random init) of width 512, 8 layers, 8 heads;
K = 9 codebooks of 1024; 4 s at 86.13 frames/s (345 frames); B = 4 candidates; 16 steps on the
first level and 1 on every later one; classifier-free guidance (scale 3, so every step has a
conditional and an unconditional pass). The conditioning comes from the ``maskvat`` fuser over
random features of two streams, CLIP 512-d at 8 Hz and S3D 1024-d at 3.125 Hz (the visual
encoders themselves are not timed: both paths would run them once per video).

* **fast**: :func:`v2a.sampler.sample`: the fuser and ``generator.prepare`` run once, the
  candidates and both guidance passes go through one ``predict`` per step, in
  ``torch.inference_mode``, at ``--precision`` (bf16: a bfloat16 copy of the weights).
* **reference**: :func:`reference_sample`: one candidate at a time, the fuser and
  ``prepare`` recomputed at every step, a separate forward per guidance pass, fp32, through the
  sampler's own level loop (:func:`v2a.sampler.decode_level`). It draws the same random numbers
  in the same order, so with fp32 it returns the same tokens.

Printed: wall time of both and their ratio, the peak resident memory (RSS, sampled every 5 ms
by a thread with psutil; ``ru_maxrss`` as a fallback) above the process's memory before the
run, and the achieved GFLOP/s of the generator's matrix products (counted analytically per
``prepare``/``predict`` call, see :func:`predict_flops`) as a share of a plain 2048³ matmul in
bf16 and in fp32 timed in the same run, for 1.5 s each just before and just after each row (a
shared machine's cores change speed within a tenth of a second: one 2048³ bf16 product ran at
anywhere from 0.5 to 1.8 TFLOP/s on an idle 2-core cloud VM, so the rate is averaged over many
products, each row is compared with the mean of the two that bracket it, and the report gives
their spread); each precision eager and with ``compile=True`` (the
compile time separately), the attention path the generator chose for each shape, the CPU model
and the load average before and after.

    python benchmarks/bench_generate.py                      # B1, fp32 and bf16
    python benchmarks/bench_generate.py --precision bf16
    python benchmarks/bench_generate.py --quick              # tiny sizes (what the test runs)
    python benchmarks/bench_generate.py --compile off --no-reference    # quicker repeats
    python benchmarks/bench_generate.py --peer soundstorm    # and soundstorm-pytorch, same run
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import resource
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from v2a_plugins.generators.maskvat import attention_choices

from v2a.registry import default_registry
from v2a.sampler import (
    DTYPES,
    Decoding,
    Prompt,
    candidate_generator,
    decode_level,
    initial_state,
    level_steps,
    sample,
)
from v2a.sequences import Conditioning, FeatureSequence
from v2a.machine import cpu_model

# -- the workload -------------------------------------------------------------------------------


@dataclass
class Workload:
    width: int = 512
    layers: int = 8
    heads: int = 8
    n_codebooks: int = 9
    codebook_size: int = 1024
    condition_dim: int = 512
    seconds: float = 4.0
    frame_rate: float = 44100 / 512  # DAC 44.1 kHz: 86.13 frames/s
    candidates: int = 4
    steps: tuple[int, ...] = (16, 1)
    cfg_scale: float = 3.0
    streams: tuple[tuple[str, int, float], ...] = (("clip", 512, 8.0), ("s3d", 1024, 3.125))
    matmul_size: int = 2048  # the reference matmul is matmul_size³
    matmul_seconds: float = 1.5  # of matmuls per measurement of the reference rate

    @property
    def num_frames(self) -> int:
        return round(self.seconds * self.frame_rate)


B1 = Workload()
QUICK = Workload(width=32, layers=2, heads=2, n_codebooks=3, codebook_size=16, condition_dim=16,
                 seconds=0.25, candidates=2, steps=(4, 1),
                 streams=(("clip", 24, 8.0), ("s3d", 40, 3.125)), matmul_size=256,
                 matmul_seconds=0.05)


def build(work: Workload, seed: int = 0, *, attention: str = "auto"):
    """The Hybrid generator (its ``attention`` option: auto, sdpa or explicit) and the fuser
    (random init), and random streams for one video."""
    torch.manual_seed(seed)
    registry = default_registry()
    generator = registry.build_from("generator", {
        "plugin": "maskvat_hybrid", "width": work.width, "layers": work.layers,
        "heads": work.heads, "n_codebooks": work.n_codebooks,
        "codebook_size": work.codebook_size, "condition_dim": work.condition_dim,
        "attention": attention,
    }).eval()
    fuser = registry.build_from("fuser", {
        "plugin": "maskvat", "streams": {name: dim for name, dim, _ in work.streams},
        "dim": work.condition_dim, "heads": max(1, work.heads // 2),
    }).eval()
    streams = {
        name: FeatureSequence(torch.randn(1, max(1, round(work.seconds * rate)), dim), rate=rate)
        for name, dim, rate in work.streams
    }
    # AdaLN-Zero and the zero cross-attention output make a fresh model ignore its conditioning;
    # give those layers small random weights so that the guided logits differ from unguided ones
    with torch.no_grad():
        for name, p in generator.named_parameters():
            if p.dim() == 2 and float(p.abs().max()) == 0.0:
                p.normal_(0.0, 0.02)
    return generator, fuser, streams


# -- the plain reference loop -------------------------------------------------------------------


def reference_sample(
    generator,
    condition: Conditioning | Callable[[], Conditioning],
    *,
    num_frames: int,
    candidates: int = 1,
    seed: int = 0,
    prompt: Prompt | None = None,
    **options,
) -> torch.Tensor:
    """The sampler's algorithm run plainly: for every video and candidate, one row at a time,
    decode each level (:func:`v2a.sampler.decode_level`, the sampler's own step loop) with logits
    that recompute the conditioning (``condition()`` when it is a callable, e.g. the fuser) and
    run ``generator(codes, mask, condition, drop=...)`` (``prepare`` + ``predict``) once per
    guidance pass, in fp32. Same options (``options``: the fields of
    :class:`v2a.sampler.Decoding`), same random streams."""
    decoding = Decoding(**options)
    k, vocab = generator.n_codebooks, generator.codebook_size
    per_level = decoding.per_level(k)
    conditioning = condition if callable(condition) else (lambda: condition)
    b = conditioning().batch_size
    out = []
    with torch.no_grad():
        for v in range(b):
            row = torch.tensor([v])

            def level_logits(codes, hidden, level, row=row):
                cond = uncond = None
                if decoding.cfg_scale != 0:
                    cond = generator(codes, hidden, conditioning().index_select(row))[:, level]
                if decoding.cfg_scale != 1:
                    uncond = generator(codes, hidden, conditioning().index_select(row),
                                       drop=torch.tensor([True]))[:, level]
                return cond, uncond

            own = None if prompt is None else Prompt(prompt.codes[v:v + 1], prompt.known[v:v + 1])
            for c in range(candidates):
                codes, hidden = initial_state(own, batch=1, n_codebooks=k, num_frames=num_frames,
                                              candidates=1, device="cpu")
                rng = [candidate_generator(seed, c)]
                for q in range(k):
                    decode_level(codes, hidden, level=q, steps=per_level[q], generators=rng,
                                 vocab=vocab, decoding=decoding, logits=level_logits)
                out.append(codes)
    return torch.cat(out)


# -- measuring ----------------------------------------------------------------------------------


def predict_flops(work: Workload, rows: int, context: int, levels: int | None = None) -> float:
    """Matmul FLOPs (2 per multiply-add) of one ``predict`` of the Hybrid generator on ``rows``
    rows of ``num_frames`` frames with ``context`` context keys (null token included), with
    the output heads of ``levels`` levels (all by default; the sampler asks for one)."""
    l, w, hid = work.num_frames, work.width, round(4.0 * work.width)
    per_layer = (
        2 * l * w * 3 * w  # fused q, k, v
        + 2 * 2 * l * l * w  # self-attention scores and values
        + 2 * l * w * w  # attention output
        + 2 * 2 * l * w * w  # cross-attention query and output
        + 2 * 2 * l * context * w  # cross-attention scores and values
        + 2 * 2 * l * w * hid  # MLP
    )
    head = 2 * l * w * (work.n_codebooks if levels is None else levels) * work.codebook_size
    return float(rows * (work.layers * per_layer + head))


def prepare_flops(work: Workload, rows: int, context: int) -> float:
    """Matmul FLOPs of one ``prepare`` of the Hybrid generator on ``rows`` rows."""
    l, w, d = work.num_frames, work.width, work.condition_dim
    aligned = 2 * l * d * w + work.layers * 2 * l * w * 6 * w + 2 * l * w * 2 * w
    ctx = 2 * (context - 1) * d * w + work.layers * 2 * context * w * 2 * w
    return float(rows * (aligned + ctx))


def matmul_rates(n: int, seconds: float) -> dict[str, float]:
    """:func:`matmul_rate` in fp32 and bf16, FLOP/s."""
    return {p: matmul_rate(DTYPES[p], n, seconds) for p in ("fp32", "bf16")}


def bracketed(measure, n: int, seconds: float) -> tuple[dict, dict[str, list[float]]]:
    """``measure()``'s result and the matmul rates (FLOP/s) just before and just after it."""
    before = matmul_rates(n, seconds)
    figures = measure()
    after = matmul_rates(n, seconds)
    return figures, {p: [before[p], after[p]] for p in before}


def matmul_rate(dtype: torch.dtype, n: int = 2048, seconds: float = 1.5) -> float:
    """FLOP/s of ``n³`` matmuls in ``dtype``, averaged over ``seconds`` of them (all the FLOPs
    over all the time, after one warm-up product): a single product's rate on a shared cloud VM
    jumps between regimes within a tenth of a second (0.5-1.8 TFLOP/s in bf16 here), and the
    workload it is compared with averages over the same regimes."""
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    a @ b
    products, start = 0, time.perf_counter()
    while True:
        a @ b
        products += 1
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return 2 * n**3 * products / elapsed


class PeakRSS:
    """Peak resident memory of this process inside a ``with`` block, above its start."""

    def __init__(self, interval: float = 0.005):
        self.interval, self.peak, self.base, self.how = interval, 0, 0, "psutil RSS every 5 ms"

    def __enter__(self):
        try:
            import psutil
        except ImportError:  # ru_maxrss is the process-lifetime peak: an upper bound
            self.how, self._proc = "ru_maxrss (process lifetime)", None
            return self
        self._proc = psutil.Process()
        self.base = self.peak = self._proc.memory_info().rss
        self._stop = threading.Event()

        def watch():
            while not self._stop.is_set():
                self.peak = max(self.peak, self._proc.memory_info().rss)
                self._stop.wait(self.interval)

        self._thread = threading.Thread(target=watch, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        if self._proc is None:
            self.peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
            return
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._proc.memory_info().rss)

    @property
    def increase(self) -> int:
        return self.peak - self.base


@contextlib.contextmanager
def cold_compile_cache():
    """Inductor's on-disk cache in an empty temporary folder inside the block (removed after):
    the compile time measured is a first compile, not a reuse of an earlier run's kernels."""
    before = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    with tempfile.TemporaryDirectory(prefix="v2a-bench-inductor-") as folder:
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = folder
        try:
            yield
        finally:
            if before is None:
                os.environ.pop("TORCHINDUCTOR_CACHE_DIR", None)
            else:
                os.environ["TORCHINDUCTOR_CACHE_DIR"] = before


def time_sample(generator, fuse: Callable[[], Conditioning], options: dict, precision: str, *,
                compile: bool, flops: float) -> dict:
    """One timed :func:`v2a.sampler.sample` of the workload, after a warm-up call (one step per
    level: casts the bf16 copy, chooses the attention path and, with ``compile``, compiles; the
    compile time is that first call minus a second, compiled, one)."""
    warm_up = {**options, "steps": [1]}
    start = time.perf_counter()
    sample(generator, fuse(), **warm_up, precision=precision, compile=compile)
    compile_seconds = None
    if compile:
        first = time.perf_counter() - start
        start = time.perf_counter()
        sample(generator, fuse(), **warm_up, precision=precision, compile=compile)
        compile_seconds = first - (time.perf_counter() - start)
    with PeakRSS() as mem:
        start = time.perf_counter()
        with torch.inference_mode():
            condition = fuse()  # once per video
        codes = sample(generator, condition, **options, precision=precision, compile=compile)
        seconds = time.perf_counter() - start
    return {"seconds": seconds, "compile_seconds": compile_seconds, "peak_rss_gb": mem.peak / 1e9,
            "rss_increase_gb": mem.increase / 1e9, "memory_measure": mem.how,
            "gflops": flops / seconds / 1e9, "codes": codes}


def run(work: Workload, precisions: list[str], *, reference: bool = True, seed: int = 0,
        compile_modes: tuple[bool, ...] = (False,), attention: str = "auto") -> dict:
    """Time the fast path at each precision, eager and/or compiled (``compile_modes``), and the
    reference loop once; return the figures (``fast``: eager runs, ``compiled``: compiled)."""
    load_before = os.getloadavg()
    generator, fuser, streams = build(work, seed, attention=attention)
    l = work.num_frames
    fuse = lambda: fuser.fuse(streams, frame_rate=work.frame_rate, num_frames=l)  # noqa: E731
    with torch.no_grad():
        context = fuse().context.length + 1  # + the generator's null token
    passes = 1 if work.cfg_scale in (0, 1) else 2
    total_steps = sum(level_steps(list(work.steps), work.n_codebooks))
    options = dict(num_frames=l, steps=list(work.steps), cfg_scale=work.cfg_scale,
                   candidates=work.candidates, seed=seed)
    flops_fast = (prepare_flops(work, passes, context)
                  + total_steps * predict_flops(work, passes * work.candidates, context, levels=1))
    result = {"workload": work.__dict__ | {"num_frames": l}, "threads": torch.get_num_threads(),
              "flops_fast": flops_fast, "cpu": cpu_model(), "fast": {}, "compiled": {}}

    for compiled in compile_modes:
        # the compiled runs compile a copy in place: the reference loop stays eager
        model = copy.deepcopy(generator) if compiled else generator
        with cold_compile_cache() if compiled else contextlib.nullcontext():
            for precision in precisions:
                figures, around = bracketed(lambda: time_sample(
                    model, fuse, options, precision, compile=compiled, flops=flops_fast),
                    work.matmul_size, work.matmul_seconds)
                figures["matmul_around_gflops"] = {p: [r / 1e9 for r in rs] for p, rs in around.items()}
                result["compiled" if compiled else "fast"][precision] = figures
    runs = [f for mode in ("fast", "compiled") for f in result[mode].items()]
    seen = {p: [r for _, f in runs for r in f["matmul_around_gflops"][p]] for p in ("fp32", "bf16")}
    result["matmul_gflops"] = {p: statistics.median(rs) for p, rs in seen.items()}
    result["matmul_gflops_range"] = {p: [min(rs), max(rs)] for p, rs in seen.items()}
    for precision, figures in runs:
        achieved = flops_fast / figures["seconds"] / 1e9
        rates = {p: statistics.mean(rs) for p, rs in figures["matmul_around_gflops"].items()}
        figures["matmul_gflops"] = rates[precision]
        figures["share_of_matmul"] = achieved / rates[precision]  # the same dtype's matmul
        figures["share_of_bf16_matmul"] = achieved / rates["bf16"]
        figures["share_of_fp32_matmul"] = achieved / rates["fp32"]
    result["attention"] = {"setting": attention, "chosen": attention_choices()}

    if reference:
        flops_ref = work.candidates * total_steps * passes * (
            prepare_flops(work, 1, context) + predict_flops(work, 1, context))
        with PeakRSS() as mem:
            start = time.perf_counter()
            codes = reference_sample(generator, fuse, **options)
            seconds = time.perf_counter() - start
        result["reference"] = {"seconds": seconds, "peak_rss_gb": mem.peak / 1e9,
                               "rss_increase_gb": mem.increase / 1e9, "flops": flops_ref,
                               "gflops": flops_ref / seconds / 1e9, "codes": codes}
        for _, figures in runs:
            figures["speedup"] = seconds / figures["seconds"]
            figures["same_tokens"] = float((figures["codes"] == codes).float().mean())
    result["load_average"] = {"before": load_before, "after": os.getloadavg()}
    return result


def report(result: dict) -> str:
    """The figures as text: the set-up, then a markdown table ready for docs/performance.md."""
    work, rates, spread = result["workload"], result["matmul_gflops"], result["matmul_gflops_range"]
    load = result["load_average"]
    chosen = ", ".join(f"{bucket}: {path}" for bucket, path in result["attention"]["chosen"].items())
    lines = [
        f"B1-style workload: width {work['width']}, {work['layers']} layers, {work['heads']} heads, "
        f"{work['num_frames']} frames, K = {work['n_codebooks']} x {work['codebook_size']}, "
        f"B = {work['candidates']}, steps {list(work['steps'])}, cfg {work['cfg_scale']}; "
        f"{result['threads']} threads",
        f"CPU: {result['cpu']}; load average (1, 5, 15 min) before "
        f"{', '.join(f'{x:.2f}' for x in load['before'])}, after "
        f"{', '.join(f'{x:.2f}' for x in load['after'])}",
        f"in-run {work['matmul_size']}³ matmul, just before and after each row: fp32 median "
        f"{rates['fp32']:.0f} GFLOP/s ({spread['fp32'][0]:.0f}-{spread['fp32'][1]:.0f}), bf16 "
        f"median {rates['bf16']:.0f} GFLOP/s ({spread['bf16'][0]:.0f}-{spread['bf16'][1]:.0f}); "
        "each row's shares are of the mean of its own two",
        f"attention ({result['attention']['setting']}): {chosen or 'no measurement (forced)'}",
        "",
        "| path | precision | compile | time (s) | x reference | GFLOP/s | bf16 matmul before / "
        "after (GFLOP/s) | share of bf16 matmul | share of fp32 matmul | peak RSS (GB) | "
        "RSS increase (GB) | tokens = reference |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    ref = result.get("reference")
    if ref:
        lines.append(f"| reference loop | fp32 | no | {ref['seconds']:.2f} | 1.00 | "
                     f"{ref['gflops']:.0f} | | | | {ref['peak_rss_gb']:.2f} | "
                     f"{ref['rss_increase_gb']:.2f} | |")
    compile_times = []
    for mode, compiled in (("fast", "no"), ("compiled", "yes")):
        for precision, f in result[mode].items():
            speed = f"{f['speedup']:.2f}" if "speedup" in f else "-"
            same = f"{100 * f['same_tokens']:.1f} %" if "same_tokens" in f else "-"
            around = " / ".join(f"{r:.0f}" for r in f["matmul_around_gflops"]["bf16"])
            lines.append(
                f"| sampler | {precision} | {compiled} | {f['seconds']:.2f} | {speed} | "
                f"{f['gflops']:.0f} | {around} | {100 * f['share_of_bf16_matmul']:.0f} % | "
                f"{100 * f['share_of_fp32_matmul']:.0f} % | {f['peak_rss_gb']:.2f} | "
                f"{f['rss_increase_gb']:.2f} | {same} |"
            )
            if f["compile_seconds"] is not None:
                compile_times.append(f"{precision} {f['compile_seconds']:.1f} s")
    lines.append("")
    if compile_times:
        lines.append("compile time (first call minus a compiled one, empty inductor cache): "
                     f"{', '.join(compile_times)}")
    first = next(iter({**result["fast"], **result["compiled"]}.values()))
    lines.append(f"memory: {first['memory_measure']}; targets: >= 3x the reference, bf16 >= 70 % "
                 "of the bf16 matmul rate, peak memory < 3 GB")
    return "\n".join(lines)


def load_peer(name: str):
    """The module of ``benchmarks/peers/`` for ``--peer name``, its package imported; when the
    package is not installed it prints how to install it and exits with status 2."""
    root = str(Path(__file__).resolve().parent.parent)  # benchmarks.peers, run as a script too
    if root not in sys.path:
        sys.path.insert(0, root)
    from benchmarks.peers import load_or_exit

    return load_or_exit(name)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes (seconds, for tests)")
    parser.add_argument("--precision", choices=["fp32", "bf16", "both"], default="both")
    parser.add_argument("--no-reference", action="store_true", help="skip the reference loop")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument("--compile", choices=["off", "on", "both"], default="both",
                        help="run the sampler eager, compiled (sampling.compile) or both")
    parser.add_argument("--attention", choices=["auto", "sdpa", "explicit"], default="auto",
                        help="the generator's attention path (auto: measured per shape)")
    parser.add_argument("--peer", choices=["soundstorm"],
                        help="also time this peer model on the same token shape, in the same run "
                             "(an optional install: benchmarks/peers/)")
    args = parser.parse_args(argv)
    peer = load_peer(args.peer) if args.peer else None  # not installed: exits 2 before the run
    torch.set_num_threads(args.threads)
    precisions = ["fp32", "bf16"] if args.precision == "both" else [args.precision]
    work = QUICK if args.quick else B1
    modes = {"off": (False,), "on": (True,), "both": (False, True)}[args.compile]
    result = run(work, precisions, reference=not args.no_reference, compile_modes=modes,
                 attention=args.attention)
    if peer is not None:
        result["peer"] = peer.run(work, result)
    print(report(result))
    if peer is not None:
        print("\n" + peer.report(result["peer"]))
    if args.json:
        plain = {**result, **{mode: {p: {k: v for k, v in f.items() if k != "codes"}
                                     for p, f in result[mode].items()}
                              for mode in ("fast", "compiled")}}
        if "reference" in result:
            plain["reference"] = {k: v for k, v in result["reference"].items() if k != "codes"}
        with open(args.json, "w") as f:
            json.dump(plain, f, indent=2)
    return result


if __name__ == "__main__":
    main()
