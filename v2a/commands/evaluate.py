"""``v2a evaluate GENERATED [--reference REF] [--protocol P | --metrics a,b]``: score generated
audio."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path
from typing import Any

import yaml

from v2a.evaluate import DEFAULT_ENCODERS, EvaluationOptionError, Options
from v2a.evaluate.catalogue import CATALOGUE, PROTOCOLS
from v2a.files import write_text_atomic
from v2a.metrics.onsets import DEFAULT_TOLERANCE


def command_line(args: argparse.Namespace) -> str:
    """The command, rebuilt from its parsed options (runs again as it ran)."""
    words = ["v2a", "evaluate", args.generated]
    for option in ("reference", "videos", "events", "captions", "recipe", "checkpoint",
                   "encoders", "metrics", "protocol", "output", "tolerance", "device"):
        value = getattr(args, option)
        if value is not None:
            words += [f"--{option}", str(value)]
    words += ["--plots"] if args.plots else []
    for given in args.model:
        words += ["--model", given]
    return " ".join(shlex.quote(str(w)) for w in words + list(args.overrides))


def model_options(given: list[str]) -> dict[str, dict[str, Any]]:
    """``--model PLUGIN.KEY=VALUE`` texts → ``{plugin: {key: value}}`` (values read as YAML
    scalars, as recipe overrides are)."""
    models: dict[str, dict[str, Any]] = {}
    for text in given:
        name, sep, value = text.partition("=")
        plugin, dot, key = name.partition(".")
        if not (sep and dot and plugin and key):
            raise EvaluationOptionError(f"--model {text!r} is not PLUGIN.KEY=VALUE, e.g. "
                                        "--model panns_cnn14.weights=Cnn14_mAP=0.431.pth")
        models.setdefault(plugin, {})[key] = yaml.safe_load(value) if value else value
    return models


def run(args: argparse.Namespace) -> int:
    from v2a.evaluate import evaluate, markdown_table, results_json  # deferred: torch, not --help
    from v2a.evaluate.store import FEATURES  # deferred: torch and safetensors
    from v2a.recipe import recipe_options  # deferred: torch (v2a.recipe's config)
    output = Path(args.output) if args.output else None
    if args.plots and output is None:
        raise EvaluationOptionError("--plots writes OUT/plots/<stem>.png, so it needs -o OUT")
    if output is not None and output.exists() and not output.is_dir():
        raise EvaluationOptionError(f"the output {output} is a file; give a folder")
    encoders = [] if args.encoders.strip().lower() == "none" else list(dict.fromkeys(
        e.strip() for e in args.encoders.split(",") if e.strip()))
    metrics = None if args.metrics is None else list(dict.fromkeys(
        m.strip() for m in args.metrics.split(",") if m.strip()))
    options = Options(
        generated=Path(args.generated),
        reference=Path(args.reference) if args.reference else None,
        videos=Path(args.videos) if args.videos else None,
        events=Path(args.events) if args.events else None, recipe=args.recipe,
        captions=Path(args.captions) if args.captions else None,
        checkpoint=Path(args.checkpoint) if args.checkpoint else None,
        overrides=list(args.overrides), recipe_options=recipe_options(args),
        encoders=encoders, tolerance=args.tolerance,
        plots=output / "plots" if args.plots else None, device=args.device or "cpu",
        metrics=metrics, protocol=args.protocol,
        features=output / FEATURES if output is not None else None,
        models=model_options(args.model),
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
    text = "score generated audio, against reference audio (and videos) or on its own"
    p = sub.add_parser(
        "evaluate", parents=[common], help=text,
        description="Score the audio files of GENERATED against the files of the same name in "
        "--reference: Fréchet distances of audio-encoder frames (mel, MFCC, the recipe codec's "
        "latents), onset F1 / offset / class accuracy against ground-truth events (a `v2a synth` "
        "set), and the recipe reranker's sync score against the videos. --protocol or --metrics "
        "choose the metrics; without --reference only those that need none run (the others are "
        "listed as skipped). Prints a markdown table; -o OUT also writes OUT/results.md, "
        "OUT/results.json and the feature cache OUT/features/.",
    )
    p.add_argument("generated", metavar="GENERATED",
                   help="folder of generated audio: <stem>.wav/.flac, or <stem>.mp4")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="recipe overrides")
    p.add_argument("--reference", metavar="REF",
                   help="folder of reference audio or videos: <stem>.wav/.flac or <stem>.mp4 "
                   "(without it: reference-free metrics only)")
    p.add_argument("--videos", metavar="DIR",
                   help="the videos for the sync score (default: REF, else GENERATED)")
    p.add_argument("--protocol", metavar="|".join(PROTOCOLS),
                   help="a published set of metrics, printed as its paper's table")
    p.add_argument("--metrics", metavar="NAME,...",
                   help=f"the metrics to compute, of: {', '.join(CATALOGUE)}, fd_<audio encoder>")
    p.add_argument("--events", metavar="FILE",
                   help="ground-truth events (default: REF/events.jsonl when it exists)")
    p.add_argument("--captions", metavar="FILE",
                   help="each clip's text for the CLAP score: a CSV or TSV with a header, a name "
                   "column (name/id/file) and a text column (caption/text/prompt/label); "
                   "default: the classes of the ground-truth events")
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
    p.add_argument("--model", action="append", default=[], metavar="PLUGIN.KEY=VALUE",
                   help="an option of a metric's model, e.g. panns_cnn14.weights=FILE (repeatable); "
                   "without weights a model's metrics are skipped unless --random-weights")
    p.set_defaults(func=run)
