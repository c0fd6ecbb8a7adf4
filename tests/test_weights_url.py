"""Weights given by URL, and pinned by SHA-256 (v2a.weights.resolve_file, v2a.downloads).

A real HTTP server on 127.0.0.1, in a thread of the test, serves the checkpoints: nothing leaves
the machine. Each test has its own download cache (``V2A_CACHE`` in a temporary folder)."""

from __future__ import annotations

import hashlib
import logging
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch
from safetensors.torch import save
from v2a_plugins.codecs.dac import DACConfig, dac_properties

from v2a.cache import cache_identity, cache_key
from v2a.downloads import DownloadError, cache_folder
from v2a.evaluate.provenance import differences, model_record
from v2a.files import is_temporary
from v2a.recipe import build_frozen, load_recipe
from v2a.weights import (
    WeightsError,
    cached_file,
    content_sha256,
    load_checkpoint,
    load_trained,
    parse_weights,
    resolve_file,
)

ROOT = Path(__file__).resolve().parent.parent
STATE = {"weight": torch.arange(6.0).reshape(2, 3), "bias": torch.tensor([0.5, -1.5])}
CHECKPOINT = save(STATE)
SHA256 = hashlib.sha256(CHECKPOINT).hexdigest()
OTHER_SHA256 = "0" * 64


class Server:
    """An HTTP server on 127.0.0.1 serving ``files`` (URL path → bytes) from a thread, counting
    the requests for each path. ``cut`` paths announce their whole length but send half of it;
    with ``meet`` set, each answer waits until that many requests are being answered at once."""

    def __init__(self, files: dict[str, bytes]):
        self.files, self.cut, self.requests = files, set(), []
        self.meet: threading.Barrier | None = None
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                server.requests.append(self.path)
                body = server.files.get(self.path)
                if body is None:
                    self.send_error(404, "Not Found")
                    return
                if server.meet is not None:
                    server.meet.wait(timeout=30)
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body[:len(body) // 2] if self.path in server.cut else body)

            def log_message(self, *args):  # keep the test output clean
                pass

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.http.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.http.server_address[1]}{path}"

    def stop(self) -> None:
        if self.thread.is_alive():
            self.http.shutdown()
            self.http.server_close()
            self.thread.join()


@pytest.fixture(autouse=True)
def download_cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("V2A_CACHE", str(tmp_path / "v2a-cache"))
    return tmp_path / "v2a-cache"


@pytest.fixture
def server():
    running = Server({"/models/net.safetensors": CHECKPOINT})
    yield running
    running.stop()


def cached_files(cache: Path) -> list[Path]:
    return sorted(p for p in cache.rglob("*") if p.is_file()) if cache.exists() else []


def one_sentence(message: str) -> None:
    assert "\n" not in message and message.count("; ") <= 2, message


def test_a_pinned_url_is_downloaded_once_and_then_used_without_network(server, download_cache):
    url = server.url("/models/net.safetensors")
    value = f"{url} sha256:{SHA256}"
    path = resolve_file(value, what="the test model")
    assert path == download_cache / "weights" / SHA256 / "net.safetensors"
    assert cache_folder() == download_cache
    assert torch.equal(load_checkpoint(path)["weight"], STATE["weight"])
    server.stop()  # from here on there is no network
    assert resolve_file(value, what="the test model") == path
    assert cached_file(value) == path
    module = torch.nn.Linear(3, 2)
    load_trained(module, value, what="the test model")  # every component's weights option
    assert torch.equal(module.bias.detach(), STATE["bias"])
    assert server.requests == ["/models/net.safetensors"]
    assert cached_files(download_cache) == [path]


def test_another_sha256_is_refused_and_nothing_is_kept(server, download_cache):
    url = server.url("/models/net.safetensors")
    with pytest.raises(DownloadError) as info:
        resolve_file(f"{url} sha256:{OTHER_SHA256}", what="the test model")
    message = str(info.value)
    one_sentence(message)
    assert url in message and SHA256 in message and OTHER_SHA256 in message
    assert "not kept" in message
    assert cached_files(download_cache) == []  # neither the file nor a temporary
    assert cached_file(f"{url} sha256:{OTHER_SHA256}") is None


