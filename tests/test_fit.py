"""`v2a fit`: fit a light codec to the user's own audio files, save it, load it back."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from v2a_plugins.audio_encoders.mel import MelConfig, MelEncoder

from tests.test_media import write_audio
from v2a.cli import main
from v2a.recipe import load_recipe


def tones(seconds: float, sample_rate: int, freqs: list[float]) -> np.ndarray:
    t = np.arange(round(seconds * sample_rate)) / sample_rate
    part = len(t) // len(freqs)
    wav = np.zeros_like(t)
    for i, f in enumerate(freqs):
        span = slice(i * part, (i + 1) * part)
        wav[span] = 0.5 * np.sin(2 * math.pi * f * t[span]) * np.exp(-3 * (t[span] - t[span][0]))
    return wav[None]


@pytest.fixture
def audio_folder(tmp_path):
    folder = tmp_path / "audio"
    folder.mkdir()
    for i, freqs in enumerate([[262, 330, 392], [440, 523, 262], [330, 440, 523]]):
        write_audio(folder / f"clip{i}.wav", tones(1.5, 16000, freqs), 16000)
    return folder


def test_fit_writes_weights_that_the_recipe_loads(tmp_path, monkeypatch, audio_folder, capsys):
    monkeypatch.chdir(tmp_path)
    recipe = tmp_path / "r.yaml"
    recipe.write_text("codec: {plugin: spectral_rvq, n_codebooks: 2, codebook_size: 16, weights: none}\n")
    out = tmp_path / "codec.safetensors"
    assert main(["fit", str(recipe), "codec", str(audio_folder), "-o", str(out)]) == 0
    assert out.exists() and "codec.weights=" in capsys.readouterr().out

    random = load_recipe(recipe).build("codec")
    fitted = load_recipe(recipe, [f"codec.weights={out}"]).build("codec")
    wav = torch.from_numpy(tones(1.0, 16000, [392, 440])).float().unsqueeze(0)

    mel = MelEncoder(MelConfig(sample_rate=16000, n_mels=40))

    def error(codec):  # spectral: Griffin-Lim phases differ from the input's
        with torch.inference_mode():
            decoded = codec.decode(codec.encode(wav), length=wav.shape[-1])
            return float((mel.encode(decoded).values - mel.encode(wav).values).abs().mean())

    assert error(fitted) < 0.2 * error(random)

    # an existing output is never overwritten by accident
    assert main(["fit", str(recipe), "codec", str(audio_folder), "-o", str(out)]) == 1
    assert "--overwrite" in capsys.readouterr().err

    # recipe overrides may also follow the options (the recipe's weights file need not exist yet)
    recipe.write_text("codec: {plugin: spectral_rvq, n_codebooks: 2, codebook_size: 16, "
                      "weights: ./missing.safetensors}\n")
    argv = ["fit", str(recipe), "codec", str(audio_folder), "-o", str(out), "--overwrite"]
    assert main(argv) == 1 and "missing.safetensors" in capsys.readouterr().err
    assert main([*argv, "codec.weights=none"]) == 0


def test_fit_refuses_what_cannot_be_fitted(tmp_path, monkeypatch, audio_folder, capsys):
    monkeypatch.chdir(tmp_path)
    recipe = tmp_path / "r.yaml"
    recipe.write_text("audio_encoder: mel\n")
    assert main(["fit", str(recipe), "audio_encoder", str(audio_folder), "-o", "x.safetensors"]) == 1
    assert "cannot be fitted" in capsys.readouterr().err
    assert main(["fit", str(recipe), "codec", str(audio_folder), "-o", "x.safetensors"]) == 2
    assert "has no codec" in capsys.readouterr().err
    assert main(["fit", str(recipe), "audio_encoder", str(tmp_path / "none"), "-o", "x.safetensors"]) == 1
    assert "does not exist" in capsys.readouterr().err
