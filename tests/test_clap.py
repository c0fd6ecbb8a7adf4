"""The CLAP score of `v2a evaluate` and the `clap` (LAION-CLAP) plug-in.

The score's bookkeeping runs on a test plug-in whose audio and text embeddings point in known
directions (so each clip's cosine is known); the texts come from --captions or from the
classes of ground-truth events. The plug-in itself (transformers' ClapModel, the extra
v2a[clap]) runs at a small size with random weights and the offline byte-level tokenizer:
nothing is downloaded.
"""

from __future__ import annotations

import json
import math
import sys
import types
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from v2a import AudioEncoder, ComponentSpec, FeatureSequence, hookimpl
from v2a.cli import main
from v2a.evaluate import EvaluationError
from v2a.evaluate.text_score import caption_stem, read_captions, texts_of_events
from v2a.media import write_audio
from v2a.registry import PluginError, Registry
from v2a.synth import Event
from v2a.testing import from_registry, parametrize_with_checks
from v2a.weights import WeightsError

SR = 16000

#: A small configuration of the real architecture (HTSAT's patch embedding, two Swin stages,
#: the projections; a one-layer RoBERTa), narrow widths.
SMALL = {"audio_width": 8, "audio_depths": [1, 1], "audio_heads": [1, 2], "text_width": 16,
         "text_layers": 1, "text_heads": 2, "dim": 12}


