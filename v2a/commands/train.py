"""``v2a train RECIPE [--resume] [--out DIR]`` (also under ``torchrun``)."""

from __future__ import annotations

import argparse

from v2a.commands.common import add_recipe_arguments
from v2a.log import warn


def run(args: argparse.Namespace) -> int:
    import torch.distributed as dist

    from v2a.recipe import load_recipe, recipe_options, require_runnable  # deferred: torch
    from v2a.resources import check_resources, estimate  # deferred: torch, not for --help
    from v2a.tasks import task_spec  # deferred: torch
    from v2a.training import run_dir_for, setup_distributed, train  # deferred: torch
    recipe = load_recipe(args.recipe, args.overrides, **recipe_options(args), check_weights=True)
    require_runnable(recipe)
    task_spec(recipe)  # training.task names a registered task (one sentence, "did you mean")
    distributed = setup_distributed(args.device)
    if distributed.main:
        shortfall = check_resources(estimate(recipe, task="train"),
                                    folder=run_dir_for(recipe, args.out).parent)
        if shortfall:
            warn(shortfall)
    try:
        result = train(recipe, out_dir=args.out, resume=args.resume, distributed=distributed)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    return 128 + result.stopped_by if result.stopped_by else 0


def add_command(sub, common: argparse.ArgumentParser) -> None:
    """Register ``v2a train`` on the CLI's sub-parsers."""
    text = "train a model (generator or reranker) from a recipe"
    p = sub.add_parser(
        "train", parents=[common], help=text,
        description="Train what RECIPE's training.task names (a training task of `v2a plugins`: "
        "the fuser and generator by default; training.task=reranker trains the reranker) on "
        "its data (data.cache from `v2a extract`, or data.manifest). Run it under "
        "`torchrun --nproc_per_node N -m v2a train ...` for several processes (DDP). SIGINT or "
        "SIGTERM saves a checkpoint and exits; --resume continues from the last one.",
    )
    add_recipe_arguments(p)
    p.add_argument("--resume", action="store_true",
                   help="continue from the last checkpoint in the output folder (a new run if none)")
    p.add_argument("--out", metavar="DIR",
                   help="output folder (default: training.out_dir/<recipe name>)")
    p.add_argument("--device", help="cpu, cuda or cuda:N (default: the GPU of the local rank if "
                   "there is one, else the CPU)")
    p.set_defaults(func=run)
