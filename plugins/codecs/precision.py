"""Choosing a codec part's precision (float32 or bfloat16) from a measurement on this machine.

Whether bfloat16 pays depends on the CPU, not on the model: on an Intel Xeon with AMX, DAC's
bf16 convolutions run several times faster than fp32 ones, while EnCodec's bf16 LSTM decoder is
slower; on an AMD EPYC with AVX-512 BF16 and no AMX the figures differ again. So ``precision:
auto`` runs each part (the encoder, the decoder) once in each precision, on one second of
generated audio, and keeps bfloat16 only where it is both

* faster, by at least :data:`MIN_GAIN` (a smaller difference is within one timing's noise), and
* accurate: its output's signal-to-noise ratio against the fp32 output is at least
  :data:`MIN_SNR_DB`.

The choice is cached as JSON in v2a's cache folder (``precision.json``), one entry per key:
the CPU model, the torch version, the number of threads and the codec's configuration. A
changed key measures again; a cache file that cannot be read is ignored (with a note) and
replaced. The measurement takes a few seconds, once per machine and configuration.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor

from v2a.downloads import cache_folder
from v2a.files import atomic_output
from v2a.log import note
from v2a.machine import cpu_model

Precision = Literal["auto", "float32", "bfloat16"]
DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "bfloat16": torch.bfloat16}

#: bf16 must be at least this much faster (its time ≤ (1 - MIN_GAIN) × the fp32 time).
MIN_GAIN = 0.1
#: bf16's output against the fp32 output, in dB (10·log10 of signal over error energy). bf16
#: keeps 8 significant bits, about 48 dB for one rounding; through a deep network the errors
#: add up to roughly 25-40 dB. Below 20 dB the difference would be audible as noise.
MIN_SNR_DB = 20.0
CACHE_FILE_NAME = "precision.json"


def snr_db(reference: Tensor, other: Tensor) -> float:
    """Signal-to-noise ratio of ``other`` against ``reference`` in dB (``inf`` when equal)."""
    reference, other = reference.double(), other.double()
    error = (other - reference).pow(2).sum().item()
    signal = reference.pow(2).sum().item()
    if error == 0.0:
        return math.inf
    return 10.0 * math.log10(signal / error) if signal > 0 else -math.inf


def machine_key(config: Mapping[str, Any]) -> dict[str, Any]:
    """What a cached choice is valid for: this CPU, torch, thread count, and ``config``."""
    return {"cpu": cpu_model(), "torch": torch.__version__, "threads": torch.get_num_threads(),
            **{key: config[key] for key in sorted(config)}}


def default_cache_file() -> Path:
    """``precision.json`` in v2a's cache folder (``$V2A_CACHE`` or ``~/.cache/v2a``)."""
    return cache_folder() / CACHE_FILE_NAME


def _read_cache(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        entries = json.loads(path.read_text())
        if not isinstance(entries, dict) or not all(isinstance(e, dict) for e in entries.values()):
            raise ValueError("not an object of entries")
        return entries
    except (OSError, ValueError) as exc:  # json.JSONDecodeError and UnicodeDecodeError included
        note(f"ignored the codec precision cache {path} ({exc}); measuring again")
        return {}


def _write_cache(path: Path, entries: Mapping[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(path) as tmp:
        Path(tmp).write_text(json.dumps(entries, indent=1, sort_keys=True))


def measure_part(run: Callable[[torch.dtype], Tensor], *, timer: Callable[[], float]) -> dict[str, Any]:
    """Time ``run`` in fp32 and bf16 (the second of two calls each: the first builds the
    kernels) and compare the outputs: ``{"float32_s", "bfloat16_s", "snr_db", "choice"}``."""
    seconds, outputs = {}, {}
    for name, dtype in DTYPES.items():
        run(dtype)
        start = timer()
        outputs[name] = run(dtype)
        seconds[name] = timer() - start
    snr = snr_db(outputs["float32"], outputs["bfloat16"])
    faster = seconds["bfloat16"] <= (1.0 - MIN_GAIN) * seconds["float32"]
    return {"float32_s": seconds["float32"], "bfloat16_s": seconds["bfloat16"],
            "snr_db": round(snr, 2) if math.isfinite(snr) else None,  # None: identical outputs
            "choice": "bfloat16" if faster and snr >= MIN_SNR_DB else "float32"}


def choose_precisions(parts: Mapping[str, Callable[[torch.dtype], Tensor]], *,
                      key: Mapping[str, Any], cache_file: Path | None = None,
                      timer: Callable[[], float] = time.perf_counter) -> dict[str, str]:
    """The precision of each part (``{"encode": "bfloat16", "decode": "float32"}``, say).

    ``parts`` maps a part's name to ``run(dtype) -> Tensor``, which runs that part in ``dtype``
    on a fixed input and returns its output (any dtype). A choice cached under ``key`` (see
    :func:`machine_key`) in ``cache_file`` (default :func:`default_cache_file`) is returned as
    it is; otherwise each part is measured (:func:`measure_part`, with ``timer``) and the
    result cached. ``run`` may leave its module in either dtype: the caller casts afterwards."""
    path = cache_file or default_cache_file()
    entry_name = json.dumps(dict(key), sort_keys=True)
    entries = _read_cache(path)
    cached = entries.get(entry_name, {}).get("parts", {})
    if set(cached) >= set(parts) and all(cached[p].get("choice") in DTYPES for p in parts):
        return {part: cached[part]["choice"] for part in parts}
    measured = {part: measure_part(run, timer=timer) for part, run in parts.items()}
    entries[entry_name] = {"key": dict(key), "parts": measured}
    _write_cache(path, entries)
    choices = {part: m["choice"] for part, m in measured.items()}
    note(f"measured the codec's precision on this machine: {choices} (cached in {path})")
    return choices


def choose_encoder_decoder(encoder: torch.nn.Module, decoder: torch.nn.Module, audio: Tensor,
                           latents: Tensor, *, key: Mapping[str, Any]) -> dict[str, str]:
    """:func:`choose_precisions` for a codec's two parts: ``encoder`` run on ``audio`` and
    ``decoder`` on ``latents`` (each cast to the precision being measured, outputs in fp32),
    cached under :func:`machine_key` of ``key`` (the codec and its options)."""
    def part(module: torch.nn.Module, inputs: Tensor) -> Callable[[torch.dtype], Tensor]:
        def run(dtype: torch.dtype) -> Tensor:
            with torch.inference_mode():
                return module.to(dtype)(inputs.to(dtype)).float()
        return run

    return choose_precisions({"encode": part(encoder, audio), "decode": part(decoder, latents)},
                             key=machine_key(key))
