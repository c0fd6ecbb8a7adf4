"""``v2a doctor``: what it reports of torch, the CPU, PyAV, the extras and the plug-ins, and
whether a recipe can run offline (exit 0) or not (exit 1, saying why on its last line)."""

from __future__ import annotations

import importlib.metadata
import json
import re
from dataclasses import dataclass
from pathlib import Path

import av
import pytest
import torch
from v2a_plugins.rerankers.keep_first import KeepFirst, KeepFirstConfig

from tests.test_registry import plugin_module
from v2a import ComponentSpec
from v2a.cli import main
from v2a.commands.doctor import MEDIA_CODECS, cpu_facts, extras_facts, satisfies
from v2a.downloads import cache_path
from v2a.pretrained import PretrainedFile


def run(capsys, *argv):
    code = main(["doctor", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def section(out: str, title: str) -> dict[str, str]:
    """The ``label  value`` rows of the report's section ``title``."""
    lines = out.split(f"\n{title}\n", 1)[1].split("\n\n", 1)[0].splitlines()
    rows = {}
    for line in lines:
        label, value = re.fullmatch(r"  (\S(?:.*?\S)?)  +(.*)", line).groups()
        rows[label] = value
    return rows


def test_doctor_reports_this_torch_and_its_build(capsys):
    code, out, _ = run(capsys)
    assert code == 0
    rows = section(out, "torch")
    assert rows["version"] == torch.__version__
    expected_build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "CPU-only"
    if getattr(torch.version, "hip", None):
        expected_build = f"ROCm {torch.version.hip}"
    assert rows["build"] == expected_build
    assert rows["threads"].startswith(f"{torch.get_num_threads()} intra-op")
    assert rows["MPS"] == ("available" if torch.backends.mps.is_available() else "not available")
    gpus = [label for label in rows if label.startswith("GPU ")]
    assert len(gpus) == (torch.cuda.device_count() if torch.cuda.is_available() else 0)
    assert section(out, "CPU")["torch kernels"] == torch.backends.cpu.get_cpu_capability()
    assert out.rstrip().splitlines()[-1] == "everything v2a needs is installed."


def test_the_codec_lines_match_what_pyav_has(capsys):
    _, out, _ = run(capsys)
    rows = section(out, "media")
    assert rows["PyAV"].startswith(av.__version__ + " ")
    for codec in MEDIA_CODECS:
        value = rows[f"{codec.mode} {codec.name}"]
        if codec.name not in av.codecs_available:
            assert value.startswith(("missing", "MISSING")), value
        else:
            mode = "w" if codec.mode == "encoder" else "r"
            present = getattr(av.Codec(codec.name, mode), f"is_{codec.mode}")
            assert value.startswith("present" if present else ("missing", "MISSING")), value


def test_a_needed_codec_pyav_lacks_fails_the_check(capsys, monkeypatch):
    monkeypatch.setattr(av, "codecs_available", set(av.codecs_available) - {"libx264"})
    code, out, _ = run(capsys)
    assert code == 1
    assert section(out, "media")["encoder libx264"].startswith("MISSING")
    assert section(out, "media")["decoder h264"].startswith("present")
    last = out.rstrip().splitlines()[-1]
    assert last == ("this installation lacks what v2a needs: PyAV's FFmpeg has no libx264 encoder, "
                    "which v2a needs for H.264 video (v2a synth; v2a generate when a video cannot "
                    "be copied).")


def test_the_extras_come_from_the_installed_metadata(capsys):
    metadata = importlib.metadata.metadata("v2a")
    extras = extras_facts()
    assert list(extras) == metadata.get_all("Provides-Extra")
    for extra in extras.values():
        for requirement in extra["requirements"]:
            try:
                version = importlib.metadata.version(requirement["name"])
            except importlib.metadata.PackageNotFoundError:
                version = None
            assert requirement["version"] == version
            assert requirement["ok"] == (version is not None
                                         and satisfies(version, requirement["specifier"]))
    # `all` names other extras of v2a: it is installed exactly when they all are
    assert extras["all"]["extras"] and not extras["all"]["requirements"]
    assert extras["all"]["installed"] == all(extras[e]["installed"] for e in extras["all"]["extras"])
    _, out, _ = run(capsys)
    rows = section(out, "extras (pip install 'v2a[NAME]')")
    assert set(rows) == set(extras)
    for name, extra in extras.items():
        assert rows[name].startswith("installed" if extra["installed"] else "not installed")


@pytest.mark.parametrize("version, specifier, expected", [
    ("3.3.0", ">=2.20", True), ("2.3", ">=2.20", False), ("0.2", "==0.2", True),
    ("0.2.0", "==0.2", True), ("0.2.1", "==0.2", False), ("2.14.1+cu130", ">=2.4", True),
    ("1.5", ">=1,<2", True), ("2.0", ">=1,<2", False), ("2.5", "~=2.2", True),
    ("3.0", "~=2.2", False), ("1.4.2", "==1.4.*", True), ("1.5.0", "==1.4.*", False),
    ("1.0", "", True), ("1.0", "@ https://example.org/x.whl", None),
])
def test_versions_are_compared_by_their_release_numbers(version, specifier, expected):
    assert satisfies(version, specifier) is expected


def test_the_cpu_section_reads_cpuinfo(tmp_path, monkeypatch):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nmodel name\t: Example CPU 9000\n"
                       "flags\t\t: fpu sse2 avx2 avx512f avx512_bf16\n\nprocessor\t: 1\n")
    monkeypatch.setattr("platform.machine", lambda: "x86_64")
    facts = cpu_facts(cpuinfo)
    assert facts["model"] == "Example CPU 9000"
    assert facts["flags"] == {"avx512f": True, "avx512_bf16": True, "amx_tile": False,
                              "amx_bf16": False}
    assert cpu_facts(tmp_path / "absent")["flags"] is None


# -- a recipe's weights ------------------------------------------------------------------------


@dataclass
class WeightedConfig:
    weights: str = "none"


def keep_first(config: WeightedConfig) -> KeepFirst:
    return KeepFirst(KeepFirstConfig())


@pytest.fixture
def weighted(use_registry, write):
    """A reranker with a ``weights`` option, and ``recipe(weights)``: a recipe using it."""
    use_registry.register_module(plugin_module("weighted", ComponentSpec(
        kind="reranker", name="weighted", build=keep_first, config=WeightedConfig)))

    def recipe(weights: str) -> str:
        return str(write("r.yaml", f"reranker: {{plugin: weighted, weights: {weights!r}}}\n"))
    return recipe


def test_random_weights_are_ready_offline(capsys, weighted):
    code, out, _ = run(capsys, weighted("none"))
    assert code == 0
    assert section(out, "recipe r.yaml")["reranker"] == "weighted, weights none: random initialisation"
    assert out.rstrip().splitlines()[-1] == "r.yaml is ready to run offline."


def test_a_local_weights_file_is_reported_with_its_size(capsys, weighted, tmp_path):
    (tmp_path / "w.safetensors").write_bytes(b"\0" * 3000)
    code, out, _ = run(capsys, weighted("none"), "reranker.weights=w.safetensors")
    assert code == 0
    assert section(out, "recipe r.yaml")["reranker"] == (
        "weighted, weights w.safetensors: present, 2.9 KiB")


def test_a_missing_weights_file_fails_the_check(capsys, weighted):
    code, out, _ = run(capsys, weighted("checkpoints/missing.safetensors"))
    assert code == 1
    assert section(out, "recipe r.yaml")["reranker"].endswith(": does not exist")
    assert out.rstrip().splitlines()[-1] == (
        "r.yaml cannot run here offline: reranker.weights names checkpoints/missing.safetensors, "
        "which does not exist.")


def test_weights_at_an_address_are_found_in_the_download_cache(capsys, weighted, tmp_path,
                                                             monkeypatch):
    monkeypatch.setenv("V2A_CACHE", str(tmp_path / "cache"))
    url = "https://example.org/w.safetensors"
    code, out, _ = run(capsys, weighted(url))
    assert code == 1
    assert section(out, "recipe r.yaml")["reranker"] == (
        f"weighted, weights {url}: not downloaded yet: v2a downloads it into "
        f"{tmp_path / 'cache'} on first use (needs internet)")
    assert out.splitlines()[-1] == (
        f"r.yaml cannot run here offline: reranker.weights is downloaded from {url} on first use.")
    cached = cache_path(url, None)  # where v2a.downloads keeps an unpinned download of it
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"\0" * 2048)
    code, out, _ = run(capsys, weighted(url))
    assert code == 0
    assert section(out, "recipe r.yaml")["reranker"] == (
        f"weighted, weights {url}: downloaded already ({cached}), 2.0 KiB")


