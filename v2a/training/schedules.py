"""The learning-rate schedule (linear warm-up, then a cosine decay) and the exponential moving
average of the trained weights."""

from __future__ import annotations

import copy
import math

import torch
from torch import nn


def learning_rate(step: int, *, lr: float, warmup: int, total: int, lr_min: float = 0.0) -> float:
    """The learning rate of optimiser step ``step`` (0-based): linear warm-up over ``warmup``
    steps to ``lr``, then a cosine decay to ``lr_min`` at ``total``."""
    if warmup > 0 and step < warmup:
        return lr * (step + 1) / warmup
    span = max(total - warmup, 1)
    progress = min(max(step - warmup, 0) / span, 1.0)
    return lr_min + (lr - lr_min) * 0.5 * (1.0 + math.cos(math.pi * progress))


class EMA:
    """Exponential moving average of a module's trained parameters: after each optimiser step
    ``ema ← decay · ema + (1 - decay) · param``; buffers are copied. ``module`` is a copy of the
    trained module (frozen sub-modules shared, not copied) in eval mode, used for validation
    and samples."""

    def __init__(self, module: nn.Module, decay: float, shared: list[nn.Module] = ()):
        self.decay = decay
        memo = {id(m): m for m in shared}
        self.module = copy.deepcopy(module, memo).eval().requires_grad_(False)
        mine, theirs = dict(self.module.named_parameters()), dict(module.named_parameters())
        names = sorted(n for n, p in theirs.items() if p.requires_grad)
        self._pairs = ([mine[n] for n in names], [theirs[n] for n in names])
        mine, theirs = dict(self.module.named_buffers()), dict(module.named_buffers())
        self._buffers = [(mine[n], theirs[n]) for n in sorted(theirs)]

    @torch.no_grad()
    def update(self) -> None:
        """Move the average towards the trained module's current weights (one step)."""
        torch._foreach_lerp_(self._pairs[0], self._pairs[1], 1.0 - self.decay)
        for own, source in self._buffers:
            own.copy_(source)
