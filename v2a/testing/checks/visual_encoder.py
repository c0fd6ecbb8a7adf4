"""The checks of :class:`~v2a.interfaces.VisualEncoder`, and how the common checks run one
(:data:`PROBE`)."""

from __future__ import annotations

import math

import torch

from v2a.testing import inputs
from v2a.testing.checks.support import (
    CLOSE,
    Check,
    ConformanceError,
    Factory,
    Probe,
    all_finite,
    as_sequence,
    build,
    call,
    check_features,
    component_name,
    difference,
    outputs_of,
)


def _visual_example(encoder, batch, gen):
    t = 16
    size = tuple(encoder.frame_size) if encoder.frame_size is not None else (32, 32)
    return {
        "frames": inputs.frames(batch, t, size, gen),
        "times": torch.arange(t, dtype=torch.float32) / encoder.fps,
    }


def _visual_run(encoder, ex, when=""):
    what = f"{component_name(encoder)}.encode"
    out = call(what + when, encoder.encode, ex["frames"], ex["times"])
    return outputs_of("encode", as_sequence(out, what))


#: How the common checks run a visual encoder.
PROBE = Probe(_visual_example, _visual_run, shared=("times",))


def check_visual_encoder_output(factory: Factory) -> None:
    """16 frames at ``fps`` (of ``frame_size``, or 32x32 when any size goes) give a finite float
    FeatureSequence ``[b, t', dim]`` at ``rate``, ``t'`` within one step of ``16 * rate / fps``."""
    encoder = build(factory)
    name = component_name(encoder)
    ex = _visual_example(encoder, 2, inputs.seeded())
    t = ex["frames"].shape[1]
    out = call(f"{name}.encode", encoder.encode, ex["frames"], ex["times"])
    out = as_sequence(out, f"{name}.encode")
    check_features(f"{name}.encode", out, interface="VisualEncoder", batch=2, dim=encoder.dim,
                    rate=encoder.rate, steps="t'")
    values = out.values
    expected = t * encoder.rate / encoder.fps
    if abs(values.shape[1] - expected) > 1:
        raise ConformanceError(
            f"{name}.encode returned {values.shape[1]} steps for {t} frames at fps {encoder.fps}, "
            f"but rate {encoder.rate} implies {expected:.2f}"
        )
    if not (all_finite(values, out.mask) and math.isfinite(out.start)):
        raise ConformanceError(f"{name}.encode returned non-finite values or start {out.start}")


def check_visual_encoder_times(factory: Factory) -> None:
    """The output's ``start`` follows the frame ``times``: shifting ``times`` by 1.5 s shifts
    ``start`` by 1.5 s and leaves the values unchanged."""
    encoder = build(factory)
    name = component_name(encoder)
    ex = _visual_example(encoder, 2, inputs.seeded())
    shift = 1.5
    base, moved = (
        as_sequence(call(f"{name}.encode", encoder.encode, ex["frames"], times), f"{name}.encode")
        for times in (ex["times"], ex["times"] + shift)
    )
    if abs((moved.start - base.start) - shift) > 1e-4:
        raise ConformanceError(
            f"{name}.encode returned start {moved.start} for times shifted by {shift} s and "
            f"{base.start} before; the start must follow the times ({base.start + shift})"
        )
    diff = difference(outputs_of("values", base), outputs_of("values", moved), tol=CLOSE)
    if diff:
        raise ConformanceError(
            f"{name}.encode values change when the times shift by {shift} s ({diff})"
        )


#: The checks of this kind, in the order they run (after the common checks).
KIND_CHECKS: list[Check] = [check_visual_encoder_output, check_visual_encoder_times]
