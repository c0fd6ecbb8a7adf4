"""The size of a training run folder: the last ``training.keep_checkpoints`` checkpoints kept
(pruned only once the new one is complete, and never into a checkpoint with files missing),
exports in ``training.export_dtype``, and the sizes docs/training.md tables for every shipped
recipe (recomputed here, on the meta device, so that the table cannot drift)."""

from __future__ import annotations

import importlib
import json
import os
import shutil
import signal
import struct
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file
from torch import nn

from tests.media_fixtures import write_video
from tests.test_generate import RECIPE as GENERATE_RECIPE
from tests.test_train import MemoryClips, assert_same, recipe
from v2a.cli import main
from v2a.errors import RecipeError
from v2a.files import is_temporary
from v2a.generate import VideoToAudio
from v2a.recipe import load_recipe
from v2a.recipe.config import TrainingConfig
from v2a.resources import RunFolder, estimate, run_folder
from v2a.training import TrainingError, checkpoints, train
from v2a.training.checkpoints import export_tensors, write_checkpoint, write_export
from v2a.weights import save_state

ROOT = Path(__file__).resolve().parents[1]
#: The module (``v2a.training.checkpoints`` as an attribute is the function of that name).
CHECKPOINTS = importlib.import_module("v2a.training.checkpoints")
CHECKPOINT_FILES = ["ema.safetensors", "model.safetensors", "optimizer.safetensors", "state.json"]
EXPORTS = ("fuser.safetensors", "generator.safetensors")


def steps(run: Path) -> list[int]:
    return [step for step, _ in checkpoints(run)]


def contents(folder: Path) -> dict[str, bytes]:
    """The bytes of each file of ``folder``, by name."""
    return {p.name: p.read_bytes() for p in folder.iterdir()}


def fake_checkpoint(run: Path, step: int) -> Path:
    """A complete checkpoint folder of ``step`` (one tensor and its state.json)."""
    return write_checkpoint(run, step, {"model": {"w": torch.full((2,), float(step))}},
                            {"step": step}, keep=1000)


# ---------------------------------------------------------------------------------------------
# Pruning
# ---------------------------------------------------------------------------------------------


def test_two_checkpoints_are_kept_by_default(tmp_path):
    assert TrainingConfig().keep_checkpoints == 2
    train(recipe("training.steps=4", "training.checkpoint_every=1"), out_dir=tmp_path,
          train_data=MemoryClips(4), quiet=True)
    assert steps(tmp_path) == [3, 4]
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == [
        "step_00000003", "step_00000004"]  # the removed ones leave nothing behind


def test_pruning_keeps_exactly_the_newest_complete_checkpoints(tmp_path):
    for step in (1, 2, 3):
        fake_checkpoint(tmp_path, step)
    folder = tmp_path / "checkpoints"
    unfinished = folder / "step_00000005"  # no state.json: not a checkpoint, never counted
    unfinished.mkdir()
    (unfinished / "model.safetensors").write_bytes(b"")
    write_checkpoint(tmp_path, 4, {"model": {"w": torch.zeros(2)}}, {"step": 4}, keep=2)
    assert steps(tmp_path) == [3, 4]
    assert sorted(p.name for p in folder.iterdir()) == [
        "step_00000003", "step_00000004", "step_00000005"]
    write_checkpoint(tmp_path, 6, {"model": {"w": torch.zeros(2)}}, {"step": 6}, keep=1)
    assert steps(tmp_path) == [6]


def test_pruning_never_removes_the_checkpoint_just_written(tmp_path):
    fake_checkpoint(tmp_path, 9)  # a later step than the one now written (a folder copied in)
    fake_checkpoint(tmp_path, 2)
    written = write_checkpoint(tmp_path, 4, {"model": {"w": torch.zeros(2)}}, {"step": 4}, keep=1)
    assert steps(tmp_path) == [4] and written == tmp_path / "checkpoints" / "step_00000004"
    written = write_checkpoint(tmp_path, 4, {"model": {"w": torch.ones(2)}}, {"step": 4}, keep=1)
    assert torch.equal(load_file(str(written / "model.safetensors"))["w"], torch.zeros(2))


def test_a_checkpoint_that_cannot_be_renamed_away_stays_a_checkpoint(monkeypatch, tmp_path):
    fake_checkpoint(tmp_path, 1)

    def refuse(self, target):
        raise PermissionError(13, os.strerror(13), str(self))

    monkeypatch.setattr(Path, "rename", refuse)  # a folder that lets files in but none move
    write_checkpoint(tmp_path, 2, {"model": {"w": torch.zeros(2)}}, {"step": 2}, keep=1)
    assert steps(tmp_path) == [1, 2]


