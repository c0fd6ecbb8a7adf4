"""``v2a synth --out DIR --clips N``: a synthetic audio-visual sync dataset."""

from __future__ import annotations

import argparse
from pathlib import Path


def run(args: argparse.Namespace) -> int:
    from v2a.synth import SynthError, write_synth  # deferred: numpy and PyAV, not for --help
    out = Path(args.out)
    if (out / "manifest.csv").exists() and not args.overwrite:
        raise SynthError(f"{out} already holds a synthetic dataset; add --overwrite to replace it")
    write_synth(out, args.clips, args.seed, seconds=args.seconds, fps=args.fps, size=args.size,
                sample_rate=args.sample_rate, split=args.split, silent=args.silent,
                caption_missing=args.caption_missing, caption_wrong=args.caption_wrong)
    print(f"wrote {args.clips} clips, {out / 'manifest.csv'}, {out / 'events.jsonl'} and "
          f"{out / 'captions.csv'}")
    return 0


def add_command(sub, common: argparse.ArgumentParser) -> None:
    """Register ``v2a synth`` on the CLI's sub-parsers."""
    text = "write a synthetic audio-visual sync dataset (objects whose bounces/flashes sound)"
    p = sub.add_parser("synth", parents=[common], help=text, description=text)
    p.add_argument("--out", required=True, help="the folder to write")
    p.add_argument("--clips", type=int, required=True, help="how many clips")
    p.add_argument("--seed", type=int, default=0, help="random seed (same seed, same dataset)")
    p.add_argument("--seconds", type=float, default=4.0, help="clip length (default 4)")
    p.add_argument("--fps", type=float, default=25.0, help="frame rate (default 25)")
    p.add_argument("--size", type=int, default=64, help="frame width = height in pixels (64)")
    p.add_argument("--sample-rate", type=int, default=16000, help="audio rate in Hz (16000)")
    p.add_argument("--split", default="train", help="the manifest's split column (train)")
    p.add_argument("--silent", action="store_true",
                   help="videos without their sound (to give sound to; events.jsonl keeps the truth)")
    p.add_argument("--caption-missing", type=float, default=0.0, metavar="FRACTION",
                   help="share of clips whose manifest row has no caption (default 0)")
    p.add_argument("--caption-wrong", type=float, default=0.0, metavar="FRACTION",
                   help="share of clips whose caption names objects they do not show (default 0;"
                   " captions.csv says which)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing dataset")
    p.set_defaults(func=run)
