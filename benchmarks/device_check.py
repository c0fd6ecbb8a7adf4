"""What v2a does on this machine's accelerator, in one run of at most ~8 minutes on one GPU.

Measured, each in its own ``try`` block (a failure is reported and the rest still run) and
within its own time budget:

* ``cache``: a feature cache made here (``v2a.cache.extract``) from generated videos (the
  clips ``tests/media_fixtures.write_dataset`` writes: a moving colour and a tone each);
* ``train``: training steps of ``recipes/maskvat_hybrid.yaml`` at paper scale, random init,
  bf16 autocast, batch 8 of 10 s clips read from that cache: steps/s and peak memory;
* ``generate``: one 10 s clip with B = 10 candidates and classifier-free guidance, the whole
  of ``VideoToAudio.generate`` (visual encoders, sampling in bf16, DAC decoding, reranking):
  seconds and peak memory;
* ``codec``: DAC 44.1 kHz encode and decode of 10 s (× real time);
* ``clip``, ``s3d``: the visual encoders (frames/s);
* ``all_reduce_2_ranks``, ``train_2_ranks``: with two GPUs or more, a 2-process NCCL
  all-reduce (bus bandwidth) and 2-process training steps (DDP); skipped, with the reason, on
  one GPU.

Every component is the recipe's real architecture at its published size with random weights
(``weights: none``): nothing is downloaded. ``--quick`` runs the same measurements on a CPU in
under two minutes at the sizes of ``recipes/small/maskvat_hybrid_small.yaml`` (2 s clips, batch
2; the two-process parts with gloo on the CPU, which checks their code, not NCCL).

Writes ``device_check.json`` and ``device_check.md`` (a table) into ``--out`` (default: a new
temporary folder), and prints the table and where both files are.

    python benchmarks/device_check.py                # on a GPU, ~5-8 min
    python benchmarks/device_check.py --quick        # on a CPU, < 2 min
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import resource
import shutil
import socket
import statistics
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # tests.media_fixtures writes the videos

from tests.media_fixtures import write_dataset  # noqa: E402
from v2a.cache import extract  # noqa: E402
from v2a.datasets import CachedClips  # noqa: E402
from v2a.generate import VideoToAudio  # noqa: E402
from v2a.manifests import Clip, write_manifest  # noqa: E402
from v2a.recipe import build_frozen, load_recipe, untrained_recipe  # noqa: E402
from v2a.sampler import allow_tf32  # noqa: E402
from v2a.training import Trainer  # noqa: E402

#: The measurements, in the order they run: the names the JSON and the table always hold.
MEASUREMENTS = ("cache", "train", "generate", "codec", "clip", "s3d", "all_reduce_2_ranks",
                "train_2_ranks")


@dataclass(frozen=True, kw_only=True)
class Sizes:
    """What one mode measures: the recipe, clip length, clips, batch, steps, candidates."""

    recipe: Path
    seconds: float  # clip length (training window and generated clip)
    clips: int  # generated videos in the cache
    batch_size: int
    steps: int  # warm-up steps, then as many measured ones
    candidates: int
    frames: int  # video frames per visual-encoder call
    all_reduce_floats: int
    repeat: int  # timed calls per component figure (median), within part_budget
    part_budget: float  # seconds of timed calls per component
    budget: float  # seconds for the whole run; a part starting later is skipped


FULL = Sizes(recipe=ROOT / "recipes" / "maskvat_hybrid.yaml", seconds=10.0, clips=16,
             batch_size=8, steps=10, candidates=10, frames=64, all_reduce_floats=64 * 2**20,
             repeat=5, part_budget=15.0, budget=420.0)
QUICK = Sizes(recipe=ROOT / "recipes" / "small" / "maskvat_hybrid_small.yaml", seconds=1.0,
              clips=2, batch_size=2, steps=2, candidates=2, frames=8, all_reduce_floats=2**20,
              repeat=1, part_budget=2.0, budget=100.0)


@dataclass
class Result:
    """One measurement: its figures (``values``, units in the names), or why it has none."""

    name: str
    what: str
    values: dict[str, float] = field(default_factory=dict)
    skipped: str | None = None
    error: str | None = None
    seconds: float = 0.0


# -- timing and memory ----------------------------------------------------------------------------


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], device: torch.device, *, budget: float,
          repeat: int = 5) -> float:
    """Median seconds of ``fn`` after one warm-up call, over ``repeat`` calls or as many as
    fit in ``budget`` seconds (at least one)."""
    fn()
    synchronize(device)
    times: list[float] = []
    started = time.perf_counter()
    while len(times) < repeat and (not times or time.perf_counter() - started < budget):
        t = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_gb(device: torch.device) -> float:
    """Peak GPU memory allocated by torch since :func:`reset_peak`; on a CPU, the process's
    peak resident memory so far (it cannot be reset)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 1e9
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9  # Linux: KiB


