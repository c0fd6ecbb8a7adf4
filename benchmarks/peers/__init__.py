"""Peer models that ``benchmarks/bench_generate.py --peer NAME`` times next to v2a's sampler.

Each peer is a module of this package with:

* ``INSTALL``: one sentence saying how to install the peer's package;
* ``import_package()``: imports the peer's package, raising ``ImportError`` when it is missing;
* ``run(work, result, *, seed)``: times the peer on the token shape of ``work`` (a
  ``bench_generate.Workload``) and returns its figures, the ratio to v2a's per-row-forward time
  in ``result`` (``bench_generate.run``'s figures) included;
* ``report(figures)``: the figures as markdown, ready for docs/performance.md.

Peers are optional installs: nothing in ``v2a/`` imports them.
"""

from __future__ import annotations

import importlib
import sys
from types import ModuleType

PEERS = ("soundstorm",)


def load_or_exit(name: str) -> ModuleType:
    """The peer module ``name`` with its package imported; when the package is not installed,
    print the peer's one-sentence install hint to stderr and exit with status 2."""
    if name not in PEERS:
        raise ValueError(f"unknown peer {name!r}; known: {', '.join(PEERS)}")
    module = importlib.import_module(f"{__name__}.{name}")
    try:
        module.import_package()
    except ImportError as error:
        print(f"{module.INSTALL} ({error})", file=sys.stderr)
        raise SystemExit(2) from None
    return module
