"""How much memory and disk a run will need, estimated before anything heavy is built.

:func:`estimate` sizes every component a task builds on PyTorch's meta device (shapes, no
memory, no weights read or downloaded: :func:`v2a.meta_device.build_on_meta`), each ``weights``
option taken as ``none``, which builds the same architecture
(:func:`v2a.recipe.untrained_recipe`), and adds up:

``train`` (``v2a train``), in bytes:

* trained parameters (the fuser and generator, or a reranker's projectors, and the objective's
  heads), fp32: weights + gradients + AdamW's two moments = 16 bytes a parameter, plus an EMA
  copy (4 bytes) when ``training.ema > 0``;
* frozen components at their own size (4 bytes a fp32 parameter or buffer): the task's own
  (the audio encoder of the regression target, a reranker's audio encoder), and, when the recipe
  names no ``data.cache``, the codec, visual and audio encoders that decode clips on the fly,
  once per DataLoader worker (``data.num_workers``, at least one);
* activations, generator task only: ``batch_size × frames × hidden_dim × layers`` values of
  2 bytes (bf16/fp16) or 4 (fp32), with ``frames = clip_seconds × codec frame_rate`` and
  ``layers`` the generator's ``layers`` option (1 without one). That is one hidden state per
  layer kept for the backward pass; a transformer keeps several (queries, keys, values, the
  MLP's 4x hidden layer), so this is a rough **lower bound**;
* the Python process with torch imported (:data:`PROCESS_BYTES`).

Disk (:func:`run_folder`, a :class:`RunFolder`): a checkpoint holds the trained state, its EMA
copy and AdamW's moments (4 bytes a value each); a run keeps ``training.keep_checkpoints`` of
them and writes the next one before it removes the oldest, so ``min(written, keep + 1)``
checkpoints are on disk while one is written, where ``written`` counts one every
``checkpoint_every`` steps and one at the end; a finished run holds ``min(written, keep)`` and
the exported weights (``fuser`` + ``generator``, or the reranker's; frozen parts are not
exported), their float32 tensors at the size of ``training.export_dtype``. The disk estimate is
the larger of the two, the folder's peak.

``generate`` (``v2a generate``): the weights of every component it builds (codec, visual
encoders, fuser, generator, reranker), plus ``rows × frames × hidden_dim × layers`` values for
the sampler's prepared conditioning and hidden states (``rows`` = candidates × the guidance
passes, ``frames`` of one ``data.clip_seconds`` window), plus the process; again a rough lower
bound. It writes only the output audio, so its disk estimate is 0.

Checked against the paper-scale MaskVAT-Hybrid (``maskvat_hybrid``, 585 M trained
parameters, batch 32 of 10 s in bf16), where about 16 GB of RAM were measured in CPU training
and an 11 GB run folder after 2 steps: the estimate is 13.9 GB from cached features, 15.3 GB
decoding clips on the fly with 2 workers (CLIP's 88 M parameters not counted: open_clip cannot
build on the meta device), and 11.7 GB of disk (one checkpoint of 9.4 GB and 2.3 GB of
exports). A whole run of it peaks at 28 GB (3 checkpoints; docs/training.md tables every
shipped recipe). The weights of a model this size dominate; the activation term
is the rough part.
:func:`check_resources` compares an estimate with the free memory and disk and returns the
one line to show when either is short.
"""

from __future__ import annotations

import math
import os
import shutil
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

from v2a.features import extraction_slots
from v2a.meta_device import build_on_meta, module_bytes, tensor_bytes
from v2a.recipe import Recipe, untrained_recipe
from v2a.registry import Registry, default_registry
from v2a.sampler import guidance_parts
from v2a.tasks import EXPORT_DTYPES, task_spec, trained_state

#: Resident memory of a Python process that has imported torch and v2a (measured: 0.54 GB).
PROCESS_BYTES = 500_000_000
#: Bytes a trained fp32 parameter costs while training: weight, gradient, AdamW's two moments.
TRAINED_BYTES = 16
#: Bytes of an fp32 value (an EMA copy, a checkpointed tensor).
FP32 = 4
#: Bytes of an activation value under each ``precision``.
ACTIVATION_BYTES = {"fp32": 4, "bf16": 2, "fp16": 2}
TASKS = ("train", "generate")


