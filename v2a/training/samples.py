"""Audio samples for TensorBoard while training: what a task's ``generate`` gives for a few
fixed validation clips, decoded by the recipe's codec, beside the clips' own audio."""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch
from torch import Tensor, nn

from v2a.recipe import Recipe
from v2a.sampler import sample


class AudioSamples:
    """Logs ``generated/<row>_<clip>`` for the first ``training.num_sample_videos`` validation
    clips at each call, and ``reference/<row>_<clip>`` (their cached codes decoded) the first
    time. The codec is built on first use."""

    def __init__(self, recipe: Recipe, *, device: torch.device, collate: Callable):
        self.recipe, self.device, self.collate = recipe, device, collate
        self.codec: nn.Module | None = None
        self.logged_reference = False

    def sampling(self) -> Callable[..., Tensor]:
        """``sampling(generator, condition, num_frames=) -> codes``: :func:`v2a.sampler.sample`
        with the recipe's ``sampling`` options, one candidate (what a task's ``generate`` takes)."""
        s = self.recipe.sampling
        return functools.partial(
            sample, steps=s.steps, temperature=s.temperature,
            anneal_temperature=s.anneal_temperature, top_k=s.top_k, top_p=s.top_p,
            cfg_scale=s.cfg_scale, candidates=1, seed=s.seed, precision=s.precision,
        )

    @torch.no_grad()
    def log(self, writer, task: nn.Module, val_data, step: int) -> None:
        """Sample with ``task`` (the EMA weights when on) and add the audio to ``writer``;
        nothing for a task without ``generate``, no validation data or no writer."""
        if not hasattr(task, "generate") or val_data is None or writer is None:
            return
        if self.codec is None:
            self.codec = self.recipe.build("codec").to(self.device).eval()
        n = min(self.recipe.training.num_sample_videos, len(val_data))
        batch = self.collate([val_data[i] for i in range(n)])
        if len(batch) == 0:
            return
        batch = batch.to(self.device)
        codes = task.generate(batch, self.sampling())
        for name, c in (("generated", codes), ("reference", batch.codes)):
            if name == "reference" and self.logged_reference:
                continue
            wav = self.codec.decode(c).float().cpu()  # [b, c, n]
            for row, clip_id in enumerate(batch.ids):
                length = self.codec.num_samples(int(batch.valid[row].sum()))
                audio = wav[row, :, :length].mean(dim=0).clamp(-1, 1)
                writer.add_audio(f"{name}/{row}_{clip_id}"[:200], audio, step,
                                 sample_rate=self.codec.sample_rate)
        self.logged_reference = True
