"""Speed of the built-in components on this machine, fp32 and bf16.

Codecs: encode and decode real-time factors (seconds of audio per second of compute).
Visual encoders: frames per second. Audio encoders: real-time factor. Every component is built
through the registry at its published (full-size) architecture with random weights, so no
download is needed and the figures are those of the real models. bf16 runs the same module cast
to bfloat16 (weights and inputs), and its speed-up over fp32 is measured in the same run.

    python benchmarks/bench_components.py                 # everything, markdown table
    python benchmarks/bench_components.py --only dac clip --seconds 10
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable

import torch

from v2a.machine import cpu_model
from v2a.registry import default_registry

#: (label, kind, plug-in, options): the published configurations, random weights.
COMPONENTS = [
    ("dac 44khz 9x1024", "codec", "dac", {"model": "44khz", "weights": "none"}),
    ("encodec 24khz 6kbps", "codec", "encodec", {"model": "24khz", "weights": "none"}),
    ("spectral_rvq 16khz 4x256", "codec", "spectral_rvq", {"weights": "none"}),
    ("clip ViT-B-32", "visual_encoder", "clip", {"weights": "none"}),
    ("s3d 224", "visual_encoder", "s3d", {"weights": "none"}),
    ("colour_motion", "visual_encoder", "colour_motion", {}),
    ("beats iter3", "audio_encoder", "beats", {"weights": "none"}),
    ("mel 64", "audio_encoder", "mel", {}),
]


def timed(fn: Callable[[], object], repeat: int) -> float:
    """Median wall time of ``fn`` over ``repeat`` runs after one warm-up."""
    fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure(kind: str, component, dtype: torch.dtype, seconds: float, frames: int, repeat: int) -> dict[str, float]:
    component = component.to(dtype).eval()
    with torch.inference_mode():
        if kind == "codec":
            n = round(seconds * component.sample_rate)
            wav = (0.1 * torch.randn(1, component.channels, n)).to(dtype)
            codes = component.encode(wav)
            enc = timed(lambda: component.encode(wav), repeat)
            dec = timed(lambda: component.decode(codes, length=n), repeat)
            return {"encode x realtime": seconds / enc, "decode x realtime": seconds / dec}
        if kind == "visual_encoder":
            h, w = component.frame_size or (224, 224)
            video = torch.rand(1, frames, 3, h, w).to(dtype)
            times = torch.arange(frames, dtype=torch.float64) / component.fps
            t = timed(lambda: component.encode(video, times), repeat)
            return {"frames/s": frames / t}
        if kind == "audio_encoder":
            wav = (0.1 * torch.randn(1, 1, round(seconds * component.sample_rate))).to(dtype)
            t = timed(lambda: component.encode(wav), repeat)
            return {"x realtime": seconds / t}
    raise ValueError(kind)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="*", help="plug-in names to measure (default: all)")
    parser.add_argument("--seconds", type=float, default=5.0, help="audio length per call")
    parser.add_argument("--frames", type=int, default=32, help="video frames per call")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs per figure (median)")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    registry = default_registry()
    print(f"CPU: {cpu_model()}; torch {torch.__version__}, {args.threads} threads, {args.seconds} s "
          f"audio, {args.frames} frames; load average {os.getloadavg()[0]:.2f}")
    print()
    print("| component | measure | fp32 | bf16 | bf16 / fp32 |")
    print("|---|---|---|---|---|")
    for label, kind, name, options in COMPONENTS:
        if args.only and name not in args.only:
            continue
        entry = registry.get(kind, name)
        if entry.status != "ok":
            print(f"| {label} | skipped: {entry.status} | | | |")
            continue
        results = {}
        for dtype in (torch.float32, torch.bfloat16):
            component = registry.build(kind, name, registry.config_for(kind, name, options))
            try:
                results[dtype] = measure(kind, component, dtype, args.seconds, args.frames, args.repeat)
            except (RuntimeError, NotImplementedError) as exc:  # an op without bf16 support
                results[dtype] = {key: None for key in results.get(torch.float32, {"-": None})}
                print(f"<!-- {label} {dtype}: {str(exc).splitlines()[0]} -->")
        for key, fp32 in results[torch.float32].items():
            bf16 = results[torch.bfloat16].get(key)
            ratio = f"{bf16 / fp32:.2f}" if bf16 and fp32 else "n/a"
            show = lambda v: f"{v:.2f}" if v is not None else "n/a"  # noqa: E731
            print(f"| {label} | {key} | {show(fp32)} | {show(bf16)} | {ratio} |", flush=True)


if __name__ == "__main__":
    main()
