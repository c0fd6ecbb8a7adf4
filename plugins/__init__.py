"""v2a's built-in plug-ins (installed as the ``v2a_plugins`` package), one folder per kind of
component, mirroring :mod:`v2a.interfaces`: ``codecs/``, ``visual_encoders/``,
``audio_encoders/``, ``fusers/``, ``generators/``, ``rerankers/``.

Each module is registered through the ``v2a`` entry-point group in ``pyproject.toml``, the same
way a third-party package registers its own: the core has no private door for them.
"""
