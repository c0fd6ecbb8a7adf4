"""Built-in ``codec`` plug-ins (:class:`v2a.interfaces.AudioCodec`): DAC, EnCodec, the light spectral RVQ."""
