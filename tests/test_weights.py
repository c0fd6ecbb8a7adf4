"""Loading weights (v2a.weights): files that are no checkpoint are named for what they are,
damaged checkpoints are called damaged, code-running pickles are refused without relaying
torch's advice to turn the safety off, and non-finite weights are refused by tensor name."""

from __future__ import annotations

import pickle
import random
import re
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from tests.unsafe_pickle import RunsCode, TouchesFile
from v2a.weights import (
    SAFETENSORS,
    TORCH_PICKLE,
    TORCH_ZIP,
    WeightsError,
    checkpoint_format,
    load_checkpoint,
    load_trained,
    save_state,
)

STATE = {"layer.weight": torch.arange(6.0).reshape(2, 3), "layer.bias": torch.zeros(2)}
#: words of torch's message that tell the user to load the file anyway
ADVICE = ("weights_only", "trusted source", "add_safe_globals", "safe_globals")


def refusal(path: Path) -> str:
    with pytest.raises(WeightsError) as error:
        load_checkpoint(path)
    message = str(error.value)
    assert str(path) in message and "\n" not in message
    assert not [w for w in ADVICE if w in message], message
    return message


def write(path: Path, content: bytes) -> Path:
    path.write_bytes(content)
    return path


# -- what a file is -------------------------------------------------------------------------------


def test_real_checkpoints_load_whatever_their_suffix(tmp_path):
    save_state(STATE, tmp_path / "a.safetensors")
    torch.save(STATE, tmp_path / "b.pt")
    torch.save(STATE, tmp_path / "c.pt", _use_new_zipfile_serialization=False)
    write(tmp_path / "e.ckpt", (tmp_path / "a.safetensors").read_bytes())  # safetensors inside
    write(tmp_path / "f.safetensors", (tmp_path / "b.pt").read_bytes())  # a torch file inside
    formats = {"a.safetensors": SAFETENSORS, "b.pt": TORCH_ZIP, "c.pt": TORCH_PICKLE,
               "e.ckpt": SAFETENSORS, "f.safetensors": TORCH_ZIP}
    for name, fmt in formats.items():
        assert checkpoint_format(tmp_path / name) == fmt, name
        state = load_checkpoint(tmp_path / name)
        assert state.keys() == STATE.keys() and all(torch.equal(state[k], STATE[k]) for k in STATE)


def test_a_file_that_is_no_checkpoint_is_named_for_what_it_looks_like(tmp_path):
    cases = {
        "notes.pt": (b"these are my notes about the model\n", "it looks like a text file"),
        "image.pt": (b"\x89PNG\r\n\x1a\n" + bytes(64), "it looks like a PNG image"),
        "photo.pth": (b"\xff\xd8\xff\xe0" + bytes(64), "it looks like a JPEG image"),
        "empty.safetensors": (b"", "it is empty: 0 bytes"),
        "page.ckpt": (b"<!DOCTYPE html>\n<html><body>403 Forbidden</body></html>",
                      "it looks like a web page in HTML"),
        "lfs.safetensors": (b"version https://git-lfs.github.com/spec/v1\noid sha256:0123\nsize 9\n",
                            "it looks like a Git LFS pointer, not the file itself: fetch it with "
                            "`git lfs pull`"),
        "packed.pt": (b"\x1f\x8b\x08\x00" + bytes(64), "it looks like a gzip archive: unpack it first"),
        "video.pt": (b"\x00\x00\x00\x18ftypmp42" + bytes(64), "it looks like an MP4 or MOV video"),
        "one_byte.pt": (b"\x80", "it looks like no format v2a knows: it starts with the bytes 80"),
    }
    rng = random.Random(0)
    noise = rng.randbytes(512)
    assert noise[:1] != b"\x80" and noise[:2] != b"PK"  # these bytes start like no format
    cases["noise.pt"] = (noise, f"it looks like no format v2a knows: it starts with the bytes {noise[:8].hex(' ')}")
    for name, (content, words) in cases.items():
        message = refusal(write(tmp_path / name, content))
        assert f"is not a safetensors or torch checkpoint ({words}" in message, message
        assert "run code" not in message

    np.savez(tmp_path / "arrays.npz", a=np.ones(3))
    assert "a zip archive of other files, such as a NumPy .npz" in refusal(tmp_path / "arrays.npz")
    plain = write(tmp_path / "plain.pkl", pickle.dumps({"lr": 0.1, "steps": [1, 2]}, protocol=4))
    assert "a Python pickle of plain data, with no tensors" in refusal(plain)


