"""Training: ``v2a train RECIPE [key=value ...] [--resume] [--out DIR]``, on a CPU, a GPU, or many
through ``torchrun --nproc_per_node N -m v2a train RECIPE``.

What is trained (``training.task``):

* ``generator``: the recipe's fuser and generator under :class:`~v2a.objective.MaskedObjective`
  (masked token prediction, plus the auxiliary regression of the recipe's audio encoder features
  and the audio-visual contrastive term). Codes, visual streams and audio features come from the
  feature cache (:class:`~v2a.data.CachedClips`), or are computed on the fly from the manifest
  (:class:`~v2a.data.LiveClips`) when the recipe names no cache.
* ``reranker``: the SCAV reranker's projectors, by its contrastive loss (the arithmetic of
  ``Scav.contrastive_loss``, on the cached audio features instead of waveforms).

The loop (one optimiser step; nanoGPT-style, nothing hidden)::

    for each of grad_accum micro-batches:      # DDP syncs gradients on the last one only
        loss = task(batch, generator) / grad_accum    (autocast in bf16/fp16)
        loss.backward()
    clip the gradient norm; AdamW step (lr: linear warm-up, then cosine to lr_min); EMA update

Determinism (what makes ``--resume`` exact). The data are one endless stream: epoch ``e`` is a
permutation of the training clips drawn from ``(seed, e)``; step ``s`` takes the next
``world_size × grad_accum × batch_size`` clips of the stream, micro-batch ``m`` of rank ``r``
the slice of "slot" ``m · world_size + r`` (``batch_size`` clips from ``slot · batch_size``).
The only data position to save is the number of clips consumed. Every random number of a
micro-batch (masks, conditioning dropout, model dropout) comes from generators seeded by
``(seed, step, slot)``. So no random state carries over from one step to the next: a run
restored from the checkpoint of step ``s`` performs step ``s + 1`` exactly as the uninterrupted
run did (same hardware and thread count); and a step does not depend on how its slots are
shared between processes and accumulation (2 processes × ``grad_accum`` 1 compute what 1
process × ``grad_accum`` 2 computes: the same sums, halved instead of averaged).

Checkpoints (``<out>/checkpoints/step_<N>/``, written by rank 0 into a temporary folder
``.step_<N>.v2a-tmp-<host>-<pid>-<hex>`` that is renamed into place, so a checkpoint is complete
or absent; the temporaries of dead processes are removed when a run starts; the last
``keep_checkpoints`` are kept). A run folder that stops taking files (read-only, no permission, a
full disk) stops the run with one sentence naming the folder, the error and the last good
checkpoint to resume from; the checkpoint being written stays a temporary, never a half
checkpoint under its final name::

    model.safetensors      the trained weights (task state dict; frozen encoders left out)
    ema.safetensors        the EMA weights, same keys (only when training.ema > 0)
    optimizer.safetensors  AdamW's state tensors, keys state.<param index>.<name>
    state.json             step, clips consumed, epoch, learning rate schedule, param groups,
                           GradScaler state, RNG scheme, recipe hash, world size, the
                           fingerprints of every rank's weights (DDP), last metrics

At the end of a run the weights to use (EMA when on) are exported beside the checkpoints:
``fuser.safetensors`` and ``generator.safetensors`` for the generator task, ``scav.safetensors``
(the reranker's ``weights`` option) for the reranker task. ``<out>/recipe.yaml`` holds the
resolved recipe, ``<out>/tensorboard/`` the logs, ``<out>/skipped.tsv`` the clips left out.
"""

from __future__ import annotations

import contextlib
import copy
import datetime
import errno
import hashlib
import json
import math
import os
import re
import shutil
import signal
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import Tensor, nn

from v2a.errors import RecipeError, UserError
from v2a.files import fsync, is_stale, remove_stale_temporaries, temporary_path, write_text_atomic
from v2a.weights import write_safetensors

CHECKPOINT_FORMAT = "v2a-train-checkpoint"
CHECKPOINT_VERSION = 1
STEP_DIR = re.compile(r"^step_(\d+)$")
PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
#: Training fields that may change between a run and its resumption (they do not change what
#: one step computes): everything else of the recipe must hash the same.
RESUMABLE_FIELDS = (
    "training.steps", "training.out_dir", "training.checkpoint_every",
    "training.keep_checkpoints", "training.log_every", "training.eval_every",
    "training.sample_every", "training.num_sample_videos", "data.num_workers", "data.cache",
    "data.manifest", "data.root",
)


class TrainingError(UserError):
    """A run that cannot start or continue: a bad output folder, a checkpoint of another
    recipe, data that do not fit the task, a loss that diverged."""


# ---------------------------------------------------------------------------------------------
# Distributed setup (torchrun sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT)
# ---------------------------------------------------------------------------------------------


@dataclass
class Distributed:
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
        """Every rank's ``obj``, in rank order (on every rank)."""
        if not self.enabled:
            return [obj]
        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    @property
    def comm_device(self) -> torch.device:
        return self.device if dist.is_initialized() and dist.get_backend() == "nccl" else torch.device("cpu")


