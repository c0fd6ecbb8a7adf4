"""The module v2a loads through this package's entry point (``[project.entry-points.v2a]``).

It only describes the component. v2a calls the hook once at start-up, so nothing here should be
slow: a codec that needs a heavy library would import it inside ``build`` and name it in
``requires``. This one needs nothing beyond v2a (and the torch v2a brings).
"""

from __future__ import annotations

from v2a import ComponentSpec, hookimpl
from v2a_mulaw.codec import MulawCodec, MulawConfig, mulaw_properties


@hookimpl
def v2a_register_components(register):
    register(ComponentSpec(
        kind="codec",
        name="mulaw",
        build=MulawCodec,  # build(config: MulawConfig) -> MulawCodec
        config=MulawConfig,
        properties=mulaw_properties,  # the attributes it will have, from the config alone
        description="μ-law companding, one code per sample (G.711 style; no weights)",
    ))