def test_a_resumed_run_keeps_its_checkpoint_until_the_next_one_is_complete(monkeypatch, tmp_path):
    data = MemoryClips(4)
    every_2 = ("training.checkpoint_every=2", "training.keep_checkpoints=1")
    train(recipe("training.steps=2", *every_2), out_dir=tmp_path, train_data=data, quiet=True)
    started_from = {name: (tmp_path / "checkpoints" / "step_00000002" / name).read_bytes()
                    for name in CHECKPOINT_FILES}
    real_write = CHECKPOINTS.write_safetensors

    def full_disk_at_step_4(tensors, path, metadata=None):
        if metadata and metadata.get("step") == "4" and Path(path).name == "optimizer.safetensors":
            raise OSError(28, os.strerror(28), str(path))  # the last file of step 4
        return real_write(tensors, path, metadata=metadata)

    monkeypatch.setattr(CHECKPOINTS, "write_safetensors", full_disk_at_step_4)
    with pytest.raises(TrainingError, match="the last good checkpoint is .*step_00000002"):
        train(recipe("training.steps=4", *every_2), out_dir=tmp_path, resume=True,
              train_data=data, quiet=True)
    assert steps(tmp_path) == [2]
    assert {name: (tmp_path / "checkpoints" / "step_00000002" / name).read_bytes()
            for name in CHECKPOINT_FILES} == started_from
    monkeypatch.undo()
    done = train(recipe("training.steps=4", *every_2), out_dir=tmp_path, resume=True,
                 train_data=data, quiet=True)
    assert done.step == 4 and steps(tmp_path) == [4]


def _train_then_die_while_pruning(out: Path) -> None:
    """In a forked child: train 3 steps into ``out`` with a checkpoint each and 1 kept; the
    first removal of an old checkpoint deletes its weights and then the process is killed
    (SIGKILL: no clean-up runs)."""
    real_rmtree = shutil.rmtree

    def rmtree_then_die(path, **kwargs):
        if not (Path(path) / "state.json").is_file():  # not a checkpoint (none of this step yet)
            return real_rmtree(path, **kwargs)
        (Path(path) / "model.safetensors").unlink()
        os.kill(os.getpid(), signal.SIGKILL)

    try:
        shutil.rmtree = rmtree_then_die  # the child's own module
        train(recipe("training.steps=3", "training.checkpoint_every=1",
                     "training.keep_checkpoints=1"), out_dir=out, train_data=MemoryClips(4),
              quiet=True)
    finally:
        os._exit(3)  # never back into pytest (reached only if the prune did not happen)


def test_a_prune_killed_half_way_leaves_a_resumable_run(tmp_path):
    run, reference = tmp_path / "run", tmp_path / "reference"
    pid = os.fork()
    if pid == 0:
        _train_then_die_while_pruning(run)
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    # the checkpoint being removed was renamed first: no checkpoint lacks a file
    assert steps(run) == [2]
    assert sorted(contents(run / "checkpoints" / "step_00000002")) == CHECKPOINT_FILES
    (leftover,) = [p for p in (run / "checkpoints").iterdir() if p.name != "step_00000002"]
    assert is_temporary(leftover) and leftover.name.startswith(".step_00000001.v2a-tmp-")

    overrides = ("training.steps=3", "training.checkpoint_every=1", "training.keep_checkpoints=1")
    done = train(recipe(*overrides), out_dir=run, resume=True, train_data=MemoryClips(4),
                 quiet=True)
    assert done.step == 3 and steps(run) == [3]
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step_00000003"]
    train(recipe(*overrides), out_dir=reference, train_data=MemoryClips(4), quiet=True)
    for name in ("model", "ema", "optimizer"):  # resuming from step 2 loses nothing
        last = Path("checkpoints") / "step_00000003" / f"{name}.safetensors"
        assert_same(load_file(str(run / last)), load_file(str(reference / last)))


# ---------------------------------------------------------------------------------------------
# Exports in training.export_dtype
# ---------------------------------------------------------------------------------------------


def data_bytes(path: Path) -> int:
    """Bytes of a safetensors file's tensors (the file less its 8-byte length and header)."""
    with open(path, "rb") as f:
        (header,) = struct.unpack("<Q", f.read(8))
    return path.stat().st_size - 8 - header


def test_export_dtype_is_validated_with_the_nearest_name():
    with pytest.raises(RecipeError, match=r"training.export_dtype: expected float32 \| "
                       r"bfloat16 \| float16, got the string 'bfloat61'; "
                       r"did you mean 'bfloat16'"):
        load_recipe("tiny", ["training.export_dtype=bfloat61"])


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    """A finished 2-step run of the small Hybrid (float32 exports)."""
    run = tmp_path_factory.mktemp("run")
    train(recipe("training.steps=2", "training.lr=0.01"), out_dir=run, train_data=MemoryClips(4),
          quiet=True)
    return run


