"""``v2a generate --recipe R VIDEO...``: add generated sound to videos."""

from __future__ import annotations

import argparse

from v2a.commands.common import RECIPE_HELP

#: :data:`v2a.generate.editing.DEFAULT_CROSSFADE`, which ``--help`` shows without importing
#: the engine (torch); tests/test_startup.py keeps the two equal.
DEFAULT_CROSSFADE = 0.02


def run(args: argparse.Namespace) -> int:
    from v2a.commands.generating import run_generate  # deferred: torch, not for --help
    return run_generate(args)


def add_text_options(p: argparse.ArgumentParser) -> None:
    """``--prompt`` and ``--negative-prompt`` (docs/prompts.md)."""
    words = p.add_argument_group("text", "describe the sound in words; the recipe needs a "
                                 "text_encoder (docs/prompts.md)")
    words.add_argument("--prompt", metavar="TEXT",
                       help="what the sound should be, e.g. 'a dog barks twice'; for every "
                       "video given, a manifest's caption column included (without it, each "
                       "clip's caption is its prompt)")
    words.add_argument("--negative-prompt", metavar="TEXT",
                       help="what the sound should not be, e.g. 'music, speech': guidance "
                       "steers away from it (with --cfg)")


def add_command(sub, common: argparse.ArgumentParser) -> None:
    """Register ``v2a generate`` on the CLI's sub-parsers."""
    text = "add generated sound to videos"
    p = sub.add_parser(
        "generate", parents=[common], help=text,
        description="Generate the sound of each VIDEO with the model of --recipe (and the trained "
        "weights of the training run folder --checkpoint) and write <stem>.wav (at the codec's "
        "rate) and <stem>.mp4 (the video stream copied, the new audio muxed in, lasting exactly as "
        "long as the video) into the folder -o (created if needed), or <stem>.v2a.wav/.mp4 beside "
        "each video. With one VIDEO, -o may name the files instead: -o out.mp4 writes out.mp4 and "
        "out.wav, -o out.flac writes out.mp4 and out.flac. With --prompt and no VIDEO, the sound "
        "of the text alone: v2a generate --recipe R --prompt TEXT --duration 5 -o out.wav "
        "(docs/prompts.md).",
    )
    p.add_argument("--recipe", required=True, help=RECIPE_HELP)
    p.add_argument("--checkpoint", metavar="RUN",
                   help="a training run folder (fuser.safetensors, generator.safetensors); "
                   "without it the model is randomly initialised")
    p.add_argument("inputs", nargs="*", metavar="VIDEO|FOLDER|LIST.csv|key=value",
                   help="videos, folders of videos or CSV/JSONL manifests, then recipe overrides; "
                   "none with --prompt: sound from the text alone")
    p.add_argument("-o", "--output", metavar="DIR|FILE",
                   help="output folder, created if needed (default: beside each video); with one "
                   "video, a file name ending in .mp4, .wav or .flac: -o out.mp4 writes out.mp4 and "
                   "out.wav")
    add_text_options(p)
    p.add_argument("--candidates", type=int, help="candidates to rerank (default: sampling.candidates)")
    p.add_argument("--steps", help="decoding steps per RVQ level, e.g. 16,8,4 (default: sampling.steps)")
    p.add_argument("--cfg", type=float, help="classifier-free guidance scale (default: sampling.cfg_scale)")
    p.add_argument("--temperature", type=float, help="sampling temperature (default: sampling.temperature)")
    p.add_argument("--seed", type=int, help="random seed (default: sampling.seed)")
    p.add_argument("--start", type=float,
                   help="where the sound starts in the video, in seconds (default 0; a manifest's "
                   "start column gives it per clip); the mp4 is the video cut to that stretch")
    p.add_argument("--duration", type=float,
                   help="seconds to generate from --start (default: to the end of the video); "
                   "required for sound from text alone")
    p.add_argument("--device", help="cpu, cuda or cuda:N (default: cpu)")
    p.add_argument("--precision", choices=("fp32", "bf16", "fp16"),
                   help="generator precision (default: sampling.precision)")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    p.add_argument("--skip-finished", action="store_true",
                   help="leave out videos whose outputs a finished v2a run wrote (continue a "
                   "killed batch)")
    p.add_argument("--split", help="with a manifest: only its clips of this split (e.g. test)")
    p.add_argument("--root", metavar="DIR",
                   help="with a manifest: the folder its relative paths are below (default: the "
                   "manifest's folder; the recipe's data.root plays this part for extract/train)")
    editing = p.add_argument_group("editing", "keep audio and generate only part of it "
                                   "(docs/editing.md)")
    editing.add_argument("--keep-audio", action="store_true",
                         help="keep the video's own audio track, except the --regenerate stretches")
    editing.add_argument("--regenerate", metavar="START-END[,START-END]",
                         help="with --keep-audio: the stretches (seconds from --start) generated "
                         "again, e.g. 2.0-3.5,5-6")
    editing.add_argument("--audio-prompt", metavar="FILE",
                         help="an audio file kept at the start of the clip; the rest continues it")
    editing.add_argument("--crossfade", type=float, default=DEFAULT_CROSSFADE, metavar="SECONDS",
                         help="equal-power crossfade on the kept side of each seam (default "
                         f"{DEFAULT_CROSSFADE:g})")
    stage = p.add_argument_group("output stage", "what is done to the generated audio before it "
                                 "is written (docs/output.md)")
    stage.add_argument("--peak", type=float, default=-1.0, metavar="DBFS",
                       help="peak limiter ceiling in dBFS (default -1)")
    stage.add_argument("--loudness", type=float, metavar="LUFS",
                       help="normalise the integrated loudness (ITU-R BS.1770) to LUFS, e.g. -23, "
                       "before limiting (default: off; needs v2a[loudness])")
    stage.add_argument("--raw-audio", action="store_true",
                       help="write the model's output as it is: no loudness normalisation, no "
                       "limiting")
    p.add_argument("--audio-format", choices=("wav", "flac"),
                   help="the audio file written beside the mp4 (default: the suffix of -o FILE "
                   "when it is .wav or .flac, else wav)")
    p.set_defaults(func=run, overrides=[])
