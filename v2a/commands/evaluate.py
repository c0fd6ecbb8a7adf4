"""``v2a evaluate GENERATED --reference REF``: score generated audio."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from v2a.evaluate import (
    DEFAULT_ENCODERS,
    EvaluationOptionError,
    Options,
    evaluate,
    markdown_table,
    results_json,
)
from v2a.files import write_text_atomic
from v2a.metrics.onsets import DEFAULT_TOLERANCE
from v2a.recipe import recipe_options


def command_line(args: argparse.Namespace) -> str:
    """The command, rebuilt from its parsed options (runs again as it ran)."""
    words = ["v2a", "evaluate", args.generated, "--reference", args.reference]
    for option in ("videos", "events", "recipe", "checkpoint", "encoders", "output", "tolerance",
                   "device"):
        value = getattr(args, option)
        if value is not None:
            words += [f"--{option}", str(value)]
    words += ["--plots"] if args.plots else []
    return " ".join(shlex.quote(str(w)) for w in words + list(args.overrides))


def run(args: argparse.Namespace) -> int:
    output = Path(args.output) if args.output else None
    if args.plots and output is None:
        raise EvaluationOptionError("--plots writes OUT/plots/<stem>.png, so it needs -o OUT")
    if output is not None and output.exists() and not output.is_dir():
        raise EvaluationOptionError(f"the output {output} is a file; give a folder")
    encoders = [] if args.encoders.strip().lower() == "none" else list(dict.fromkeys(
        e.strip() for e in args.encoders.split(",") if e.strip()))
    options = Options(
        generated=Path(args.generated), reference=Path(args.reference),
        videos=Path(args.videos) if args.videos else None,
        events=Path(args.events) if args.events else None, recipe=args.recipe,
        checkpoint=Path(args.checkpoint) if args.checkpoint else None,
        overrides=list(args.overrides), recipe_options=recipe_options(args),
        encoders=encoders, tolerance=args.tolerance,
        plots=output / "plots" if args.plots else None, device=args.device or "cpu",
    )
    results = evaluate(options, progress=True)
    table = markdown_table(results)
    print(table, end="")
    if output is not None:
        write_text_atomic(output / "results.md", table)
        write_text_atomic(output / "results.json",
                          results_json(results, command=command_line(args), options=options))
        print(f"wrote {output / 'results.md'} and {output / 'results.json'}"
              + (f" and {len(results['clips'])} plots in {options.plots}" if args.plots else ""),
              file=sys.stderr)
    return 0


def add_command(sub, common: argparse.ArgumentParser) -> None:
    """Register ``v2a evaluate`` on the CLI's sub-parsers."""
    text = "score generated audio against reference audio (and videos)"
    p = sub.add_parser(
        "evaluate", parents=[common], help=text,
        description="Score the audio files of GENERATED against the files of the same name in "
        "--reference: Fréchet distances of audio-encoder frames (mel, MFCC, the recipe codec's "
        "latents), onset F1 / offset / class accuracy against ground-truth events (a `v2a synth` "
        "set), and the recipe reranker's sync score against the videos. Prints a markdown "
        "table; -o OUT also writes OUT/results.md and OUT/results.json.",
    )
    p.add_argument("generated", metavar="GENERATED",
                   help="folder of generated audio: <stem>.wav/.flac, or <stem>.mp4")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="recipe overrides")
    p.add_argument("--reference", required=True, metavar="REF",
                   help="folder of reference audio or videos: <stem>.wav/.flac or <stem>.mp4")
    p.add_argument("--videos", metavar="DIR", help="the videos for the sync score (default: REF)")
    p.add_argument("--events", metavar="FILE",
                   help="ground-truth events (default: REF/events.jsonl when it exists)")
    p.add_argument("--recipe", help="the recipe whose codec (FDD) and reranker (sync) to use")
    p.add_argument("--checkpoint", metavar="RUN",
                   help="a training run folder of the recipe's reranker: the weights it "
                   "exported become the reranker's")
    p.add_argument("--encoders", default=DEFAULT_ENCODERS, metavar="NAME,...",
                   help=f"audio encoders for Fréchet distances (default {DEFAULT_ENCODERS}; "
                   "'none' for no distance)")
    p.add_argument("--tolerance", type=float, default=DEFAULT_TOLERANCE,
                   help=f"seconds an onset may be off and still match (default {DEFAULT_TOLERANCE:g})")
    p.add_argument("-o", "--output", metavar="OUT", help="folder for results.md and results.json")
    p.add_argument("--plots", action="store_true",
                   help="also write OUT/plots/<stem>.png: spectrograms, events and onsets")
    p.add_argument("--device", help="cpu, cuda or cuda:N for the encoders (default: cpu)")
    p.set_defaults(func=run)
