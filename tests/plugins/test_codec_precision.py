"""The codecs' precision chooser (``v2a_plugins.codecs.precision``): its logic with a scripted
timer (nothing here is timed), its cache and its key."""

from __future__ import annotations

import json
import logging
import math

import pytest
import torch

from v2a_plugins.codecs.precision import (
    MIN_SNR_DB,
    choose_precisions,
    machine_key,
    measure_part,
    snr_db,
)


def scripted_timer(*durations: float):
    """A timer whose successive start/stop pairs are ``durations`` apart (fp32 first, then bf16
    for each part, in the order the chooser measures them)."""
    ticks, now = [], 0.0
    for duration in durations:
        ticks += [now, now + duration]
        now += duration + 1.0
    it = iter(ticks)
    return lambda: next(it)


class Part:
    """``run(dtype)`` with a fixed output per dtype, counting its calls."""

    def __init__(self, *, bf16_error: float = 1e-3):
        self.calls = 0
        self.signal = torch.linspace(-1, 1, 1000)
        self.bf16_error = bf16_error

    def __call__(self, dtype: torch.dtype) -> torch.Tensor:
        self.calls += 1
        if dtype == torch.float32:
            return self.signal
        return self.signal + self.bf16_error * torch.ones_like(self.signal)


def test_snr_db():
    x = torch.ones(100)
    assert snr_db(x, x) == math.inf
    assert snr_db(x, 1.1 * x) == pytest.approx(20.0)  # error energy 1 % of the signal's
    assert snr_db(x, 1.01 * x) == pytest.approx(40.0)


def test_bf16_only_when_faster_by_the_margin_and_accurate():
    accurate, noisy = Part(bf16_error=1e-3), Part(bf16_error=0.5)
    assert snr_db(accurate.signal, accurate(torch.bfloat16)) > MIN_SNR_DB > snr_db(noisy.signal, noisy(torch.bfloat16))
    assert measure_part(accurate, timer=scripted_timer(1.0, 0.5))["choice"] == "bfloat16"
    assert measure_part(accurate, timer=scripted_timer(1.0, 1.2))["choice"] == "float32"  # slower
    assert measure_part(accurate, timer=scripted_timer(1.0, 0.95))["choice"] == "float32"  # < 10 %
    assert measure_part(noisy, timer=scripted_timer(1.0, 0.3))["choice"] == "float32"  # inaccurate
    measured = measure_part(accurate, timer=scripted_timer(2.0, 0.5))
    assert measured["float32_s"] == 2.0 and measured["bfloat16_s"] == 0.5
    assert measured["snr_db"] == pytest.approx(snr_db(accurate.signal, accurate(torch.bfloat16)), abs=0.01)


def test_each_part_is_chosen_on_its_own_and_the_choice_is_cached(tmp_path):
    cache = tmp_path / "precision.json"
    encoder, decoder = Part(), Part()
    key = machine_key({"codec": "test"})
    parts = {"encode": encoder, "decode": decoder}
    choice = choose_precisions(parts, key=key, cache_file=cache, timer=scripted_timer(1.0, 0.4, 1.0, 3.0))
    assert choice == {"encode": "bfloat16", "decode": "float32"}
    assert (encoder.calls, decoder.calls) == (4, 4)  # a warm-up and a timed call per dtype
    entry = next(iter(json.loads(cache.read_text()).values()))
    assert entry["key"] == key and entry["parts"]["decode"]["bfloat16_s"] == 3.0

    def untimed():
        raise AssertionError("a cached choice must not be measured again")

    assert choose_precisions(parts, key=key, cache_file=cache, timer=untimed) == choice
    assert (encoder.calls, decoder.calls) == (4, 4)