def setup_distributed(device: str | None = None) -> Distributed:
    """Join the process group torchrun describes in the environment (none when run alone):
    NCCL on GPUs, gloo on CPUs. ``device``: ``cpu``, ``cuda`` or ``cuda:N`` (default: the
    local rank's GPU when there is one, else the CPU)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise TrainingError(f"--device {device} was asked for, but PyTorch sees no CUDA GPU here")
        if dev.index is None:
            dev = torch.device("cuda", local % torch.cuda.device_count())
        torch.cuda.set_device(dev)
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if dev.type == "cuda" else "gloo"
        kwargs = {"device_id": dev} if dev.type == "cuda" else {}
        dist.init_process_group(backend=backend, timeout=datetime.timedelta(minutes=30), **kwargs)
    return Distributed(rank=rank, world_size=world, local_rank=local, device=dev)


# ---------------------------------------------------------------------------------------------
# Randomness and data order
# ---------------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------------
# Learning rate and EMA
# ---------------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------------
# Tasks: what a batch costs
# ---------------------------------------------------------------------------------------------


class GeneratorTask(nn.Module):
    """The fuser and the generator under :class:`~v2a.objective.MaskedObjective`.

    ``forward(batch, generator)`` → the objective's terms (``loss``, ``ce``, ``aux_*``,
    ``accuracy``, ``mask_ratio``). The recipe's audio encoder sizes the regression head; its
    features come with the batch (from the cache), so it never runs here."""

    name = "generator"
    slots = ("fuser", "generator")

    def __init__(self, recipe):
        super().__init__()
        from v2a.objective import MaskedObjective

        t = recipe.training
        self.fuser = recipe.build("fuser")
        generator = recipe.build("generator")
        encoder = None
        if recipe.has("audio_encoder") and t.aux_regression_weight != 0:
            encoder = recipe.build("audio_encoder").requires_grad_(False).eval()
        self.objective = MaskedObjective(
            generator, audio_encoder=encoder, level_policy=t.level_policy,
            condition_dropout=t.condition_dropout, aux_regression_weight=t.aux_regression_weight,
            aux_contrastive_weight=t.aux_contrastive_weight,
        )
        self.frozen = [encoder] if encoder is not None else []

    @property
    def generator(self):
        return self.objective.generator

    def check_batch(self, batch) -> None:
        """One sentence when the data cannot train this task."""
        if batch.codes is None:
            raise TrainingError("the data hold no codes (the recipe has no codec); the generator "
                                "task needs the codes of the recipe's codec")
        if self.objective.regression_head is not None and batch.audio_features is None:
            raise TrainingError(
                "training.aux_regression_weight is not 0 but the data hold no audio features; "
                "add the recipe's audio_encoder to the cache (`v2a extract`) or set "
                "training.aux_regression_weight=0"
            )
        for name, width in getattr(self.fuser, "stream_dims", {}).items():
            seq = batch.streams.get(name)
            if seq is not None and seq.dim != width:
                raise TrainingError(
                    f"the data hold {seq.dim}-wide features of visual stream {name!r} but the "
                    f"fuser reads it {width} wide (fuser.streams.{name}): either that option is "
                    f"wrong, or the encoder changed since `v2a extract` wrote the cache (the cache "
                    f"key covers options and weights, not code): then delete the cache and "
                    f"extract again"
                )

    def condition(self, batch):
        return self.fuser.fuse(batch.streams, frame_rate=batch.frame_rate,
                               num_frames=batch.codes.shape[-1])

    def forward(self, batch, generator: torch.Generator) -> dict[str, Tensor]:
        self.objective.frame_rate = batch.frame_rate
        return self.objective(batch.codes, self.condition(batch), audio_features=batch.audio_features,
                              generator=generator, valid=batch.valid)

    @torch.no_grad()
    def generate(self, batch, sampling) -> Tensor:
        """Codes ``[b, k, l]`` sampled for ``batch`` with the recipe's sampling options."""
        from v2a.sampler import sample

        return sample(
            self.generator, self.condition(batch), num_frames=batch.codes.shape[-1],
            steps=sampling.steps, temperature=sampling.temperature,
            anneal_temperature=sampling.anneal_temperature, top_k=sampling.top_k,
            top_p=sampling.top_p, cfg_scale=sampling.cfg_scale, candidates=1, seed=sampling.seed,
            precision=sampling.precision,
        )

    def exports(self) -> dict[str, nn.Module]:
        return {"fuser": self.fuser, "generator": self.generator}


