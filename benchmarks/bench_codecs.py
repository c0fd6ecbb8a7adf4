"""Codec speed on this CPU: DAC 44.1 kHz and EnCodec 24 kHz, before and after the inference
rewrites, in fp32 and bf16, in one run.

"before" is the library's model as it loads (weight normalisation recomputed at every call,
``[b, c, l]`` convolutions, the library's Snake); "after" is the codec as v2a builds it
(weight normalisation folded, channels-last convolutions, fused Snake: see
``v2a_plugins.codecs.inference``). Each figure is seconds of audio per second of compute
("× real time", the second of two calls on the same input). bf16 casts the encoder and the
decoder (the quantiser stays fp32, as ``decode_precision: bfloat16`` runs it). SNR compares bf16's
output with fp32's: the decoder on the same codes, and the round trip (encode then decode).
Every codec is the published architecture with random weights (no download).

    python benchmarks/bench_codecs.py            # the full run, ~3 min on 2 cores
    python benchmarks/bench_codecs.py --quick    # small models, 0.25 s of audio (a test runs it)
    python benchmarks/bench_codecs.py --only dac --steps    # DAC: each rewrite added in turn
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path

import torch

from v2a.registry import default_registry
from v2a_plugins.codecs.dac import load_dac
from v2a_plugins.codecs.encodec import load_encodec
from v2a_plugins.codecs.inference import remove_weight_norms, use_channels_last_convs
from v2a_plugins.codecs.precision import DTYPES, snr_db

from v2a.machine import cpu_model

#: (label, plug-in, options, the loader of the library's own model)
CODECS = [
    ("dac 44khz 9x1024", "dac", {"model": "44khz", "weights": "none"}, load_dac),
    ("encodec 24khz 6kbps", "encodec", {"model": "24khz", "weights": "none"}, load_encodec),
]
#: --quick: the same code paths on a small DAC
QUICK_OPTIONS = {"dac": {"encoder_dim": 8, "decoder_dim": 32, "codebook_size": 256}}
#: --steps: the rewrites one at a time, between "before" and "after" (fused Snake is the last)
STEPS = {"folded": (remove_weight_norms,), "folded + channels-last": (remove_weight_norms, use_channels_last_convs)}


def timed(fn: Callable[[], object]) -> tuple[float, object]:
    """Wall time of the second of two calls of ``fn`` (the first builds kernels), and its result."""
    fn()
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def build(name: str, options: dict, loader, variant: str):
    """The codec as v2a builds it ("after"), or with the library's model put back ("before"),
    or with the library's model and only the rewrites of ``STEPS[variant]``."""
    registry = default_registry()
    config = registry.config_for("codec", name, {**options, "encode_precision": "float32",
                                                 "decode_precision": "float32"})
    codec = registry.build("codec", name, config)
    if variant != "after":
        codec.model = loader(config).eval()
        for rewrite in STEPS.get(variant, ()):
            rewrite(codec.model)
        codec.model.requires_grad_(False)
    return codec


def measure(codec, wav: torch.Tensor, dtype: torch.dtype) -> dict:
    codec.model.encoder.to(dtype)
    codec.model.decoder.to(dtype)
    n, seconds = wav.shape[-1], wav.shape[-1] / codec.sample_rate
    with torch.inference_mode():
        enc_s, codes = timed(lambda: codec.encode(wav))
        dec_s, audio = timed(lambda: codec.decode(codes, length=n))
    return {"encode_x": seconds / enc_s, "decode_x": seconds / dec_s, "codes": codes, "audio": audio}


def run_codec(label: str, name: str, options: dict, loader, seconds: float,
              variants: tuple[str, ...] = ("before", "after")) -> list[dict]:
    rows = []
    for variant in variants:
        torch.manual_seed(0)  # seeded: the same random weights in every run
        codec = build(name, options, loader, variant)
        gen = torch.Generator().manual_seed(0)
        wav = 0.1 * torch.randn(1, codec.channels, round(seconds * codec.sample_rate), generator=gen)
        fp32 = measure(codec, wav, DTYPES["float32"])
        bf16 = measure(codec, wav, DTYPES["bfloat16"])
        with torch.inference_mode():  # bf16's decoder on fp32's codes
            same_codes = codec.decode(fp32["codes"], length=wav.shape[-1])
        rows.append({
            "codec": label, "variant": variant,
            "encode_fp32": fp32["encode_x"], "encode_bf16": bf16["encode_x"],
            "decode_fp32": fp32["decode_x"], "decode_bf16": bf16["decode_x"],
            "snr_decode_db": snr_db(fp32["audio"], same_codes),
            "snr_round_trip_db": snr_db(fp32["audio"], bf16["audio"]),
        })
        print(f"<!-- {label} {variant}: done -->", flush=True)
    return rows


def markdown(rows: list[dict]) -> str:
    lines = ["| codec | model | encode fp32 | encode bf16 | decode fp32 | decode bf16 | "
             "SNR bf16 decode (dB) | SNR bf16 round trip (dB) |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(
            f"| {r['codec']} | {r['variant']} | {r['encode_fp32']:.2f} | {r['encode_bf16']:.2f} | "
            f"{r['decode_fp32']:.2f} | {r['decode_bf16']:.2f} | {r['snr_decode_db']:.1f} | "
            f"{r['snr_round_trip_db']:.1f} |")
    by = {(r["codec"], r["variant"]): r for r in rows}
    for label, *_ in CODECS:
        before, after = by.get((label, "before")), by.get((label, "after"))
        if before and after:
            best = {p: max(after[f"{p}_fp32"], after[f"{p}_bf16"]) / max(before[f"{p}_fp32"], before[f"{p}_bf16"])
                    for p in ("encode", "decode")}
            lines.append(f"\n{label}: after / before, best precision each: encode {best['encode']:.2f}×, "
                         f"decode {best['decode']:.2f}×")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=4.0, help="audio per call")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--only", nargs="*", help="plug-in names (default: dac encodec)")
    parser.add_argument("--quick", action="store_true", help="small DAC, 0.25 s of audio")
    parser.add_argument("--steps", action="store_true", help="also each rewrite on its own (DAC)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    seconds = 0.25 if args.quick else args.seconds
    load_before = os.getloadavg()
    print(f"CPU: {cpu_model()} ({platform.machine()}), {args.threads} threads, torch "
          f"{torch.__version__}, {seconds:g} s of audio per call; load average "
          f"{load_before[0]:.2f} at the start{'; --quick: a small DAC' if args.quick else ''}")
    rows = []
    for label, name, options, loader in CODECS:
        if args.only and name not in args.only:
            continue
        if default_registry().get("codec", name).status != "ok":
            print(f"<!-- {label}: skipped ({default_registry().get('codec', name).status}) -->")
            continue
        quick = QUICK_OPTIONS.get(name, {}) if args.quick else {}
        variants = ("before", *STEPS, "after") if args.steps and name == "dac" else ("before", "after")
        rows += run_codec(label, name, {**options, **quick}, loader, seconds, variants)
    print()
    print(markdown(rows))
    print(f"\nload average {os.getloadavg()[0]:.2f} at the end; figures are × real time "
          f"({Path(__file__).name}{' --quick' if args.quick else ''})")
    return rows


if __name__ == "__main__":
    main()
