"""``v2a push DIR --repo OWNER/NAME``: a model folder uploaded to the Hugging Face Hub."""

from __future__ import annotations

import argparse


def run(args: argparse.Namespace) -> int:
    from v2a.export.push import push_folder  # deferred: torch (the recipe it loads), not for --help
    pushed = push_folder(args.folder, args.repo, private=args.private, revision=args.revision,
                         message=args.message)
    print(f"pushed {args.folder} to {pushed.repo_id} ({pushed.revision}): commit "
          f"{pushed.commit}, {pushed.url}; generate with --recipe "
          f"hf://{pushed.repo_id}@{pushed.commit}")
    return 0


def add_command(sub, common: argparse.ArgumentParser) -> None:
    """Register ``v2a push`` on the CLI's sub-parsers."""
    text = "upload a model folder (from v2a export) to the Hugging Face Hub"
    p = sub.add_parser(
        "push", parents=[common], help=text,
        description="Check that DIR is a model folder written by `v2a export` (its recipe.yaml "
        "loads, the weights it names are in DIR with their sha256, README.md is there), then "
        "create the Hub model repository OWNER/NAME if it is new and upload DIR as one commit, "
        "with huggingface_hub's token (HF_TOKEN, or `hf auth login`). Prints the commit to pin "
        "(docs/sharing.md).",
    )
    p.add_argument("folder", metavar="DIR", help="a model folder written by v2a export")
    p.add_argument("--repo", required=True, metavar="OWNER/NAME",
                   help="the Hub model repository (created when new)")
    p.add_argument("--private", action="store_true",
                   help="create the repository private (when it is new)")
    p.add_argument("--revision", metavar="BRANCH",
                   help="the branch to commit to, created when new (default: main)")
    p.add_argument("--message", metavar="TEXT", help="the commit message")
    p.set_defaults(func=run)
