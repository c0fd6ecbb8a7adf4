"""Shared fixtures: a registry holding the built-ins plus a few components defined for tests."""

from __future__ import annotations

import pytest
import torch

import v2a_plugins.audio_encoders
import v2a_plugins.rerankers
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


@pytest.fixture
def registry() -> Registry:
    """A fresh registry: the built-in plug-ins and ``tests/components_for_tests.py``."""
    reg = Registry()
    reg.register_module(v2a_plugins.audio_encoders)
    reg.register_module(v2a_plugins.rerankers)
    reg.register_module(components_for_tests)
    return reg


@pytest.fixture
def use_registry(monkeypatch, registry) -> Registry:
    """Make ``registry`` the process-wide default (what the CLI uses)."""
    monkeypatch.setattr("v2a.registry.default_registry", lambda: registry)
    return registry