@dataclass(frozen=True, kw_only=True)
class Estimate:
    """What a run is expected to need, in bytes, with what the RAM is made of.

    ``parts``: RAM by item (``"trained parameters"``, ``"EMA"``, ...), summing to
    ``ram_bytes``; ``unsized``: components left out because they cannot be built on the meta
    device (the estimate is then lower still).
    """

    task: str
    ram_bytes: int
    disk_bytes: int
    parts: dict[str, int] = field(default_factory=dict)
    unsized: tuple[str, ...] = ()

    def describe(self) -> str:
        """One line: the totals and what the RAM is made of."""
        parts = ", ".join(f"{name} {gigabytes(size)}" for name, size in self.parts.items() if size)
        text = f"{self.task}: about {gigabytes(self.ram_bytes)} of RAM ({parts})"
        if self.disk_bytes:
            text += f" and {gigabytes(self.disk_bytes)} of disk"
        if self.unsized:
            text += f"; not counted: {', '.join(self.unsized)} (cannot be sized on the meta device)"
        return text


def gigabytes(size: float) -> str:
    """``16 GB``, ``5.2 GB``, ``0.04 GB``: two significant digits, decimal gigabytes."""
    value = size / 1e9
    if value >= 10:
        return f"{value:.0f} GB"
    return f"{value:.2g} GB" if value < 1 else f"{value:.1f} GB"


# -- sizing on the meta device --------------------------------------------------------------------


def _slot_bytes(recipe: Recipe, slots: Iterable[str], registry: Registry | None,
                unsized: list[str], built: Mapping[str, nn.Module] | None = None) -> int:
    total = 0
    for slot in slots:
        module = (built or {}).get(slot) or build_on_meta(lambda slot=slot: recipe.build(slot, registry))
        if module is None:
            unsized.append(slot)
        else:
            total += module_bytes(module)
    return total


# -- the estimate ---------------------------------------------------------------------------------


def estimate(recipe: Recipe, *, task: str, registry: Registry | None = None,
             built: Mapping[str, nn.Module] | None = None) -> Estimate:
    """The RAM and disk a ``task`` (``train`` or ``generate``) run of ``recipe`` needs, from
    components built on the meta device (see the module docstring for the formulas). Reads
    no weights and allocates no model memory. ``built``: components already built, by slot
    (``generate`` builds its model before it generates): those are sized as they are, which
    also spares the meta-device builds (a few seconds of imports the first time)."""
    if task not in TASKS:
        raise ValueError(f"task must be one of {', '.join(TASKS)}, got {task!r}")
    recipe = untrained_recipe(recipe)
    if task == "train":
        return _train_estimate(recipe, registry)
    return _generate_estimate(recipe, registry, built)


def _generator_shape(recipe: Recipe, registry: Registry | None) -> tuple[int, int, int] | None:
    """``(frames, hidden_dim, layers)`` of the generator on one ``data.clip_seconds`` window,
    from the declared properties, or ``None`` when they are not declared."""
    if not (recipe.has("generator") and recipe.has("codec")):
        return None
    registry = registry or default_registry()
    generator, codec = recipe.choice("generator"), recipe.choice("codec")
    declared = {choice.kind: registry.properties(choice.kind, choice.plugin, choice.config)
                for choice in (generator, codec)}
    hidden, rate = declared["generator"].get("hidden_dim"), declared["codec"].get("frame_rate")
    if hidden is None or rate is None:
        return None
    layers = getattr(generator.config, "layers", 1)
    return math.ceil(recipe.data.clip_seconds * rate), int(hidden), int(layers)