def test_a_malformed_weights_value_fails_the_check(capsys, weighted):
    code, out, _ = run(capsys, weighted("ftp://example.org/w.safetensors"))
    assert code == 1
    assert "which v2a does not fetch" in out.splitlines()[-1]


def test_pretrained_weights_are_left_to_the_library(capsys, weighted):
    code, out, _ = run(capsys, weighted("pretrained"))
    assert code == 0
    assert "library downloads it on first use" in section(out, "recipe r.yaml")["reranker"]
    assert out.rstrip().splitlines()[-1].startswith(
        "r.yaml is ready to run offline once the pretrained weights of reranker are in")


@pytest.fixture
def declared(use_registry, write, tmp_path):
    """A reranker whose plug-in declares what ``pretrained`` fetches: one file, looked for at
    ``tmp_path / "library-cache" / "w.bin"`` (a library's cache); ``recipe()``: a recipe using it."""
    cached = tmp_path / "library-cache" / "w.bin"

    def files(config: WeightedConfig) -> list[PretrainedFile]:
        def fetch() -> Path:
            raise AssertionError("doctor never downloads")
        return [PretrainedFile(what="the declared weights", source="https://example.org/w.bin",
                               size=None, sha256=None, licence="MIT",
                               find=lambda: cached if cached.is_file() else None, fetch=fetch)]

    use_registry.register_module(plugin_module("declared", ComponentSpec(
        kind="reranker", name="declared", build=keep_first, config=WeightedConfig,
        pretrained_files=files)))

    def recipe() -> str:
        return str(write("r.yaml", "reranker: {plugin: declared, weights: pretrained}\n"))
    return recipe, cached


