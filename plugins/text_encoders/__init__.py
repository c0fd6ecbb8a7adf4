"""Built-in ``text_encoder`` plug-ins (:class:`v2a.interfaces.TextEncoder`): learned words, CLIP text."""
