"""``v2a fit RECIPE SLOT FILES... -o OUT.safetensors``: fit a component (e.g. the light codec) to audio."""

from __future__ import annotations

import argparse
from pathlib import Path

from tqdm import tqdm

from v2a.commands.common import RECIPE_HELP
from v2a.errors import UserError


def run(args: argparse.Namespace) -> int:
    from v2a.interfaces import Fittable  # deferred: torch, which `v2a fit --help` does not need
    from v2a.media import AUDIO_SUFFIXES, VIDEO_SUFFIXES, load_audio, media_files  # deferred: torch
    from v2a.recipe import is_override, load_recipe, recipe_options  # deferred: torch
    from v2a.weights import save_state  # deferred: torch
    files = [a for a in args.inputs if not is_override(a)]
    overrides = [a for a in args.inputs if is_override(a)] + list(args.overrides)
    recipe = load_recipe(args.recipe, overrides, **recipe_options(args))
    choice = recipe.choice(args.slot)
    output = Path(args.output)
    if output.suffix != ".safetensors":
        raise UserError(f"the output {output} must end in .safetensors")
    if output.exists() and not args.overwrite:
        raise UserError(f"{output} exists; pass --overwrite to replace it")
    paths = media_files(files, AUDIO_SUFFIXES + VIDEO_SUFFIXES)
    if not paths:
        raise UserError("no audio or video files were given to fit on")
    component = recipe.build(args.slot)
    if not isinstance(component, Fittable):
        raise UserError(f"{args.slot} ({choice.plugin}) has no fit method; it cannot be fitted to data")
    wavs = (
        load_audio(p, sample_rate=component.sample_rate)
        for p in tqdm(paths, desc=f"fitting {choice.plugin}", unit="file")
    )
    stats = component.fit(wavs)
    save_state(component.state_dict(), output, metadata={"plugin": choice.plugin, "slot": args.slot})
    for key, value in (stats or {}).items():
        print(f"{key}: {value:.6g}" if isinstance(value, float) else f"{key}: {value}")
    print(f"wrote {output}; use it with {args.slot}.weights={output}")
    return 0


def add_command(sub, common: argparse.ArgumentParser) -> None:
    """Register ``v2a fit`` on the CLI's sub-parsers."""
    p = sub.add_parser(
        "fit", parents=[common], help="fit a component (e.g. a light codec) to your own audio",
        description="Fit the component in SLOT of RECIPE to audio or video files (or folders) "
        "and save its weights as safetensors.",
    )
    p.add_argument("recipe", help=RECIPE_HELP)
    p.add_argument("slot", help="the component slot, e.g. codec")
    p.add_argument("inputs", nargs="+", metavar="FILE|FOLDER|key=value",
                   help="media files or folders to fit on, and recipe overrides")
    p.add_argument("-o", "--output", required=True, help="the .safetensors file to write")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")
    p.set_defaults(func=run, overrides=[])  # overrides after the options land here
