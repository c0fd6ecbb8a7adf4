"""The results of an evaluation as text: the markdown table (``results.md``, and what the
command prints) and the JSON document (``results.json``)."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

from v2a.evaluate.catalogue import LOWER, PROTOCOLS
from v2a.evaluate.options import Options
from v2a.evaluate.provenance import RANDOM_INIT, is_untrained

#: The table's columns after the metric: (results key, header).
COLUMNS = (("generated", "generated"), ("generated_wrong_video", "generated, wrong video"),
           ("reference", "reference"), ("reference_via_codec", "reference via codec"))


def number(value: float | dict[str, float] | None, digits: int = 4) -> str:
    """A value as the table prints it; a dict of values (``class_shares``) as
    ``red_disc 0.31, green_square 0.12, ...``."""
    if value is None:
        return ""
    if isinstance(value, dict):
        return ", ".join(f"{key} {number(item, 2)}" for key, item in value.items())
    if isinstance(value, float) and math.isnan(value):
        return "n/a"
    return f"{value:.{digits}g}"


def markdown_table(results: dict[str, Any]) -> str:
    """The results as a markdown table, then the notes: with ``--protocol``, one column per
    metric in its paper's order (:func:`protocol_table`); with ``--metrics`` or without a
    reference, one row per metric (:func:`metrics_table`); else today's table, one row per
    metric and one column per side."""
    if results.get("layout") is not None:
        table = protocol_table(results) if results.get("protocol") else metrics_table(results)
        return table + notes_text(results)
    onsets = results["onsets"] or {}
    columns = [(key, head) for key, head in COLUMNS if key in ("generated", "reference") or key in onsets]

    def row(label: str, values: dict[str, Any], note: str) -> list[str]:
        return [label] + [number(values.get(key)) if key in values else "" for key, _ in columns] + [note]

    rows = []
    untrained = {e["label"] for e in results.get("metrics", {}).values() if is_untrained(e["model"])}
    for fd in results["frechet"].values():
        note = (f"{fd['frames_generated']} vs {fd['frames_reference']} frames of {fd['dim']} dims; "
                "lower is better" + (f"; {RANDOM_INIT}" if fd["label"] in untrained else ""))
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
    return text + notes_text(results)


def notes_text(results: dict[str, Any]) -> str:
    """The skipped metrics and the notes, one line each."""
    lines = [f"\nNote: {reason}." for reason in results.get("skipped", {}).values()]
    lines += [f"\nNote: {note}." for note in results["notes"]]
    return "".join(lines) + ("\n" if lines else "")


def model_text(entry: dict[str, Any]) -> str:
    """``plugin (random init)``, ``plugin (file.pth, sha256 0123abcd…)``, or ``plugin``."""
    model = entry.get("model") or {}
    weights = model.get("weights")
    if isinstance(weights, dict):
        digest = (weights.get("sha256") or "missing")[:8]
        return f"{model.get('plugin')} ({Path(weights['file']).name}, sha256 {digest}…)"
    if weights in (RANDOM_INIT, "pretrained"):
        return f"{model.get('plugin')} ({weights})"
    return str(model.get("plugin", ""))


def metrics_table(results: dict[str, Any]) -> str:
    """One row per metric that has a value: generated, reference (a side scored alone), unit,
    direction, model; the skipped ones are in the notes."""
    lines = ["| metric | generated | reference | unit | better | model |", "|---|---|---|---|---|---|"]
    for entry in results["metrics"].values():
        reference = entry.get("reference_value")
        lines.append(f"| {entry['label']} | {number(entry['value'])} | "
                     f"{number(reference) if reference is not None else ''} | {entry['unit']} | "
                     f"{entry['better']} | {model_text(entry)} |")
    return "\n".join(lines) + f"\n\n{results['counts']['pairs']} clips.\n"


def protocol_table(results: dict[str, Any]) -> str:
    """The protocol's table as its paper lays it out: one column per metric (↓ lower is
    better, ↑ higher), one row for the generated set (and one for the reference, where a
    metric scores it alone); ``skipped`` where a metric could not run, ``(random init)`` beside
    a number from an untrained model; then each metric's model."""
    entries = results["metrics"]
    names = [column["name"] for column in results["layout"]]
    heads = [column["label"] + (" ↓" if column["better"] == LOWER else " ↑")
             for column in results["layout"]]

    def cell(name: str, key: str) -> str:
        if name not in entries:
            return "skipped" if key == "value" else ""
        value = entries[name].get(key)
        text = number(value) if value is not None else ""
        return text + (f" ({RANDOM_INIT})" if text and is_untrained(entries[name]["model"]) else "")

    title = results["protocol"] + (" (" + ", ".join(PROTOCOLS[results["protocol"]]) + ")"
                                   if results["protocol"] in PROTOCOLS else "")
    lines = [f"Protocol {title}", "",
             "| | " + " | ".join(heads) + " |",
             "|---|" + "---|" * len(names),
             "| generated | " + " | ".join(cell(n, "value") for n in names) + " |"]
    if any(entries[n].get("reference_value") is not None for n in names if n in entries):
        lines.append("| reference | " + " | ".join(cell(n, "reference_value") for n in names) + " |")
    lines += ["", f"{results['counts']['pairs']} clips. Models:"]
    lines += [f"* {entries[n]['label']}: {model_text(entries[n])}" for n in names if n in entries]
    return "\n".join(lines) + "\n"


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
