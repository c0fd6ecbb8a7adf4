"""``v2a download RECIPE [--check]`` and the ``pretrained_files`` the built-in plug-ins declare:
what a recipe needs, found offline in each library's own cache or fetched by it, checked by the
published checksum; no test uses the network (a fetch runs against files the test makes, or
the local stand-in for the Hugging Face Hub)."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import http.server
import itertools
import re
import socket
import threading
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import v2a_plugins.audio_encoders.panns
from v2a_plugins.codecs.dac import DACConfig, dac_pretrained_files, load_dac
from v2a_plugins.codecs.encodec import EncodecConfig, encodec_pretrained_files, load_encodec
from v2a_plugins.rerankers.keep_first import KeepFirst, KeepFirstConfig
from v2a_plugins.visual_encoders.clip import ClipConfig, clip_pretrained_files
from v2a_plugins.visual_encoders.s3d import S3DConfig, build_s3d, s3d_pretrained_files

from tests.hub_standin import hub_standin_fixture, use_hub_environment  # noqa: F401 (hub_standin)
from tests.test_registry import plugin_module
from v2a import ComponentSpec
from v2a.cli import main
from v2a.commands.download import LIBRARY_ONLY
from v2a.errors import UserError
from v2a.downloads import DownloadError
from v2a.meta_device import build_on_meta
from v2a.pretrained import PretrainedFile, checksum_matches, torch_hub_file
from v2a.registry import Registry, default_registry
from v2a.weights import WeightsError

ROOT = Path(__file__).resolve().parent.parent


def run(capsys, *argv):
    code = main(["download", *argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a network connection fails the test."""
    def refuse(*args, **kwargs):
        raise AssertionError(f"a network connection was attempted: {args}")
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.fixture
def empty_caches(tmp_path, monkeypatch):
    """Every library cache the built-ins use, empty, under ``tmp_path``: torch.hub's
    (``TORCH_HOME``), DAC's and open_clip's (under ``HOME``) and the Hugging Face Hub's
    (``HF_HOME``, offline)."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("V2A_CACHE", str(tmp_path / "v2a"))
    use_hub_environment(monkeypatch, HF_HOME=str(tmp_path / "hf"), HF_HUB_CACHE=None,
                        HUGGINGFACE_HUB_CACHE=None, HF_HUB_OFFLINE="1")
    return tmp_path


# -- the command on recipes --------------------------------------------------------------------------


def test_the_tiny_recipe_needs_nothing_downloaded(capsys):
    code, out, _ = run(capsys, "tiny", "--check")
    assert code == 0
    assert "codec (spectral_rvq): the weights file of spectral_rvq; 2.0 MiB; present: " in out
    assert out.splitlines()[-1] == (
        "recipes/tiny.yaml needs nothing downloaded: its 4 weights file(s) are local and present.")
    assert run(capsys, "tiny")[0] == 0  # without --check: the same, nothing to fetch


@dataclass
class WeightedConfig:
    weights: str = "none"


def keep_first(config: WeightedConfig) -> KeepFirst:
    return KeepFirst(KeepFirstConfig())


@pytest.fixture
def weighted(use_registry, write):
    """``recipe(weights, files=None)``: a recipe whose reranker has that ``weights`` value; its
    plug-in declares ``files`` (a function of the config) as its ``pretrained_files``."""

    made = itertools.count()

    def recipe(weights: str, files=None) -> str:
        name = f"weighted{next(made)}"
        use_registry.register_module(plugin_module(name, ComponentSpec(
            kind="reranker", name=name, build=keep_first, config=WeightedConfig,
            pretrained_files=files)))
        return str(write("r.yaml", f"reranker: {{plugin: {name}, weights: {weights!r}}}\n"))
    return recipe


def test_check_names_a_missing_local_file(capsys, weighted, tmp_path):
    code, out, _ = run(capsys, weighted("checkpoints/missing.safetensors"), "--check")
    assert code == 1
    missing = tmp_path / "checkpoints" / "missing.safetensors"
    assert f"missing: {missing} does not exist; sha256 not pinned" in out
    last = out.splitlines()[-1]
    assert last.startswith("r.yaml is missing 1 file(s) (reranker (weighted")
    assert last.endswith("put the 1 local file(s) in place or change their weights values.")


def test_without_check_a_missing_local_file_fails_in_one_sentence(capsys, weighted):
    code, out, _ = run(capsys, weighted("checkpoints/missing.safetensors"))
    assert code == 1
    assert "does not exist (looked in" in out
    assert out.splitlines()[-1].endswith("failed (see above).")


def test_a_pinned_local_file_is_checked_by_its_sha256(capsys, weighted, tmp_path):
    (tmp_path / "w.safetensors").write_bytes(b"weights")
    right = hashlib.sha256(b"weights").hexdigest()
    code, out, _ = run(capsys, weighted(f"w.safetensors sha256:{right}"), "--check")
    assert code == 0
    assert "sha256 matches the pinned one" in out
    code, out, _ = run(capsys, weighted(f"w.safetensors sha256:{'0' * 64}"), "--check")
    assert code == 1
    assert f"has SHA-256 {right}, not the pinned {'0' * 64}" in out


def test_a_file_on_the_hub_is_checked_then_fetched_through_v2a_weights(capsys, weighted,
                                                                       hub_standin):
    data = b"hub weights"
    hub_standin.add_file("someone/model", "w.safetensors", data)
    digest = hashlib.sha256(data).hexdigest()
    recipe = weighted(f"hf://someone/model/w.safetensors sha256:{digest}")
    code, out, _ = run(capsys, recipe, "--check")
    assert code == 1
    assert "missing, from hf://someone/model/w.safetensors; sha256 pinned" in out
    assert out.splitlines()[-1].endswith(
        "run `v2a download` without --check on a machine with internet.")
    code, out, _ = run(capsys, recipe)
    assert code == 0
    assert "; 11 B; downloaded to " in out and "sha256 matches the pinned one" in out
    code, out, _ = run(capsys, recipe, "--check")
    assert code == 0
    assert "; 11 B; present: " in out


def test_a_plugin_that_declares_nothing_is_said_to_download_on_first_use(capsys, weighted):
    code, out, _ = run(capsys, weighted("pretrained"), "--check")
    assert code == 0
    assert f": weights pretrained: {LIBRARY_ONLY}" in out


def test_a_refused_pretrained_is_reported_in_one_sentence(capsys, weighted):
    def refuse(config):
        raise WeightsError("nothing of this model is published; train it.")
    code, out, _ = run(capsys, weighted("pretrained", refuse), "--check")
    assert code == 1
    assert ": nothing of this model is published; train it.\n" in out


def published(tmp_path: Path, content: bytes, *, sha256: str | None) -> list[PretrainedFile]:
    """One published file whose "library" keeps it in ``tmp_path/cache`` and "downloads" it
    from ``tmp_path/server`` (a plain copy: the command's logic is what is tested)."""
    server, cache = tmp_path / "server" / "model.bin", tmp_path / "cache" / "model.bin"
    server.parent.mkdir(parents=True, exist_ok=True)
    server.write_bytes(content)

    def find() -> Path | None:
        return cache if cache.is_file() else None

    def fetch() -> Path:
        cache.parent.mkdir(parents=True, exist_ok=True)
        cache.write_bytes(server.read_bytes())
        return cache

    return [PretrainedFile(what="the test model", source=f"the test server {server}",
                           size=len(content), sha256=sha256, licence="MIT", find=find,
                           fetch=fetch)]


def test_check_then_download_then_check(capsys, weighted, tmp_path):
    digest = hashlib.sha256(b"published").hexdigest()
    files = lambda config: published(tmp_path, b"published", sha256=digest[:8])  # noqa: E731
    recipe = weighted("pretrained", files)
    code, out, _ = run(capsys, recipe, "--check")
    assert code == 1
    assert (f"the test model; 9 B; missing, from the test server {tmp_path / 'server'}"
            f"/model.bin; sha256 published ({digest[:8]})") in out
    assert not (tmp_path / "cache").exists()  # --check downloads nothing
    code, out, _ = run(capsys, recipe)
    assert code == 0
    assert f"downloaded to {tmp_path / 'cache' / 'model.bin'}" in out
    assert f"sha256 matches the published {digest[:8]}" in out
    assert out.splitlines()[-1] == "r.yaml has all 1 file(s) it needs here (1 downloaded now, none missing)."
    code, out, _ = run(capsys, recipe, "--check")
    assert code == 0
    assert f"present: {tmp_path / 'cache' / 'model.bin'}" in out


def test_a_download_with_another_sha256_is_refused_and_not_kept(capsys, weighted, tmp_path):
    files = lambda config: published(tmp_path, b"tampered", sha256="0" * 64)  # noqa: E731
    code, out, _ = run(capsys, weighted("pretrained", files))
    assert code == 1
    got = hashlib.sha256(b"tampered").hexdigest()
    assert (f"{tmp_path / 'cache' / 'model.bin'} has SHA-256 {got}, not the published "
            f"{'0' * 12}…, so it is damaged or not the published file; it was removed from the "
            "cache, run the command again to download it anew.") in out
    assert not (tmp_path / "cache" / "model.bin").exists()
    assert out.splitlines()[-1].endswith("failed (see above).")


def test_the_evaluation_models_are_included_unless_left_out(capsys, use_registry, write):
    use_registry.register_module(v2a_plugins.audio_encoders.panns)
    recipe = str(write("r.yaml", "reranker: {plugin: none}\n"))
    code, out, _ = run(capsys, recipe, "--metrics", "fd_panns", "--check")
    assert code == 0
    assert "evaluate fd_panns (panns_cnn14): weights none, so v2a evaluate skips it" in out
    code, out, _ = run(capsys, recipe, "--metrics", "fd_panns", "--model",
                       "panns_cnn14.weights=pretrained", "--check")
    assert code == 1
    assert "PANNs CNN14 weights are not downloaded automatically" in out
    code, out, _ = run(capsys, recipe, "--metrics", "fd_panns", "--no-evaluation", "--check")
    assert (code, out.splitlines()[-1]) == (0, "r.yaml needs nothing downloaded.")


# -- the built-in plug-ins' declarations ------------------------------------------------------------


def builtin_registry() -> Registry:
    return Registry.from_environment()


def declaring_specs() -> list[ComponentSpec]:
    return [e.spec for e in builtin_registry().entries.values()
            if e.spec.pretrained_files is not None and e.plugin.provider == "v2a"]


def test_built_in_declarations_are_sane_and_use_no_network(no_network, empty_caches):
    specs = declaring_specs()
    assert {"dac", "encodec", "clip", "clip_text", "s3d", "passt", "vggish", "wav2clip",
            "scav", "beats"} <= {s.name for s in specs}
    for spec in specs:
        if spec.missing_requirements():
            continue
        names = {f.name for f in dataclasses.fields(spec.config)}
        for weights in ("none", "pretrained"):
            if "weights" not in names:
                continue
            config = spec.config(weights=weights)
            try:
                files = spec.pretrained_files(config)
            except UserError:
                assert weights == "pretrained", spec.name  # a refusal, as building refuses
                continue
            if weights == "none":
                assert files == [], spec.name
            for file in files:
                assert isinstance(file, PretrainedFile)
                assert file.what and file.source and file.licence, spec.name
                assert file.find() is None, spec.name  # the caches are empty


def test_the_default_configs_declare_what_their_weights_option_says(no_network, empty_caches):
    registry = builtin_registry()
    for (kind, name), entry in registry.entries.items():
        spec = entry.spec
        if spec.pretrained_files is None or spec.missing_requirements():
            continue
        files = spec.pretrained_files(spec.config())
        pretrained = getattr(spec.config(), "weights", "none") == "pretrained"
        assert bool(files) == pretrained, (kind, name)


@pytest.mark.parametrize(("kind", "name", "words"), [
    ("fuser", "maskvat", "the maskvat fuser has no published weights"),
    ("generator", "maskvat_hybrid", "the maskvat_hybrid generator has no published weights"),
    ("codec", "spectral_rvq", "the spectral_rvq codec has no published weights"),
    ("reranker", "scav", "there is no published SCAV checkpoint"),
    ("audio_encoder", "beats", "BEATs weights are not downloaded automatically"),
])
def test_pretrained_of_weights_nobody_publishes_is_refused_as_building_refuses_it(kind, name,
                                                                                 words):
    spec = builtin_registry().get(kind, name).spec
    with pytest.raises(WeightsError, match=words):
        spec.pretrained_files(spec.config(weights="pretrained"))
    with pytest.raises(WeightsError, match=words):
        spec.build(spec.config(weights="pretrained"))
    assert spec.pretrained_files(spec.config(weights="some/file.safetensors")) == []


def test_find_looks_in_torch_hub_s_checkpoint_folder(no_network, empty_caches):
    (s3d,) = s3d_pretrained_files(S3DConfig())
    assert s3d.sha256 == "d76dad2f"  # torchvision's file name s3d-d76dad2f.pth
    assert s3d.size == round(31.972 * 2**20)  # torchvision's _file_size, 31.972 MiB
    placed = empty_caches / "torch" / "hub" / "checkpoints" / "s3d-d76dad2f.pth"
    placed.parent.mkdir(parents=True)
    placed.write_bytes(b"x")
    assert s3d.find() == placed
    (encodec,) = encodec_pretrained_files(EncodecConfig())
    assert encodec.sha256 == "d7cc33bc"
    assert encodec.find() is None
    (placed.parent / "encodec_24khz-d7cc33bc.th").write_bytes(b"x")
    assert encodec.find() == placed.parent / "encodec_24khz-d7cc33bc.th"


@pytest.fixture
def web_server(tmp_path):
    """A plain HTTP server on 127.0.0.1 serving ``tmp_path / "site"``; yields its base URL."""
    site = tmp_path / "site"
    site.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_torch_hub_fetches_into_its_folder_and_checks_the_name_s_hash(empty_caches, web_server,
                                                                      capsys):
    content = b"released weights"
    prefix = hashlib.sha256(content).hexdigest()[:8]
    site = empty_caches / "site"
    (site / f"model-{prefix}.pth").write_bytes(content)
    (site / "model-0badc0de.pth").write_bytes(content)
    good = torch_hub_file(what="the model", url=f"{web_server}/model-{prefix}.pth",
                          check_hash=True, licence="MIT")
    assert good.sha256 == prefix and good.find() is None
    fetched = good.fetch()  # torch.hub.download_url_to_file, with its progress bar
    assert fetched == empty_caches / "torch" / "hub" / "checkpoints" / f"model-{prefix}.pth"
    assert fetched.read_bytes() == content and good.find() == fetched
    bad = torch_hub_file(what="the model", url=f"{web_server}/model-0badc0de.pth",
                         check_hash=True, licence="MIT")
    with pytest.raises(DownloadError, match=r"^torch.hub could not download the model from "
                       r"http://127.0.0.1:\d+/model-0badc0de.pth \(invalid hash value"):
        bad.fetch()
    assert bad.find() is None  # torch.hub removed what it had written
    missing = torch_hub_file(what="the model", url=f"{web_server}/absent-12345678.pth",
                             check_hash=True, licence="MIT")
    with pytest.raises(DownloadError, match="HTTP Error 404"):
        missing.fetch()


def test_find_looks_where_dac_keeps_its_downloads(no_network, empty_caches):
    (dac,) = dac_pretrained_files(DACConfig(model="24khz"))
    assert dac.source.endswith("/0.0.4/weights_24khz.pth")
    placed = empty_caches / "home" / ".cache" / "descript" / "dac" / "weights_24khz_8kbps_0.0.4.pth"
    placed.parent.mkdir(parents=True)
    placed.write_bytes(b"x")
    assert dac.find() == placed


def test_a_published_prefix_is_compared_with_the_start_of_the_sha256(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b"abc")
    digest = hashlib.sha256(b"abc").hexdigest()
    file = lambda sha: PretrainedFile(what="f", source="s", size=3, sha256=sha,  # noqa: E731
                                      licence="l", find=lambda: None, fetch=lambda: path)
    assert checksum_matches(file(digest[:10]), path) == (True, digest)
    assert checksum_matches(file(digest), path) == (True, digest)
    assert checksum_matches(file("0" * 10), path) == (False, digest)
    assert checksum_matches(file(None), path) == (None, digest)
    with pytest.raises(ValueError, match="8 to 64 lower-case hex digits"):
        file("abc")


def test_open_clip_s_hub_file_is_found_and_fetched_through_open_clip(hub_standin):
    (clip,) = clip_pretrained_files(ClipConfig())
    repo = "timm/vit_base_patch32_clip_224.openai"
    assert clip.source == (f"Hugging Face Hub {repo}: open_clip_model.safetensors or "
                           "open_clip_pytorch_model.bin")
    assert clip.find() is None
    hub_standin.add_file(repo, "open_clip_model.safetensors", b"weights")
    fetched = clip.fetch()  # open_clip.download_pretrained, through huggingface_hub
    assert fetched.read_bytes() == b"weights"
    assert clip.find() == fetched


def test_a_transformers_model_is_fetched_by_the_plug_in_s_loading_then_found(hub_standin,
                                                                               tmp_path):
    from tests.test_t5_text import saved_folder, small
    from v2a_plugins.text_encoders.t5 import T5TextConfig, t5_pretrained_files

    folder = Path(saved_folder(small(), tmp_path / "saved"))
    for file in sorted(p for p in folder.iterdir() if p.is_file()):
        hub_standin.add_file("someone/tiny-t5", file.name, file.read_bytes())
    config = T5TextConfig(weights="pretrained", checkpoint="someone/tiny-t5", max_tokens=16)
    (model,) = t5_pretrained_files(config)
    assert model.source == "Hugging Face Hub someone/tiny-t5 (the whole model)"
    assert model.find() is None
    fetched = model.fetch()  # the plug-in's own from_pretrained calls, through the stand-in
    assert (fetched / "config.json").is_file() and (fetched / "model.safetensors").is_file()
    assert model.find() == fetched


# -- the docs --------------------------------------------------------------------------------------


def test_docs_weights_names_every_declaring_built_in():
    text = (ROOT / "docs" / "weights.md").read_text()
    first_cells = [line.split("|")[1] for line in text.splitlines() if line.startswith("| `")]
    named = {name for cell in first_cells for name in re.findall(r"`([a-z0-9_]+)`", cell)}
    missing = {s.name for s in declaring_specs()} - named
    assert not missing, f"docs/weights.md has no row for {sorted(missing)}"
    assert "## Weights from the Hugging Face Hub" in text


# -- the sizes docs/weights.md counts from the architectures ---------------------------------------

#: A size the built-in table counts, in a size cell: ``≈ 307 MB (76.7 M fp32 values``, after the
#: ``model`` it is for where a plug-in has several (```44khz` ≈ ...``), or ``at least ≈`` where
#: only part of the file is counted.
COUNTED_SIZE = re.compile(r"(?:`(?P<model>[\w.]+)` )?(?P<at_least>at least )?"
                          r"≈ (?P<megabytes>[\d.]+) MB \((?P<millions>[\d.]+) M fp32 values")


def stored_size(modules) -> tuple[int, int]:
    """``(fp32 values, bytes)`` of the distinct tensors in the state dicts of ``modules``, each at
    its dtype: what ``torch.save`` writes of them, before its own metadata. A tensor shared under
    several names (BEATs' relative position table) counts once, as torch.save stores it once."""
    distinct = {id(t): t for module in modules for t in module.state_dict(keep_vars=True).values()}
    dtypes = {t.dtype for t in distinct.values()}
    assert dtypes <= {torch.float32, torch.int64}, f"a dtype the table does not describe: {dtypes}"
    fp32 = sum(t.numel() for t in distinct.values() if t.dtype == torch.float32)
    return fp32, sum(t.numel() * t.element_size() for t in distinct.values())


def built_at_random(kind: str, name: str, *, on_meta: bool = True, **options):
    """The built-in ``kind``/``name`` at its defaults (its published architecture) with random
    weights: on the meta device (no memory, no values), or for real where it cannot be."""
    spec = default_registry().get(kind, name).spec
    config = dataclasses.replace(spec.config(), weights="none", **options)
    if not on_meta:
        return spec.build(config)
    built = build_on_meta(lambda: spec.build(config))
    assert built is not None, f"{kind} {name} no longer builds on the meta device"
    return built


def published_codec(load, config):
    """A codec's library model as its published file holds it (``weight_g``/``weight_v``: the
    codec plug-ins fold weight normalisation only after loading), on the meta device."""
    return build_on_meta(lambda: load(dataclasses.replace(config, weights="none")))


def torchvision_s3d():
    """torchvision's whole S3D (classifier included, as its published file holds it)."""
    return build_on_meta(lambda: build_s3d("none"))


def whole_open_clip_model():
    """open_clip's whole CLIP model (both towers), which the ``clip`` plug-in's ``pretrained``
    builds before loading the file into it, with random weights (QuickGELU, which the ``openai``
    tag adds, has no parameters). open_clip moves it between devices while building, so it is
    built for real (~0.6 GB)."""
    import open_clip

    return open_clip.create_model(ClipConfig().model, pretrained=None)


#: ``(row, model) -> the modules whose state dicts the file holds``, for every size the table
#: counts: the whole published file, except where the table says "at least" (wav2clip: the
#: audio side only; synchformer, sparsesync: what the two components load).
COUNTED_FILES = {
    ("dac", "44khz"): lambda: [published_codec(load_dac, DACConfig(model="44khz"))],
    ("dac", "24khz"): lambda: [published_codec(load_dac, DACConfig(model="24khz"))],
    ("dac", "16khz"): lambda: [published_codec(load_dac, DACConfig(model="16khz"))],
    ("encodec", "24khz"): lambda: [published_codec(load_encodec, EncodecConfig(model="24khz"))],
    ("encodec", "48khz"): lambda: [published_codec(load_encodec, EncodecConfig(model="48khz"))],
    ("s3d", None): lambda: [torchvision_s3d()],
    ("passt", None): lambda: [built_at_random("audio_encoder", "passt")],
    ("vggish", None): lambda: [built_at_random("audio_encoder", "vggish")],
    ("wav2clip", None): lambda: [built_at_random("audio_encoder", "wav2clip")],
    ("beats", None): lambda: [built_at_random("audio_encoder", "beats").beats],
    ("synchformer", None): lambda: [built_at_random("visual_encoder", "synchformer"),
                                    built_at_random("reranker", "synchformer")],
    ("sparsesync", None): lambda: [built_at_random("visual_encoder", "sparsesync"),
                                   built_at_random("reranker", "sparsesync")],
    ("panns_cnn14", None): lambda: [built_at_random("audio_encoder", "panns_cnn14", on_meta=False)],
    ("clip", None): lambda: [whole_open_clip_model()],
}
#: Where the plug-ins load only part of the published file, so the table says "at least".
PART_OF_THE_FILE = {("wav2clip", None), ("synchformer", None), ("sparsesync", None)}
#: Built for real (neither builds on the meta device): a few seconds and ~1 GB between them.
BUILT_FOR_REAL = {("panns_cnn14", None), ("clip", None)}


def counted_sizes() -> dict[tuple[str, str | None], re.Match]:
    """Every counted size in the built-in table's size column, by ``(row, model)``."""
    text = (ROOT / "docs" / "weights.md").read_text()
    header = "| plug-in | kind | `weights` | where they come from | size | licence | checksum |"
    table = text.split(header + "\n", 1)[1].split("\n\n", 1)[0]
    found = {}
    for line in table.splitlines()[1:]:  # after the separator row
        cells = line.split("|")
        row = re.findall(r"`([a-z0-9_]+)`", cells[1])[0]
        for match in COUNTED_SIZE.finditer(cells[5]):  # the size column
            assert (row, match["model"]) not in found, f"{row} {match['model']} counted twice"
            found[(row, match["model"])] = match
    return found


def printed_precision(figure: str) -> int:
    return len(figure.split(".")[1]) if "." in figure else 0


@pytest.mark.parametrize("case", [
    pytest.param(case, marks=[pytest.mark.slow] if case in BUILT_FOR_REAL else [],
                 id=f"{case[0]}-{case[1]}" if case[1] else case[0])
    for case in COUNTED_FILES])
def test_docs_weights_size_is_the_architecture_s_state_dict(case):
    found = counted_sizes()
    assert set(found) == set(COUNTED_FILES), "the table counts other sizes than are recounted here"
    match = found[case]
    fp32, stored = stored_size(COUNTED_FILES[case]())
    # The table rounds to the digits it prints: the count in millions of values, the size in
    # megabytes of 10**6 bytes; both are exact integers before rounding, so no tolerance.
    millions, megabytes = match["millions"], match["megabytes"]
    assert bool(match["at_least"]) == (case in PART_OF_THE_FILE)
    assert f"{fp32 / 1e6:.{printed_precision(millions)}f}" == millions
    assert f"{stored / 1e6:.{printed_precision(megabytes)}f}" == megabytes