def test_declared_pretrained_weights_are_looked_up_in_the_library_cache(capsys, declared):
    recipe, cached = declared
    code, out, _ = run(capsys, recipe())
    assert code == 1
    assert section(out, "recipe r.yaml")["reranker"] == (
        "declared, weights pretrained: not in its library's cache yet: the declared weights "
        "(`v2a download RECIPE` fetches it)")
    assert out.rstrip().splitlines()[-1].startswith(
        "r.yaml cannot run here offline: reranker.weights (pretrained) is not in its library's")
    cached.parent.mkdir()
    cached.write_bytes(b"weights")
    code, out, _ = run(capsys, recipe())
    assert code == 0
    assert section(out, "recipe r.yaml")["reranker"] == (
        "declared, weights pretrained: in its library's cache")
    assert out.rstrip().splitlines()[-1] == "r.yaml is ready to run offline."


def test_random_weights_flag_makes_a_recipe_ready(capsys, weighted):
    code, _, _ = run(capsys, weighted("checkpoints/missing.safetensors"), "--random-weights")
    assert code == 0


def test_a_component_whose_library_is_missing_fails_the_check(capsys, use_registry, write):
    use_registry.register_module(plugin_module("needy", ComponentSpec(
        kind="reranker", name="needy", build=KeepFirst, config=KeepFirstConfig,
        requires=("v2a_missing_dep_xyz",), install="pip install 'v2a[needy]'")))
    code, out, _ = run(capsys, str(write("r.yaml", "reranker: needy\n")))
    assert code == 1
    assert section(out, "plug-ins")["reranker needy"] == (
        "missing v2a_missing_dep_xyz; install with: pip install 'v2a[needy]'")
    assert out.rstrip().splitlines()[-1] == (
        "r.yaml cannot run here offline: reranker (needy) cannot be built: missing "
        "v2a_missing_dep_xyz; install with: pip install 'v2a[needy]'.")


def test_json_holds_the_same_report(capsys, weighted, use_registry):
    code, out, _ = run(capsys, "--json", weighted("checkpoints/missing.safetensors"))
    assert code == 1
    report = json.loads(out)
    assert report["torch"]["version"] == torch.__version__
    assert report["media"]["pyav"] == av.__version__
    assert report["ready"] is False and report["verdict"].startswith("r.yaml cannot run")
    (component,) = report["recipe"]["components"]
    assert component["weights"] == [{
        "option": "weights", "value": "checkpoints/missing.safetensors", "source": "path",
        "state": "missing", "detail": "does not exist"}]
    assert report["plugins"]["counts"]["reranker"] == len(use_registry.names("reranker"))


def test_an_override_without_a_recipe_is_refused(capsys):
    code, out, err = run(capsys, "codec.weights=none")
    assert code == 2 and out == ""
    assert "name the recipe first" in err


def test_each_gpu_is_listed_with_its_memory_and_bf16(capsys, monkeypatch):
    """(No GPU on the test machines: torch's view of two GPUs is replaced.)"""
    @dataclass
    class Properties:
        name: str
        total_memory: int
        major: int
        minor: int

    gpus = [Properties("Example H100", 80 * 2**30, 9, 0), Properties("Example T4", 15 * 2**30, 7, 5)]
    monkeypatch.setattr(torch.version, "hip", None)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: len(gpus))
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda index: gpus[index])
    _, out, _ = run(capsys)
    rows = section(out, "torch")
    assert rows["CUDA"] == "available, 2 GPU(s)"
    assert rows["GPU 0"] == "Example H100, 80.0 GiB, compute capability 9.0, bf16 yes"
    assert rows["GPU 1"] == "Example T4, 15.0 GiB, compute capability 7.5, bf16 no"


def test_a_cuda_build_without_a_gpu_is_pointed_to_the_cpu_build(capsys, monkeypatch):
    monkeypatch.setattr(torch.version, "cuda", "12.8")
    monkeypatch.setattr(torch.version, "hip", None)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    _, out, _ = run(capsys)
    rows = section(out, "torch")
    assert rows["build"] == "CUDA 12.8"
    assert rows["CUDA"].startswith("not available: no GPU is visible to this build")
    assert "Installing for the machine you have" in rows["CUDA"]


def test_a_plugin_that_failed_to_load_is_reported(capsys, use_registry):
    use_registry.load_entry_point(importlib.metadata.EntryPoint(
        name="broken_thing", value="v2a_no_such_module_xyz", group="v2a"))
    code, out, _ = run(capsys)
    assert code == 0  # no recipe needs it
    rows = section(out, "plug-ins")
    assert "broken_thing" in rows["problem"] and "failed to import" in rows["problem"]
    assert rows["registered"].startswith(f"codec {len(use_registry.names('codec'))}, ")
