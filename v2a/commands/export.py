"""``v2a export RUN -o DIR``: a training run folder as a model folder to share (docs/sharing.md)."""

from __future__ import annotations

import argparse

#: The names of :data:`v2a.tasks.EXPORT_DTYPES` (a mapping to torch dtypes, which
#: ``--help`` does not import; tests/test_startup.py keeps the two equal).
EXPORT_DTYPE_NAMES = ("float32", "bfloat16", "float16")


def run(args: argparse.Namespace) -> int:
    from v2a.export import export_run  # deferred: torch, which `v2a export --help` does not need
    result = export_run(args.run, args.output, scores=args.scores, licence=args.licence,
                        name=args.name, dtype=args.dtype, datasets=tuple(args.dataset),
                        force=args.force)
    size = sum(w.bytes for w in {w.name: w for w in result.weights}.values())
    print(f"wrote {result.folder}: recipe.yaml, README.md and {len(result.weights)} weights "
          f"file(s), {size / 1e6:.1f} MB; push it with v2a push {result.folder} --repo OWNER/NAME")
    return 0


def add_command(sub, common: argparse.ArgumentParser) -> None:
    """Register ``v2a export`` on the CLI's sub-parsers."""
    text = "write a training run as a model folder to share (weights, recipe, model card)"
    p = sub.add_parser(
        "export", parents=[common], help=text,
        description="Write the finished training run folder RUN as a self-contained model "
        "folder DIR: its exported weights and every local weights file its recipe names, "
        "recipe.yaml (the resolved recipe, each weights file ./FILE pinned by its sha256) and a "
        "model card README.md with the Hub's front matter. `v2a generate --recipe DIR` runs it; "
        "`v2a push DIR --repo OWNER/NAME` puts it on the Hub (docs/sharing.md).",
    )
    p.add_argument("run", metavar="RUN", help="a finished training run folder (the --out of v2a "
                   "train)")
    p.add_argument("-o", "--output", metavar="DIR", required=True,
                   help="the model folder to write (absent or empty, unless --force)")
    p.add_argument("--scores", metavar="RESULTS.json|EVAL_DIR",
                   help="the results of v2a evaluate for the card's scores (copied as "
                   "results.json)")
    p.add_argument("--licence", "--license", dest="licence", metavar="SPDX",
                   help="the weights' licence, an SPDX identifier such as MIT or Apache-2.0 "
                   "(default: other, not stated)")
    p.add_argument("--name", help="the model's name in the recipe and the card (default: the "
                   "recipe's)")
    p.add_argument("--dtype", choices=EXPORT_DTYPE_NAMES,
                   help="store the weights' floating tensors in this type (default: as the run "
                   "exported them)")
    p.add_argument("--dataset", action="append", default=[], metavar="HUB_ID",
                   help="a Hub dataset the model was trained on, for the card's front matter "
                   "(repeatable)")
    p.add_argument("--force", action="store_true", help="replace DIR when it is not empty")
    p.set_defaults(func=run)
