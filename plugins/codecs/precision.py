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
from typing import Any

import torch
from torch import Tensor

from v2a.downloads import cache_folder
from v2a.files import atomic_output
from v2a.log import note
from v2a.machine import cpu_model
from v2a_plugins.codecs.options import PRECISION_OPTIONS, Precision  # noqa: F401 (re-exported)

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
    found = entries.get(entry_name, {}).get("parts")
    cached = {part: measured for part, measured in (found if isinstance(found, dict) else {}).items()
              if isinstance(measured, dict) and measured.get("choice") in DTYPES}
    missing = {part: run for part, run in parts.items() if part not in cached}
    if missing:  # measure the parts not cached yet; the entry keeps the others' measurements
        measured = {part: measure_part(run, timer=timer) for part, run in missing.items()}
        cached.update(measured)
        entries[entry_name] = {"key": dict(key), "parts": cached}
        chosen = {part: m["choice"] for part, m in measured.items()}
        try:
            _write_cache(path, entries)
        except OSError as exc:  # a read-only cache folder: use the choice, measure next time too
            note(f"measured the codec's precision on this machine: {chosen}; could not cache "
                 f"it in {path} ({exc.strerror or exc}), so it will be measured again next time")
        else:
            note(f"measured the codec's precision on this machine: {chosen} (cached in {path})")
    return {part: cached[part]["choice"] for part in parts}


def choose_encoder_decoder(encoder: torch.nn.Module, decoder: torch.nn.Module,
                           wanted: Mapping[str, str], inputs: Callable[[], tuple[Tensor, Tensor]],
                           *, key: Mapping[str, Any]) -> dict[str, str]:
    """``{"encode": ..., "decode": ...}`` for a codec whose options ask ``wanted`` (each part
    ``float32``, ``bfloat16`` or ``auto``): the parts set to ``auto`` are chosen by
    :func:`choose_precisions`, ``encoder`` run on ``audio`` and ``decoder`` on ``latents``
    (``inputs()``, called only when a part is measured; each part cast to the precision being
    measured, outputs in fp32), cached under :func:`machine_key` of ``key`` (the codec and the
    options that shape it). A codec built on the meta device (memory estimates, recipe checks)
    has nothing to time: its ``auto`` parts are float32."""
    auto = [part for part in ("encode", "decode") if wanted[part] == "auto"]
    on_meta = any(p.is_meta for module in (encoder, decoder) for p in module.parameters())
    if not auto or on_meta:  # on the meta device (estimates, checks) there is nothing to time
        return {part: "float32" if wanted[part] == "auto" else wanted[part]
                for part in ("encode", "decode")}
    audio, latents = inputs()

    def run_of(module: torch.nn.Module, data: Tensor) -> Callable[[torch.dtype], Tensor]:
        def run(dtype: torch.dtype) -> Tensor:
            with torch.inference_mode():
                return module.to(dtype)(data.to(dtype)).float()
        return run

    runs = {"encode": run_of(encoder, audio), "decode": run_of(decoder, latents)}
    chosen = choose_precisions({part: runs[part] for part in auto}, key=machine_key(key))
    return {part: chosen.get(part, wanted[part]) for part in ("encode", "decode")}


def apply_codec_precisions(codec: Any, *, name: str, ignored: tuple[str, ...] = ()) -> dict[str, str]:
    """Choose and apply the precisions of a codec's encoder and decoder; returns the choice.

    ``codec`` has ``config.encode_precision`` / ``config.decode_precision``, its library model
    as ``codec.model`` (``.encoder``, ``.decoder``), ``sample_rate``, ``channels``, ``encode``
    and ``_embed`` (codes → the decoder's input). ``auto`` parts are measured by
    :func:`choose_encoder_decoder` on one second of noise that the codec itself encodes, keyed by
    ``name`` and the codec's options but the precisions and ``ignored`` (options that do not
    change the arithmetic). Each part is then cast to its precision."""
    def inputs() -> tuple[Tensor, Tensor]:
        gen = torch.Generator().manual_seed(0)
        wav = 0.1 * torch.randn(1, int(codec.channels), int(codec.sample_rate), generator=gen)
        with torch.inference_mode():
            return wav, codec._embed(codec.encode(wav))

    config = codec.config
    options = {k: v for k, v in vars(config).items() if k not in (*PRECISION_OPTIONS, *ignored)}
    wanted = {"encode": config.encode_precision, "decode": config.decode_precision}
    chosen = choose_encoder_decoder(codec.model.encoder, codec.model.decoder, wanted, inputs,
                                    key={"codec": name, **options})
    codec.model.encoder.to(DTYPES[chosen["encode"]])
    codec.model.decoder.to(DTYPES[chosen["decode"]])
    return chosen
