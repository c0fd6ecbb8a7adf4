"""The web demo, ``v2a demo``: a Gradio page that gives an uploaded video generated sound
through the engine of ``v2a generate`` (docs/demo.md).

* :mod:`v2a.demo.engine`: :class:`DemoEngine`, the requests, models and generations, without
  the page (Gradio not needed);
* :mod:`v2a.demo.spectrogram`: the picture of the result (:func:`draw_spectrogram`);
* :mod:`v2a.demo.page`: the page (:func:`build_page`) and serving it (:func:`serve`); the only
  module that imports Gradio, on first use.
"""

from __future__ import annotations

from v2a.demo.engine import (
    DEFAULT_MAX_SECONDS,
    DemoEngine,
    DemoError,
    DemoOptionError,
    DemoRequest,
    DemoResult,
    PageDefaults,
    runnable_recipes,
)
from v2a.demo.page import (
    GRADIO_MISSING,
    build_page,
    host_warning,
    is_loopback,
    load_gradio,
    serve,
)
from v2a.demo.spectrogram import draw_spectrogram

__all__ = [
    "DEFAULT_MAX_SECONDS", "GRADIO_MISSING", "DemoEngine", "DemoError", "DemoOptionError",
    "DemoRequest", "DemoResult", "PageDefaults", "build_page", "draw_spectrogram",
    "host_warning", "is_loopback", "load_gradio", "runnable_recipes",
    "serve",
]