def test_an_unpinned_url_warns_with_its_sha256_and_how_to_pin_it(server, download_cache, caplog):
    url = server.url("/models/net.safetensors")
    with caplog.at_level(logging.WARNING, logger="v2a"):
        path = resolve_file(url, what="the test model")
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and f"'{url} sha256:{SHA256}'" in warnings[0], warnings
    assert path.parent.parent == download_cache / "weights" and path.parent.name.startswith("url-")
    caplog.clear()
    server.stop()
    assert resolve_file(url, what="the test model") == path  # the cached one, no warning again
    assert not caplog.records and server.requests == ["/models/net.safetensors"]
    assert content_sha256(url) == SHA256


@pytest.mark.parametrize("problem", ["no server", "not found", "cut short"])
def test_a_url_that_cannot_be_downloaded_is_one_sentence(server, download_cache, problem):
    server.files["/half.safetensors"] = CHECKPOINT
    server.cut.add("/half.safetensors")
    if problem == "no server":
        with socket.socket() as unused:  # a port nobody listens on once it is closed
            unused.bind(("127.0.0.1", 0))
            url = f"http://127.0.0.1:{unused.getsockname()[1]}/net.safetensors"
    else:
        url = {"not found": server.url("/missing.safetensors"),
               "cut short": server.url("/half.safetensors")}[problem]
    with pytest.raises(DownloadError) as info:
        resolve_file(f"{url} sha256:{SHA256}", what="the test model")
    message = str(info.value)
    one_sentence(message)
    assert message.startswith(f"could not download the weights file of the test model from {url} (")
    assert "give its local path" in message
    if problem == "not found":
        assert "HTTP 404" in message
    if problem == "cut short":
        assert f"{len(CHECKPOINT) // 2} of {len(CHECKPOINT)} bytes" in message
    assert cached_files(download_cache) == []


def test_a_file_url_is_the_local_file_and_its_pin_is_checked(tmp_path, download_cache):
    path = tmp_path / "my weights" / "net.safetensors"  # a space in the folder's name
    path.parent.mkdir()
    path.write_bytes(CHECKPOINT)
    assert resolve_file(path.as_uri(), what="the test model") == path
    assert resolve_file(f"{path.as_uri()} sha256:{SHA256}", what="the test model") == path
    with pytest.raises(WeightsError, match="not the pinned"):
        resolve_file(f"{path.as_uri()} sha256:{OTHER_SHA256}", what="the test model")
    assert cached_files(download_cache) == []  # a local file is never copied


def test_a_local_path_with_another_sha256_is_refused_before_loading(tmp_path):
    path = tmp_path / "my weights" / "net.safetensors"
    path.parent.mkdir()
    path.write_bytes(CHECKPOINT)
    module = torch.nn.Linear(3, 2)
    before = {k: v.clone() for k, v in module.state_dict().items()}
    with pytest.raises(WeightsError) as info:
        load_trained(module, f"{path} sha256:{OTHER_SHA256}", what="the test model")
    message = str(info.value)
    one_sentence(message)
    assert str(path) in message and SHA256 in message and OTHER_SHA256 in message
    assert all(torch.equal(module.state_dict()[k], v) for k, v in before.items())
    load_trained(module, f"{path}  SHA256:{SHA256.upper()}", what="the test model")
    assert torch.equal(module.weight.detach(), STATE["weight"])