def test_a_bfloat16_export_is_half_the_size_and_generate_runs_from_it(finished_run, tmp_path,
                                                                      capsys):
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    float32 = {name: load_file(str(run / name)) for name in EXPORTS}
    sizes = {name: data_bytes(run / name) for name in EXPORTS}
    checkpoint = contents(run / "checkpoints" / "step_00000002")
    # a finished run exports again in another dtype (the field may change on --resume)
    done = train(recipe("training.steps=2", "training.lr=0.01", "training.export_dtype=bfloat16"),
                 out_dir=run, resume=True, train_data=MemoryClips(4), quiet=True)
    assert sorted(p.name for p in done.exported) == sorted(float32)
    for name, tensors in float32.items():
        exported = load_file(str(run / name))
        assert data_bytes(run / name) * 2 == sizes[name]
        assert_same(exported, {k: v.to(torch.bfloat16) for k, v in tensors.items()})
    assert contents(run / "checkpoints" / "step_00000002") == checkpoint  # as trained

    saved = load_recipe(run / "recipe.yaml")
    model = VideoToAudio.from_recipe(saved, run, warn=lambda _: None)
    for slot in ("fuser", "generator"):  # loaded in the model's own dtype, values as exported
        state = getattr(model, slot).state_dict()
        assert all(v.dtype == torch.float32 for v in state.values())
        exported = load_file(str(run / f"{slot}.safetensors"))
        assert_same(state, {k: v.float() for k, v in exported.items()})
    video = write_video(tmp_path / "clip.mp4", seconds=1.0, fps=8.0, width=32, height=32)
    code = main(["generate", "--recipe", str(run / "recipe.yaml"), "--checkpoint", str(run),
                 str(video), "-o", str(tmp_path / "out"), "sampling.steps=[1]"])
    assert code == 0, capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["clip.mp4", "clip.wav"]


def test_only_float32_tensors_are_stored_in_the_export_dtype(tmp_path):
    tensors = {"weight": torch.tensor([1.0 + 2**-10, -3.0]), "count": torch.tensor([7]),
               "table": torch.tensor([1.0 + 2**-30], dtype=torch.float64)}
    stored = export_tensors(tensors, "bfloat16", path=tmp_path / "x.safetensors")
    assert stored["weight"].dtype == torch.bfloat16 and stored["weight"].tolist() == [1.0, -3.0]
    assert torch.equal(stored["count"], tensors["count"])
    assert torch.equal(stored["table"], tensors["table"])  # float64 is kept on purpose
    same = export_tensors(tensors, "float32", path=tmp_path / "x.safetensors")
    assert all(same[k] is not None and torch.equal(same[k], tensors[k]) for k in tensors)


def test_a_float16_export_refuses_values_beyond_its_range(tmp_path):
    path = tmp_path / "generator.safetensors"
    tensors = {"small": torch.ones(3), "big": torch.tensor([1.0, 7e4, -8e4])}
    with pytest.raises(TrainingError, match=r"cannot export .*generator.safetensors in float16: 2 "
                       r"values of 'big' are beyond its range; export again with --resume and "
                       r"training.export_dtype=bfloat16 or float32"):
        export_tensors(tensors, "float16", path=path)
    rounded = export_tensors(tensors, "bfloat16", path=path)["big"]  # 8 significant bits
    assert rounded.tolist() == [1.0, 70144.0, -79872.0]


