"""A training run folder turned into a model folder (``v2a export RUN -o DIR``), and the check
that a folder is one (what ``v2a push`` checks before uploading anything).

A model folder holds everything a recipe needs to run, with nothing outside it:

* the weights of every component that has some, as files beside the recipe: the run's exported
  weights (copied, or cast with ``dtype``) and the local files the run's recipe named (a fitted
  codec, a pre-trained checkpoint), copied in; weights given as ``none``, ``pretrained`` or a URL
  keep their value;
* ``recipe.yaml``: the run's resolved recipe with every weights file of the folder written
  ``./FILE sha256:<hex>``, so it loads wherever the folder is and refuses a file whose content
  changed; the ``data`` and ``training`` sections kept as the run had them (they record how the
  model was trained; generation reads only ``data.clip_seconds`` of them);
* ``README.md``: the model card (:mod:`v2a.export.card`);
* ``results.json``: the ``v2a evaluate`` results the card's scores come from, when given.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from safetensors import safe_open

from v2a.downloads import file_digest
from v2a.errors import UserError
from v2a.export.card import ModelFacts, TrainingFacts, model_card
from v2a.files import atomic_folder
from v2a.recipe import Recipe, RecipeDumper, load_recipe, read_yaml
from v2a.tasks import EXPORT_DTYPES, task_spec
from v2a.training.checkpoints import export_tensors, latest_checkpoint
from v2a.weights import (
    NONE,
    PRETRAINED,
    WeightsError,
    checkpoint_format,
    parse_weights,
    resolve_file,
    save_state,
    SAFETENSORS,
)

#: The files of a model folder besides its weights.
RECIPE_FILE = "recipe.yaml"
CARD_FILE = "README.md"
SCORES_FILE = "results.json"


class ExportError(UserError):
    """A run that cannot be exported, or a folder that is not a model folder."""


@dataclass(frozen=True, kw_only=True)
class ExportedWeights:
    """One weights file of a model folder: the recipe slot it belongs to, its file name in the
    folder, where it came from, its SHA-256 and its size."""

    slot: str
    name: str
    source: Path
    sha256: str
    bytes: int
    parameters: int | None  # tensors' elements (None for a file that is not safetensors)


@dataclass(frozen=True, kw_only=True)
class ExportResult:
    """What :func:`export_run` wrote: the folder and its weights (one entry per slot)."""

    folder: Path
    weights: list[ExportedWeights] = field(default_factory=list)


def scores_file(given: str | Path) -> Path:
    """The ``results.json`` of ``--scores``: the file itself or the ``v2a evaluate`` output
    folder that holds it; refused in one sentence when it is neither."""
    path = Path(given)
    if path.is_dir():
        path = path / SCORES_FILE
    if not path.is_file():
        raise ExportError(f"the scores {given} are neither a results.json nor a v2a evaluate "
                          f"output folder holding one; give the -o folder of v2a evaluate")
    return path


def _read_scores(path: Path) -> dict[str, Any]:
    try:
        results = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ExportError(f"cannot read the scores {path}: {exc}") from None
    if not isinstance(results, dict) or "frechet" not in results:
        raise ExportError(f"{path} is not the results.json of v2a evaluate; give the -o folder "
                          f"of v2a evaluate")
    return results


def _parameters(path: Path) -> int | None:
    if checkpoint_format(path) != SAFETENSORS:
        return None
    total = 0
    with safe_open(str(path), framework="pt") as file:
        for key in file.keys():
            shape = file.get_slice(key).get_shape()
            count = 1
            for size in shape:
                count *= size
            total += count
    return total


def _write_weights(source: Path, target: Path, dtype: str | None) -> None:
    """Copy ``source`` to ``target``, or, with ``dtype``, write its tensors cast to it (a
    safetensors file only; others are copied as they are)."""
    if dtype is None or checkpoint_format(source) != SAFETENSORS:
        shutil.copyfile(source, target)
        return
    with safe_open(str(source), framework="pt") as file:
        metadata = file.metadata() or {}
        tensors = {key: file.get_tensor(key) for key in file.keys()}
    as_float32 = {k: v.float() if v.is_floating_point() else v for k, v in tensors.items()}
    save_state(export_tensors(as_float32, dtype, path=target), target, metadata=metadata)


def _at(data: dict[str, Any], slot: str) -> dict[str, Any]:
    """The mapping of the component ``slot`` (``codec``, ``visual_encoders.clip``,
    ``reranker.audio_encoder``) in recipe data."""
    node: Any = data
    for part in slot.split("."):
        node = node[part]
    return node


def run_facts(run: Path, recipe: Recipe) -> TrainingFacts:
    """How the run was trained, for the card: the manifest and the clips (the newest
    checkpoint's ``state.json`` counts them), the steps it reached and the recipe's."""
    state: dict[str, Any] = {}
    checkpoint = latest_checkpoint(run)
    if checkpoint is not None:
        try:
            state = json.loads((checkpoint / "state.json").read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            state = {}
    return TrainingFacts(
        task=recipe.training.task, manifest=str(recipe.data.manifest or ""),
        clips=state.get("dataset_size"), steps=state.get("step"),
        planned_steps=recipe.training.steps, batch_size=recipe.training.batch_size,
        clips_consumed=state.get("clips_consumed"), precision=str(recipe.training.precision),
        ema=recipe.training.ema, recipe_source=str(state.get("recipe") or recipe.source))


def _plan(run: Path, recipe: Recipe) -> dict[str, tuple[Path, str]]:
    """Every component with a weights file to put in the folder: slot → (the file, its name in
    the folder). The run's exports for the slots its task trains, then the local files the
    recipe names (one copy per file, however many slots use it). A run without the exports its
    task declares is refused in one sentence."""
    spec = task_spec(recipe)
    plan: dict[str, tuple[Path, str]] = {}
    for slot, name in spec.export_files.items():
        if not recipe.has(slot):
            continue
        if (run / name).is_file():
            plan[slot] = (run / name, name)
        elif slot in spec.exports:
            raise ExportError(
                f"the run {run} has no {name}, so it has not finished; finish it with "
                f"v2a train {run / RECIPE_FILE} --out {run} --resume, then export it")
    taken = {name for _, name in plan.values()}
    by_source = {path.resolve(): name for path, name in plan.values()}
    for slot, choice in recipe.all_components():
        weights = choice.options.get("weights")
        if slot in plan or not isinstance(weights, str) or weights.lower() in (NONE, PRETRAINED):
            continue
        if not parse_weights(weights).is_local:
            continue  # a URL (or hf://) value is kept as it is: it is the same everywhere
        path = resolve_file(weights, what=f"{slot} of {recipe.source}")
        name = by_source.get(path.resolve())
        if name is None:
            name = f"{slot}{path.suffix or '.safetensors'}"
            while name in taken:
                name = f"_{name}"
            taken.add(name)
            by_source[path.resolve()] = name
        plan[slot] = (path, name)
    return plan


def export_run(run: str | Path, out: str | Path, *, scores: str | Path | None = None,
               licence: str | None = None, name: str | None = None, dtype: str | None = None,
               datasets: tuple[str, ...] = (), force: bool = False) -> ExportResult:
    """Write the model folder of the training run folder ``run`` into ``out``: its weights,
    ``recipe.yaml`` and ``README.md`` (see the module's docstring), and ``results.json`` when
    ``scores`` (a ``results.json`` or a ``v2a evaluate`` output folder) is given. ``licence``:
    an SPDX identifier for the card (``other`` when None); ``name``: the model's name (default:
    the recipe's); ``dtype``: cast the weights' floating tensors to it (default: copied as they
    are); ``datasets``: Hub dataset ids for the card. The folder is written beside ``out`` and
    renamed into place, so it is complete or absent; a non-empty ``out`` is refused unless
    ``force``, and so is an ``out`` that holds the run or lies inside it."""
    run, out = Path(run), Path(out)
    if not (run / RECIPE_FILE).is_file():
        raise ExportError(f"{run} is not a training run folder (it has no {RECIPE_FILE}); give "
                          f"the --out folder of v2a train")
    if dtype is not None and dtype not in EXPORT_DTYPES:
        raise ExportError(f"--dtype {dtype} is not one of {', '.join(EXPORT_DTYPES)}")
    where = out.resolve()
    if where == run.resolve() or run.resolve() in where.parents or where in run.resolve().parents:
        raise ExportError(f"the export folder {out} overlaps the run {run}; give a folder "
                          f"outside the run")
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not force)):
        raise ExportError(f"{out} exists and is not an empty folder; give another -o, or "
                          f"--force to replace it")
    recipe = load_recipe(run / RECIPE_FILE)
    plan = _plan(run, recipe)
    results = _read_scores(scores_file(scores)) if scores is not None else None
    data = recipe.as_data()
    if name:
        data["name"] = name
    exported: list[ExportedWeights] = []
    with atomic_folder(out) as tmp:
        written: dict[str, ExportedWeights] = {}
        for slot, (source, file_name) in plan.items():
            target = tmp / file_name
            if file_name not in written:
                _write_weights(source, target, dtype)
                written[file_name] = ExportedWeights(
                    slot=slot, name=file_name, source=source,
                    sha256=file_digest(target).removeprefix("sha256:"),
                    bytes=target.stat().st_size, parameters=_parameters(target))
            pinned = written[file_name]
            exported.append(dataclasses.replace(pinned, slot=slot))
            _at(data, slot)["weights"] = f"./{file_name} sha256:{pinned.sha256}"
        training = run_facts(run, recipe)
        recipe_text = (f"# exported by v2a export from the run {run.name} (recipe "
                       f"{training.recipe_source}); weights beside this file\n"
                       + yaml.dump(data, Dumper=RecipeDumper, sort_keys=False))
        (tmp / RECIPE_FILE).write_text(recipe_text, encoding="utf-8")
        facts = ModelFacts(name=str(data["name"]), description=str(data.get("description") or ""),
                           recipe=data, weights=exported, licence=licence, datasets=datasets,
                           training=training, scores=results)
        (tmp / CARD_FILE).write_text(model_card(facts), encoding="utf-8")
        if scores is not None:
            shutil.copyfile(scores_file(scores), tmp / SCORES_FILE)
    return ExportResult(folder=out, weights=exported)


def local_weights(data: Mapping[str, Any]) -> list[str]:
    """Every ``weights`` value of recipe data (read as written, not resolved) that names a local
    file (a path or a ``file://`` URL, with or without a ``sha256:``), at any depth."""
    found: list[str] = []
    for key, value in data.items():
        if (key == "weights" and isinstance(value, str) and value.lower() not in (NONE, PRETRAINED)
                and parse_weights(value).is_local):
            found.append(value)
        elif isinstance(value, Mapping):
            found.extend(local_weights(value))
    return found


def check_model_folder(folder: str | Path) -> Recipe:
    """Refuse, in one sentence, a folder that is not a model folder: it must hold a
    ``README.md`` and a ``recipe.yaml`` that loads, whose ``./`` weights files are in the folder
    (not above it) with the content their ``sha256:`` pins. Returns the loaded recipe."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ExportError(f"{folder} is not a folder; give the -o folder of v2a export")
    for needed in (RECIPE_FILE, CARD_FILE):
        if not (folder / needed).is_file():
            raise ExportError(f"{folder} has no {needed}, so it is not a model folder; write one "
                              f"with v2a export RUN -o {folder}")
    raw = read_yaml(folder / RECIPE_FILE)
    if "extends" in raw:
        raise ExportError(f"{folder / RECIPE_FILE} extends other recipes, which are not in the "
                          f"folder; a model folder's recipe is whole (v2a export writes one)")
    for value in local_weights(raw):
        source = parse_weights(value)
        path = (folder / source.location).resolve()
        if not source.location.startswith("./") or folder.resolve() not in path.parents:
            raise ExportError(f"{folder / RECIPE_FILE} names the weights {source.location}, "
                              f"which is not a ./ file of the folder; a model folder holds its "
                              f"weights (v2a export puts them there)")
        try:
            resolve_file(str(path) + (f" sha256:{source.sha256}" if source.sha256 else ""),
                         what=f"{folder / RECIPE_FILE}")
        except WeightsError as exc:
            raise ExportError(str(exc)) from None
    return load_recipe(folder / RECIPE_FILE)
