"""Shared fixtures: a registry holding the built-ins plus a few components defined for tests."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import torch
import v2a_plugins.audio_encoders.codec_latents
import v2a_plugins.audio_encoders.mel
import v2a_plugins.rerankers.keep_first

import v2a.generator_task
from tests import components_for_tests
from v2a.registry import Registry


@pytest.fixture(autouse=True, scope="session")
def one_thread():
    """The suite's models are small: a second intra-op thread only adds synchronisation, which
    costs more than it gains (3-30x slower steps on a busy 2-core machine). Benchmarks, not
    tests, measure speed."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def threads_left_as_found():
    """A test that changes torch's thread count must put it back: a later fork (a DataLoader
    worker, a killed-run test) would inherit an OpenMP pool and may deadlock, and later results
    would change with the thread count."""
    yield
    threads = torch.get_num_threads()
    if threads != 1:
        torch.set_num_threads(1)
        pytest.fail(f"the test left torch on {threads} threads (the suite runs on 1)")


@pytest.fixture
def registry() -> Registry:
    """A fresh registry: the built-in plug-ins, the core's training task and
    ``tests/components_for_tests.py``."""
    reg = Registry()
    reg.register_module(v2a.generator_task)
    reg.register_module(v2a_plugins.audio_encoders.mel)
    reg.register_module(v2a_plugins.audio_encoders.codec_latents)
    reg.register_module(v2a_plugins.rerankers.keep_first)
    reg.register_module(components_for_tests)
    return reg


@pytest.fixture
def use_registry(monkeypatch, registry) -> Registry:
    """Make ``registry`` the process-wide default (what the CLI uses)."""
    monkeypatch.setattr("v2a.registry.override", registry)
    return registry


@pytest.fixture
def write(tmp_path, monkeypatch):
    """``write(name, text)`` writes ``text`` (dedented) to ``tmp_path / name`` and returns the path;
    the working directory is ``tmp_path``, so messages name files as the user gave them."""
    monkeypatch.chdir(tmp_path)

    def write(name: str, text: str) -> Path:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
        return path

    return write


@pytest.fixture
def float64_by_default():
    """Torch's default dtype is float64 for one test (restored after): modules, ``torch.randn``
    and torchaudio's mel filters are built in float64. For tests whose claim is an equality that
    float32 rounding would blur by amounts that depend on the CPU's kernels."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)
