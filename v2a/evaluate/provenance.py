"""Where each number of an evaluation comes from, and whether two evaluations compare.

:func:`model_record` describes a model as ``results.json`` records it: its plug-in, its options
(every default filled in) and its weights: ``{"file", "sha256"}`` for a file (``file`` the
path or URL as given, ``sha256`` its content's: the pinned one, or the hash of the local file or
cached download),
``"random init"`` for ``weights: none``, ``"pretrained"`` for a library's own download, or
``"no weights"`` for a model without a ``weights`` option (a fixed transform such as the mel
front end, or a codec fitted without gradients). :func:`differences` lists what differs
between two results' metrics (model, weights, settings), and :func:`check_comparable` refuses
two results with any difference.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from v2a.cache.identity import first_difference
from v2a.evaluate.options import EvaluationError
from v2a.weights import PRETRAINED, content_sha256, is_random, parse_weights

RANDOM_INIT = "random init"
NO_WEIGHTS = "no weights"


def weights_record(weights: Any) -> Any:
    """What the ``weights`` option names: ``{"file", "sha256"}`` (``sha256`` None for a file
    that is not there), :data:`RANDOM_INIT` or ``"pretrained"``."""
    if weights is None or (isinstance(weights, str) and is_random(weights)):
        return RANDOM_INIT
    if isinstance(weights, str) and weights.lower() == PRETRAINED:
        return PRETRAINED
    source = parse_weights(str(weights))
    file = str(source.local_path()) if source.is_local else source.location
    return {"file": file, "sha256": content_sha256(str(weights))}


def _weights_in(options: Any) -> list[Any]:
    """Every ``weights`` option in a component's (nested) options, in order."""
    found = []
    if isinstance(options, dict):
        for key, value in options.items():
            if key == "weights" and not isinstance(value, dict):
                found.append(value)
            else:
                found += _weights_in(value)
    elif isinstance(options, list):
        for value in options:
            found += _weights_in(value)
    return found


def model_record(choice_data: dict[str, Any]) -> dict[str, Any]:
    """``{"plugin", "options", "weights"}`` of a component's choice as data
    (:meth:`v2a.recipe.ComponentChoice.as_data`). A model that wraps others (codec latents wrap a
    codec) takes the first weights found among them."""
    options = {k: v for k, v in choice_data.items() if k != "plugin"}
    weights = _weights_in(options)
    return {"plugin": choice_data.get("plugin"), "options": options,
            "weights": weights_record(weights[0]) if weights else NO_WEIGHTS}


def is_untrained(record: dict[str, Any] | None) -> bool:
    """A model record whose weights are a random initialisation, or whose ``visual_encoder``
    (the video model of a semantic metric) has them."""
    return record is not None and (record.get("weights") == RANDOM_INIT
                                   or is_untrained(record.get("visual_encoder")))


def model_key(record: dict[str, Any], **settings: Any) -> str:
    """24 hex digits identifying a model (plug-in, options, weights by content) and the
    ``settings`` its features were computed with: the feature cache's folder name."""
    text = json.dumps({"model": record, "settings": settings}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:24]


def _what_counts(entry: dict[str, Any]) -> dict[str, Any]:
    """What must agree for two values of a metric to compare: its model(s) and settings."""
    model = entry.get("model") or {}
    if isinstance(model.get("weights"), dict):  # a weights file counts by content, not path
        model = {**model, "weights": f"sha256:{model['weights'].get('sha256')}"}
        model["options"] = {k: v for k, v in model.get("options", {}).items() if k != "weights"}
    return {"model": model, "settings": entry.get("settings", {})}


def differences(first: dict[str, Any], second: dict[str, Any]) -> list[str]:
    """What keeps the metrics of two results (``results.json`` documents) from comparing, one
    sentence each: a metric computed in both with another model, weights or settings. Metrics
    only one of them has are not a difference (nothing to compare)."""
    found = []
    a, b = first.get("metrics", {}), second.get("metrics", {})
    for name in sorted(a.keys() & b.keys()):
        diff = first_difference(_what_counts(a[name]), _what_counts(b[name]))
        if diff:
            found.append(f"{name}: {diff.replace('in the cache', 'in the first').replace(' now', ' in the second')}")
    return found


def check_comparable(first: dict[str, Any], second: dict[str, Any]) -> None:
    """An :class:`EvaluationError` when :func:`differences` finds any."""
    found = differences(first, second)
    if found:
        raise EvaluationError(f"the two results do not compare: {found[0]}"
                              + (f" (and {len(found) - 1} more)" if len(found) > 1 else ""))
