"""The order of the training data: one endless stream of clips, cut into the micro-batches of
every step and every process, and the seeds each micro-batch draws its random numbers from.

Epoch ``e`` is a permutation of the training clips drawn from ``(seed, e)``; step ``s`` takes the
next ``world_size × grad_accum × batch_size`` clips of the stream, micro-batch ``m`` of rank ``r``
the slice of "slot" ``m · world_size + r`` (``batch_size`` clips from ``slot · batch_size``). The
only data position to save is the number of clips consumed (see :mod:`v2a.training`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import numpy as np
import torch
from torch import Tensor


def derived_seed(*parts: int | str) -> int:
    """A 63-bit seed from integers and names (``derived_seed(seed, "objective", step, rank)``);
    independent streams for different parts."""
    words = [int(hashlib.sha1(p.encode()).hexdigest()[:8], 16) if isinstance(p, str) else int(p)
             for p in parts]
    state = np.random.SeedSequence([w % 2**63 for w in words]).generate_state(2, np.uint64)
    return int((int(state[0]) << 32 ^ int(state[1])) % 2**63)


class ClipOrder:
    """The endless stream of training clips: epoch ``e`` is a permutation of ``range(size)``
    seeded by ``(seed, e)``; :meth:`at` maps a stream position to a clip index."""

    def __init__(self, size: int, seed: int):
        self.size, self.seed = size, seed
        self._epoch, self._perm = -1, None

    def permutation(self, epoch: int) -> Tensor:
        if epoch != self._epoch:
            g = torch.Generator().manual_seed(derived_seed(self.seed, "data order", epoch))
            self._epoch, self._perm = epoch, torch.randperm(self.size, generator=g)
        return self._perm

    def at(self, position: int) -> int:
        epoch, i = divmod(position, self.size)
        return int(self.permutation(epoch)[i])


class MicroBatches(torch.utils.data.Sampler):
    """Batch sampler of one rank: from stream position ``start`` on, the clip indices of
    micro-batch ``m`` of every step, ``m = 0 .. grad_accum - 1``, forever (see the module
    docstring for the layout)."""

    def __init__(self, order: ClipOrder, *, start: int, batch_size: int, grad_accum: int,
                 rank: int, world_size: int):
        self.order, self.start = order, start
        self.b, self.accum, self.rank, self.world = batch_size, grad_accum, rank, world_size

    @property
    def clips_per_step(self) -> int:
        return self.b * self.accum * self.world

    def __iter__(self) -> Iterator[list[int]]:
        position = self.start
        while True:
            for m in range(self.accum):
                first = position + (m * self.world + self.rank) * self.b
                yield [self.order.at(first + j) for j in range(self.b)]
            position += self.clips_per_step