class RerankerTask(nn.Module):
    """The reranker's trainable projectors under SCAV's contrastive loss: symmetric InfoNCE over
    the batch with ``-distance / temperature`` as the logits, the video side from the batch's
    visual stream, the audio side from the batch's audio features (which must be those of the
    reranker's own audio encoder)."""

    name = "reranker"
    slots = ("reranker",)

    def __init__(self, recipe):
        super().__init__()
        self.reranker = recipe.build("reranker")
        plugin = recipe.choice("reranker").plugin
        needed = ("contrastive_loss", "projectors", "embed_video", "pairwise_distance", "video_sequence")
        if not all(hasattr(self.reranker, n) for n in needed):
            raise TrainingError(
                f"the reranker {plugin!r} cannot be trained by `v2a train` (it has no contrastive "
                "loss); training.task=reranker trains SCAV"
            )
        check_reranker_features(recipe)
        self.frozen = [self.reranker.audio_encoder]

    def check_batch(self, batch) -> None:
        if batch.audio_features is None:
            raise TrainingError("the data hold no audio features; the reranker task trains on the "
                                "features of the recipe's audio_encoder")
        self.reranker.video_sequence(batch.streams)  # present, of the right width

    def forward(self, batch, generator: torch.Generator) -> dict[str, Tensor]:
        scav = self.reranker
        video = scav.embed_video(scav.video_sequence(batch.streams))
        audio = scav.projectors.audio(batch.audio_features)
        logits = -scav.pairwise_distance(video, audio).float() / scav.projectors.temperature
        target = torch.arange(logits.shape[0], device=logits.device)
        loss = (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
        accuracy = (logits.argmax(dim=1) == target).float().mean().detach()
        return {"loss": loss, "accuracy": accuracy,
                "temperature": scav.projectors.temperature.detach()}

    def exports(self) -> dict[str, nn.Module]:
        return {"scav": self.reranker}


def check_reranker_features(recipe) -> None:
    """The data hold the features of the recipe's ``audio_encoder`` (or, without one, of the
    reranker's own, see :func:`v2a.features.extraction_slots`): SCAV must read those."""
    own = recipe.choice("reranker").nested.get("audio_encoder")
    if own is None or not recipe.has("audio_encoder"):
        return
    if recipe.choice("audio_encoder").as_data() != own.as_data():
        raise RecipeError(
            f"{recipe.source}: audio_encoder (whose features the data hold) differs from "
            "reranker.audio_encoder; make them the same component (or drop the top-level one) "
            "to train the reranker"
        )


TASKS = {"generator": GeneratorTask, "reranker": RerankerTask}


def build_task(recipe) -> nn.Module:
    return TASKS[recipe.training.task](recipe)


def trained_state(task: nn.Module) -> dict[str, Tensor]:
    """The task's state dict without its frozen sub-modules (what a checkpoint holds)."""
    frozen = {id(m) for m in task.frozen}
    skip = tuple(f"{name}." for name, m in task.named_modules() if id(m) in frozen and name)
    return {k: v for k, v in task.state_dict().items() if not k.startswith(skip)}


def load_trained_state(task: nn.Module, state: Mapping[str, Tensor], path: Path) -> None:
    from v2a.weights import WeightsError

    own = trained_state(task)
    missing, unexpected = sorted(own.keys() - state.keys()), sorted(state.keys() - own.keys())
    if missing or unexpected:
        example = (missing or unexpected)[0]
        raise WeightsError(f"{path} does not fit the recipe's model ({len(missing)} missing and "
                           f"{len(unexpected)} unexpected tensors, e.g. {example!r})")
    task.load_state_dict(dict(state), strict=False)


def fingerprint(tensors: Mapping[str, Tensor]) -> str:
    """A hash of the names, dtypes, shapes and bytes of ``tensors`` (compares ranks' weights)."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:16]


# ---------------------------------------------------------------------------------------------
# Checkpoints
# ---------------------------------------------------------------------------------------------


def recipe_hash(recipe) -> str:
    """Hash of the resolved recipe, without the fields a resumed run may change."""
    data = recipe.as_data()
    data.pop("name", None)
    data.pop("description", None)
    for dotted in RESUMABLE_FIELDS:
        section, key = dotted.split(".")
        data.get(section, {}).pop(key, None)
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]


def checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints of a run, ``(step, folder)`` in step order."""
    folder = Path(run_dir) / "checkpoints"
    if not folder.is_dir():
        return []
    found = []
    for path in folder.iterdir():
        match = STEP_DIR.match(path.name)
        if match and (path / "state.json").is_file():
            found.append((int(match.group(1)), path))
    return sorted(found)


def latest_checkpoint(run_dir: Path) -> Path | None:
    found = checkpoints(run_dir)
    return found[-1][1] if found else None


def write_checkpoint(run_dir: Path, step: int, files: dict[str, dict[str, Tensor]],
                     state: dict[str, Any], keep: int) -> Path:
    """Write ``files`` (name → tensors, as safetensors) and ``state.json`` into a temporary
    folder, rename it to ``checkpoints/step_<step>``, then remove all but the last ``keep``."""
    folder = Path(run_dir) / "checkpoints"
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / f"step_{step:08d}"
    if (final / "state.json").is_file():
        return final  # this step is saved already (e.g. a signal right after a checkpoint)
    tmp = temporary_path(final)  # a folder v2a.files.is_temporary recognises
    tmp.mkdir()
    try:
        for name, tensors in files.items():
            target = tmp / f"{name}.safetensors"
            write_safetensors({k: v.detach().contiguous().cpu() for k, v in tensors.items()},
                              target, metadata={"format": CHECKPOINT_FORMAT, "step": str(step)})
        with open(tmp / "state.json", "w", encoding="utf-8") as f:
            json.dump(state, f, indent=2)
            f.write("\n")
        for path in tmp.iterdir():
            with open(path, "rb") as f:
                os.fsync(f.fileno())
        fsync(tmp)
        shutil.rmtree(final, ignore_errors=True)  # a folder without state.json: never complete
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)  # what cannot be removed stays a temporary
        raise
    fsync(folder)
    for _, old in checkpoints(run_dir)[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return final


def remove_temporary(run_dir: Path) -> None:
    """The temporaries dead processes left in a run folder: files written atomically, and the
    folders of checkpoints that were being written (:func:`v2a.files.is_stale`; those of live
    runs are kept)."""
    remove_stale_temporaries(run_dir)
    folder = Path(run_dir) / "checkpoints"
    if folder.is_dir():
        for path in folder.iterdir():
            if path.is_dir() and is_stale(path):
                shutil.rmtree(path, ignore_errors=True)


def optimizer_files(optimizer: torch.optim.Optimizer) -> tuple[dict[str, Tensor], list[dict]]:
    """AdamW's state as tensors (``state.<index>.<name>``) and its param groups as JSON data."""
    sd = optimizer.state_dict()
    tensors = {}
    for index, entry in sd["state"].items():
        for name, value in entry.items():
            tensors[f"state.{index}.{name}"] = value if isinstance(value, Tensor) else torch.tensor(value)
    groups = [{k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items() if k != "params"}
              for g in sd["param_groups"]]  # the parameters are the task's, in a fixed order
    return tensors, groups


def load_optimizer(optimizer: torch.optim.Optimizer, tensors: dict[str, Tensor], groups: list[dict]) -> None:
    state: dict[int, dict[str, Tensor]] = {}
    for key, value in tensors.items():
        _, index, name = key.split(".", 2)
        state.setdefault(int(index), {})[name] = value
    own = optimizer.state_dict()["param_groups"]
    if len(own) != len(groups):
        raise ValueError(f"the checkpoint has {len(groups)} parameter groups, the model {len(own)}")
    groups = [{**{k: (tuple(v) if k == "betas" else v) for k, v in g.items()}, "params": o["params"]}
              for g, o in zip(groups, own)]
    optimizer.load_state_dict({"state": state, "param_groups": groups})


def worker_errors(batches) -> Iterator[Any]:
    """The batches of a DataLoader, with a :class:`~v2a.errors.UserError` raised in one of its
    worker processes given back its own sentence: the DataLoader re-raises it in this process
    with the worker's whole traceback as its message ("Caught CacheError in DataLoader worker
    process 0. Original Traceback ..."), which would reach the user as a traceback."""
    iterator = iter(batches)
    while True:
        try:
            batch = next(iterator)
        except StopIteration:
            return
        except UserError as exc:
            raise own_sentence(exc) from None
        yield batch


def own_sentence(exc: UserError) -> UserError:
    """``exc`` as raised in the worker (see :func:`worker_errors`), or ``exc`` itself when it
    was not re-raised from a worker."""
    text = str(exc)
    if not (text.startswith("Caught ") and "\nOriginal Traceback" in text):
        return exc
    last = text.rstrip().rsplit("\n", 1)[-1]  # "v2a.cache.CacheError: the shard ..."
    name = f"{type(exc).__module__}.{type(exc).__qualname__}: "
    return type(exc)(last[len(name):] if last.startswith(name) else last)


# ---------------------------------------------------------------------------------------------
# Signals: SIGINT / SIGTERM ask for a checkpoint and a clean exit after the current step
# ---------------------------------------------------------------------------------------------


class StopRequest:
    def __init__(self) -> None:
        self.signal: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopRequest:
        import threading

        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        if self.signal is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: stop now, without a checkpoint
        self.signal = signum

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


# ---------------------------------------------------------------------------------------------
# The trainer
# ---------------------------------------------------------------------------------------------


@dataclass
class TrainResult:
    out_dir: Path
    step: int  # optimiser steps done
    stopped_by: int | None = None  # the signal that stopped the run early
    checkpoint: Path | None = None
    metrics: dict[str, float] = field(default_factory=dict)  # last logged values
    exported: list[Path] = field(default_factory=list)


def run_dir_for(recipe, out: str | Path | None) -> Path:
    return Path(out) if out else Path(recipe.training.out_dir) / recipe.name


def open_split(recipe, split: str):
    """The clips of ``split``: from the feature cache when the recipe names one (or one exists
    beside the manifest), else decoded on the fly from the manifest."""
    from v2a.data import CachedClips, LiveClips, cache_dir_of

    if not (recipe.data.cache or recipe.data.manifest):
        raise RecipeError(
            f"{recipe.source}: the recipe names no data; set data.cache (written by `v2a extract`) "
            "or data.manifest (clips decoded while training)"
        )
    cache = cache_dir_of(recipe)
    if recipe.data.cache or cache.is_dir():
        return CachedClips(cache, recipe, split)
    return LiveClips(None, recipe, split)


class Trainer:
    """One training run. Most users call :func:`train`; tests and notebooks may hand their own
    datasets (map-style, items for :func:`v2a.data.collate`) to the constructor."""

    def __init__(self, recipe, *, out_dir: str | Path | None = None, resume: bool = False,
                 train_data=None, val_data=None, collate_fn=None,
                 distributed: Distributed | None = None, device: str | None = None,
                 quiet: bool = False):
        from v2a.data import collate

        self.recipe, self.cfg = recipe, recipe.training
        self.dist = distributed or setup_distributed(device)
        self.device = self.dist.device
        self.out = run_dir_for(recipe, out_dir)
        self.resume = resume

        out = ("--out", str(self.out)) if out_dir is not None else ()
        self.resume_command = recipe.command_line("train", "--resume", *out)
        self.quiet = quiet
        self.collate = collate_fn or collate
        self._check_config()
        self.train_data = train_data if train_data is not None else open_split(recipe, self.cfg.train_split)
        if len(self.train_data) == 0:
            raise TrainingError(f"the {self.cfg.train_split!r} split of the data holds no clips")
        if val_data is None and (self.cfg.eval_every or self.cfg.sample_every):
            val_data = open_split(recipe, self.cfg.val_split)
        self.val_data = val_data if val_data is not None and len(val_data) else None
        self.skipped: set[tuple[str, str]] = {  # clips the feature extraction could not use
            (item.clip.id, item.reason) for data in (self.train_data, self.val_data)
            for item in getattr(data, "skipped", None) or []}
        self._checked = False
        self._last_batch = None

    def _check_config(self) -> None:
        c = self.cfg
        problems = [
            (c.steps < 1, "training.steps must be at least 1"),
            (c.batch_size < 1, "training.batch_size must be at least 1"),
            (c.grad_accum < 1, "training.grad_accum must be at least 1"),
            (not 0.0 <= c.ema < 1.0, "training.ema must lie in [0, 1)"),
            (c.lr <= 0, "training.lr must be positive"),
            (c.checkpoint_every < 1, "training.checkpoint_every must be at least 1"),
            (c.keep_checkpoints < 1, "training.keep_checkpoints must be at least 1"),
            (c.log_every < 1, "training.log_every must be at least 1"),
            (c.eval_every < 0 or c.sample_every < 0, "training.eval_every and sample_every must not be negative"),
            (c.precision == "fp16" and self.device.type == "cpu",
             "training.precision=fp16 needs a GPU; use bf16 on a CPU"),
        ]
        for bad, message in problems:
            if bad:
                raise RecipeError(f"{self.recipe.source}: {message}")
        for slot in TASKS[c.task].slots:
            if not self.recipe.has(slot):
                hint = ""
                if c.task == "generator" and self.recipe.has("reranker"):
                    hint = "; to train its reranker, set training.task=reranker"
                raise RecipeError(f"{self.recipe.source}: the recipe has no {slot}, which the "
                                  f"{c.task} task trains{hint}")

    # -- helpers ------------------------------------------------------------------------------
    def log(self, text: str) -> None:
        if self.dist.main and not self.quiet:
            from tqdm import tqdm

            tqdm.write(text, file=sys.stdout)
            sys.stdout.flush()

    def _loader(self, dataset, batch_sampler):
        workers = self.recipe.data.num_workers
        kwargs = {"prefetch_factor": 4, "persistent_workers": False} if workers > 0 else {}
        return torch.utils.data.DataLoader(
            dataset, batch_sampler=batch_sampler, collate_fn=self.collate, num_workers=workers,
            pin_memory=self.device.type == "cuda", **kwargs,
        )

    @contextlib.contextmanager
    def _writing(self, what: str, folder: Path) -> Iterator[None]:
        """Write ``what`` into ``folder`` of the run; a folder that refuses it (read-only, no
        permission, a full disk) ends the run with a :class:`TrainingError` naming the folder,
        the error and the last good checkpoint."""
        try:
            yield
        except OSError as exc:
            full = exc.errno in (errno.ENOSPC, errno.EDQUOT)
            once = "its disk has space again" if full else "the folder is writable"
            last = latest_checkpoint(self.out)
            if last is None:
                then = f"no checkpoint was saved yet: start again once {once}"
            else:
                then = (f"the last good checkpoint is {last}: resume with "
                        f"`{self.resume_command}` once {once}")
            raise TrainingError(
                f"cannot write {what} into {folder} ({exc.strerror or exc}); {then}") from None

    def _note_skipped(self, batch) -> None:
        for item in getattr(batch, "skipped", []) or []:
            self.skipped.add((item.clip.id, item.reason))

    def _autocast(self):
        dtype = PRECISIONS[self.cfg.precision]
        return torch.autocast(self.device.type, dtype=dtype, enabled=dtype is not None)

    # -- model and optimiser ------------------------------------------------------------------
    def _build(self) -> None:
        torch.manual_seed(derived_seed(self.cfg.seed, "init"))
        self.task = build_task(self.recipe).to(self.device).train()
        for module in self.task.frozen:  # frozen encoders: no gradients, no dropout
            module.requires_grad_(False).eval()
        params = [(n, p) for n, p in self.task.named_parameters() if p.requires_grad]
        self.params = [p for _, p in params]
        decay = [p for _, p in params if p.dim() >= 2]  # matrices decay; biases, norms do not
        no_decay = [p for _, p in params if p.dim() < 2]
        self.optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": self.cfg.weight_decay},
             {"params": no_decay, "weight_decay": 0.0}], lr=self.cfg.lr,
        )
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.cfg.precision == "fp16")
        self.ema = EMA(self.task, self.cfg.ema, self.task.frozen) if self.cfg.ema > 0 else None
        self.model = self.task
        if self.dist.enabled:
            # find_unused_parameters: a step may leave a part unused (the contrastive head when
            # fewer than two rows keep their conditioning, the fuser when all rows drop it)
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.model = nn.parallel.DistributedDataParallel(
                self.task, device_ids=ids, find_unused_parameters=True,
            )

    @property
    def eval_task(self) -> nn.Module:
        """The weights used for validation and samples: EMA when on."""
        return self.ema.module if self.ema is not None else self.task

    # -- checkpoints ----------------------------------------------------------------------------
    def _state(self, step: int, consumed: int, metrics: dict[str, float]) -> dict[str, Any]:
        from v2a import __version__

        _, groups = optimizer_files(self.optimizer)
        return {
            "format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION,
            "step": step, "clips_consumed": consumed,
            "epoch": consumed // len(self.train_data), "dataset_size": len(self.train_data),
            "data_order": "permutation of the training clips seeded by (seed, epoch)",
            "task": self.cfg.task, "recipe": self.recipe.name,
            "recipe_hash": recipe_hash(self.recipe), "seed": self.cfg.seed,
            "world_size": self.dist.world_size,
            "batch_size": self.cfg.batch_size, "grad_accum": self.cfg.grad_accum,
            "scheduler": {"name": "warmup_cosine", "lr": self.cfg.lr, "lr_min": self.cfg.lr_min,
                          "warmup_steps": self.cfg.warmup_steps, "total_steps": self.cfg.steps,
                          "last_lr": self.optimizer.param_groups[0]["lr"]},
            "optimizer": {"name": "AdamW", "param_groups": groups},
            "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else None,
            "rng": {"scheme": "each micro-batch seeds its generators from (seed, step, slot)",
                    "seed": self.cfg.seed},
            "metrics": metrics,
            "v2a_version": __version__, "torch_version": torch.__version__,
            "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        }

    def save(self, step: int, consumed: int, metrics: dict[str, float]) -> Path:
        model = trained_state(self.task)
        ema = trained_state(self.ema.module) if self.ema is not None else None
        prints = None
        if self.dist.enabled:  # all ranks must hold the same weights
            prints = self.dist.gather({"model": fingerprint(model),
                                       "ema": fingerprint(ema) if ema is not None else None})
            if any(p != prints[0] for p in prints):
                raise RuntimeError(f"the ranks' weights differ at step {step}: {prints}")
        path = Path(self.out) / "checkpoints" / f"step_{step:08d}"
        if self.dist.main:
            state = self._state(step, consumed, metrics)
            state["rank_fingerprints"] = prints
            opt_tensors, _ = optimizer_files(self.optimizer)
            files = {"model": model, "optimizer": opt_tensors}
            if ema is not None:
                files["ema"] = ema
            with self._writing(f"the checkpoint of step {step}", self.out / "checkpoints"):
                path = write_checkpoint(self.out, step, files, state, self.cfg.keep_checkpoints)
        self.dist.barrier()
        return path

    def restore(self, path: Path) -> dict[str, Any]:
        from v2a.weights import WeightsError, check_finite

        def weights(name: str) -> dict[str, Tensor]:  # as saved: NaN there never resumes well
            tensors = load_file(str(path / name), device=str(self.device))
            check_finite(tensors, path / name)
            return tensors

        try:
            state = json.loads((path / "state.json").read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise TrainingError(f"cannot read the checkpoint {path}: {exc}") from None
        if state.get("format") != CHECKPOINT_FORMAT:
            raise TrainingError(f"{path} is not a v2a training checkpoint")
        if state["recipe_hash"] != recipe_hash(self.recipe):
            raise TrainingError(
                f"{path} was trained with another recipe ({recipe_difference(self.out, self.recipe)}); "
                "resume with the same recipe and overrides, or train into a new --out folder"
            )
        if state["dataset_size"] != len(self.train_data):
            raise TrainingError(
                f"{path} was trained on {state['dataset_size']} clips, but the "
                f"{self.cfg.train_split!r} split now holds {len(self.train_data)}; resume with the "
                "same data, or train into a new --out folder"
            )
        try:
            load_trained_state(self.task, weights("model.safetensors"), path)
            if self.ema is not None:
                ema = path / "ema.safetensors"
                if not ema.is_file():
                    raise WeightsError(f"{path} has no EMA weights but training.ema is on")
                load_trained_state(self.ema.module, weights(ema.name), path)
            load_optimizer(self.optimizer, load_file(str(path / "optimizer.safetensors"), device=str(self.device)),
                           state["optimizer"]["param_groups"])
        except (OSError, ValueError, RuntimeError) as exc:
            raise TrainingError(f"cannot restore the checkpoint {path}: {exc}") from None
        if state.get("scaler") and self.scaler.is_enabled():
            self.scaler.load_state_dict(state["scaler"])
        if state["world_size"] != self.dist.world_size:
            self.log(f"note: {path} was written by {state['world_size']} processes, this run has "
                     f"{self.dist.world_size}: the clips per step change from here on")
        return state

    # -- validation and samples -----------------------------------------------------------------
    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        """Mean terms over the validation split (sharded over the ranks), with the EMA weights and
        fixed masks, weighted by clips."""
        task, b = self.eval_task, self.cfg.batch_size
        was_training = task.training
        task.eval()
        # batch j holds clips [j·b, (j + 1)·b) and goes to rank j % world_size, with masks from
        # (seed, j): the result does not depend on the number of processes
        n = len(self.val_data)
        mine = list(range(self.dist.rank, -(-n // b), self.dist.world_size))
        loader = self._loader(self.val_data, [list(range(j * b, min((j + 1) * b, n))) for j in mine])
        sums: dict[str, float] = {}
        count = 0
        for j, batch in zip(mine, worker_errors(loader)):
            self._note_skipped(batch)
            if len(batch) == 0:
                continue
            batch = batch.to(self.device)
            g = torch.Generator(device=self.device).manual_seed(derived_seed(self.cfg.seed, "val", j))
            with self._autocast():
                terms = task(batch, g)
            for k, v in terms.items():
                sums[k] = sums.get(k, 0.0) + float(v) * len(batch)
            count += len(batch)
        task.train(was_training)
        keys = sorted(self._term_names)
        totals = self.dist.all_sum([sums.get(k, 0.0) for k in keys] + [count])
        n = totals[-1]
        return {k: totals[i] / n for i, k in enumerate(keys)} if n else {}

    @torch.no_grad()
    def sample_audio(self, writer, step: int) -> None:
        """Generated audio of the first ``num_sample_videos`` validation clips, to TensorBoard
        (with their reference audio, decoded from the cached codes, the first time)."""
        if not hasattr(self.eval_task, "generate") or self.val_data is None or writer is None:
            return
        if not hasattr(self, "codec"):
            self.codec = self.recipe.build("codec").to(self.device).eval()
        n = min(self.cfg.num_sample_videos, len(self.val_data))
        batch = self.collate([self.val_data[i] for i in range(n)])
        if len(batch) == 0:
            return
        batch = batch.to(self.device)
        codes = self.eval_task.generate(batch, self.recipe.sampling)
        for name, c in (("generated", codes), ("reference", batch.codes)):
            if name == "reference" and getattr(self, "_logged_reference", False):
                continue
            wav = self.codec.decode(c).float().cpu()  # [b, c, n]
            for row, clip_id in enumerate(batch.ids):
                length = self.codec.num_samples(int(batch.valid[row].sum()))
                audio = wav[row, :, :length].mean(dim=0).clamp(-1, 1)
                writer.add_audio(f"{name}/{row}_{clip_id}"[:200], audio, step,
                                 sample_rate=self.codec.sample_rate)
        self._logged_reference = True

    # -- the loop -------------------------------------------------------------------------------
    def run(self) -> TrainResult:
        cfg, dist_ = self.cfg, self.dist
        self._prepare_out_dir()
        self._build()
        start, consumed, metrics = 0, 0, {}
        checkpoint = latest_checkpoint(self.out) if self.resume else None
        if checkpoint is not None:
            state = self.restore(checkpoint)
            start, consumed = state["step"], state["clips_consumed"]
            self.log(f"resumed from {checkpoint} (step {start})")
        elif self.resume:
            self.log(f"no checkpoint in {self.out}; starting a new run")
        result = TrainResult(out_dir=self.out, step=start, checkpoint=checkpoint)
        if self.dist.main:
            with self._writing("recipe.yaml", self.out):
                write_text_atomic(self.out / "recipe.yaml", f"# resolved recipe of this run "
                                  f"({self.recipe.source})\n" + self.recipe.to_yaml())
        if start >= cfg.steps:
            self.log(f"{self.out} has finished its {cfg.steps} steps already")
            result.exported = self._export()
            return result

        writer = None
        if dist_.main:
            from torch.utils.tensorboard import SummaryWriter

            with self._writing("the TensorBoard logs", self.out / "tensorboard"):
                writer = SummaryWriter(str(self.out / "tensorboard"), purge_step=start)
        sampler = MicroBatches(ClipOrder(len(self.train_data), cfg.seed), start=consumed,
                               batch_size=cfg.batch_size, grad_accum=cfg.grad_accum,
                               rank=dist_.rank, world_size=dist_.world_size)
        batches = worker_errors(self._loader(self.train_data, sampler))
        self._term_names: list[str] = []
        self.log(self._describe(start))
        if cfg.task == "generator" and cfg.aux_regression_weight and not self.recipe.has("audio_encoder"):
            self.log("note: the recipe has no audio_encoder, so aux_regression is off")
        from tqdm import tqdm

        bar = tqdm(total=cfg.steps, initial=start, unit="step", dynamic_ncols=True,
                   disable=None if dist_.main and not self.quiet else True, file=sys.stderr)
        window = {"time": 0.0, "wait": 0.0, "frames": 0.0, "clips": 0.0, "steps": 0}
        sums: dict[str, Tensor] = {}
        step = start
        try:
            with StopRequest() as stop:
                while step < cfg.steps:
                    t_step = time.perf_counter()
                    terms, wait, frames, clips = self._step(step, batches)
                    step += 1
                    consumed += sampler.clips_per_step
                    for k, v in terms.items():
                        sums[k] = sums.get(k, 0) + v
                    window["time"] += time.perf_counter() - t_step
                    window["wait"] += wait
                    window["frames"] += frames
                    window["clips"] += clips
                    window["steps"] += 1
                    bar.update(1)
                    if step % cfg.log_every == 0 or step == cfg.steps:
                        metrics = self._log_train(writer, step, sums, window)
                        bar.set_postfix(loss=f"{metrics.get('train/loss', float('nan')):.4f}")
                        sums = {}
                        window = dict.fromkeys(window, 0.0)
                        window["steps"] = 0
                    if self.val_data is not None and cfg.eval_every and (
                            step % cfg.eval_every == 0 or step == cfg.steps):
                        val = self.validate()
                        metrics.update({f"val/{k}": v for k, v in val.items()})
                        if writer is not None:
                            for k, v in val.items():
                                writer.add_scalar(f"val/{k}", v, step)
                        self.log(f"step {step}/{cfg.steps}  validation " + "  ".join(
                            f"{k} {v:.4f}" for k, v in val.items()))
                    if dist_.main and cfg.sample_every and (step % cfg.sample_every == 0 or step == cfg.steps):
                        self.sample_audio(writer, step)
                    stopping = dist_.all_sum([1.0 if stop.signal is not None else 0.0])[0] > 0
                    if step % cfg.checkpoint_every == 0 or step == cfg.steps or stopping:
                        result.checkpoint = self.save(step, consumed, metrics)
                    if stopping:
                        result.stopped_by = stop.signal or signal.SIGTERM
                        name = signal.Signals(result.stopped_by).name
                        self.log(f"{name}: stopped at step {step}; checkpoint {result.checkpoint}; "
                                 f"continue with `{self.resume_command}`")
                        break
        except BaseException:
            bar.close()
            if writer is not None:
                with contextlib.suppress(OSError):  # the run folder may be what failed
                    writer.close()
            raise
        bar.close()
        if writer is not None:
            with self._writing("the TensorBoard logs", self.out / "tensorboard"):
                writer.close()
        result.step, result.metrics = step, metrics
        self._report_skipped()
        if step >= cfg.steps:
            result.exported = self._export()
            self.log(f"finished {cfg.steps} steps; weights: " + ", ".join(str(p) for p in result.exported))
        return result

    def _step(self, step: int, batches) -> tuple[dict[str, Tensor], float, float, float]:
        """One optimiser step over ``grad_accum`` micro-batches: the mean terms, the seconds spent
        waiting for data, the code frames and clips it trained on (this rank)."""
        cfg = self.cfg
        lr = learning_rate(step, lr=cfg.lr, warmup=cfg.warmup_steps, total=cfg.steps, lr_min=cfg.lr_min)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        terms: dict[str, Tensor] = {}
        wait = frames = clips = 0.0
        for micro in range(cfg.grad_accum):
            t = time.perf_counter()
            batch = next(batches)
            wait += time.perf_counter() - t
            self._note_skipped(batch)
            last = micro == cfg.grad_accum - 1
            sync = contextlib.nullcontext() if last or not self.dist.enabled else self.model.no_sync()
            weight = 1.0 / cfg.grad_accum
            if len(batch) == 0:  # every clip of it was skipped (decoding on the fly)
                if not self.dist.enabled:
                    continue
                if self._last_batch is None:
                    raise TrainingError(f"every clip of the first batch of rank {self.dist.rank} "
                                        "was skipped; check the data (see `v2a extract`)")
                batch, weight = self._last_batch, 0.0  # DDP needs a backward from every rank
            else:
                clips += len(batch)
                frames += float(batch.valid.sum()) if batch.valid is not None else 0.0
                batch = batch.to(self.device, non_blocking=True)
                self._last_batch = batch if self.dist.enabled else None
            with sync:
                if not self._checked:
                    self.task.check_batch(batch)
                    self._checked = True
                slot = micro * self.dist.world_size + self.dist.rank
                torch.manual_seed(derived_seed(cfg.seed, "dropout", step, slot))  # model dropout
                g = torch.Generator(device=self.device).manual_seed(
                    derived_seed(cfg.seed, "objective", step, slot))  # masks, condition dropout
                with self._autocast():
                    out = self.model(batch, g)
                self.scaler.scale(out["loss"] * weight).backward()
            for k, v in out.items():
                terms[k] = terms.get(k, 0) + v.detach().float() * weight
        if not self._term_names:
            self._term_names = sorted(terms)
        self.scaler.unscale_(self.optimizer)
        clip = cfg.grad_clip if cfg.grad_clip > 0 else float("inf")
        norm = torch.nn.utils.clip_grad_norm_(self.params, clip)
        if "loss" in terms and not torch.isfinite(terms["loss"]) and not self.scaler.is_enabled():
            raise TrainingError(
                f"the loss is not finite at step {step + 1} (lr {lr:.3g}); lower training.lr or "
                "use training.precision=fp32, and resume from the last checkpoint with --resume"
            )
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        if self.ema is not None:
            self.ema.update()
        terms["grad_norm"] = norm.detach().float()
        terms["lr"] = torch.tensor(lr)
        return terms, wait, frames, clips

    def _log_train(self, writer, step: int, sums: dict[str, Tensor], window: dict[str, float]) -> dict[str, float]:
        n = max(window["steps"], 1)
        keys = sorted(sums)
        local = [float(sums[k]) / n for k in keys]
        totals = self.dist.all_sum(local + [window["frames"], window["clips"], window["wait"]])
        world = self.dist.world_size
        metrics = {f"train/{k}": totals[i] / world for i, k in enumerate(keys)}
        frames, clips, wait = totals[len(keys):]
        seconds = max(window["time"], 1e-9)
        metrics["perf/frames_per_s"] = frames / seconds
        metrics["perf/clips_per_s"] = clips / seconds
        metrics["perf/data_wait_share"] = wait / world / seconds
        if writer is not None:
            for k, v in metrics.items():
                writer.add_scalar(k, v, step)
        shown = "  ".join(f"{k.split('/')[1]} {v:.4g}" for k, v in metrics.items()
                          if k.split("/")[1] in ("loss", "ce", "aux_regression", "aux_contrastive",
                                                 "accuracy", "temperature", "lr", "grad_norm"))
        self.log(f"step {step}/{self.cfg.steps}  {shown}  {metrics['perf/clips_per_s']:.3g} clips/s  "
                 f"data wait {100 * metrics['perf/data_wait_share']:.1f}%")
        return metrics

    def _describe(self, start: int) -> str:
        c, n = self.cfg, sum(p.numel() for p in self.params)
        where = f"{self.dist.world_size} processes" if self.dist.enabled else str(self.device)
        val = f", {len(self.val_data)} for validation" if self.val_data is not None else ""
        return (f"training the {c.task} of {self.recipe.name} ({n / 1e6:.2f} M parameters) on {where}: "
                f"{len(self.train_data)} clips{val}; steps {start + 1}-{c.steps}, "
                f"{c.batch_size * c.grad_accum * self.dist.world_size} clips per step, "
                f"{c.precision}; output {self.out}")

    def _prepare_out_dir(self) -> None:
        if self.dist.main:
            if not self.resume and latest_checkpoint(self.out) is not None:
                step = checkpoints(self.out)[-1][0]
                raise TrainingError(
                    f"{self.out} holds a run already (checkpoint of step {step}); pass --resume to "
                    "continue it, or --out DIR for a new run"
                )
            with self._writing("files", self.out):
                self.out.mkdir(parents=True, exist_ok=True)
                remove_temporary(self.out)
        self.dist.barrier()

    def _report_skipped(self) -> None:
        everything = set()
        for part in self.dist.gather(sorted(self.skipped)):
            everything.update(tuple(x) for x in part)
        if self.dist.main and everything:
            lines = sorted(everything)
            with self._writing("skipped.tsv", self.out):
                write_text_atomic(self.out / "skipped.tsv", "".join(f"{i}\t{r}\n" for i, r in lines))
            self.log(f"{len(lines)} clips were skipped (listed in {self.out / 'skipped.tsv'}):")
            for clip_id, reason in lines[:10]:
                self.log(f"  {clip_id}: {reason}")
            if len(lines) > 10:
                self.log(f"  ... and {len(lines) - 10} more")

    def _export(self) -> list[Path]:
        """The weights to use (EMA when on) as one file per component."""
        from v2a.weights import save_state

        paths = []
        if self.dist.main:
            for name, module in self.eval_task.exports().items():
                path = self.out / f"{name}.safetensors"
                with self._writing(path.name, self.out):
                    if hasattr(module, "save_weights"):
                        module.save_weights(path)
                    else:
                        save_state(module.state_dict(), path,
                                   metadata={"recipe": self.recipe.name, "component": name})
                paths.append(path)
        self.dist.barrier()
        return paths


def recipe_difference(run_dir: Path, recipe) -> str:
    """Which keys of the run's saved recipe differ from ``recipe`` (for the resume error)."""
    from v2a.recipe import read_saved_recipe, recipe_differences

    saved = read_saved_recipe(Path(run_dir) / "recipe.yaml")
    if saved is None:
        return "its recipe hash differs"
    differ = recipe_differences(saved, recipe.as_data(),
                                ignore=(*RESUMABLE_FIELDS, "name", "description"))
    if not differ:
        return "its recipe hash differs"
    return ", ".join(f"{k}: {then!r} then, {now!r} now" for k, then, now in differ[:3])


def train(recipe, *, out_dir: str | Path | None = None, resume: bool = False,
          device: str | None = None, **kwargs) -> TrainResult:
    """Train ``recipe`` (a loaded :class:`~v2a.recipe.Recipe`) into ``out_dir`` (default:
    ``training.out_dir/<recipe name>``); under torchrun, every process calls this."""
    trainer = Trainer(recipe, out_dir=out_dir, resume=resume, device=device, **kwargs)
    return trainer.run()


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------