def test_two_downloads_of_one_url_at_once_leave_one_sound_file(server, download_cache):
    url = server.url("/models/net.safetensors")
    server.meet = threading.Barrier(2)  # both requests are answered at the same time
    found, failed = [], []

    def fetch():
        try:
            found.append(resolve_file(f"{url} sha256:{SHA256}", what="the test model"))
        except Exception as exc:  # noqa: BLE001 (reported by the assertion below)
            failed.append(exc)

    threads = [threading.Thread(target=fetch) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not failed and len(found) == 2 and found[0] == found[1]
    assert len(server.requests) == 2  # each downloaded it: neither saw the other's temporary
    files = cached_files(download_cache)
    assert files == [found[0]] and not any(is_temporary(p) for p in files)
    assert hashlib.sha256(found[0].read_bytes()).hexdigest() == SHA256


@pytest.mark.parametrize(("value", "refusal"), [
    ("w.pt sha256:abc", "is not 64 hexadecimal digits"),
    (f"w.pt sha256:{SHA256[:-1]}g", "is not 64 hexadecimal digits"),
    ("s3://bucket/w.pt", "is a URL with the scheme s3://, which v2a does not fetch; give a "
                         "local path or a file://, http://, https://, hf:// URL"),
    ("file://elsewhere/w.pt", "a file:// URL on another host (elsewhere)"),
])
def test_a_malformed_weights_value_is_refused(value, refusal):
    with pytest.raises(WeightsError, match="weights value") as info:
        resolve_file(value, what="the test model")
    assert refusal in str(info.value)
    one_sentence(str(info.value))


def test_the_grammar_of_a_weights_value():
    pinned = parse_weights(f"  /data/my weights/w.pt \t sha256:{SHA256.upper()} ")
    assert (pinned.location, pinned.sha256, pinned.scheme) == ("/data/my weights/w.pt", SHA256,
                                                               "path")
    assert pinned.is_local
    url = parse_weights("HTTPS://host/w.pt")
    assert (url.location, url.sha256, url.scheme, url.is_local) == ("HTTPS://host/w.pt", None,
                                                                    "https", False)
    assert parse_weights("file:///data/w%20x.pt").local_path() == Path("/data/w x.pt")
    assert parse_weights("~/w.pt").local_path() == Path.home() / "w.pt"


def test_a_missing_local_file_says_where_to_get_it_and_that_a_url_will_do(tmp_path):
    with pytest.raises(WeightsError) as info:
        resolve_file(str(tmp_path / "gone.pt"), what="the test model", file="net.pt",
                     page="https://example.org/net")
    message = str(info.value)
    one_sentence(message)
    assert "does not exist" in message and "download net.pt from https://example.org/net and " \
        "give its path or URL" in message


def test_the_cache_key_counts_a_url_by_its_content(server, download_cache):
    """The same codec file as a local path, a pinned URL and an unpinned URL: one cache key;
    and the codec built from the URL is the one built from the file."""
    local = ROOT / "recipes" / "tiny" / "codec.safetensors"
    data = local.read_bytes()
    server.files["/tiny/codec.safetensors"] = data
    sha256 = hashlib.sha256(data).hexdigest()
    url = server.url("/tiny/codec.safetensors")

    def recipe(weights: str):
        return load_recipe(ROOT / "recipes" / "tiny.yaml", [f"codec.weights={weights}"])

    pinned = recipe(f"{url} sha256:{sha256}")
    key = cache_key(cache_identity(recipe(str(local))))
    assert cache_key(cache_identity(pinned)) == key
    assert server.requests == []  # a pinned URL counts by its pin: nothing to download for that
    assert cache_key(cache_identity(recipe(f"{url} sha256:{OTHER_SHA256}"))) != key
    assert cache_key(cache_identity(recipe(url))) == key  # downloaded to be hashed
    from_url = build_frozen(pinned.choice("codec")).state_dict()
    from_file = build_frozen(recipe(str(local)).choice("codec")).state_dict()
    assert all(torch.equal(from_url[k], v) for k, v in from_file.items())


def test_results_record_a_url_by_its_content(server, tmp_path):
    local = tmp_path / "net.safetensors"
    local.write_bytes(CHECKPOINT)
    url = server.url("/models/net.safetensors")

    def results(weights: str) -> dict:
        model = model_record({"plugin": "vggish", "weights": weights})
        return {"metrics": {"fad": {"value": 1.0, "model": model, "settings": {}}}}

    pinned = results(f"{url} sha256:{SHA256}")
    assert pinned["metrics"]["fad"]["model"]["weights"] == {"file": url, "sha256": SHA256}
    assert differences(pinned, results(str(local))) == []  # the same content compares
    other = results(f"{url} sha256:{OTHER_SHA256}")
    assert differences(pinned, other) == ["fad: model.weights: the weights file's content changed"]
    assert results(url)["metrics"]["fad"]["model"]["weights"] == {"file": url, "sha256": None}
    assert server.requests == []  # recording never downloads


def test_a_plugin_reading_the_file_name_reads_it_past_the_pin():
    """The DAC codec declares its architecture for a .safetensors file (a torch file's metadata
    decides it): so also for one given by URL or pinned by its SHA-256."""
    plain = dac_properties(DACConfig(model="16khz", weights="w.safetensors"))
    assert "latent_dim" in plain
    for value in (f"w.safetensors sha256:{SHA256}", f"https://host/w.safetensors sha256:{SHA256}"):
        assert dac_properties(DACConfig(model="16khz", weights=value)) == plain
    assert "latent_dim" not in dac_properties(DACConfig(model="16khz", weights=f"w.pth sha256:{SHA256}"))
