"""The checks of :class:`~v2a.interfaces.ConditionFuser`, and how the common checks run one
(:data:`PROBE`)."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from v2a.sequences import Conditioning, FeatureSequence, TextFeatures
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
    component_name,
    difference,
    outputs_of,
    shape_of,
    with_huge_padding,
)


def _fuser_example(fuser, batch, gen, *, pad_all=False):
    padded = (lambda i: True) if pad_all else (lambda i: i == 0)
    return {
        "streams": inputs.streams(fuser.stream_dims, batch, gen, padded=padded),
        "frame_rate": 50.0,
        "num_frames": 100,
    }


def _fuse(fuser, ex, when=""):
    what = f"{component_name(fuser)}.fuse"
    out = call(
        what + when, fuser.fuse, ex["streams"],
        frame_rate=ex["frame_rate"], num_frames=ex["num_frames"],
    )
    if not isinstance(out, Conditioning):
        raise ConformanceError(f"{what} returned a {type(out).__name__}, not a Conditioning")
    for part in ("aligned", "context"):
        if getattr(out, part) is not None:
            as_sequence(getattr(out, part), f"{what} (Conditioning.{part})")
    return out


def _fuser_run(fuser, ex, when=""):
    out = _fuse(fuser, ex, when)
    found = {}
    for part in ("aligned", "context"):
        if getattr(out, part) is not None:
            found.update(outputs_of(part, getattr(out, part)))
    return found


#: How the common checks run a fuser.
PROBE = Probe(_fuser_example, _fuser_run, shared=("frame_rate", "num_frames"))


def _check_aligned(
    name: str, seq: FeatureSequence, *, batch: int, dim: int, rate: float, length: int
) -> None:
    expected = [batch, length, dim]
    if not seq.values.is_floating_point() or shape_of(seq.values) != expected:
        raise ConformanceError(
            f"{name}.fuse returned aligned {seq.values.dtype} values of shape "
            f"{shape_of(seq.values)} for num_frames={length}; the ConditionFuser contract is float "
            f"[b, num_frames, dim] = {expected}"
        )
    if not math.isclose(seq.rate, rate, rel_tol=1e-6) or abs(seq.start) > 1e-6:
        raise ConformanceError(
            f"{name}.fuse returned aligned at rate {seq.rate} starting at {seq.start} s; the "
            f"ConditionFuser contract is frame_rate = {rate} starting at 0 s"
        )
    if not all_finite(seq.values, seq.mask):
        raise ConformanceError(f"{name}.fuse returned non-finite aligned values")


def _check_context(name: str, seq: FeatureSequence, *, batch: int, dim: int) -> None:
    if not seq.values.is_floating_point() or [seq.batch_size, seq.dim] != [batch, dim]:
        raise ConformanceError(
            f"{name}.fuse returned context {seq.values.dtype} values of shape "
            f"{shape_of(seq.values)}; the ConditionFuser contract is float [b, s, dim] = "
            f"[{batch}, s, {dim}]"
        )
    valid = seq.valid_mask()
    if valid.dtype != torch.bool or not bool(valid.any(dim=1).all()):
        raise ConformanceError(
            f"{name}.fuse returned a context mask of dtype {valid.dtype} with "
            f"{valid.sum(dim=1).tolist()} valid steps per row; it must be bool with at least "
            "one valid step per row"
        )
    if not all_finite(seq.values, valid):
        raise ConformanceError(f"{name}.fuse returned non-finite context values")


def check_fuser_output(factory: Factory) -> None:
    """Streams at their own rates and lengths (8 Hz, 3.125 Hz, 25 Hz; with padding) give the
    parts the flags promise: ``aligned`` finite ``[b, num_frames, dim]`` at ``frame_rate``
    starting at 0 s, ``context`` finite ``[b, s, dim]`` with at least one valid step per row.
    Tried at 50 Hz x 100 frames and at 21.5 Hz x 37 frames."""
    fuser = build(factory)
    name, b = component_name(fuser), 2
    for frame_rate, num_frames in ((50.0, 100), (21.5, 37)):
        ex = _fuser_example(fuser, b, inputs.seeded())
        out = _fuse(fuser, {**ex, "frame_rate": frame_rate, "num_frames": num_frames})
        for part in ("aligned", "context"):
            present, provided = getattr(out, part) is not None, getattr(fuser, f"provides_{part}")
            if present != provided:
                raise ConformanceError(
                    f"{name}.fuse returned {'a' if present else 'no'} Conditioning.{part}, but "
                    f"{name}.provides_{part} is {provided}"
                )
        if out.aligned is not None:
            _check_aligned(
                name, out.aligned, batch=b, dim=fuser.dim, rate=frame_rate, length=num_frames
            )
        if out.context is not None:
            _check_context(name, out.context, batch=b, dim=fuser.dim)


def check_fuser_padding(factory: Factory) -> None:
    """Padded steps of the input streams are never read: filling them with huge random values
    instead of zeros changes neither the output masks nor the outputs at valid steps."""
    fuser = build(factory)
    gen = inputs.seeded()
    ex = _fuser_example(fuser, 2, gen, pad_all=True)
    zeros = {k: inputs.fill_padding(s, 0.0) for k, s in ex["streams"].items()}
    huge = {k: with_huge_padding(s, gen) for k, s in ex["streams"].items()}
    diff = difference(
        _fuser_run(fuser, {**ex, "streams": zeros}), _fuser_run(fuser, {**ex, "streams": huge}),
        tol=CLOSE,
    )
    if diff:
        raise ConformanceError(
            f"{component_name(fuser)}.fuse reads padded steps: putting large values instead of zeros where "
            f"the stream masks are False changes its output ({diff})"
        )


# -- text (a fuser with accepts_text) ------------------------------------------------------------


def _text_widths(fuser) -> tuple[int, int]:
    """``(text_dim, text_pooled_dim)`` of a fuser that accepts text."""
    name = component_name(fuser)
    widths = getattr(fuser, "text_dim", None), getattr(fuser, "text_pooled_dim", None)
    if not all(isinstance(w, int) and w > 0 for w in widths):
        raise ConformanceError(
            f"{name}.accepts_text is True but its text_dim and text_pooled_dim are {widths}; a "
            "fuser that accepts text says the widths of the TextFeatures it reads in them")
    return widths


def _text_example(fuser, batch: int, gen: torch.Generator) -> TextFeatures:
    """Texts of 5 token steps (row ``i`` has ``5 - i % 3`` real ones) at the fuser's widths."""
    dim, pooled_dim = _text_widths(fuser)
    mask = torch.arange(5)[None] < torch.tensor([5 - i % 3 for i in range(batch)])[:, None]
    return TextFeatures.from_tensors(tokens=torch.randn(batch, 5, dim, generator=gen), mask=mask,
                                     pooled=torch.randn(batch, pooled_dim, generator=gen))


