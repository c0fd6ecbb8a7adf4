"""The conformance checks: one function per contract of :mod:`v2a.interfaces`.

Each check is ``check_<what>(factory) -> None``. It builds what it needs from ``factory`` (a
zero-argument callable returning a fresh component), runs the component on small seeded inputs
in ``eval()`` mode under :func:`torch.inference_mode`, and raises :class:`ConformanceError` with
one sentence naming the broken contract and the observed values.

Modules: :mod:`~v2a.testing.checks.support` (the error, tolerances and helpers every check
uses, and :class:`~v2a.testing.checks.support.Probe`), one module per kind with its checks and
its probe (:mod:`~v2a.testing.checks.codec`, ``visual_encoder``, ``audio_encoder``, ``fuser``,
``generator``, ``reranker``, ``text_encoder``), :mod:`~v2a.testing.checks.common` (the
checks every component runs) and :mod:`~v2a.testing.checks.tables` (:data:`COMMON_CHECKS`, :data:`CHECKS`,
:func:`checks_for`). Every name is importable from here.
"""

from __future__ import annotations

from v2a.testing.checks.audio_encoder import check_audio_encoder_output
from v2a.testing.checks.codec import (
    check_codec_decode,
    check_codec_encode,
    check_codec_latents,
    check_codec_rates,
)
from v2a.testing.checks.common import (
    ATTRIBUTES,
    PROBES,
    check_batch_independence,
    check_declared_properties,
    check_deterministic,
    check_device_move,
    check_dtype_move,
    check_interface,
    check_state_round_trip,
)
from v2a.testing.checks.fuser import check_fuser_output, check_fuser_padding
from v2a.testing.checks.generator import (
    check_generator_context_padding,
    check_generator_drop,
    check_generator_masked_codes,
    check_generator_output,
    check_generator_prepared,
)
from v2a.testing.checks.reranker import (
    check_reranker_permutation,
    check_reranker_scores,
    check_reranker_select,
)
from v2a.testing.checks.support import (
    CLOSE,
    CODE_FLIPS,
    HUGE,
    SAME,
    Check,
    ConformanceError,
    Factory,
    Probe,
    build,
    factory_id,
    kind_of,
)
from v2a.testing.checks.tables import CHECKS, COMMON_CHECKS, checks_for
from v2a.testing.checks.text_encoder import (
    check_text_encoder_empty,
    check_text_encoder_output,
    check_text_encoder_padding,
    check_text_encoder_truncation,
    check_text_encoder_unicode,
)
from v2a.testing.checks.visual_encoder import (
    check_visual_encoder_output,
    check_visual_encoder_times,
)

__all__ = [
    "ATTRIBUTES", "CHECKS", "CLOSE", "CODE_FLIPS", "COMMON_CHECKS", "HUGE", "PROBES", "SAME",
    "Check", "ConformanceError", "Factory", "Probe", "build", "check_audio_encoder_output",
    "check_batch_independence", "check_codec_decode", "check_codec_encode", "check_codec_latents",
    "check_codec_rates", "check_declared_properties", "check_deterministic", "check_device_move",
    "check_dtype_move", "check_fuser_output", "check_fuser_padding",
    "check_generator_context_padding", "check_generator_drop", "check_generator_masked_codes",
    "check_generator_output", "check_generator_prepared", "check_interface",
    "check_reranker_permutation", "check_reranker_scores", "check_reranker_select",
    "check_state_round_trip", "check_text_encoder_empty", "check_text_encoder_output",
    "check_text_encoder_padding", "check_text_encoder_truncation", "check_text_encoder_unicode",
    "check_visual_encoder_output", "check_visual_encoder_times",
    "checks_for", "factory_id", "kind_of",
]