class OwnFile(nn.Module):
    """A trained module that writes its own export (as the SCAV reranker does)."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(4, 2)
        self.register_buffer("steps", torch.tensor(3))

    def save_weights(self, path: Path) -> None:
        save_state({"proj.weight": self.proj.weight, "steps": self.steps}, path,
                   metadata={"component": "own"})


def test_a_module_s_own_export_file_is_rewritten_in_the_export_dtype(tmp_path):
    module = OwnFile()
    write_export(module, tmp_path / "own.safetensors", dtype="bfloat16", metadata={"ignored": "x"})
    with safe_open(str(tmp_path / "own.safetensors"), framework="pt") as file:
        assert file.metadata() == {"component": "own"}  # the module's own metadata is kept
        assert sorted(file.keys()) == ["proj.weight", "steps"]
        assert file.get_tensor("proj.weight").dtype == torch.bfloat16
        assert torch.equal(file.get_tensor("proj.weight"), module.proj.weight.detach().bfloat16())
        assert torch.equal(file.get_tensor("steps"), torch.tensor(3))
    write_export(module, tmp_path / "as_is.safetensors", dtype="float32", metadata={})
    module.save_weights(tmp_path / "direct.safetensors")  # in float32: the module's file as is
    as_is, direct = tmp_path / "as_is.safetensors", tmp_path / "direct.safetensors"
    assert as_is.read_bytes() == direct.read_bytes()


def test_the_scav_reranker_loads_its_bfloat16_export(tmp_path):
    """The reranker task's export is the file Scav.save_weights writes; rewritten in bfloat16,
    its own loader reads it back into float32 projectors."""
    (tmp_path / "recipe.yaml").write_text(GENERATE_RECIPE)
    scav = load_recipe(tmp_path / "recipe.yaml").build("reranker")
    write_export(scav, tmp_path / "scav.safetensors", dtype="bfloat16", metadata={})
    again = load_recipe(tmp_path / "recipe.yaml",
                        [f"reranker.weights={tmp_path / 'scav.safetensors'}"]).build("reranker")
    loaded = again.projectors.state_dict()
    assert loaded and all(v.dtype == torch.float32 for v in loaded.values())
    assert_same(loaded, {k: v.detach().bfloat16().float()
                         for k, v in scav.projectors.state_dict().items()})


# ---------------------------------------------------------------------------------------------
# Sizes: what a run writes, and the table of docs/training.md
# ---------------------------------------------------------------------------------------------


def test_the_sizes_are_what_a_run_writes(finished_run):
    """The checkpoint is the trained state, its EMA copy and AdamW's two moments (plus AdamW's
    step counts, one scalar a parameter, which the size leaves out); the exports their own
    tensors, at 4 or 2 bytes a value."""
    r = load_recipe(finished_run / "recipe.yaml")
    sizes = run_folder(r)
    folder = checkpoints(finished_run)[-1][1]
    optimizer = load_file(str(folder / "optimizer.safetensors"))
    steps_bytes = sum(v.numel() * v.element_size()
                      for k, v in optimizer.items() if k.endswith(".step"))
    written = sum(data_bytes(folder / f"{name}.safetensors")
                  for name in ("model", "ema", "optimizer"))
    assert written - steps_bytes == sizes.checkpoint_bytes
    exported = sum(data_bytes(finished_run / name) for name in EXPORTS)
    assert sizes.export_bytes["float32"] == exported == 2 * sizes.export_bytes["bfloat16"]
    assert sizes.trained_parameters == sum(
        v.numel() for k, v in optimizer.items() if k.endswith(".exp_avg"))
    assert json.loads((folder / "state.json").read_text())["step"] == 2


def test_the_folder_peaks_while_a_checkpoint_is_written_and_ends_with_the_exports():
    folder = RunFolder(trained_parameters=1, checkpoint_bytes=100, export_bytes={"float32": 30},
                       export_dtype="float32", keep=2, written=50)
    assert (folder.peak_bytes, folder.finished_bytes) == (300, 230)
    short = RunFolder(trained_parameters=1, checkpoint_bytes=100, export_bytes={"float32": 30},
                      export_dtype="float32", keep=2, written=1)
    assert (short.peak_bytes, short.finished_bytes) == (130, 130)
    r = load_recipe("tiny")  # 4 checkpoints written, 2 kept: 3 on disk while the last is written
    assert estimate(r, task="train").disk_bytes == 3 * run_folder(r).checkpoint_bytes


def shipped_recipes() -> list[Path]:
    """The runnable recipes of recipes/ and recipes/small/ (base recipes are not trained)."""
    paths = [*sorted((ROOT / "recipes").glob("*.yaml")),
             *sorted((ROOT / "recipes" / "small").glob("*.yaml"))]
    return [p for p in paths if not load_recipe(p).base]


def size(value: int) -> str:
    """Decimal units, three significant digits: ``9.36 GB``, ``554 kB``."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if value >= scale:
            return f"{value / scale:.3g} {unit}"
    return f"{value} B"


def run_folder_table() -> str:
    """The table of docs/training.md, "How big a run folder gets", from the shipped recipes."""
    lines = ["| recipe | trained parameters | one checkpoint | run folder at its peak | "
             "finished run folder | export float32 | export bfloat16 |",
             "|---|---|---|---|---|---|---|"]
    for path in shipped_recipes():
        f = run_folder(load_recipe(path))
        cells = [f"`{path.relative_to(ROOT)}`", f"{f.trained_parameters / 1e6:.3g} M",
                 *(size(b) for b in (f.checkpoint_bytes, f.peak_bytes, f.finished_bytes,
                                     f.export_bytes["float32"], f.export_bytes["bfloat16"]))]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def test_the_docs_table_of_run_folder_sizes_is_what_the_recipes_build():
    """If this fails, paste the table it prints (``python -m tests.test_run_folder``) into
    docs/training.md."""
    table = run_folder_table()
    assert table in (ROOT / "docs" / "training.md").read_text(), table


if __name__ == "__main__":
    print(run_folder_table(), end="")
