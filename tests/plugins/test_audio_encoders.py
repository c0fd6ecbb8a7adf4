"""The weight-free audio encoders (mel and codec_latents), and how every audio-encoder plug-in
module is split into a light entry point and its model module."""

from __future__ import annotations

import importlib
import inspect
import math

import pytest
import torch
from v2a_plugins.audio_encoders.mel import MelConfig, MelEncoder, mel_filterbank

from v2a.registry import Registry, default_registry

#: The audio-encoder entry-point modules; each keeps its implementation in ``<name>_model``.
PLUGIN_MODULES = ("beats", "clap", "codec_latents", "imagebind", "mel", "panns", "passt",
                  "vggish", "wav2clip")


def test_mel_frames_rate_and_pitch():
    encoder = MelEncoder(MelConfig(sample_rate=16000, n_fft=1024, hop_length=256, n_mels=64))
    t = torch.arange(16000) / 16000
    low = torch.sin(2 * math.pi * 300 * t).view(1, 1, -1)
    high = torch.sin(2 * math.pi * 3000 * t).view(1, 1, -1)
    out = encoder.encode(torch.cat([low, high]))
    assert out.values.shape == (2, 16000 // 256 + 1, 64) and out.rate == 62.5 and out.start == 0.0
    peak = out.values[:, 10:-10].mean(dim=1).argmax(dim=-1)
    fb = mel_filterbank(1024, 64, 16000, 0.0, 8000.0)
    expected = [int(fb[round(f * 1024 / 16000)].argmax()) for f in (300, 3000)]
    assert peak.tolist() == expected and expected[0] < expected[1]


def test_codec_latents_are_the_codecs_own():
    registry = default_registry()
    encoder = registry.build_from("audio_encoder", {
        "plugin": "codec_latents",
        "codec": {"plugin": "spectral_rvq", "n_codebooks": 2, "codebook_size": 16},
    })
    wav = 0.3 * torch.randn(2, 1, 8000)
    out = encoder.encode(wav)
    codec = encoder.codec
    assert (encoder.dim, encoder.rate, encoder.sample_rate) == (codec.latent_dim, codec.frame_rate, 16000)
    assert torch.equal(out.values, codec.latents(codec.encode(wav)).values)
    assert not any(p.requires_grad for p in encoder.parameters())


@pytest.mark.parametrize("name", PLUGIN_MODULES)
def test_the_plugin_module_names_its_model_modules_classes_and_functions(name):
    """The entry-point module holds the options and the hook and exports the model module's
    names lazily: every class and function defined there is exported, each export is the model
    module's own object, and the config the registry validates is the entry point's class, the
    one the model module reads."""
    plugin = importlib.import_module(f"v2a_plugins.audio_encoders.{name}")
    model = importlib.import_module(f"v2a_plugins.audio_encoders.{name}_model")
    exported = plugin._HOMES[model.__name__]
    defined = {key for key, value in vars(model).items()
               if (inspect.isclass(value) or inspect.isfunction(value))
               and value.__module__ == model.__name__}
    assert defined <= set(exported), sorted(defined - set(exported))
    assert set(exported) <= set(plugin.__all__) and set(plugin.__all__) <= set(dir(plugin))
    for key in exported:
        assert getattr(plugin, key) is getattr(model, key), key
    registry = Registry()
    registry.register_module(plugin)
    (entry,) = registry.entries.values()
    assert entry.spec.config.__module__ == plugin.__name__
    assert getattr(model, entry.spec.config.__name__) is entry.spec.config
    with pytest.raises(AttributeError, match="no_such_name"):
        getattr(plugin, "no_such_name")
