"""A μ-law companding codec for v2a (ITU-T G.711 style), packaged as a third-party plug-in.

``MulawCodec`` is an :class:`v2a.AudioCodec` registered as ``codec`` ``mulaw`` by
:mod:`v2a_mulaw.plugin`, which the package lists under the ``v2a`` entry-point group. Importing
the package imports no torch: ``MulawCodec`` (in :mod:`v2a_mulaw.codec`) is imported on first use.
"""

from v2a_mulaw.plugin import MulawConfig

__version__ = "0.1.0"

__all__ = ["MulawCodec", "MulawConfig"]


def __getattr__(name: str):
    if name == "MulawCodec":
        from v2a_mulaw.codec import MulawCodec

        return MulawCodec
    raise AttributeError(f"module 'v2a_mulaw' has no attribute {name!r}")
