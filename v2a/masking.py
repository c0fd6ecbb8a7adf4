"""Mask schedules and training masks for masked token generation (MaskGIT on RVQ codes).

The MaskGIT cosine schedule gives the share of positions still hidden after a fraction ``u``
of the decoding is done: ``r = cos(π/2 · u)`` (all hidden at ``u = 0``, none at ``u = 1``).
Training draws ``u ~ U(0, 1)`` per example and hides that share; sampling
(:mod:`v2a.sampler`) walks ``u`` from 0 to 1 in a fixed number of steps.

Codes are ``[b, k, l]`` (``k`` RVQ levels, coarse first), and so are masks: ``True`` = hidden.
Two RVQ level policies (a recipe field, ``level_policy``):

* ``"per_level"`` (SoundStorm / VampNet): per example pick a level ``q`` uniformly; levels
  ``< q`` are visible, a cosine-scheduled share of level ``q``'s frames is hidden (at least
  one), levels ``> q`` are fully hidden. The loss is on the hidden positions of level ``q`` only,
  which is what the level-by-level sampler asks of the model.
* ``"joint"``: hide a cosine-scheduled share of whole frames (all ``k`` levels of a frame
  together, at least one frame); the loss is on every hidden position.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

LevelPolicy = Literal["per_level", "joint"]
LEVEL_POLICIES: tuple[str, ...] = ("per_level", "joint")


# -- schedule -----------------------------------------------------------------------------------


def cosine_schedule(u: Tensor | float) -> Tensor:
    """MaskGIT's mask ratio ``cos(π/2 · u)`` for progress ``u`` in ``[0, 1]``."""
    return torch.cos(0.5 * math.pi * torch.as_tensor(u, dtype=torch.float64))


def masked_counts(total: Tensor, steps: int) -> Tensor:
    """How many of ``total`` positions are still hidden after each of ``steps`` decoding steps.

    ``total: [n]`` int → ``[steps, n]`` int64: ``floor(total · cos(π/2 · (s + 1) / steps))``,
    made strictly decreasing while positions remain (every step decodes at least one) and 0
    after the last step.
    """
    total = torch.as_tensor(total, dtype=torch.int64)
    u = torch.arange(1, steps + 1, dtype=torch.float64) / steps  # [steps]
    counts = (total.unsqueeze(0).double() * cosine_schedule(u).unsqueeze(1)).floor().long()
    previous = total.clone()
    for s in range(steps):  # at least one decoded per step, never below 0
        counts[s] = counts[s].minimum((previous - 1).clamp(min=0))
        previous = counts[s]
    counts[-1] = 0
    return counts


# -- training masks -----------------------------------------------------------------------------


@dataclass
class TrainingMask:
    """``input``: ``[b, k, l]`` bool, what the generator sees as hidden; ``loss``: ``[b, k, l]``
    bool, where the cross-entropy is taken (a subset of ``input``); ``level``: ``[b]`` int64, the
    level the loss is on (``per_level``) or ``-1`` (``joint``); ``ratio``: ``[b]`` float, the
    drawn mask ratio."""

    input: Tensor
    loss: Tensor
    level: Tensor
    ratio: Tensor


def _hide_share(ratio: Tensor, valid: Tensor, generator: torch.Generator | None) -> Tensor:
    """``[b, l]`` bool: per row, ``max(1, floor(ratio · n_valid))`` valid positions at random."""
    b, l = valid.shape
    n_valid = valid.sum(dim=1)  # [b]
    count = (ratio * n_valid).floor().long().clamp(min=1).minimum(n_valid)  # [b]
    scores = torch.rand(b, l, generator=generator, device=valid.device)
    scores = scores.masked_fill(~valid, 2.0)  # padding sorts last, never hidden
    rank = scores.argsort(dim=1, stable=True).argsort(dim=1, stable=True)  # [b, l]
    return rank < count.unsqueeze(1)


def training_mask(
    codes: Tensor,
    policy: LevelPolicy = "per_level",
    generator: torch.Generator | None = None,
    *,
    valid: Tensor | None = None,
) -> TrainingMask:
    """Draw the training mask for ``codes: [b, k, l]`` under an RVQ level ``policy``.

    ``valid: [b, l]`` bool marks real frames of a padded batch (default: all); padded frames are
    never hidden and never in the loss. Randomness comes from ``generator`` only (on the
    device of ``codes``), so a seeded generator reproduces the mask.
    """
    if policy not in LEVEL_POLICIES:
        choices = ", ".join(LEVEL_POLICIES)
        raise ValueError(f"unknown level policy {policy!r}; choose one of {choices}")
    b, k, l = codes.shape
    device = codes.device
    if valid is None:
        valid = torch.ones(b, l, dtype=torch.bool, device=device)
    u = torch.rand(b, generator=generator, device=device, dtype=torch.float64)
    ratio = cosine_schedule(u).to(device)  # [b]
    hidden = _hide_share(ratio, valid, generator)  # [b, l]
    levels = torch.arange(k, device=device).view(1, k, 1)
    if policy == "joint":
        mask = hidden.unsqueeze(1).expand(b, k, l).clone()
        none = torch.full((b,), -1, device=device)
        return TrainingMask(input=mask, loss=mask.clone(), level=none, ratio=ratio.float())
    level = torch.randint(0, k, (b,), generator=generator, device=device)  # [b]
    at = level.view(b, 1, 1)
    loss = (levels == at) & hidden.unsqueeze(1)  # the hidden share of level q
    above = (levels > at) & valid.unsqueeze(1)  # every real frame of finer levels
    return TrainingMask(input=loss | above, loss=loss, level=level, ratio=ratio.float())
