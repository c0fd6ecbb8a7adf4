"""Workload T1: training throughput from the feature cache vs decoding on the fly.

T1: MaskVAT-Hybrid from ``recipes/small/maskvat_hybrid_small.yaml`` (tiny random DAC, CLIP,
S3D and BEATs) with a generator of width 256, 4 layers, 4 heads, on 2 s clips (172 code frames
of 4 codebooks); batch 8; ``data.num_workers`` 2. The data are ``--videos`` generated 2 s videos
(64×64, 8 fps, a tone each), extracted once with ``v2a extract`` (timed too).

* **cache**: :class:`v2a.datasets.CachedClips`: the trainer reads codes and features from the
  cache's safetensors shards; no video is decoded.
* **live**: :class:`v2a.datasets.LiveClips`: every clip is decoded with PyAV and run through the
  codec and the encoders in the DataLoader workers, at every epoch.

Both run the same trainer (:class:`v2a.training.Trainer`) for ``--steps`` steps; the figures are
those of the last ``--steps - --warmup`` steps (the trainer's own ``perf/*`` metrics: code frames
per second, clips per second, and the share of step time spent in ``next(loader)``).

    python benchmarks/bench_train.py            # T1, ~3 min on 2 cores
    python benchmarks/bench_train.py --quick    # tiny sizes (smoke test)
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # tests.media_fixtures writes the videos

from tests.media_fixtures import write_dataset  # noqa: E402
from v2a.cache import extract  # noqa: E402
from v2a.datasets import CachedClips, LiveClips  # noqa: E402
from v2a.machine import cpu_model  # noqa: E402
from v2a.manifests import Clip, write_manifest  # noqa: E402
from v2a.recipe import load_recipe  # noqa: E402
from v2a.training import Trainer  # noqa: E402

RECIPE = ROOT / "recipes" / "small" / "maskvat_hybrid_small.yaml"


def workload(args, root: Path) -> list[str]:
    return [
        f"data.manifest={root / 'manifest.csv'}", f"data.root={root / 'videos'}",
        f"data.cache={root / 'cache'}", f"data.clip_seconds={args.seconds}",
        f"data.num_workers={args.workers}",
        f"generator.width={args.width}", f"generator.layers={args.layers}",
        f"generator.heads={args.heads}",
        f"training.batch_size={args.batch_size}", f"training.steps={args.steps}",
        f"training.log_every={args.steps - args.warmup}", "training.eval_every=0",
        "training.sample_every=0", f"training.checkpoint_every={args.steps}",
        f"training.precision={args.precision}",
    ]


def measure(recipe, dataset, out: Path) -> dict[str, float]:
    trainer = Trainer(recipe, out_dir=out, train_data=dataset, device="cpu", quiet=True)
    started = time.perf_counter()
    result = trainer.run()
    m = result.metrics
    return {
        "frames_per_s": m["perf/frames_per_s"], "clips_per_s": m["perf/clips_per_s"],
        "data_wait_share": m["perf/data_wait_share"],
        "step_ms": 1000 * recipe.training.batch_size / m["perf/clips_per_s"],
        "wall_s": time.perf_counter() - started,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--videos", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=10, help="steps left out of the figures")
    parser.add_argument("--live-steps", type=int, default=None,
                        help="steps of the on-the-fly run (default: --steps)")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--sources", default="cache,live", help="which runs: cache, live or both")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, a few steps")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.videos, args.seconds, args.width, args.layers = 8, 1.0, 64, 2
        args.batch_size, args.steps, args.warmup = 2, 8, 2
    if args.threads:
        torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory(prefix="bench_train_") as tmp:
        root = Path(tmp)
        videos = write_dataset(root / "videos", args.videos, seconds=args.seconds, width=64, height=64)
        write_manifest([Clip(path=p.name) for p in videos], root / "manifest.csv")
        recipe = load_recipe(RECIPE, workload(args, root))
        started = time.perf_counter()
        summary = extract(recipe, workers=args.workers, progress=False)
        extract_s = time.perf_counter() - started

        results = {}
        sources = args.sources.split(",")
        if "cache" in sources:
            results["cache"] = measure(recipe, CachedClips(None, recipe, "train"), root / "run_cache")
        if "live" in sources:
            steps = args.live_steps or args.steps
            live = load_recipe(RECIPE, workload(args, root) + [f"training.steps={steps}",
                               f"training.log_every={steps - args.warmup}"])
            results["live"] = measure(live, LiveClips(None, live, "train"), root / "run_live")

    if args.json:
        print(json.dumps({"extract_s": extract_s, "clips": summary.clips, "cpu": cpu_model(),
                          **results}, indent=2))
        return
    print(f"T1: {args.videos} clips of {args.seconds:g} s, generator width {args.width} x "
          f"{args.layers} layers, batch {args.batch_size}, {args.workers} workers, "
          f"{args.precision}, {torch.get_num_threads()} threads; CPU: {cpu_model()}")
    print(f"extraction: {summary.clips} clips in {extract_s:.1f} s ({summary.clips / extract_s:.2f} clips/s)")
    print(f"{'source':8s} {'frames/s':>10s} {'clips/s':>9s} {'step ms':>9s} {'data wait':>10s}")
    for name, r in results.items():
        print(f"{name:8s} {r['frames_per_s']:10.0f} {r['clips_per_s']:9.2f} {r['step_ms']:9.1f} "
              f"{100 * r['data_wait_share']:9.1f}%")
    if len(results) == 2:
        print(f"cache / live: {results['cache']['frames_per_s'] / results['live']['frames_per_s']:.1f}x")


if __name__ == "__main__":
    main()
