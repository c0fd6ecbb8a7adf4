"""The checks of :class:`~v2a.interfaces.MaskedGenerator`, and how the common checks run one
(:data:`PROBE`)."""

from __future__ import annotations

import torch
from torch import Tensor

from v2a.sequences import Conditioning
from v2a.testing import inputs
from v2a.testing.checks.support import (
    CLOSE,
    Check,
    ConformanceError,
    Factory,
    Probe,
    all_finite,
    as_tensor,
    build,
    call,
    component_name,
    difference,
    shape_of,
    with_huge_padding,
)


def _condition(generator, batch, length, gen) -> Conditioning:
    """Conditioning for ``generator``: what it uses, ``aligned`` with ``length`` steps at 50 Hz
    and a ``context`` of 7 steps at 8 Hz with a padding mask."""
    dim = generator.condition_dim
    aligned = context = None
    if generator.uses_aligned:
        aligned = inputs.features(batch, length, dim, 50.0, gen)
    if generator.uses_context:
        context = inputs.features(batch, 7, dim, 8.0, gen, padded=True)
    return Conditioning(aligned=aligned, context=context)


def _generator_example(generator, batch, gen):
    l = 12
    codes = inputs.codes(batch, generator.n_codebooks, l, generator.codebook_size, gen)
    return {
        "codes": codes,
        "mask": torch.rand(codes.shape, generator=gen) < 0.5,
        "condition": _condition(generator, batch, l, gen),
    }


def _generator_call(generator, ex, when="", **changes):
    ex = {**ex, **changes}
    what = f"{component_name(generator)}.forward"
    drop = ex.get("drop")
    logits = call(what + when, generator, ex["codes"], ex["mask"], ex["condition"], drop=drop)
    return as_tensor(logits, what)


def _logits_difference(expected: Tensor, actual: Tensor) -> str | None:
    """How the ``actual`` logits differ from the ``expected`` ones (beyond :data:`CLOSE`), or
    ``None``."""
    return difference({"logits": expected}, {"logits": actual}, tol=CLOSE)


def _generator_run(generator, ex, when=""):
    return {"logits": _generator_call(generator, ex, when)}


#: How the common checks run a generator.
PROBE = Probe(_generator_example, _generator_run)


def check_generator_output(factory: Factory) -> None:
    """Codes ``[b, k, l]`` with a mask and conditioning give finite float logits ``[b, k, l,
    codebook_size]``; with ``return_hidden=True`` also hidden states ``[b, l, hidden_dim]``; with
    ``level=j``, ``predict`` gives exactly ``logits[:, j:j + 1]``."""
    generator = build(factory)
    name = component_name(generator)
    ex = _generator_example(generator, 2, inputs.seeded())
    b, k, l = ex["codes"].shape
    expected = [b, k, l, generator.codebook_size]
    logits = _generator_call(generator, ex)
    if not logits.is_floating_point() or shape_of(logits) != expected:
        raise ConformanceError(
            f"{name} returned {logits.dtype} logits of shape {shape_of(logits)} for codes of shape "
            f"{[b, k, l]}; the MaskedGenerator contract is float [b, k, l, codebook_size] = "
            f"{expected}"
        )
    if not all_finite(logits):
        raise ConformanceError(f"{name} returned non-finite logits")
    out = call(f"{name}.forward with return_hidden=True", generator, ex["codes"], ex["mask"],
                ex["condition"], return_hidden=True)
    if not (isinstance(out, tuple) and len(out) == 2):
        raise ConformanceError(
            f"{name}.forward(..., return_hidden=True) returned {type(out).__name__}; the contract "
            "is a (logits, hidden) pair"
        )
    hidden = as_tensor(out[1], f"{name} hidden states")
    if shape_of(hidden) != [b, l, generator.hidden_dim] or not hidden.is_floating_point():
        raise ConformanceError(
            f"{name} returned hidden states of shape {shape_of(hidden)}; the MaskedGenerator "
            f"contract is float [b, l, hidden_dim] = {[b, l, generator.hidden_dim]}"
        )
    diff = _logits_difference(logits, as_tensor(out[0], name))
    if diff:
        raise ConformanceError(f"{name} returns other logits with return_hidden=True ({diff})")
    prepared = call(f"{name}.prepare", generator.prepare, ex["condition"])
    for level in (0, k - 1):
        one = as_tensor(call(f"{name}.predict with level={level}", generator.predict, ex["codes"],
                            ex["mask"], prepared, level=level), f"{name}.predict")
        diff = _logits_difference(logits[:, level:level + 1], one)
        if shape_of(one) != [b, 1, l, generator.codebook_size] or diff:
            raise ConformanceError(
                f"{name}.predict(..., level={level}) returned {shape_of(one)} logits that are not "
                f"logits[:, {level}:{level + 1}] of the full prediction ({diff or 'shape'})"
            )


