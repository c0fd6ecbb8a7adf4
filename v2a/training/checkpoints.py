"""Checkpoints of a training run: writing, reading, listing and pruning them, the optimizer's
state as tensors, the fingerprints that compare the ranks' weights, and the recipe hash that
tells whether a run may be resumed with a recipe.

A checkpoint is the folder ``<run>/checkpoints/step_<N>/``, written by rank 0 into a temporary
folder that is renamed into place (complete or absent; see :mod:`v2a.training`)::

    model.safetensors      the trained weights (task state dict; frozen modules left out)
    ema.safetensors        the EMA weights, same keys (only when training.ema > 0)
    optimizer.safetensors  AdamW's state tensors, keys state.<param index>.<name>
    state.json             see :func:`checkpoint_state`

Pruning (:func:`prune_checkpoints`) keeps the checkpoint just written and the newest others up
to ``training.keep_checkpoints``; an old checkpoint is first renamed to a temporary of this
process (from then on it is no checkpoint) and only then deleted, so a prune killed half-way
leaves complete checkpoints and a temporary that the next run removes, never a checkpoint with
files missing.

The exports (:func:`write_export`, the weights ``v2a generate`` loads) are written in
``training.export_dtype``; checkpoints always keep the tensors as trained, so that a resumed
run computes what the uninterrupted one did.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import re
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file
from torch import Tensor, nn

from v2a import __version__
from v2a.files import atomic_folder, is_stale, remove_stale_temporaries, temporary_path
from v2a.recipe import Recipe, read_saved_recipe, recipe_differences
from v2a.tasks import EXPORT_DTYPES, TrainingError, trained_state
from v2a.weights import WeightsError, check_finite, first_non_finite, save_state, write_safetensors

CHECKPOINT_FORMAT = "v2a-train-checkpoint"
CHECKPOINT_VERSION = 1
STEP_DIR = re.compile(r"^step_(\d+)$")
#: Fields that may change between a run and its resumption (they do not change what one step
#: computes): everything else of the recipe must hash the same. (``training.compile`` is not
#: one: compiled layers draw their dropout masks from another random stream.)
RESUMABLE_FIELDS = (
    "training.steps", "training.out_dir", "training.checkpoint_every",
    "training.keep_checkpoints", "training.log_every", "training.eval_every",
    "training.sample_every", "training.num_sample_videos", "training.export_dtype",
    "sampling.compile", "data.num_workers", "data.cache", "data.manifest", "data.root",
)


def recipe_hash(recipe: Recipe) -> str:
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
    folder, rename it to ``checkpoints/step_<step>``, then prune to ``keep`` checkpoints
    (:func:`prune_checkpoints`): the older ones go only once the new one is complete."""
    folder = Path(run_dir) / "checkpoints"
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / f"step_{step:08d}"
    if (final / "state.json").is_file():
        return final  # this step is saved already (e.g. a signal right after a checkpoint)
    with atomic_folder(final) as tmp:  # a folder without state.json is never complete
        for name, tensors in files.items():
            target = tmp / f"{name}.safetensors"
            write_safetensors({k: v.detach().contiguous().cpu() for k, v in tensors.items()},
                              target, metadata={"format": CHECKPOINT_FORMAT, "step": str(step)})
        with open(tmp / "state.json", "w", encoding="utf-8") as f:
            json.dump(state, f, indent=2)
            f.write("\n")
    prune_checkpoints(run_dir, keep=keep, written=final)
    return final


def prune_checkpoints(run_dir: Path, *, keep: int, written: Path) -> list[Path]:
    """Remove the complete checkpoints of ``run_dir`` but ``written`` (never removed) and the
    newest ``keep - 1`` others; returns the folders removed. Each goes in two moves: a rename
    to a temporary of this process, after which it is no checkpoint, then the deletion; what
    cannot be deleted stays a temporary, removed by a later run (:func:`remove_temporary`),
    and one that cannot be renamed (a read-only folder) stays a checkpoint."""
    others = [path for _, path in checkpoints(run_dir) if path != Path(written)]
    removed = []
    for old in others[:max(0, len(others) - (keep - 1))]:
        retired = temporary_path(old)
        try:
            old.rename(retired)
        except OSError:
            continue
        shutil.rmtree(retired, ignore_errors=True)
        removed.append(old)
    return removed


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


