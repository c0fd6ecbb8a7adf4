"""``v2a download RECIPE [key=value ...] [--check]``: fetch, ahead of time, every weights file a
recipe and its evaluation need, or (``--check``) tell offline what is missing.

What is fetched, for every component of the recipe (nested ones included) and for the models
``v2a evaluate`` would build for the chosen metrics (``--metrics``/``--protocol``; by default
its default metrics; ``--no-evaluation`` leaves them out):

* a weights value that names a file (a path, ``file://``, ``http(s)://``, ``hf://``): through
  :mod:`v2a.weights` (:func:`~v2a.weights.cached_file` offline, :func:`~v2a.weights.resolve_file`
  to fetch, which checks a pinned ``sha256:``);
* what the plug-in declares for its config (``ComponentSpec.pretrained_files``, mostly
  ``weights: pretrained``): each file found in, or downloaded by, its library's own cache, and
  checked against the published checksum where there is one (a file that differs is removed
  from that cache, so that nothing loads it);
* ``weights: pretrained`` of a plug-in that declares nothing: said to be its library's business
  on first use, never counted as missing.

One line per file: the slot, what it is, its size, where it is or would come from, and its
checksum. The exit status is 0 when everything is there, 1 when something is missing or failed;
the last line says which, in one sentence.
"""

from __future__ import annotations

import argparse

from v2a.commands.common import add_recipe_arguments

#: What a plug-in that declares no files is told with, for ``weights: pretrained``.
LIBRARY_ONLY = "its library downloads on first use; v2a cannot prefetch it"


def run(args: argparse.Namespace) -> int:
    from v2a.commands.downloading import run_download  # deferred: torch, not for --help
    return run_download(args)


def add_command(sub, common: argparse.ArgumentParser) -> None:
    """Register ``v2a download`` on the CLI's sub-parsers."""
    p = sub.add_parser(
        "download", parents=[common], help="fetch every weights file a recipe needs",
        description="Fetch every weights file RECIPE and the models of `v2a evaluate` need, "
        "each through its library's own download and cache where it has one, and check each by "
        "its checksum where one is published or pinned. --check looks offline and downloads "
        "nothing. Exits 0 when everything is there, 1 when something is missing or failed.")
    add_recipe_arguments(p)
    p.add_argument("--check", action="store_true",
                   help="look offline: report what is missing and where it would come from")
    p.add_argument("--metrics", metavar="NAME,...",
                   help="the metrics of `v2a evaluate` whose models to fetch (default: its "
                   "default metrics)")
    p.add_argument("--protocol", help="a protocol of `v2a evaluate` whose models to fetch")
    p.add_argument("--model", action="append", default=[], metavar="PLUGIN.KEY=VALUE",
                   help="an option of a metric's model, as for `v2a evaluate` (repeatable)")
    p.add_argument("--no-evaluation", action="store_true",
                   help="leave out the models of `v2a evaluate`")
    p.set_defaults(func=run)

