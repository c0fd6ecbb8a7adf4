"""``v2a extract RECIPE``: the recipe's codec and encoders over a manifest, into a feature cache
(on many GPUs through ``torchrun --nproc_per_node N -m v2a extract RECIPE``); ``v2a extract
--status CACHE_DIR``: how far a cache's extraction is."""

from __future__ import annotations

import argparse
import json

from v2a.commands.common import RECIPE_HELP
from v2a.errors import RecipeError, UserError

#: :data:`v2a.cache.DEFAULT_SHARD_SIZE` and the names of :data:`v2a.cache.DTYPES`, which
#: ``--help`` shows without importing the cache (torch); tests/test_startup.py keeps them equal.
DEFAULT_SHARD_SIZE = 256
DTYPE_NAMES = ("float16", "float32")


def run(args: argparse.Namespace) -> int:
    if args.status is not None:
        return show_status(args)
    if args.recipe is None:
        raise RecipeError("v2a extract needs a RECIPE (a recipe file or the name of a built-in "
                          "recipe), or --status CACHE_DIR to see how far a cache is")
    if args.json:
        raise RecipeError("--json goes with --status CACHE_DIR")
    from v2a.cache import PEER_TIMEOUT, extract  # deferred: torch, not for --help
    from v2a.distributed import setup_distributed  # deferred: torch
    from v2a.manifests import manifest_of  # deferred: torch (v2a.recipe's config)
    from v2a.recipe import load_recipe, recipe_options, require_runnable  # deferred: torch
    recipe = load_recipe(args.recipe, args.overrides, **recipe_options(args))
    require_runnable(recipe)
    distributed = setup_distributed(args.device, backend="gloo", timeout=PEER_TIMEOUT)
    summary = extract(
        recipe, workers=args.workers, batch_size=args.batch_size, shard_size=args.shard_size,
        dtype=args.dtype, progress=not args.no_progress, verify=args.verify,
        distributed=distributed,
    )
    if not distributed.main:
        return 0  # rank 0 reports the whole cache
    print(summary.report())
    if summary.clips == 0:
        raise UserError(
            f"no clip of {manifest_of(recipe)} could be extracted (see the reasons above)"
        )
    return 0


def show_status(args: argparse.Namespace) -> int:
    """``--status CACHE_DIR [--json]``: print how far the cache's extraction is."""
    if args.recipe is not None:
        raise RecipeError(f"--status reads a cache folder alone; give it without a RECIPE "
                          f"(not {args.recipe!r})")
    from v2a.cache import cache_status  # deferred: torch (v2a.cache's shards), not for --help
    status = cache_status(args.status)
    print(json.dumps(status.as_json(), indent=1) if args.json else status.report())
    return 0


def add_command(sub, common: argparse.ArgumentParser) -> None:
    """Register ``v2a extract`` on the CLI's sub-parsers."""
    text = "precompute codes and features of a dataset into a feature cache"
    p = sub.add_parser(
        "extract", parents=[common], help=text,
        description="Run the codec, visual encoders and audio encoder of RECIPE once over the "
        "clips of data.manifest (paths relative to data.root) and write them to the feature "
        "cache data.cache, which `v2a train` reads. A killed run continues where it stopped "
        "when started again. Under `torchrun --nproc_per_node N -m v2a extract RECIPE` the "
        "ranks share the shards, one GPU each. `v2a extract --status CACHE_DIR` tells how far "
        "an extraction is, also while it runs.",
    )
    p.add_argument("recipe", nargs="?",
                   help=RECIPE_HELP + " (not with --status)")
    p.add_argument("overrides", nargs="*", metavar="key=value|~key",
                   help="recipe overrides, e.g. data.manifest=clips.csv data.cache=cache/ "
                   "(~key removes a key)")
    p.add_argument("--status", metavar="CACHE_DIR",
                   help="say how far the extraction of the cache in CACHE_DIR is (shards done, "
                   "to do and damaged, clips skipped and why, rate and time left) and exit")
    p.add_argument("--json", action="store_true", help="with --status: print it as JSON")
    p.add_argument("--workers", type=int, help="decoding processes (default data.num_workers)")
    p.add_argument("--batch-size", type=int, default=8, help="clips per forward pass (default 8)")
    p.add_argument("--shard-size", type=int,
                   help=f"clips per shard file (default {DEFAULT_SHARD_SIZE}; fixed once a "
                   "cache exists)")
    p.add_argument("--dtype", choices=DTYPE_NAMES,
                   help="feature precision in the cache (default float16; fixed once a cache "
                   "exists)")
    p.add_argument("--device",
                   help="where the models run (default cuda when available, else cpu; under "
                   "torchrun, cuda is the local rank's GPU)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--verify", action="store_true",
                   help="check the checksum of every shard (reads the whole cache) and extract "
                   "the damaged ones again; without it only their headers are checked")
    p.set_defaults(func=run)