def check_generator_masked_codes(factory: Factory) -> None:
    """Code values where ``mask`` is True are never read: changing them leaves the logits as
    they were."""
    generator = build(factory)
    if generator.codebook_size < 2:
        return
    gen = inputs.seeded()
    ex = _generator_example(generator, 2, gen)
    codes, mask = ex["codes"], ex["mask"]
    shift = torch.randint(1, generator.codebook_size, codes.shape, generator=gen)
    changed = torch.where(mask, (codes + shift) % generator.codebook_size, codes)
    diff = _logits_difference(
        _generator_call(generator, ex), _generator_call(generator, ex, codes=changed)
    )
    if diff:
        raise ConformanceError(
            f"{component_name(generator)} reads masked codes: changing the codes where mask is True changes "
            f"the logits ({diff})"
        )


def check_generator_drop(factory: Factory) -> None:
    """``drop`` replaces the conditioning of its True rows by the unconditional one: with
    ``drop=ones`` the logits do not depend on the conditioning at all, and ``drop=[True, False]``
    gives row 0 the unconditional logits and row 1 the conditional ones."""
    generator = build(factory)
    name = component_name(generator)
    gen = inputs.seeded()
    ex = _generator_example(generator, 2, gen)
    other = _condition(generator, 2, ex["codes"].shape[-1], gen)
    ones = torch.ones(2, dtype=torch.bool)
    unconditional = _generator_call(generator, ex, " with drop", drop=ones)
    again = _generator_call(generator, ex, " with drop", drop=ones, condition=other)
    diff = _logits_difference(unconditional, again)
    if diff:
        raise ConformanceError(
            f"{name} with drop=torch.ones(b, dtype=torch.bool) still depends on the conditioning: "
            f"two different conditionings give different logits ({diff})"
        )
    conditional = _generator_call(generator, ex)
    mixed = _generator_call(generator, ex, " with drop", drop=torch.tensor([True, False]))
    expected = torch.cat([unconditional[:1], conditional[1:]])
    diff = _logits_difference(expected, mixed)
    if diff:
        raise ConformanceError(
            f"{name} with drop=[True, False] does not give row 0 the unconditional logits and row "
            f"1 the conditional ones ({diff})"
        )


def check_generator_prepared(factory: Factory) -> None:
    """``prepare`` returns a Conditioning with one row per input row, which ``predict`` reads
    as it is: selecting (or repeating) rows of the prepared conditioning, as a sampler does for
    candidates, gives the logits of ``forward`` on the same rows."""
    generator = build(factory)
    name = component_name(generator)
    ex = _generator_example(generator, 2, inputs.seeded())
    drop = torch.tensor([False, True])
    prepared = call(f"{name}.prepare", generator.prepare, ex["condition"], drop=drop)
    if not isinstance(prepared, Conditioning) or prepared.batch_size != 2:
        raise ConformanceError(
            f"{name}.prepare returned {type(prepared).__name__}; the contract is a Conditioning "
            "with one row per input row"
        )
    order = torch.tensor([1, 0, 1])
    codes, mask = ex["codes"][order], ex["mask"][order]
    picked = as_tensor(call(f"{name}.predict", generator.predict, codes, mask, prepared.index_select(order)),
                     f"{name}.predict")
    direct = _generator_call(generator, ex, " with drop", drop=drop)[order]
    diff = _logits_difference(direct, picked)
    if diff:
        raise ConformanceError(
            f"{name}.predict on rows selected from a prepared conditioning does not give the "
            f"logits of forward on those rows; state outside the Conditioning? ({diff})"
        )


def check_generator_context_padding(factory: Factory) -> None:
    """Padded steps of ``Conditioning.context`` are never read: filling them with huge values
    instead of zeros leaves the logits unchanged. Passes when the generator uses no context."""
    generator = build(factory)
    if not generator.uses_context:
        return
    gen = inputs.seeded()
    ex = _generator_example(generator, 2, gen)
    condition, context = ex["condition"], ex["condition"].context
    runs = [
        _generator_call(generator, ex, condition=Conditioning(aligned=condition.aligned, context=filled))
        for filled in (inputs.fill_padding(context, 0.0), with_huge_padding(context, gen))
    ]
    diff = _logits_difference(runs[0], runs[1])
    if diff:
        raise ConformanceError(
            f"{component_name(generator)} reads padded context steps: putting large values instead of zeros "
            f"where the context mask is False changes the logits ({diff})"
        )


#: The checks of this kind, in the order they run (after the common checks).
KIND_CHECKS: list[Check] = [
    check_generator_output, check_generator_masked_codes, check_generator_drop,
    check_generator_prepared, check_generator_context_padding,
]
