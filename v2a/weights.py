"""Weights: where a component's parameters come from, loaded safely, saved atomically.

A component with pre-trained weights takes a ``weights`` option in its recipe:

* ``none``: random initialisation (tests, and anyone training from scratch);
* ``pretrained``: the library's own download-and-cache (DAC, open_clip, torchvision), which
  needs internet the first time;
* a path to a local file (``.safetensors``, or a ``.pt``/``.pth``/``.ckpt`` that loads with
  ``torch.load(weights_only=True)``).

A checkpoint that would run code when unpickled is refused, and a file that cannot be had ends
in one sentence naming it, where it was looked for and how to provide it.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from safetensors.torch import load_file, save_file

from v2a.errors import UserError

NONE = "none"
PRETRAINED = "pretrained"


class WeightsError(UserError):
    """Weights that are missing, unreadable or unsafe."""


def is_random(weights: str | None) -> bool:
    return weights is None or weights.lower() == NONE


def local_file(weights: str, *, what: str, hint: str = "") -> Path:
    """The local file a ``weights`` option names, or a :class:`WeightsError` saying what to do."""
    path = Path(os.path.expanduser(weights))
    if path.is_file():
        return path
    how = f" {hint}" if hint else ""
    raise WeightsError(
        f"the weights file {weights!r} for {what} does not exist (looked in "
        f"{path.resolve().parent}); give the path of a downloaded checkpoint, "
        f"'{PRETRAINED}' to download the published one, or '{NONE}' for random weights.{how}"
    )


def load_checkpoint(path: str | Path) -> Any:
    """Read a checkpoint without running code: safetensors, or a weights-only torch pickle.

    Returns a ``{name: tensor}`` mapping for safetensors, or whatever plain containers of
    tensors and numbers the torch file holds.
    """
    path = Path(path)
    if path.suffix == ".safetensors":
        try:
            return load_file(str(path))
        except Exception as exc:
            raise WeightsError(f"{path} is not a readable safetensors file: {exc}") from None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise WeightsError(
            f"{path} was refused: loading it would run code stored in the file "
            f"({str(exc).splitlines()[0]}); convert it to safetensors or a weights-only checkpoint"
        ) from None
    except (RuntimeError, EOFError, OSError) as exc:
        raise WeightsError(f"{path} is not a readable checkpoint: {exc}") from None


def save_state(state: Mapping[str, torch.Tensor], path: str | Path, metadata: dict[str, str] | None = None) -> None:
    """Write tensors as safetensors atomically (a temp file renamed over the target)."""
    from v2a.media import atomic_output

    tensors = {k: v.detach().contiguous().clone().cpu() for k, v in state.items()}
    with atomic_output(path) as tmp:
        save_file(tensors, tmp, metadata=metadata)


def load_into(module: torch.nn.Module, state: Mapping[str, Tensor], path: str | Path, what: str) -> None:
    """Load ``state`` strictly into ``module``, or a :class:`WeightsError` saying what differs."""
    own = module.state_dict()
    missing = sorted(own.keys() - state.keys())
    unexpected = sorted(state.keys() - own.keys())
    wrong = sorted(k for k in own.keys() & state.keys() if tuple(own[k].shape) != tuple(state[k].shape))
    if missing or unexpected or wrong:
        problems = []
        if missing:
            problems.append(f"{len(missing)} missing (e.g. {missing[0]!r})")
        if unexpected:
            problems.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]!r})")
        if wrong:
            k = wrong[0]
            problems.append(
                f"{len(wrong)} of another shape (e.g. {k!r}: {tuple(state[k].shape)} in the file, "
                f"{tuple(own[k].shape)} in the model)"
            )
        raise WeightsError(
            f"{path} does not fit {what}: its parameters are {', '.join(problems)}; check the "
            "model options match the checkpoint"
        )
    module.load_state_dict(state, strict=True)


def load_trained(module: torch.nn.Module, weights: str | None, *, what: str) -> None:
    """Load the ``weights`` option of a trained component (a fuser, a generator) into ``module``:
    ``none`` keeps the random initialisation; a path is loaded strictly (the
    ``fuser.safetensors`` / ``generator.safetensors`` a training run exports)."""
    if is_random(weights):
        return
    if weights.lower() == PRETRAINED:
        raise WeightsError(
            f"{what} has no published weights; give the .safetensors file a training run exported "
            f"(`v2a train` writes <run>/fuser.safetensors and <run>/generator.safetensors) or 'none'"
        )
    path = local_file(weights, what=what, hint="A training run exports it (`v2a train`).")
    load_into(module, load_checkpoint(path), path, what)
