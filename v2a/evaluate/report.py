"""The results of an evaluation as text: the markdown table (``results.md``, and what the
command prints) and the JSON document (``results.json``)."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

from v2a.evaluate.options import Options

#: The table's columns after the metric: (results key, header).
COLUMNS = (("generated", "generated"), ("generated_wrong_video", "generated, wrong video"),
           ("reference", "reference"), ("reference_via_codec", "reference via codec"))


def number(value: float | None, digits: int = 4) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and math.isnan(value):
        return "n/a"
    return f"{value:.{digits}g}"


def markdown_table(results: dict[str, Any]) -> str:
    """The results as a markdown table, one row per metric, then the notes."""
    onsets = results["onsets"] or {}
    columns = [(key, head) for key, head in COLUMNS if key in ("generated", "reference") or key in onsets]

    def row(label: str, values: dict[str, Any], note: str) -> list[str]:
        return [label] + [number(values.get(key)) if key in values else "" for key, _ in columns] + [note]

    rows = []
    for fd in results["frechet"].values():
        note = (f"{fd['frames_generated']} vs {fd['frames_reference']} frames of {fd['dim']} dims; "
                "lower is better")
        rows.append(row(fd["label"], {"generated": fd["distance"]}, note))
    if onsets:
        tolerance = f"±{onsets['tolerance'] * 1000:g} ms"
        for key, label, note in (
            ("onset_f1", f"onset F1 ({tolerance})", f"mean over {onsets['generated']['clips']} clips"),
            ("onset_offset_ms", "onset offset (ms)", "mean absolute offset of matched onsets"),
            ("class_accuracy", "class accuracy", "pooled over matched onsets"),
        ):
            rows.append(row(label, {side: onsets[side][key] for side, _ in columns}, note))
    if results["sync"]:
        s = results["sync"]
        rows.append(row(f"sync score ({s['reranker']})",
                        {"generated": s["generated"], "reference": s["reference"]},
                        f"mean over {s['clips']} clips; higher is better"))
    header = ["metric"] + [head for _, head in columns] + ["note"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    text = "\n".join(lines) + "\n"
    text += f"\n{results['counts']['pairs']} pairs"
    if onsets:
        text += f", {results['counts']['with_events']} with ground-truth events"
        if "generated_wrong_video" in onsets:
            text += ("; \"generated, wrong video\" scores each clip's generated audio against the "
                     "events of another clip's video (a control: what sync owes to the video)")
    text += ".\n"
    for note in results["notes"]:
        text += f"\nNote: {note}."
    return text + ("\n" if results["notes"] else "")


def json_safe(value: Any) -> Any:
    """NaN and infinities → None (strict JSON), recursively."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def results_json(results: dict[str, Any], *, command: str, options: Options) -> str:
    """The text of ``results.json``: the command line, the options and the results, strict JSON
    (NaN as null)."""
    document = {"command": command,
                "options": {k: str(v) if isinstance(v, Path) else v
                            for k, v in dataclasses.asdict(options).items()},
                **results}
    return json.dumps(json_safe(document), indent=2) + "\n"
