"""Which checks each kind of component runs: :data:`COMMON_CHECKS`, :data:`CHECKS` and
:func:`checks_for`."""

from __future__ import annotations

from v2a.interfaces import KINDS, Component
from v2a.testing.checks import (
    audio_encoder,
    codec,
    fuser,
    generator,
    reranker,
    text_encoder,
    visual_encoder,
)
from v2a.testing.checks.common import (
    check_batch_independence,
    check_declared_properties,
    check_deterministic,
    check_device_move,
    check_dtype_move,
    check_interface,
    check_state_round_trip,
)
from v2a.testing.checks.support import Check, kind_of

#: Checks every component runs, whatever its kind.
COMMON_CHECKS: list[Check] = [
    check_interface,
    check_declared_properties,
    check_state_round_trip,
    check_dtype_move,
    check_device_move,
    check_deterministic,
    check_batch_independence,
]

_KIND_CHECKS: dict[str, list[Check]] = {
    "codec": codec.KIND_CHECKS,
    "visual_encoder": visual_encoder.KIND_CHECKS,
    "audio_encoder": audio_encoder.KIND_CHECKS,
    "fuser": fuser.KIND_CHECKS,
    "generator": generator.KIND_CHECKS,
    "reranker": reranker.KIND_CHECKS,
    "text_encoder": text_encoder.KIND_CHECKS,
}

#: Every check a component of each kind runs: the common checks, then the kind's own.
CHECKS: dict[str, list[Check]] = {kind: [*COMMON_CHECKS, *_KIND_CHECKS[kind]] for kind in KINDS}


def checks_for(component: Component) -> list[Check]:
    """The checks that apply to ``component`` (only :func:`check_interface`, which then fails,
    when it implements none of the interfaces)."""
    kind = kind_of(component)
    return list(CHECKS[kind]) if kind is not None else [check_interface]
