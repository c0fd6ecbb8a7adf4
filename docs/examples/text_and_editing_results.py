"""The text and editing rows of docs/results.md, on the held-out synthetic clips.

Run from the repository root after ``v2a synth --out data/tiny/heldout --clips 100 --seed 1000
--split test`` (about 4 minutes on 2 CPU cores)::

    python docs/examples/text_and_editing_results.py

It writes, under ``data/tiny/``:

* ``gen_textonly/``: 4 s of sound from each clip's caption alone (no video);
* ``gen_negbase<cfg>/`` and ``gen_neg<cfg>/``: the two-object clips generated from their video
  and caption, without and with the first object's class as the negative prompt, at guidance
  2 and 4; each file's recorded prompt is that class, so ``v2a evaluate DIR --metrics
  text_class_acc`` gives the share of the generated events that are of the negated class;

and prints the onset F1 inside a 1.5 s stretch (1.25-2.75 s) regenerated around each clip's own
audio. Score the folders with ``v2a evaluate`` (the commands are in docs/results.md).
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from v2a.generate import VideoToAudio
from v2a.media import write_audio
from v2a.metrics.onsets import detect_onsets, match_onsets
from v2a.recipe import load_recipe
from v2a.synth import read_events

HELDOUT = Path("data/tiny/heldout")
OUT = Path("data/tiny")
STRETCH = (1.25, 2.75)


def main() -> None:
    model = VideoToAudio.from_recipe(load_recipe("tiny"))
    rows = list(csv.DictReader(open(HELDOUT / "captions.csv", encoding="utf-8")))
    text_only(model, rows)
    for cfg in (2.0, 4.0):
        negative_prompts(model, rows, cfg)
    print(regenerated_stretch_f1(model))


def text_only(model: VideoToAudio, rows: list[dict]) -> None:
    folder = OUT / "gen_textonly"
    folder.mkdir(parents=True, exist_ok=True)
    for row in rows:
        audio, sr = model.generate(None, prompt=row["caption"], duration=4.0, seed=0)
        write_audio(folder / f"{Path(row['clip']).stem}.wav", audio.clamp(-1, 1), sr,
                    prompt=row["caption"])


def negative_prompts(model: VideoToAudio, rows: list[dict], cfg: float) -> None:
    for negate in (False, True):
        folder = OUT / f"gen_{'neg' if negate else 'negbase'}{cfg:g}"
        folder.mkdir(parents=True, exist_ok=True)
        for row in rows:
            if " and " not in row["caption"]:
                continue  # one object: nothing to take away
            first = " ".join(row["caption"].split(" and ")[0].split()[1:3])  # "red disc"
            audio, sr = model.generate(HELDOUT / row["clip"], prompt=row["caption"], seed=0,
                                       negative_prompt=first if negate else None, cfg=cfg)
            write_audio(folder / f"{Path(row['clip']).stem}.wav", audio.clamp(-1, 1), sr,
                        prompt=first)


def regenerated_stretch_f1(model: VideoToAudio) -> str:
    events = read_events(HELDOUT / "events.jsonl")
    first, last = STRETCH
    hits = found_n = true_n = 0
    for video in sorted(HELDOUT.glob("*.mp4")):
        truth = np.array([e.time for e in events[video.name]])
        audio, sr = model.generate(video, seed=0, keep_audio=video, regenerate=[STRETCH])
        found = detect_onsets(audio.numpy(), sr)
        inside = found[(found >= first) & (found < last)]
        expected = truth[(truth >= first) & (truth < last)]
        hits += len(match_onsets(inside, expected))
        found_n += len(inside)
        true_n += len(expected)
    return (f"onset F1 inside the regenerated {first}-{last} s: "
            f"{2 * hits / (found_n + true_n):.3f} ({true_n} true events, {found_n} detected)")


if __name__ == "__main__":
    main()
