"""The checks of :class:`~v2a.interfaces.Reranker`, and how the common checks run one
(:data:`PROBE`)."""

from __future__ import annotations

import torch

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
)


def _reranker_example(reranker, batch, gen, n=3):
    s = reranker.sample_rate // 2
    wav = inputs.waveform(batch * n, 1, s, reranker.sample_rate, gen).reshape(batch, n, 1, s)
    loudness = 0.2 + 0.8 * torch.rand(batch, n, 1, 1, generator=gen)
    video = {
        name: inputs.features(batch, 8, dim, 8.0, gen)
        for name, dim in reranker.video_streams.items()
    }
    return {"candidates": wav * loudness, "video": video}


def _reranker_score(reranker, ex, when=""):
    what = f"{component_name(reranker)}.score"
    return as_tensor(call(what + when, reranker.score, ex["candidates"], ex["video"]), what)


def _reranker_run(reranker, ex, when=""):
    return {"scores": _reranker_score(reranker, ex, when)}


#: How the common checks run a reranker.
PROBE = Probe(_reranker_example, _reranker_run)


def check_reranker_scores(factory: Factory) -> None:
    """Candidates ``[b, n, 1, s]`` (0.5 s at ``sample_rate``) and video streams ``[b, 8, d]`` at
    8 Hz give finite float scores ``[b, n]``."""
    reranker = build(factory)
    ex = _reranker_example(reranker, 2, inputs.seeded())
    scores = _reranker_score(reranker, ex)
    b, n = ex["candidates"].shape[:2]
    if not scores.is_floating_point() or shape_of(scores) != [b, n]:
        raise ConformanceError(
            f"{component_name(reranker)}.score returned {scores.dtype} scores of shape {shape_of(scores)} for "
            f"candidates of shape {shape_of(ex['candidates'])}; the Reranker contract is float "
            f"[b, n] = [{b}, {n}]"
        )
    if not all_finite(scores):
        raise ConformanceError(f"{component_name(reranker)}.score returned non-finite scores")


def check_reranker_permutation(factory: Factory) -> None:
    """Reordering the candidates reorders the scores the same way."""
    reranker = build(factory)
    ex = _reranker_example(reranker, 2, inputs.seeded())
    order = torch.tensor([2, 0, 1])
    scores = _reranker_score(reranker, ex)
    permuted = _reranker_score(reranker, {**ex, "candidates": ex["candidates"][:, order]})
    diff = difference({"scores": scores[:, order]}, {"scores": permuted}, tol=CLOSE)
    if diff:
        raise ConformanceError(
            f"{component_name(reranker)}.score is not permutation equivariant: reordering the candidates "
            f"by {order.tolist()} does not reorder the scores the same way ({diff})"
        )


def check_reranker_select(factory: Factory) -> None:
    """``select`` returns ``[b]`` integer indices in ``[0, n)``: per video the first candidate
    with the highest score."""
    reranker = build(factory)
    name = component_name(reranker)
    ex = _reranker_example(reranker, 2, inputs.seeded())
    b, n = ex["candidates"].shape[:2]
    index = call(f"{name}.select", reranker.select, ex["candidates"], ex["video"])
    index = as_tensor(index, f"{name}.select")
    if index.is_floating_point() or index.dtype == torch.bool or shape_of(index) != [b]:
        raise ConformanceError(
            f"{name}.select returned a {index.dtype} tensor of shape {shape_of(index)}; the Reranker "
            f"contract is integer indices [b] = [{b}]"
        )
    if bool((index < 0).any() or (index >= n).any()):
        raise ConformanceError(
            f"{name}.select returned {index.tolist()}; indices must lie in [0, {n})"
        )
    scores = _reranker_score(reranker, ex).cpu()
    best = scores >= scores.max(dim=1, keepdim=True).values
    expected = best.int().argmax(dim=1)  # the first maximum
    if not torch.equal(index.cpu().long(), expected):
        raise ConformanceError(
            f"{name}.select returned {index.tolist()}, but the first best-scoring candidates are "
            f"{expected.tolist()} (scores {scores.tolist()})"
        )


#: The checks of this kind, in the order they run (after the common checks).
KIND_CHECKS: list[Check] = [check_reranker_scores, check_reranker_permutation, check_reranker_select]