def test_damaged_checkpoints_are_called_damaged(tmp_path):
    save_state(STATE, tmp_path / "whole.safetensors")
    torch.save(STATE, tmp_path / "whole.pt")
    torch.save(STATE, tmp_path / "whole_legacy.pt", _use_new_zipfile_serialization=False)
    for name in ("whole.safetensors", "whole.pt", "whole_legacy.pt"):
        content = (tmp_path / name).read_bytes()
        for keep in (len(content) // 2, 40):
            cut = write(tmp_path / f"cut_{keep}_{name}", content[:keep])
            message = refusal(cut)
            assert "damaged" in message and "download or copy it again" in message, message
            assert "run code" not in message


# -- code is refused --------------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["zip", "legacy", "pickle.dump"])
def test_a_checkpoint_that_would_run_code_is_refused_without_running_it(tmp_path, capsys, how):
    marker = tmp_path / "pwned"
    evil = {"layer.weight": TouchesFile(marker), "note": RunsCode("this checkpoint ran code")}
    path = tmp_path / "evil.pt"
    if how == "zip":
        torch.save(evil, path)
    elif how == "legacy":
        torch.save(evil, path, _use_new_zipfile_serialization=False)
    else:
        path.write_bytes(pickle.dumps(evil, protocol=2))
    message = refusal(path)
    assert re.fullmatch(re.escape(f"{path} was refused: loading it would run code stored in the "
                                  "file (it calls ") + r"[\w.]+\); convert it to safetensors or a "
                        "weights-only checkpoint", message), message
    assert not marker.exists() and "ran code" not in capsys.readouterr().out


def test_a_zip_whose_pickle_is_garbage_is_damaged_not_code(tmp_path):
    torch.save(STATE, tmp_path / "whole.pt")
    broken = tmp_path / "broken.pt"
    with zipfile.ZipFile(tmp_path / "whole.pt") as source, zipfile.ZipFile(broken, "w") as target:
        for item in source.infolist():
            data = source.read(item)
            target.writestr(item, b"\x80\x02\xff\xfe garbage" if item.filename.endswith("data.pkl") else data)
    message = refusal(broken)
    assert "is a damaged or unsupported torch checkpoint" in message and "run code" not in message


# -- non-finite weights ---------------------------------------------------------------------------


def test_nan_or_infinite_weights_are_refused_naming_the_first_such_tensor(tmp_path):
    bad = dict(STATE, **{"layer.bias": torch.tensor([0.0, float("nan")])})
    save_file(bad, str(tmp_path / "nan.safetensors"))
    message = refusal(tmp_path / "nan.safetensors")
    assert "holds NaN or infinite values in 'layer.bias' (1 of 2)" in message
    torch.save({"state_dict": {"a": torch.ones(3), "b": torch.tensor([float("-inf")] * 4).half()}},
               tmp_path / "inf.pt")
    assert "in 'state_dict.b' (4 of 4)" in refusal(tmp_path / "inf.pt")
    # integer tensors cannot hold NaN; bfloat16 can, and is checked
    torch.save({"codes": torch.arange(3), "w": torch.tensor([float("nan")], dtype=torch.bfloat16)},
               tmp_path / "bf16.pt")
    assert "in 'w' (1 of 1)" in refusal(tmp_path / "bf16.pt")


def test_a_trained_component_with_nan_weights_is_refused(tmp_path):
    module = torch.nn.Linear(3, 2)
    state = {k: v.clone() for k, v in module.state_dict().items()}
    state["weight"][1, 2] = float("inf")
    save_state(state, tmp_path / "generator.safetensors")
    with pytest.raises(WeightsError, match=r"generator\.safetensors holds NaN or infinite values in "
                                           r"'weight' \(1 of 6\)"):
        load_trained(module, str(tmp_path / "generator.safetensors"), what="the generator")


def test_a_plugin_given_nan_weights_refuses_them(tmp_path):
    """Through a plug-in's own loading path (the spectral codec reads its file itself)."""
    from v2a.recipe import load_recipe

    recipe_file = tmp_path / "codec.yaml"
    recipe_file.write_text("codec: {plugin: spectral_rvq, sample_rate: 8000, n_fft: 256, "
                           "hop_length: 128, n_codebooks: 2, codebook_size: 16}\n")
    codec = load_recipe(recipe_file).build("codec")
    state = {k: v.clone() for k, v in codec.state_dict().items()}
    first = sorted(k for k, v in state.items() if v.is_floating_point())[0]
    state[first].view(-1)[0] = float("nan")
    weights = tmp_path / "codec.safetensors"
    save_state(state, weights)
    with pytest.raises(WeightsError, match=rf"holds NaN or infinite values in '{first}'"):
        load_recipe(recipe_file, [f"codec.weights={weights}"]).build("codec")


def test_state_dict_of_unwraps_the_model_entry_and_refuses_what_holds_no_tensors():
    from v2a.weights import WeightsError, state_dict_of

    w = torch.zeros(2)
    assert state_dict_of({"model": {"a": w}, "epoch": 3}, "f.pth", what="X")["a"] is w
    assert state_dict_of({"a": w}, "f.pth", what="X") == {"a": w}  # a bare state dict
    for bad in ({"model": {"a": 1}}, {}, [w]):
        with pytest.raises(WeightsError, match=r"f\.pth does not hold a state dict of tensors "
                                               "where X belongs"):
            state_dict_of(bad, "f.pth", what="X")


def test_weights_files_are_readable_as_the_umask_allows(tmp_path):
    """safetensors writes through a private temporary (mode 0600); v2a's weights files, like
    every other file it writes, get the permissions the umask gives (a run folder on a shared
    disk must be readable by the group when the umask says so)."""
    import os

    from v2a.weights import save_state

    old = os.umask(0o022)
    try:
        save_state({"a": torch.zeros(2)}, tmp_path / "w.safetensors")
    finally:
        os.umask(old)
    assert (tmp_path / "w.safetensors").stat().st_mode & 0o777 == 0o644