def load_trained_state(task: nn.Module, state: Mapping[str, Tensor], path: Path) -> None:
    """Load a checkpoint's ``state`` (:func:`~v2a.tasks.trained_state` keys) into
    ``task``, or a :class:`WeightsError` when the keys differ."""
    own = trained_state(task)
    missing, unexpected = sorted(own.keys() - state.keys()), sorted(state.keys() - own.keys())
    if missing or unexpected:
        example = (missing or unexpected)[0]
        raise WeightsError(f"{path} does not fit the recipe's model ({len(missing)} missing and "
                           f"{len(unexpected)} unexpected tensors, e.g. {example!r})")
    task.load_state_dict(dict(state), strict=False)


def export_tensors(tensors: Mapping[str, Tensor], dtype: str, *,
                   path: Path) -> dict[str, Tensor]:
    """``tensors`` as an export stores them: the float32 ones in ``dtype`` (a name of
    :data:`~v2a.tasks.EXPORT_DTYPES`), the others (integer tensors, float64 ones) as they are.
    A finite value that ``dtype`` cannot hold (float16 ends at ±65504) is a
    :class:`TrainingError` naming the tensor and ``path``."""
    target = EXPORT_DTYPES[dtype]
    cast = {k for k, v in tensors.items()
            if v.dtype == torch.float32 and target != torch.float32}
    stored = {k: v.detach().to(target) if k in cast else v.detach()
              for k, v in tensors.items()}
    overflow = first_non_finite({k: stored[k] for k in sorted(cast)
                                 if bool(torch.isfinite(tensors[k]).all())})
    if overflow is not None:
        name, count, _ = overflow
        raise TrainingError(
            f"cannot export {path} in {dtype}: {count} values of {name!r} are beyond its range; "
            "export again with --resume and training.export_dtype=bfloat16 or float32")
    return stored


def write_export(module: nn.Module, path: Path, *, dtype: str, metadata: dict[str, str]) -> None:
    """Write the weights to use of a trained slot to ``path`` with its float32 tensors in
    ``dtype`` (:func:`export_tensors`): the file the module's own ``save_weights(path)`` writes
    when it has one (rewritten in ``dtype``, its metadata kept), else the module's
    ``state_dict()`` with ``metadata``. Loading either casts back to the model's dtype."""
    if hasattr(module, "save_weights"):
        module.save_weights(path)
        if dtype == "float32":
            return
        with safe_open(str(path), framework="pt") as file:
            metadata = file.metadata() or {}
            tensors = {key: file.get_tensor(key) for key in file.keys()}
    else:
        tensors = module.state_dict()
    save_state(export_tensors(tensors, dtype, path=path), path, metadata=metadata)


def fingerprint(tensors: Mapping[str, Tensor]) -> str:
    """A hash of the names, dtypes, shapes and bytes of ``tensors`` (compares ranks' weights)."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:16]


def recipe_difference(run_dir: Path, recipe: Recipe) -> str:
    """Which keys of the run's saved recipe differ from ``recipe`` (for the resume error)."""
    saved = read_saved_recipe(Path(run_dir) / "recipe.yaml")
    if saved is None:
        return "its recipe hash differs"
    differ = recipe_differences(saved, recipe.as_data(),
                                ignore=(*RESUMABLE_FIELDS, "name", "description"))
    if not differ:
        return "its recipe hash differs"
    return ", ".join(f"{k}: {then!r} then, {now!r} now" for k, then, now in differ[:3])


