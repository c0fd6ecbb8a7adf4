"""v2a's built-in plug-ins (installed as the ``v2a_plugins`` package).

Each module here is registered through the ``v2a`` entry-point group in ``pyproject.toml``,
the same way a third-party package registers its own: the core has no private door for them.
"""
