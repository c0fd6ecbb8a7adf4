"""v2a's conformance kit run on the μ-law codec, exactly as any third-party plug-in runs it.

``from_registry`` builds the codec through the installed entry point (so these tests also prove
the package is registered); each check of the kit is a separate test id.
"""

from v2a.testing import from_registry, parametrize_with_checks


@parametrize_with_checks([from_registry("codec", "mulaw"), from_registry("codec", "mulaw", bits=4)])
def test_conformance(factory, check):
    check(factory)
