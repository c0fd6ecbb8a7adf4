"""The check of :class:`~v2a.interfaces.AudioEncoder`, and how the common checks run one
(:data:`PROBE`)."""

from __future__ import annotations

from v2a.testing import inputs
from v2a.testing.checks.support import (
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
    outputs_of,
)


#: Seconds of audio the common checks encode: long enough for an encoder whose steps are about a
#: second long (VGGish: 0.96 s examples) to give more than one, so the checks compare values.
PROBE_SECONDS = 2


def _audio_example(encoder, batch, gen):
    n = encoder.sample_rate * PROBE_SECONDS
    return {"wav": inputs.waveform(batch, 1, n, encoder.sample_rate, gen)}


def _audio_run(encoder, ex, when=""):
    what = f"{component_name(encoder)}.encode"
    out = as_sequence(call(what + when, encoder.encode, ex["wav"]), what)
    if out.values.shape[1] == 0:
        raise ConformanceError(f"{what} returned no steps for {PROBE_SECONDS} s of audio, so "
                               "nothing it computes can be checked")
    return outputs_of("encode", out)


#: How the common checks run an audio encoder.
PROBE = Probe(_audio_example, _audio_run)


def check_audio_encoder_output(factory: Factory) -> None:
    """One second of ``[b, 1, n]`` audio gives a finite float FeatureSequence ``[b, t, dim]`` at
    ``rate`` with ``t`` within two steps of ``n / sample_rate * rate``."""
    encoder = build(factory)
    name, sr = component_name(encoder), encoder.sample_rate
    wav = inputs.waveform(2, 1, sr, sr, inputs.seeded())
    out = as_sequence(call(f"{name}.encode", encoder.encode, wav), f"{name}.encode")
    check_features(f"{name}.encode", out, interface="AudioEncoder", batch=2, dim=encoder.dim,
                    rate=encoder.rate)
    values = out.values
    if abs(values.shape[1] - encoder.rate) > 2:
        raise ConformanceError(
            f"{name}.encode returned {values.shape[1]} steps for 1 s of audio, but rate "
            f"{encoder.rate} implies {encoder.rate:.2f}"
        )
    if not all_finite(values, out.mask):
        raise ConformanceError(f"{name}.encode returned non-finite values")


#: The checks of this kind, in the order they run (after the common checks).
KIND_CHECKS: list[Check] = [check_audio_encoder_output]
