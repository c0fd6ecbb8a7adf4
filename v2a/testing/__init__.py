"""The conformance kit: check that a component honours the contract of its interface.

A plug-in author runs it in their own pytest suite, one test per check, like scikit-learn's
``parametrize_with_checks``::

    from v2a.testing import from_registry, parametrize_with_checks

    def make_my_codec():
        return MyCodec(sample_rate=16000, n_codebooks=4)

    @parametrize_with_checks([make_my_codec, from_registry("codec", "mulaw", bits=8)])
    def test_conformance(factory, check):
        check(factory)

A *factory* is a zero-argument callable returning a fresh component: some checks build two
instances (the state round trip). A :func:`from_registry` factory also carries what the plug-in
declares the component will be (``ComponentSpec.properties``), which
:func:`check_declared_properties` compares with the built component. Outside pytest,
:func:`check_component` runs every check and raises the first :class:`ConformanceError`. The
checks themselves live in :mod:`v2a.testing.checks`, one module per kind of component; each
one's docstring says what it guarantees.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from v2a.interfaces import Component
from v2a.registry import Registry, default_registry
from v2a.testing.checks import (
    CHECKS,
    COMMON_CHECKS,
    ConformanceError,
    Factory,
    build,
    check_audio_encoder_output,
    check_batch_independence,
    check_codec_decode,
    check_codec_encode,
    check_codec_latents,
    check_codec_rates,
    check_declared_properties,
    check_deterministic,
    check_device_move,
    check_dtype_move,
    check_fuser_output,
    check_fuser_padding,
    check_generator_context_padding,
    check_generator_drop,
    check_generator_masked_codes,
    check_generator_output,
    check_generator_prepared,
    check_interface,
    check_reranker_permutation,
    check_reranker_scores,
    check_reranker_select,
    check_state_round_trip,
    check_text_encoder_empty,
    check_text_encoder_output,
    check_text_encoder_padding,
    check_text_encoder_truncation,
    check_text_encoder_unicode,
    check_visual_encoder_output,
    check_visual_encoder_times,
    checks_for,
    factory_id,
    kind_of,
)

__all__ = [
    "CHECKS",
    "COMMON_CHECKS",
    "ConformanceError",
    "RegistryFactory",
    "check_audio_encoder_output",
    "check_batch_independence",
    "check_codec_decode",
    "check_codec_encode",
    "check_codec_latents",
    "check_codec_rates",
    "check_component",
    "check_declared_properties",
    "check_deterministic",
    "check_device_move",
    "check_dtype_move",
    "check_fuser_output",
    "check_fuser_padding",
    "check_generator_context_padding",
    "check_generator_drop",
    "check_generator_prepared",
    "check_generator_masked_codes",
    "check_generator_output",
    "check_interface",
    "check_reranker_permutation",
    "check_reranker_scores",
    "check_reranker_select",
    "check_state_round_trip",
    "check_text_encoder_empty",
    "check_text_encoder_output",
    "check_text_encoder_padding",
    "check_text_encoder_truncation",
    "check_text_encoder_unicode",
    "check_visual_encoder_output",
    "check_visual_encoder_times",
    "checks_for",
    "factory_id",
    "from_registry",
    "kind_of",
    "parametrize_with_checks",
]


class RegistryFactory:
    """A factory that builds ``kind``/``name`` through ``registry`` (default:
    :func:`v2a.registry.default_registry`, looked up at each call), validating ``options``
    against the plug-in's config dataclass first (as a recipe would).

    :meth:`declared_properties` gives what the plug-in declares the component will be, for
    :func:`~v2a.testing.check_declared_properties`.
    """

    def __init__(self, *, kind: str, name: str, options: dict[str, Any],
                 registry: Registry | None = None):
        self.kind, self.name, self.options = kind, name, dict(options)
        self.registry = registry
        listed = ",".join(f"{key}={value}" for key, value in self.options.items())
        self.__name__ = f"{kind}:{name}" + (f"({listed})" if listed else "")  # the test id

    def _registry(self) -> Registry:
        return self.registry if self.registry is not None else default_registry()

    def __call__(self) -> Component:
        registry = self._registry()
        config = registry.config_for(self.kind, self.name, self.options)
        return registry.build(self.kind, self.name, config)

    def declared_properties(self) -> dict[str, Any]:
        """The plug-in's ``ComponentSpec.properties`` for these options (empty when it
        declares none), computed without building anything."""
        registry = self._registry()
        config = registry.config_for(self.kind, self.name, self.options)
        return registry.properties(self.kind, self.name, config)

    def __repr__(self) -> str:
        options = "".join(f", {key}={value!r}" for key, value in self.options.items())
        return f"from_registry({self.kind!r}, {self.name!r}{options})"


def from_registry(kind: str, name: str, **options: Any) -> RegistryFactory:
    """A factory for the installed plug-in component ``kind``/``name`` built with ``options``;
    its test id is ``"{kind}:{name}"``, followed by ``(key=value,...)`` when options are given."""
    return RegistryFactory(kind=kind, name=name, options=options)


def parametrize_with_checks(factories: Iterable[Factory]):
    """``pytest.mark.parametrize("factory, check", ...)`` with one case per factory and check.

    Each factory is built once, at collection, to find its kind; the common checks and those of
    its kind apply. Ids read ``"{factory id}-{check name}"``, e.g.
    ``"codec:mulaw-check_codec_encode"``.
    A factory that fails to build gets the single case ``check_interface``, which reports why.
    """
    import pytest

    params = []
    for factory in factories:
        try:
            checks = checks_for(build(factory))
        except ConformanceError:
            checks = [check_interface]
        fid = factory_id(factory)
        params += [pytest.param(factory, check, id=f"{fid}-{check.__name__}") for check in checks]
    return pytest.mark.parametrize("factory, check", params)


def check_component(factory: Factory) -> list[str]:
    """Run every check that applies to the factory's component; raise the first
    :class:`ConformanceError`, or return the names of the checks that passed."""
    checks = checks_for(build(factory))
    for check in checks:
        check(factory)
    return [check.__name__ for check in checks]
