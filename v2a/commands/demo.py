"""``v2a demo [--recipe R] [--checkpoint RUN]``: a web page that gives uploaded videos sound."""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path

from v2a.log import note, warn

#: The recipe offered first without --recipe: the bundled model, which runs offline on a CPU.
DEFAULT_RECIPE = "tiny"
#: :data:`v2a.demo.DEFAULT_MAX_SECONDS`, which ``--help`` shows without importing the demo's
#: engine (torch); tests/test_startup.py keeps the two equal.
DEFAULT_MAX_SECONDS = 30.0


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt  # the server closes as on Ctrl-C, and its files are removed


@contextlib.contextmanager
def gradio_cache_in(folder: Path) -> Iterator[None]:
    """Gradio's copies of uploads and results kept below ``folder`` (``GRADIO_TEMP_DIR``, read
    when Gradio is imported) while the demo runs, unless the user's environment names a place;
    the environment as it was afterwards."""
    given = os.environ.get("GRADIO_TEMP_DIR")
    if given is None:
        os.environ["GRADIO_TEMP_DIR"] = str(folder / "gradio")
    try:
        yield
    finally:
        if given is None:
            os.environ.pop("GRADIO_TEMP_DIR", None)


def run(args: argparse.Namespace) -> int:
    from v2a.demo import DemoEngine, DemoOptionError, load_gradio, serve  # deferred: torch
    from v2a.recipe import recipe_options  # deferred: torch, which `v2a demo --help` does not need
    if not 0 < args.port < 65536:
        raise DemoOptionError(f"--port must be a port number from 1 to 65535, not {args.port}")
    with tempfile.TemporaryDirectory(prefix="v2a-demo-") as workdir, \
            gradio_cache_in(Path(workdir)):
        load_gradio()  # without Gradio, one sentence before any model is loaded
        engine = DemoEngine(workdir=Path(workdir), recipe=args.recipe,
                            checkpoint=Path(args.checkpoint) if args.checkpoint else None,
                            device=args.device or "cpu", max_seconds=args.max_seconds,
                            recipe_options=recipe_options(args))
        for text in engine.warm_up():
            warn(text)
        note(f"the demo's files are kept in {workdir} until it stops (Ctrl-C)")
        signal.signal(signal.SIGTERM, _interrupt)
        serve(engine, host=args.host, port=args.port)
    return 0


def add_command(sub, common: argparse.ArgumentParser) -> None:
    """Register ``v2a demo`` on the CLI's sub-parsers."""
    p = sub.add_parser(
        "demo", parents=[common], help="a web page that gives uploaded videos sound (v2a[demo])",
        description="Serve a web page (Gradio; install v2a[demo]) on which a video is uploaded, a "
        "recipe picked and its sampling set; it plays the video with the generated sound and the "
        "sound alone, shows the sound's spectrogram with the detected onsets and offers both "
        "files for download. One generation runs at a time; the others wait in a queue. It "
        "listens on 127.0.0.1 unless --host says otherwise; Ctrl-C (or SIGTERM) stops it and "
        "removes its files (docs/demo.md).")
    p.add_argument("--recipe", default=DEFAULT_RECIPE,
                   help="the recipe offered first (a file, or the name of a built-in recipe; "
                   f"default {DEFAULT_RECIPE}, the bundled model); the built-in recipes that can "
                   "run are offered too")
    p.add_argument("--checkpoint", metavar="RUN",
                   help="a training run folder whose weights go with --recipe (its run's "
                   "recipe)")
    p.add_argument("--host", default="127.0.0.1",
                   help="the address to listen on (default 127.0.0.1: this machine only; "
                   "0.0.0.0 for every network, behind a reverse proxy)")
    p.add_argument("--port", type=int, default=7860, help="the port to listen on (default 7860)")
    p.add_argument("--max-seconds", type=float, default=DEFAULT_MAX_SECONDS, metavar="S",
                   help=f"refuse videos longer than S seconds (default {DEFAULT_MAX_SECONDS:g})")
    p.add_argument("--device", help="cpu, cuda or cuda:N (default: cpu)")
    p.set_defaults(func=run)
