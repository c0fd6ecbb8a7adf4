"""Built-in ``fuser`` plug-ins (:class:`v2a.interfaces.ConditionFuser`): MaskVAT's fuser."""
