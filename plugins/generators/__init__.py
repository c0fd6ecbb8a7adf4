"""Built-in ``generator`` plug-ins (:class:`v2a.interfaces.MaskedGenerator`): MaskVAT's three variants."""