@dataclass(frozen=True, kw_only=True)
class RunFolder:
    """What the folder of a ``v2a train`` run of a recipe holds, in bytes.

    ``checkpoint_bytes``: one checkpoint (the trained state, its EMA copy when
    ``training.ema > 0``, AdamW's two moments); ``export_bytes``: the exported weights under each
    ``training.export_dtype`` (``export_dtype`` is the recipe's); ``keep``: the recipe's
    ``training.keep_checkpoints``; ``written``: the checkpoints the run writes.
    """

    trained_parameters: int
    checkpoint_bytes: int
    export_bytes: dict[str, int]
    export_dtype: str
    keep: int
    written: int

    @property
    def peak_bytes(self) -> int:
        """The most the folder holds: ``keep + 1`` checkpoints while the next one is written
        (the oldest goes once it is complete), or at the end ``keep`` and the exports."""
        writing = min(self.written, self.keep + 1) * self.checkpoint_bytes
        return max(writing, self.finished_bytes)

    @property
    def finished_bytes(self) -> int:
        """What a finished run leaves: ``keep`` checkpoints and the exports."""
        return (min(self.written, self.keep) * self.checkpoint_bytes
                + self.export_bytes[self.export_dtype])


@dataclass(frozen=True, kw_only=True)
class _SizedTask:
    trained: int  # trained parameters
    state: int  # bytes of the trained state (what model.safetensors holds)
    frozen: int  # bytes of the task's frozen components
    exports: dict[str, int]  # bytes of the exported weights, by export dtype


def _export_bytes(tensors: Iterable[Tensor]) -> dict[str, int]:
    """Bytes of an export of ``tensors`` under each export dtype (the float32 ones take its
    size: :func:`v2a.training.checkpoints.export_tensors`)."""
    tensors = list(tensors)
    return {name: sum(t.numel() * (dtype.itemsize if t.dtype == torch.float32 else t.element_size())
                      for t in tensors) for name, dtype in EXPORT_DTYPES.items()}


def _size_task(recipe: Recipe, registry: Registry | None, unsized: list[str]) -> _SizedTask:
    """The training task of ``recipe`` sized on the meta device (or, when it cannot be built
    there, its slots alone, every parameter trained)."""
    spec = task_spec(recipe, registry)  # the registered training task: its heads and frozen parts
    task = build_on_meta(lambda: spec.build(recipe))
    if task is None:
        unsized.append(f"the {recipe.training.task} task's heads and frozen parts")
        state = _slot_bytes(recipe, spec.slots, registry, unsized)
        return _SizedTask(trained=state // FP32, state=state, frozen=0,
                          exports={name: state // FP32 * dtype.itemsize
                                   for name, dtype in EXPORT_DTYPES.items()})
    frozen_tensors = {id(t) for m in task.frozen for t in (*m.parameters(), *m.buffers())}
    trained = sum(p.numel() for p in task.parameters()
                  if p.requires_grad and id(p) not in frozen_tensors)
    exported = [t for m in task.exports().values()  # frozen parts are no export
                for t in m.state_dict(keep_vars=True).values() if id(t) not in frozen_tensors]
    return _SizedTask(trained=trained, state=tensor_bytes(trained_state(task).values()),
                      frozen=sum(module_bytes(m) for m in task.frozen),
                      exports=_export_bytes(exported))


