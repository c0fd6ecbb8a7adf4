"""Built-in ``audio_encoder`` plug-ins (:class:`v2a.interfaces.AudioEncoder`): BEATs, log-mel, codec latents."""
