"""Built-in ``visual_encoder`` plug-ins (:class:`v2a.interfaces.VisualEncoder`): CLIP, S3D, colour-motion."""
