"""Built-in ``reranker`` plug-ins (:class:`v2a.interfaces.Reranker`): SCAV, and ``none`` (keep the first)."""