def test_a_part_measured_later_joins_the_cached_entry(tmp_path):
    cache, encoder, decoder = tmp_path / "precision.json", Part(), Part()
    key = machine_key({"codec": "test"})
    # a codec that asks auto for its decoder only, then one that asks it for both parts
    assert choose_precisions({"decode": decoder}, key=key, cache_file=cache,
                             timer=scripted_timer(1.0, 0.2)) == {"decode": "bfloat16"}
    both = choose_precisions({"encode": encoder, "decode": decoder}, key=key, cache_file=cache,
                             timer=scripted_timer(1.0, 3.0))
    assert both == {"encode": "float32", "decode": "bfloat16"}
    assert (encoder.calls, decoder.calls) == (4, 4)  # the decoder was not measured again
    assert set(json.loads(cache.read_text())[json.dumps(key, sort_keys=True)]["parts"]) == \
        {"encode", "decode"}


@pytest.mark.parametrize("change", [{"cpu": "another CPU"}, {"torch": "9.9"}, {"threads": 64},
                                    {"model": "16khz"}])
def test_a_changed_key_measures_again(tmp_path, change):
    cache, part = tmp_path / "precision.json", Part()
    key = machine_key({"codec": "test", "model": "44khz"})
    assert key["cpu"] and key["torch"] == torch.__version__ and key["threads"] == torch.get_num_threads()
    choose_precisions({"decode": part}, key=key, cache_file=cache, timer=scripted_timer(1.0, 0.2))
    other = {**key, **change}
    again = choose_precisions({"decode": part}, key=other, cache_file=cache, timer=scripted_timer(1.0, 2.0))
    assert again == {"decode": "float32"} and part.calls == 8
    assert len(json.loads(cache.read_text())) == 2  # both keys are kept
    assert choose_precisions({"decode": part}, key=key, cache_file=cache) == {"decode": "bfloat16"}


@pytest.mark.parametrize("content", [b"{not json", b"[1, 2]", b'{"k": 3}', b"\xff\xfe"])
def test_a_corrupt_cache_is_ignored_with_a_note(tmp_path, caplog, content):
    cache, part = tmp_path / "precision.json", Part()
    cache.write_bytes(content)
    with caplog.at_level(logging.INFO, logger="v2a"):
        choice = choose_precisions({"decode": part}, key={"k": 1}, cache_file=cache,
                                   timer=scripted_timer(1.0, 0.2))
    assert choice == {"decode": "bfloat16"} and part.calls == 4
    assert any("ignored the codec precision cache" in r.getMessage() and str(cache) in r.getMessage()
               for r in caplog.records)
    assert list(json.loads(cache.read_text()).values())[0]["parts"]["decode"]["choice"] == "bfloat16"


def test_auto_on_the_meta_device_measures_nothing(tmp_path, monkeypatch):
    """A codec built on the meta device (v2a's memory estimates) has nothing to time."""
    from v2a_plugins.codecs.precision import choose_encoder_decoder
    monkeypatch.setenv("V2A_CACHE", str(tmp_path))
    with torch.device("meta"):
        encoder, decoder = torch.nn.Linear(4, 4), torch.nn.Linear(4, 4)

    def inputs():
        raise AssertionError("nothing may be run on the meta device")

    chosen = choose_encoder_decoder(encoder, decoder, {"encode": "auto", "decode": "bfloat16"},
                                    inputs, key={"codec": "test"})
    assert chosen == {"encode": "float32", "decode": "bfloat16"}
    assert not (tmp_path / "precision.json").exists()


def test_a_cache_folder_that_cannot_be_written_still_gives_the_choice(tmp_path, caplog):
    """A read-only cache (a shared machine, a container) costs a measurement each time, never
    a failed build."""
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the cache folder would be")
    cache, part = blocker / "precision.json", Part()
    with caplog.at_level(logging.INFO, logger="v2a"):
        choice = choose_precisions({"decode": part}, key={"k": 1}, cache_file=cache,
                                   timer=scripted_timer(1.0, 0.2))
    assert choice == {"decode": "bfloat16"}
    assert any("could not cache" in r.getMessage() for r in caplog.records)