def _valid_rows(out: Conditioning, rows: list[int]) -> dict[str, Tensor]:
    """Each part's valid steps of each of ``rows``, in order (steps masked out do not count)."""
    found = {}
    for part in ("aligned", "context"):
        seq = getattr(out, part)
        if seq is not None:
            valid = seq.valid_mask()
            found.update({f"{part}[{i}]": seq.values[i][valid[i]] for i in rows})
    return found


def _fuse_text(fuser, ex, when, **text_options) -> Conditioning:
    what = f"{component_name(fuser)}.fuse"
    out = call(what + when, fuser.fuse, ex["streams"], frame_rate=ex["frame_rate"],
               num_frames=ex["num_frames"], **text_options)
    if not isinstance(out, Conditioning):
        raise ConformanceError(f"{what}{when} returned a {type(out).__name__}, not a Conditioning")
    return out


def check_fuser_text(factory: Factory) -> None:
    """A fuser with ``accepts_text``: a text changes the output; a row whose text is dropped
    (``drop_text``) is fused as without any text, up to steps masked out. Passes for a fuser
    that takes no text."""
    fuser = build(factory)
    if not getattr(fuser, "accepts_text", False):
        return
    name, b, gen = component_name(fuser), 3, inputs.seeded()
    ex, text = _fuser_example(fuser, b, gen), _text_example(fuser, b, gen)
    plain = _fuse_text(fuser, ex, "")
    with_text = _fuse_text(fuser, ex, " with a text", text=text)
    if difference(_valid_rows(plain, [0, 1, 2]), _valid_rows(with_text, [0, 1, 2]), tol=CLOSE) is None:
        raise ConformanceError(f"{name}.fuse gives the same conditioning with a text as without "
                               "one: it does not read the text")
    drop = torch.tensor([True, False, True])
    dropped = _fuse_text(fuser, ex, " with drop_text", text=text, drop_text=drop)
    diff = difference(_valid_rows(plain, [0, 2]), _valid_rows(dropped, [0, 2]), tol=CLOSE)
    if diff:
        raise ConformanceError(f"{name}.fuse fuses a row whose text is dropped (drop_text) "
                               f"otherwise than a row without text ({diff})")


def check_fuser_drop_video(factory: Factory) -> None:
    """A fuser with ``accepts_text``: the rows of ``drop_video`` do not depend on their video
    streams, and without any stream (every row's video dropped, a text alone) the fuser still
    gives the parts it provides, ``aligned`` at ``num_frames`` steps, equal to the dropped rows'.
    Passes for a fuser that takes no text."""
    fuser = build(factory)
    if not getattr(fuser, "accepts_text", False):
        return
    name, b, gen = component_name(fuser), 3, inputs.seeded()
    ex, text = _fuser_example(fuser, b, gen), _text_example(fuser, b, gen)
    other = {**ex, "streams": _fuser_example(fuser, b, gen)["streams"]}
    drop = torch.tensor([True, False, True])
    a = _fuse_text(fuser, ex, " with drop_video", text=text, drop_video=drop)
    c = _fuse_text(fuser, other, " with drop_video", text=text, drop_video=drop)
    diff = difference(_valid_rows(a, [0, 2]), _valid_rows(c, [0, 2]), tol=CLOSE)
    if diff:
        raise ConformanceError(f"{name}.fuse reads the video of a row whose video is dropped "
                               f"(drop_video): another video changes it ({diff})")
    every = torch.ones(b, dtype=torch.bool)
    alone = _fuse_text(fuser, {**ex, "streams": {}}, " without streams", text=text,
                       drop_video=every)
    if fuser.provides_aligned:
        if alone.aligned is None:
            raise ConformanceError(f"{name}.fuse gave no aligned conditioning for a text alone")
        _check_aligned(name, alone.aligned, batch=b, dim=fuser.dim, rate=ex["frame_rate"],
                       length=ex["num_frames"])
    all_dropped = _fuse_text(fuser, ex, " with drop_video", text=text, drop_video=every)
    diff = difference(_valid_rows(all_dropped, [0, 1, 2]), _valid_rows(alone, [0, 1, 2]), tol=CLOSE)
    if diff:
        raise ConformanceError(f"{name}.fuse without streams differs from the same rows with "
                               f"their video dropped ({diff})")


#: The checks of this kind, in the order they run (after the common checks).
KIND_CHECKS: list[Check] = [check_fuser_output, check_fuser_padding, check_fuser_text,
                            check_fuser_drop_video]
