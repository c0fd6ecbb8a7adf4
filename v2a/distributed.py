"""The process group torchrun describes (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR``/``MASTER_PORT``), and the few collective operations v2a uses: ``v2a train``
(DDP: the ranks share each step's clips) and ``v2a extract`` (the ranks share a cache's shards).

Run alone (no ``WORLD_SIZE`` in the environment, or 1), :func:`setup_distributed` joins nothing
and every collective of :class:`Distributed` returns at once with this process's value.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist

from v2a.errors import UserError

#: How long a collective operation waits for the slowest rank unless a caller gives another.
DEFAULT_TIMEOUT = datetime.timedelta(minutes=30)


class DistributedError(UserError):
    """A distributed run that cannot start (no GPU where one was asked for) or whose other
    processes stopped or cannot be reached."""


@dataclass(kw_only=True)
class Distributed:
    """This process's place in the group: its rank among ``world_size`` ranks, its rank on
    this machine, and the device it computes on."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def all_sum(self, values: list[float]) -> list[float]:
        """Element-wise sum of ``values`` over the ranks (every rank gets the result)."""
        if not self.enabled:
            return list(values)
        tensor = torch.tensor(values, dtype=torch.float64, device=self.comm_device)
        dist.all_reduce(tensor)
        return tensor.tolist()

    def gather(self, obj: Any) -> list[Any]:
        """Every rank's ``obj`` (picklable), in rank order (on every rank)."""
        if not self.enabled:
            return [obj]
        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    @property
    def comm_device(self) -> torch.device:
        return self.device if dist.is_initialized() and dist.get_backend() == "nccl" else torch.device("cpu")


@contextlib.contextmanager
def peers_failing_as(sentence: str) -> Iterator[None]:
    """Turn a collective operation that fails because another rank ended or cannot be reached
    (a closed connection, a timeout) into a :class:`DistributedError`: ``sentence``, then what
    the backend said (gloo reports a closed connection as a plain RuntimeError: only the
    collective operation itself belongs in the block)."""
    try:
        yield
    except RuntimeError as exc:
        said = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        said = re.sub(r"^\[[^\]]*\]\s*", "", said).split(". ")[0]  # no "[gloo/pair.cc:561]"
        raise DistributedError(f"{sentence} ({said[:200]})") from None


def setup_distributed(device: str | None = None, *, backend: str | None = None,
                      timeout: datetime.timedelta = DEFAULT_TIMEOUT) -> Distributed:
    """Join the process group torchrun describes in the environment (none when run alone).

    ``device``: ``cpu``, ``cuda`` or ``cuda:N`` (default: the local rank's GPU when there is
    one, else the CPU); ``cuda`` means the local rank's GPU. ``backend``: ``nccl`` or ``gloo``
    (default NCCL on GPUs, gloo on CPUs); ``timeout``: how long each collective waits for the
    slowest rank.

    With NCCL the GPU becomes this process's current CUDA device here. With gloo (whose
    collectives run on the CPU whatever the device) CUDA is left untouched, so that the caller
    can fork worker processes first and set the device after (``v2a extract`` does)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise DistributedError(
                f"--device {device} was asked for, but PyTorch sees no CUDA GPU here")
        if dev.index is None:
            dev = torch.device("cuda", local % torch.cuda.device_count())
    backend = backend or ("nccl" if dev.type == "cuda" else "gloo")
    if backend == "nccl" and dev.type == "cuda":
        torch.cuda.set_device(dev)
    if world > 1 and not dist.is_initialized():
        kwargs = {"device_id": dev} if backend == "nccl" else {}
        dist.init_process_group(backend=backend, timeout=timeout, **kwargs)
    return Distributed(rank=rank, world_size=world, local_rank=local, device=dev)