def environment(device: torch.device) -> dict[str, object]:
    env: dict[str, object] = {
        "device": str(device), "torch": torch.__version__, "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "gpus": torch.cuda.device_count() if torch.cuda.is_available() else 0,
        "tf32": bool(torch.backends.cuda.matmul.allow_tf32),
        "python": platform.python_version(), "cpus": os.cpu_count(), "host": platform.node(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }
    if device.type == "cuda":
        env["device_name"] = torch.cuda.get_device_name(device)
    return env


# -- the workload ---------------------------------------------------------------------------------


def workload(sizes: Sizes, root: Path, *, workers: int, extra: tuple[str, ...] = ()):
    """The recipe at ``sizes``, with random weights everywhere, reading ``root``'s videos and
    cache."""
    overrides = [
        f"data.manifest={root / 'manifest.csv'}", f"data.root={root / 'videos'}",
        f"data.cache={root / 'cache'}", f"data.clip_seconds={sizes.seconds}",
        f"data.num_workers={workers}", f"training.batch_size={sizes.batch_size}",
        f"training.steps={2 * sizes.steps}", f"training.log_every={sizes.steps}",
        "training.eval_every=0", "training.sample_every=0",
        f"training.checkpoint_every={2 * sizes.steps}", "training.precision=bf16",
        f"sampling.candidates={sizes.candidates}", "sampling.precision=bf16", *extra,
    ]
    return untrained_recipe(load_recipe(sizes.recipe, overrides))


def make_cache(recipe, sizes: Sizes, root: Path, device: torch.device, workers: int) -> dict:
    videos = write_dataset(root / "videos", sizes.clips, seconds=sizes.seconds, fps=25.0,
                           width=64, height=64)
    write_manifest([Clip(path=p.name) for p in videos], root / "manifest.csv")
    started = time.perf_counter()
    summary = extract(recipe, workers=workers, device=str(device), progress=False)
    seconds = time.perf_counter() - started
    return {"clips": float(summary.clips), "clips_per_s": summary.clips / seconds}


def measure_train(recipe, root: Path, device: torch.device) -> dict:
    """The trainer's own throughput over the steps after the warm-up (its ``perf/*``
    figures: the window of the last ``log_every`` steps)."""
    reset_peak(device)
    trainer = Trainer(recipe, out_dir=root / "run", train_data=CachedClips(None, recipe, "train"),
                      device=str(device), quiet=True)
    result = trainer.run()
    clips_per_s = result.metrics["perf/clips_per_s"]
    batch = recipe.training.batch_size
    return {"steps_per_s": clips_per_s / batch, "step_ms": 1000 * batch / clips_per_s,
            "clips_per_s": clips_per_s, "loss": result.metrics["train/loss"],
            "peak_memory_gb": peak_memory_gb(device)}


def measure_generate(recipe, sizes: Sizes, root: Path, device: torch.device) -> dict:
    model = VideoToAudio.from_recipe(recipe, device=device, warn=lambda text: None)
    video = root / "videos" / "clip000.mp4"
    model.generate(video, duration=sizes.seconds, candidates=1, steps=[1])  # warm-up
    synchronize(device)
    reset_peak(device)
    started = time.perf_counter()
    audio, _ = model.generate(video, duration=sizes.seconds)
    synchronize(device)
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "x_realtime": sizes.seconds / seconds,
            "peak_memory_gb": peak_memory_gb(device), "samples": float(audio.shape[-1])}


@torch.inference_mode()
def measure_codec(recipe, sizes: Sizes, device: torch.device) -> dict:
    codec = build_frozen(recipe.choice("codec")).to(device)
    n = round(sizes.seconds * codec.sample_rate)
    wav = 0.1 * torch.randn(1, codec.channels, n, device=device)
    codes = codec.encode(wav)
    encode = timed(lambda: codec.encode(wav), device, budget=sizes.part_budget, repeat=sizes.repeat)
    decode = timed(lambda: codec.decode(codes, length=n), device, budget=sizes.part_budget,
                   repeat=sizes.repeat)
    return {"encode_x_realtime": sizes.seconds / encode, "decode_x_realtime": sizes.seconds / decode}


