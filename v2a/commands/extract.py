"""``v2a extract RECIPE``: the recipe's codec and encoders over a manifest, into a feature cache."""

from __future__ import annotations

import argparse

from v2a.cache import DEFAULT_SHARD_SIZE, DTYPES, extract
from v2a.commands.common import add_recipe_arguments
from v2a.errors import UserError
from v2a.manifests import manifest_of
from v2a.recipe import load_recipe, recipe_options, require_runnable


def run(args: argparse.Namespace) -> int:
    recipe = load_recipe(args.recipe, args.overrides, **recipe_options(args))
    require_runnable(recipe)
    summary = extract(
        recipe, workers=args.workers, batch_size=args.batch_size, shard_size=args.shard_size,
        dtype=args.dtype, device=args.device, progress=not args.no_progress, verify=args.verify,
    )
    print(summary.report())
    if summary.clips == 0:
        raise UserError(
            f"no clip of {manifest_of(recipe)} could be extracted (see the reasons above)"
        )
    return 0


def add_command(sub, common: argparse.ArgumentParser) -> None:
    """Register ``v2a extract`` on the CLI's sub-parsers."""
    text = "precompute codes and features of a dataset into a feature cache"
    p = sub.add_parser(
        "extract", parents=[common], help=text,
        description="Run the codec, visual encoders and audio encoder of RECIPE once over the "
        "clips of data.manifest (paths relative to data.root) and write them to the feature "
        "cache data.cache, which `v2a train` reads. A killed run continues where it stopped "
        "when started again.",
    )
    add_recipe_arguments(p, "recipe overrides, e.g. data.manifest=clips.csv data.cache=cache/")
    p.add_argument("--workers", type=int, help="decoding processes (default data.num_workers)")
    p.add_argument("--batch-size", type=int, default=8, help="clips per forward pass (default 8)")
    p.add_argument("--shard-size", type=int,
                   help=f"clips per shard file (default {DEFAULT_SHARD_SIZE}; fixed once a "
                   "cache exists)")
    p.add_argument("--dtype", choices=tuple(DTYPES),
                   help="feature precision in the cache (default float16; fixed once a cache "
                   "exists)")
    p.add_argument("--device", help="where the models run (default cuda when available, else cpu)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--verify", action="store_true",
                   help="check the checksum of every shard (reads the whole cache) and extract "
                   "the damaged ones again; without it only their headers are checked")
    p.set_defaults(func=run)