def run(capsys, *argv) -> tuple[int, str, str]:
    code = main(["evaluate", *map(str, argv)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def noise_folder(folder: Path, stems: list[str], *, seconds: float = 1.0, seed: int = 0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for stem in stems:
        write_audio(folder / f"{stem}.wav",
                    (0.2 * rng.standard_normal((1, round(seconds * SR)))).astype(np.float32), SR)
    return folder


# -- the score's bookkeeping, with embeddings in known directions --------------------------------

#: A text's embedding; the audio always points along the first axis, so the cosines are
#: 1 (along), 0.5 (half: 60° away), 0 (across) and -1 (against).
DIRECTIONS = {"along": (2.0, 0.0, 0.0), "half": (1.0, math.sqrt(3.0), 0.0),
              "across": (0.0, 0.5, 0.0), "against": (-3.0, 0.0, 0.0)}


@dataclass
class PointingConfig:
    weights: str = "none"  # recorded, never read: the encoder has no parameters


class PointingAudio(AudioEncoder):
    """Per 10 ms of 16 kHz audio, ``(1 + rms, 0, 0)``: every step points along the first axis
    with a length that varies (so only the normalised mean is ``(1, 0, 0)``)."""

    def __init__(self, config: PointingConfig):
        super().__init__()
        self.sample_rate, self.dim, self.rate = SR, 3, 100.0

    def encode(self, wav):
        x = wav.mean(dim=1)
        x = x[:, : x.shape[1] // 160 * 160].unflatten(1, (-1, 160))
        length = 1.0 + x.pow(2).mean(dim=-1).sqrt()
        zeros = torch.zeros_like(length)
        return FeatureSequence(values=torch.stack([length, zeros, zeros], dim=-1), rate=self.rate)


class PointingClap(PointingAudio):
    """:class:`PointingAudio` with a text side: each text's embedding is its DIRECTIONS entry."""

    def embed_text(self, texts):
        return torch.tensor([DIRECTIONS[text] for text in texts])


def pointing_plugin(build: type) -> types.ModuleType:
    module = types.ModuleType(f"pointing_{build.__name__}")

    @hookimpl
    def v2a_register_components(register):
        register(ComponentSpec(kind="audio_encoder", name="clap", build=build,
                               config=PointingConfig, description="tests only"))

    module.v2a_register_components = v2a_register_components
    return module


def test_the_clap_score_is_the_mean_cosine_of_each_clip_with_its_caption(
        tmp_path, registry, use_registry, capsys):
    generated = noise_folder(tmp_path / "generated", ["c0", "c1", "c2", "c3"])
    captions = tmp_path / "captions.tsv"
    captions.write_text("id\tcaption\nc0.wav\talong\nc1\thalf\nc2.mp4\tacross\n")

    registry.register_module(pointing_plugin(PointingClap))
    code, stdout, err = run(capsys, generated, "--metrics", "clap", "--captions", captions)
    assert code == 0, err
    assert "CLAP score skipped: clap has no weights; give its published checkpoint" in stdout

    out = tmp_path / "out"
    code, stdout, err = run(capsys, generated, "--metrics", "clap", "--captions", captions,
                            "--random-weights", "-o", out)
    assert code == 0, err
    found = json.loads((out / "results.json").read_text())
    clips = found["clips"]
    # float32 embeddings (sqrt(3) rounded to ~1e-7), pooled and normalised in float64: the
    # cosines 1, 0.5 and 0 hold to far better than 1e-6
    assert clips["c0"]["text"]["clap"]["generated"] == pytest.approx(1.0, abs=1e-6)
    assert clips["c1"]["text"]["clap"]["generated"] == pytest.approx(0.5, abs=1e-6)
    assert clips["c2"]["text"]["clap"]["generated"] == pytest.approx(0.0, abs=1e-6)
    assert clips["c1"]["caption"] == "half"
    assert "text" not in clips["c3"] and "caption" not in clips["c3"]  # no caption: left out
    score = found["metrics"]["clap"]
    assert score["value"] == pytest.approx(0.5, abs=1e-6)  # mean of 1, 0.5, 0 (c3 left out)
    assert score["reference_value"] is None
    assert score["model"]["plugin"] == "clap" and score["model"]["weights"] == "random init"
    assert score["settings"] == {"sample_rate": SR, "text": "captions captions.tsv",
                                 "pooling": "mean over time, L2-normalised"}
    assert ("1 clips have no text (from captions captions.tsv) and are left out of the CLAP score"
            in found["notes"])
    assert "| CLAP score | 0.5 |" in stdout and "clap (random init) |" in stdout

    # with a reference, its audio is scored against the same captions beside the generated audio
    reference = noise_folder(tmp_path / "reference", ["c0", "c1", "c2", "c3"], seed=1)
    captions.write_text("name,caption\nc0,against\nc1,along\n")
    out = tmp_path / "with_reference"
    code, stdout, err = run(capsys, generated, "--reference", reference, "--metrics", "clap",
                            "--captions", captions, "--random-weights", "-o", out)
    assert code == 0, err
    score = json.loads((out / "results.json").read_text())["metrics"]["clap"]
    assert score["value"] == pytest.approx(0.0, abs=1e-6)  # mean of -1 and 1
    assert score["reference_value"] == pytest.approx(0.0, abs=1e-6)


def test_the_clap_score_is_skipped_without_text_or_without_a_text_side(
        tmp_path, registry, use_registry, capsys):
    generated = noise_folder(tmp_path / "generated", ["c0", "c1"])
    registry.register_module(pointing_plugin(PointingClap))
    code, stdout, err = run(capsys, generated, "--metrics", "clap", "--random-weights")
    assert code == 0, err
    assert ("Note: CLAP score skipped: it compares each clip with its text and no clip has one "
            "(give --captions FILE, a CSV or TSV of clip name and caption).") in stdout

    captions = tmp_path / "captions.csv"
    captions.write_text("name,caption\nsomething_else,along\n")  # names no clip of the folder
    code, stdout, err = run(capsys, generated, "--metrics", "clap", "--random-weights",
                            "--captions", captions)
    assert code == 0, err
    assert "CLAP score skipped: it compares each clip with its text and no clip has one" in stdout


def test_an_audio_encoder_without_a_text_side_is_not_a_clap_model(
        tmp_path, registry, use_registry, capsys):
    generated = noise_folder(tmp_path / "generated", ["c0"])
    captions = tmp_path / "captions.csv"
    captions.write_text("name,caption\nc0,along\n")
    registry.register_module(pointing_plugin(PointingAudio))
    code, stdout, err = run(capsys, generated, "--metrics", "clap", "--random-weights",
                            "--captions", captions)
    assert code == 0, err
    assert ("Note: CLAP score skipped: the audio encoder 'clap' has no text side (an embed_text "
            "method), so it cannot embed the clips' texts.") in stdout


def test_without_captions_the_classes_of_the_ground_truth_events_are_the_text():
    truth = {"a": [Event(time=0.9, cls="green_square"), Event(time=0.1, cls="red_disc"),
                   Event(time=0.5, cls="green_square")],
             "b": []}
    assert texts_of_events(truth) == {"a": "red disc, green square"}


def test_the_av_benchmark_table_has_a_clap_score_column(tmp_path, registry, use_registry, capsys):
    generated = noise_folder(tmp_path / "generated", ["c0", "c1"])
    captions = tmp_path / "captions.csv"
    captions.write_text("name,caption\nc0,along\nc1,half\n")
    registry.register_module(pointing_plugin(PointingClap))
    code, stdout, err = run(capsys, generated, "--protocol", "av-benchmark", "--captions",
                            captions, "--random-weights")
    assert code == 0, err
    header = next(line for line in stdout.splitlines() if line.startswith("| |"))
    assert header.endswith("| CLAP score ↑ |")
    generated_row = next(line for line in stdout.splitlines() if line.startswith("| generated"))
    assert generated_row.endswith("| 0.75 (random init) |")  # mean of 1 and 0.5
    assert "* CLAP score: clap (random init)" in stdout


def test_a_captions_file_is_read_by_its_header(tmp_path):
    path = tmp_path / "captions.csv"
    path.write_text("\ufeffFile,Label,split\nvideos/dog.v2a.wav,dog barking,test\n"
                    "cat.mp4,,test\nrain,\"rain, on a roof\",test\nclip.001,x,test\n")
    assert read_captions(path) == {"dog": "dog barking", "rain": "rain, on a roof",
                                   "clip.001": "x"}
    assert caption_stem("a/b/clip.v2a.flac") == "clip" and caption_stem("clip.001") == "clip.001"

    path.write_text("youtube_id,start\nabc,0\n")
    with pytest.raises(EvaluationError, match=r"has no name column \(its header is youtube_id, "
                       r"start\); name one column name or id or stem or clip or file or path"):
        read_captions(path)
    path.write_text("name,caption\nc0,one\nc0.wav,two\n")
    with pytest.raises(EvaluationError, match=r"gives the clip 'c0' two texts \(line 3\)"):
        read_captions(path)
    with pytest.raises(EvaluationError, match="does not exist"):
        read_captions(tmp_path / "missing.csv")


# -- the clap plug-in (transformers' ClapModel) --------------------------------------------------


def clap_module():
    pytest.importorskip("transformers")
    from v2a_plugins.audio_encoders import clap

    return clap


def small(**changes):
    clap = clap_module()
    return clap.LaionClap(clap.LaionClapConfig(**{**SMALL, **changes})).eval()


def conformance_factories():
    try:
        import transformers  # noqa: F401
    except ImportError:
        return []
    return [from_registry("audio_encoder", "clap", weights="none", **SMALL)]


@pytest.mark.skipif(not conformance_factories(), reason="needs transformers (v2a[clap])")
@parametrize_with_checks(conformance_factories())
def test_conformance(factory, check):
    check(factory)


def test_each_ten_seconds_of_a_clip_is_one_embedding():
    model = small()
    clap = clap_module()
    gen = torch.Generator().manual_seed(0)
    wav = 0.3 * torch.randn(1, 2, 23 * clap.SAMPLE_RATE, generator=gen)
    with torch.inference_mode():
        values = model.encode(wav).values
        second = model.encode(wav[..., 10 * clap.SAMPLE_RATE:20 * clap.SAMPLE_RATE]).values
        last = model.encode(wav[..., 20 * clap.SAMPLE_RATE:]).values
    assert values.shape == (1, 3, 12)
    # float32: the same window alone or in a batch of three runs the same arithmetic up to the
    # matmuls' blocking, ~1e-7 relative per layer on unit vectors; 1e-5 is ample
    torch.testing.assert_close(values[:, 1:2], second, atol=1e-5, rtol=0)
    torch.testing.assert_close(values[:, 2:3], last, atol=1e-5, rtol=0)
    # unit vectors, up to float32 rounding of the norm
    torch.testing.assert_close(values.norm(dim=-1), torch.ones(1, 3), atol=1e-6, rtol=0)


def test_the_waveform_is_read_at_16_bit_as_laion_clap_reads_it():
    model = small()
    clap = clap_module()
    wav = 0.3 * torch.randn(1, 1, clap.SAMPLE_RATE, generator=torch.Generator().manual_seed(1))
    steps = torch.round(wav.double() * clap.INT16_SCALE) / clap.INT16_SCALE
    nudged = steps + 0.4 / clap.INT16_SCALE  # less than half a step: rounds back to the same
    features = model.features  # LAION-CLAP's front end: 64 mel bands over 50-14000 Hz, hop 10 ms
    assert (features.feature_size, features.frequency_min, features.frequency_max,
            features.hop_length, features.sampling_rate) == (64, 50, 14000, 480, 48000)
    with torch.inference_mode():
        assert torch.equal(model.encode(steps.float()).values, model.encode(nudged.float()).values)


def test_texts_embed_in_the_audio_space_with_the_offline_byte_tokenizer():
    model = small()
    ids = model.tokenizer("a dog")["input_ids"]
    assert ids[0] == 0 and ids[-1] == 2 and len(ids) == 2 + len("a dog")  # <s> bytes </s>
    assert len(model.tokenizer("é")["input_ids"]) == 2 + 2  # two UTF-8 bytes
    with torch.inference_mode():
        texts = model.embed_text(["a dog barks", "rain on a roof"])
    assert texts.shape == (2, model.dim)
    torch.testing.assert_close(texts.norm(dim=-1), torch.ones(2), atol=1e-6, rtol=0)


def test_a_saved_checkpoint_folder_loads_offline_and_gives_the_same_embeddings(tmp_path):
    model = small()
    for part in (model.model, model.tokenizer, model.features):
        part.save_pretrained(tmp_path / "ckpt")
    clap = clap_module()
    loaded = clap.LaionClap(clap.LaionClapConfig(weights=str(tmp_path / "ckpt"))).eval()
    wav = 0.3 * torch.randn(2, 1, 3 * clap.SAMPLE_RATE, generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        assert torch.equal(model.encode(wav).values, loaded.encode(wav).values)
        assert torch.equal(model.embed_text(["a dog"]), loaded.embed_text(["a dog"]))
    assert loaded.dim == 12


def test_checkpoints_that_cannot_give_a_stable_score_are_refused(tmp_path):
    clap = clap_module()
    with pytest.raises(WeightsError, match="are not a folder; give a folder saved with "
                       "save_pretrained"):
        small(weights=str(tmp_path / "nothing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(WeightsError, match="could not read .* as a CLAP checkpoint"):
        small(weights=str(tmp_path / "empty"))

    import transformers

    model = small()
    fused = transformers.ClapModel(transformers.ClapConfig(
        audio_config={"patch_embeds_hidden_size": 8, "hidden_size": 16, "depths": [1, 1],
                      "num_attention_heads": [1, 2], "enable_fusion": True,
                      "projection_dim": 12},
        text_config={"vocab_size": len(model.tokenizer), "hidden_size": 16,
                     "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64,
                     "projection_dim": 12},
        projection_dim=12))
    for part in (fused, model.tokenizer, model.features):
        part.save_pretrained(tmp_path / "fused")
    with pytest.raises(WeightsError, match="is a fused CLAP checkpoint, whose audio features "
                       "take random crops"):
        clap.LaionClap(clap.LaionClapConfig(weights=str(tmp_path / "fused")))


def test_pretrained_asks_transformers_for_the_checkpoint_by_name(monkeypatch):
    clap = clap_module()
    import transformers

    asked = []

    def offline(source, **options):
        asked.append((source, options))
        raise OSError("We couldn't connect to 'https://huggingface.co' to load the files.")

    monkeypatch.setattr(transformers.ClapModel, "from_pretrained", offline)
    with pytest.raises(WeightsError, match=r"^could not download the CLAP checkpoint "
                       r"laion/larger_clap_music from the Hugging Face hub \(OSError: We "
                       r"couldn't connect .*\); download it on a machine with internet"):
        clap.LaionClap(clap.LaionClapConfig(weights="pretrained",
                                            checkpoint="laion/larger_clap_music"))
    assert asked == [("laion/larger_clap_music", {"local_files_only": False})]


def test_without_transformers_the_plugin_says_which_extra_to_install(monkeypatch):
    from v2a_plugins.audio_encoders import clap

    monkeypatch.setitem(sys.modules, "transformers", None)  # `import transformers` fails
    with pytest.raises(clap.ClapNotInstalledError) as caught:
        clap.LaionClap(clap.LaionClapConfig(**SMALL))
    assert str(caught.value) == ("the clap plug-in needs the transformers package, which is not "
                                 "installed; install it with: pip install 'v2a[clap]'")
    registry = Registry()
    registry.register_module(clap)
    with pytest.raises(PluginError, match=r"^audio_encoder 'clap' needs transformers, which is "
                       r"not installed: pip install 'v2a\[clap\]'$"):
        registry.build("audio_encoder", "clap")


def test_evaluate_computes_the_clap_score_with_the_plugin_at_random_init(tmp_path, capsys):
    clap_module()
    generated = noise_folder(tmp_path / "generated", ["c0", "c1"], seconds=0.5)
    captions = tmp_path / "captions.csv"
    captions.write_text("name,caption\nc0,a dog barks\nc1,rain on a roof\n")
    sizes = [f"clap.{key}={json.dumps(value)}" for key, value in SMALL.items()]
    out = tmp_path / "out"
    argv = [generated, "--metrics", "clap", "--captions", captions, "--random-weights", "-o", out,
            *(word for size in sizes for word in ("--model", size))]
    code, stdout, err = run(capsys, *argv)
    assert code == 0, err
    found = json.loads((out / "results.json").read_text())
    score = found["metrics"]["clap"]
    cosines = [found["clips"][stem]["text"]["clap"]["generated"] for stem in ("c0", "c1")]
    assert all(-1.0 <= c <= 1.0 for c in cosines)
    assert score["value"] == pytest.approx(np.mean(cosines), abs=1e-12)  # the same float64 mean
    assert score["model"]["plugin"] == "clap" and score["model"]["weights"] == "random init"
    assert score["model"]["options"]["checkpoint"] == "laion/larger_clap_general"
    assert score["settings"]["sample_rate"] == 48000
    assert "clap (random init)" in stdout
    assert sum(found["features"]["computed"].values()) == 2

    code, _, err = run(capsys, *argv)  # again: the audio embeddings come from the feature cache
    assert code == 0, err
    again = json.loads((out / "results.json").read_text())
    assert sum(again["features"]["loaded"].values()) == 2
    assert again["metrics"]["clap"]["value"] == score["value"]