@torch.inference_mode()
def measure_encoder(recipe, stream: str, sizes: Sizes, device: torch.device) -> dict:
    encoder = build_frozen(recipe.choice(f"visual_encoders.{stream}")).to(device)
    h, w = encoder.frame_size or (224, 224)
    frames = torch.rand(1, sizes.frames, 3, h, w, device=device)
    times = torch.arange(sizes.frames, dtype=torch.float64) / encoder.fps
    seconds = timed(lambda: encoder.encode(frames, times), device, budget=sizes.part_budget,
                    repeat=sizes.repeat)
    return {"frames_per_s": sizes.frames / seconds}


# -- two processes ----------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _join(rank: int, port: int, device: torch.device) -> None:
    """Describe a 2-process group in the environment, as torchrun would."""
    os.environ.update({"RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": "2",
                       "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
    if device.type == "cuda":
        torch.cuda.set_device(rank)


def _all_reduce_rank(rank: int, port: int, device_type: str, sizes: Sizes, out: str) -> None:
    import torch.distributed as dist

    device = torch.device(device_type, rank) if device_type == "cuda" else torch.device("cpu")
    _join(rank, port, device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    options = {"device_id": device} if backend == "nccl" else {}
    dist.init_process_group(backend, **options)
    try:
        tensor = torch.ones(sizes.all_reduce_floats, device=device)
        seconds = timed(lambda: dist.all_reduce(tensor), device, budget=sizes.part_budget,
                        repeat=2 * sizes.repeat)
        if rank == 0:  # ring all-reduce: each rank sends and receives 2 (n - 1) / n of the data
            bus = 2 * (2 - 1) / 2 * tensor.numel() * tensor.element_size() / seconds / 1e9
            Path(out).write_text(json.dumps({"bus_gb_per_s": bus, "ms": 1000 * seconds}))
    finally:
        dist.destroy_process_group()


def _train_rank(rank: int, port: int, device_type: str, sizes: Sizes, root: Path, workers: int,
                out: str) -> None:
    device = torch.device(device_type, rank) if device_type == "cuda" else torch.device("cpu")
    _join(rank, port, device)
    recipe = workload(sizes, root, workers=workers)
    trainer = Trainer(recipe, out_dir=root / "run_2_ranks",
                      train_data=CachedClips(None, recipe, "train"), device=str(device), quiet=True)
    result = trainer.run()
    if rank == 0:
        clips_per_s = result.metrics["perf/clips_per_s"]  # both ranks' clips, over rank 0's time
        Path(out).write_text(json.dumps({
            "steps_per_s": clips_per_s / (2 * recipe.training.batch_size),
            "clips_per_s": clips_per_s, "peak_memory_gb": peak_memory_gb(device)}))
    torch.distributed.destroy_process_group()


def two_processes(target: Callable, *args) -> dict:
    """Run ``target(rank, port, *args, out)`` in 2 spawned processes; rank 0's JSON output."""
    import torch.multiprocessing as mp

    with tempfile.TemporaryDirectory(prefix="device_check_") as tmp:
        out = Path(tmp) / "rank0.json"
        mp.spawn(target, args=(free_port(), *args, str(out)), nprocs=2, join=True)
        return json.loads(out.read_text())


def two_ranks_skip(device: torch.device) -> str | None:
    """Why the 2-process parts cannot run here (None when they can)."""
    if device.type == "cuda" and torch.cuda.device_count() < 2:
        return f"needs 2 GPUs; this machine has {torch.cuda.device_count()}"
    if device.type == "cuda" and not torch.distributed.is_nccl_available():
        return "this PyTorch has no NCCL"
    return None


# -- the run --------------------------------------------------------------------------------------


class Run:
    """The measurements of one run, each in its own ``try``; a part that would start after
    the run's budget is skipped with that reason."""

    def __init__(self, *, budget: float):
        self.results: list[Result] = []
        self.budget, self.started = budget, time.perf_counter()

    def measure(self, name: str, what: str, fn: Callable[[], dict], *,
                skip: str | None = None) -> Result:
        result = Result(name=name, what=what)
        elapsed = time.perf_counter() - self.started
        if skip is None and elapsed > self.budget:
            skip = f"out of time: {elapsed:.0f} s of the {self.budget:.0f} s budget used"
        if skip is not None:
            result.skipped = skip
        else:
            began = time.perf_counter()
            try:
                result.values = {k: float(v) for k, v in fn().items()}
            except Exception as exc:  # one failure is reported; the rest still run
                result.error = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
                traceback.print_exc()
            result.seconds = time.perf_counter() - began
            gc.collect()  # the part's models go, and on a GPU their cached memory too
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        self.results.append(result)
        state = "skipped" if result.skipped else "FAILED" if result.error else "done"
        print(f"[{time.perf_counter() - self.started:6.1f} s] {name}: {state} "
              f"({result.seconds:.1f} s)", flush=True)
        return result


def markdown(env: dict, results: list[Result]) -> str:
    lines = [f"device: {env.get('device_name', env['device'])}; torch {env['torch']}, CUDA "
             f"{env['cuda']}, cuDNN {env['cudnn']}, TF32 {'on' if env.get('tf32') else 'off'}; "
             f"{env['gpus']} GPU(s), {env['cpus']} CPUs; {env['date']}", "",
             "| measurement | what | figure | value |", "|---|---|---|---|"]
    for r in results:
        if r.values:
            for key, value in r.values.items():
                lines.append(f"| {r.name} | {r.what} | {key} | {value:.4g} |")
        else:
            reason = f"skipped: {r.skipped}" if r.skipped else f"failed: {r.error}"
            lines.append(f"| {r.name} | {r.what} | | {reason.replace('|', '/')} |")
    return "\n".join(lines) + "\n"


def run_all(sizes: Sizes, root: Path, device: torch.device, workers: int) -> list[Result]:
    run = Run(budget=sizes.budget)
    recipe = workload(sizes, root, workers=workers)
    scale = f"{sizes.recipe.stem}, {sizes.seconds:g} s clips"
    cache = run.measure("cache", f"feature cache of {sizes.clips} generated clips ({scale})",
                        lambda: make_cache(recipe, sizes, root, device, workers))
    no_cache = "no feature cache (the cache part failed)" if cache.error else None
    run.measure("train", f"training steps, bf16, batch {sizes.batch_size} ({scale})",
                lambda: measure_train(recipe, root, device), skip=no_cache)
    shutil.rmtree(root / "run", ignore_errors=True)  # its checkpoint: 16 bytes a parameter
    run.measure("generate", f"one clip, B = {sizes.candidates}, guidance, bf16 ({scale})",
                lambda: measure_generate(recipe, sizes, root, device), skip=no_cache)
    run.measure("codec", f"{recipe.choice('codec').plugin} encode and decode of {sizes.seconds:g} s",
                lambda: measure_codec(recipe, sizes, device))
    for stream in ("clip", "s3d"):
        run.measure(stream, f"visual encoder, {sizes.frames} frames a call",
                    lambda s=stream: measure_encoder(recipe, s, sizes, device))
    skip = two_ranks_skip(device)
    backend = "NCCL" if device.type == "cuda" else "gloo"
    run.measure("all_reduce_2_ranks",
                f"2-process {backend} all-reduce of {sizes.all_reduce_floats * 4 / 2**20:g} MiB",
                lambda: two_processes(_all_reduce_rank, device.type, sizes),
                skip=skip)
    run.measure("train_2_ranks", f"2-process training steps (DDP), batch {sizes.batch_size} each",
                lambda: two_processes(_train_rank, device.type, sizes, root, workers),
                skip=skip or no_cache)
    return run.results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, on the CPU, < 2 min")
    parser.add_argument("--out", type=Path, help="folder for device_check.json and .md "
                        "(default: a new temporary folder)")
    parser.add_argument("--device", help="cuda, cuda:N or cpu (default: cuda when there is one; "
                        "the CPU with --quick)")
    parser.add_argument("--workers", type=int, default=None,
                        help="data processes (default: 4, or 0 with --quick)")
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() and not args.quick
                                          else "cpu"))
    workers = args.workers if args.workers is not None else (0 if args.quick else 4)
    out = args.out or Path(tempfile.mkdtemp(prefix="device_check_"))
    out.mkdir(parents=True, exist_ok=True)
    allow_tf32(device)  # as the trainer and VideoToAudio do; reported in the environment
    env = environment(device)
    print(json.dumps(env), flush=True)
    with tempfile.TemporaryDirectory(prefix="device_check_work_") as tmp:
        results = run_all(sizes, Path(tmp), device, workers)
    report = {"mode": "quick" if args.quick else "full", "environment": env,
              "measurements": [asdict(r) for r in results]}
    (out / "device_check.json").write_text(json.dumps(report, indent=2) + "\n")
    table = markdown(env, results)
    (out / "device_check.md").write_text(table)
    print(table)
    print(f"written: {out / 'device_check.json'} and {out / 'device_check.md'}")


if __name__ == "__main__":
    main()