def checkpoint_state(recipe: Recipe, *, step: int, consumed: int, dataset_size: int,
                     world_size: int, optimizer: torch.optim.Optimizer,
                     scaler: torch.amp.GradScaler, metrics: dict[str, float]) -> dict[str, Any]:
    """What ``state.json`` holds: step, clips consumed, epoch, learning rate schedule, param
    groups, GradScaler state, RNG scheme, recipe hash, world size, last metrics (the trainer adds
    the fingerprints of every rank's weights)."""
    t = recipe.training
    _, groups = optimizer_files(optimizer)
    return {
        "format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION,
        "step": step, "clips_consumed": consumed,
        "epoch": consumed // dataset_size, "dataset_size": dataset_size,
        "data_order": "permutation of the training clips seeded by (seed, epoch)",
        "task": t.task, "recipe": recipe.name,
        "recipe_hash": recipe_hash(recipe), "seed": t.seed,
        "world_size": world_size,
        "batch_size": t.batch_size, "grad_accum": t.grad_accum,
        "scheduler": {"name": "warmup_cosine", "lr": t.lr, "lr_min": t.lr_min,
                      "warmup_steps": t.warmup_steps, "total_steps": t.steps,
                      "last_lr": optimizer.param_groups[0]["lr"]},
        "optimizer": {"name": "AdamW", "param_groups": groups},
        "scaler": scaler.state_dict() if scaler.is_enabled() else None,
        "rng": {"scheme": "each micro-batch seeds its generators from (seed, step, slot)",
                "seed": t.seed},
        "metrics": metrics,
        "v2a_version": __version__, "torch_version": torch.__version__,
        "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def read_resumable_state(path: Path, recipe: Recipe, *, run_dir: Path, dataset_size: int) -> dict[str, Any]:
    """The ``state.json`` of the checkpoint ``path``, checked to continue a run of ``recipe`` on
    ``dataset_size`` training clips (a :class:`TrainingError` in one sentence otherwise)."""
    try:
        state = json.loads((path / "state.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise TrainingError(f"cannot read the checkpoint {path}: {exc}") from None
    if state.get("format") != CHECKPOINT_FORMAT:
        raise TrainingError(f"{path} is not a v2a training checkpoint")
    if state["recipe_hash"] != recipe_hash(recipe):
        raise TrainingError(
            f"{path} was trained with another recipe ({recipe_difference(run_dir, recipe)}); "
            "resume with the same recipe and overrides, or train into a new --out folder"
        )
    if state["dataset_size"] != dataset_size:
        raise TrainingError(
            f"{path} was trained on {state['dataset_size']} clips, but the "
            f"{recipe.training.train_split!r} split now holds {dataset_size}; resume with the "
            "same data, or train into a new --out folder"
        )
    return state


def restore_weights(path: Path, state: dict[str, Any], *, task: nn.Module, ema: nn.Module | None,
                    optimizer: torch.optim.Optimizer, device: torch.device) -> None:
    """Load the checkpoint ``path`` (whose ``state.json`` is ``state``) into the task, its EMA
    copy and the optimizer; weights that hold NaN or infinity are refused."""

    def weights(name: str) -> dict[str, Tensor]:  # as saved: NaN there never resumes well
        tensors = load_file(str(path / name), device=str(device))
        check_finite(tensors, path / name)
        return tensors

    try:
        load_trained_state(task, weights("model.safetensors"), path)
        if ema is not None:
            if not (path / "ema.safetensors").is_file():
                raise WeightsError(f"{path} has no EMA weights but training.ema is on")
            load_trained_state(ema, weights("ema.safetensors"), path)
        load_optimizer(optimizer, load_file(str(path / "optimizer.safetensors"), device=str(device)),
                       state["optimizer"]["param_groups"])
    except (OSError, ValueError, RuntimeError) as exc:
        raise TrainingError(f"cannot restore the checkpoint {path}: {exc}") from None