def _run_folder(recipe: Recipe, sized: _SizedTask) -> RunFolder:
    t = recipe.training
    ema = sized.state if t.ema > 0 else 0
    written = -(-t.steps // t.checkpoint_every)  # one every checkpoint_every steps, one at the end
    return RunFolder(trained_parameters=sized.trained,
                     checkpoint_bytes=sized.state + ema + 2 * sized.trained * FP32,
                     export_bytes=sized.exports, export_dtype=t.export_dtype,
                     keep=t.keep_checkpoints, written=written)


def run_folder(recipe: Recipe, *, registry: Registry | None = None) -> RunFolder:
    """The run folder of a ``v2a train`` run of ``recipe``, sized on the meta device (reads no
    weights, allocates no model memory)."""
    recipe = untrained_recipe(recipe)
    return _run_folder(recipe, _size_task(recipe, registry, []))


def _train_estimate(recipe: Recipe, registry: Registry | None) -> Estimate:
    t = recipe.training
    unsized: list[str] = []
    sized = _size_task(recipe, registry, unsized)
    frozen_bytes = sized.frozen
    if not recipe.data.cache:  # clips decoded and encoded while training, in every worker
        slots = [s for s in extraction_slots(recipe) if recipe.has(s)]
        workers = max(1, recipe.data.num_workers)
        frozen_bytes += workers * _slot_bytes(recipe, slots, registry, unsized)
    activations = 0
    shape = _generator_shape(recipe, registry) if t.task == "generator" else None
    if shape is not None:
        frames, hidden, layers = shape
        activations = t.batch_size * frames * hidden * layers * ACTIVATION_BYTES[t.precision]
    parts = {
        "weights, gradients and AdamW moments": sized.trained * TRAINED_BYTES,
        "EMA": sized.state if t.ema > 0 else 0,
        "frozen components": frozen_bytes,
        "activations": activations,
        "process": PROCESS_BYTES,
    }
    return Estimate(task="train", ram_bytes=sum(parts.values()), parts=parts,
                    disk_bytes=_run_folder(recipe, sized).peak_bytes, unsized=tuple(unsized))


def _generate_estimate(recipe: Recipe, registry: Registry | None,
                       built: Mapping[str, nn.Module] | None = None) -> Estimate:
    unsized: list[str] = []
    slots = [s for s in ("codec", *(f"visual_encoders.{n}" for n in recipe.visual_streams),
                         "fuser", "generator", "reranker") if recipe.has(s)]
    weights = _slot_bytes(recipe, slots, registry, unsized, built)
    activations = 0
    shape = _generator_shape(recipe, registry)
    if shape is not None:
        frames, hidden, layers = shape
        s = recipe.sampling
        rows = s.candidates * len(guidance_parts(s.cfg_scale))
        activations = rows * frames * hidden * layers * ACTIVATION_BYTES[s.precision]
    parts = {"weights": weights, "activations": activations, "process": PROCESS_BYTES}
    return Estimate(task="generate", ram_bytes=sum(parts.values()), disk_bytes=0, parts=parts,
                    unsized=tuple(unsized))


# -- free resources -------------------------------------------------------------------------------


def available_memory(meminfo: str | Path = "/proc/meminfo") -> int | None:
    """Bytes of memory available to a new process: Linux's ``MemAvailable``, else free pages
    (``os.sysconf``), else ``None`` when the system does not say."""
    try:
        for line in Path(meminfo).read_text().splitlines():
            name, _, value = line.partition(":")
            if name == "MemAvailable":
                return int(value.split()[0]) * 1024  # reported in kB
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, OSError, ValueError):
        return None


def free_disk(folder: str | Path) -> int | None:
    """Free bytes on the file system that holds ``folder`` (or its nearest existing parent)."""
    path = Path(folder).expanduser().absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    try:
        return shutil.disk_usage(path).free
    except OSError:
        return None


def check_resources(estimate: Estimate, *, folder: str | Path) -> str | None:
    """One line saying what is short when ``estimate`` exceeds the free RAM or the free disk
    at ``folder`` (where the run writes), else ``None``. An amount the system does not report
    is not compared."""
    short = []
    ram = available_memory()
    if ram is not None and estimate.ram_bytes > ram:
        short.append(f"about {gigabytes(estimate.ram_bytes)} of RAM, and {gigabytes(ram)} "
                     f"{'is' if ram < 1.5e9 else 'are'} free")
    disk = free_disk(folder) if estimate.disk_bytes else None
    if disk is not None and estimate.disk_bytes > disk:
        short.append(f"about {gigabytes(estimate.disk_bytes)} of disk in {folder}, and "
                     f"{gigabytes(disk)} {'is' if disk < 1.5e9 else 'are'} free there")
    if not short:
        return None
    hint = ("lower training.batch_size or training.keep_checkpoints, or use a smaller model"
            if estimate.task == "train" else "use fewer sampling.candidates or a smaller model")
    return f"this {estimate.task} run expects {' and '.join(short)}; {hint}"
