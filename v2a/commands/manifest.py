"""``v2a manifest vggsound|folder|music``: write a manifest of clips."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from v2a.errors import UserError
from v2a.files import write_text_atomic

#: :data:`v2a.converters.VGGSOUND_PATTERN` and :data:`~v2a.converters.MUSIC_PATTERN`, which
#: ``--help`` shows without importing the converters (PyAV and torch through v2a.media);
#: tests/test_startup.py keeps them equal.
VGGSOUND_PATTERN = "{id}_{start:06d}.mp4"
MUSIC_PATTERN = "{label}/{id}.mp4"


def run(args: argparse.Namespace) -> int:
    from v2a.converters import folder_manifest, music_manifest, vggsound_manifest  # deferred: torch
    from v2a.manifests import write_manifest  # deferred: torch (v2a.recipe's config)
    output = Path(args.output)
    if output.exists() and not args.overwrite:
        raise UserError(f"{output} exists; pass --overwrite to replace it")
    if args.layout == "vggsound":
        result = vggsound_manifest(
            args.csv, videos=args.videos, pattern=args.pattern or VGGSOUND_PATTERN,
            whole_videos=args.whole_videos, seconds=args.seconds, check_files=not args.no_check,
            val_fraction=args.val_fraction, captions=not args.no_captions,
        )
    elif args.layout == "folder":
        result = folder_manifest(
            args.folder, window=args.window, hop=args.hop, labels_from_folders=args.labels,
            val_fraction=args.val_fraction, test_fraction=args.test_fraction,
            captions=not args.no_captions,
        )
    else:
        result = music_manifest(
            args.json, videos=args.videos, pattern=args.pattern or MUSIC_PATTERN,
            window=args.window, hop=args.hop, val_fraction=args.val_fraction,
            test_fraction=args.test_fraction, check_files=not args.no_check,
            captions=not args.no_captions,
        )
    if not result.clips:
        print(result.report(), file=sys.stderr)
        raise UserError("no clip was found, so no manifest was written")
    write_manifest(result.clips, output)
    if result.left_out:
        listing = output.with_name(output.name + ".left_out.tsv")
        write_text_atomic(listing, "".join(f"{what}\t{why}\n" for what, why in result.left_out))
    print(result.report(output))
    if result.left_out:
        print(f"the full list of files left out is in {listing}")
    root = args.folder if args.layout == "folder" else args.videos
    print(f"use it with: data.manifest={output} data.root={root}")
    return 0


def add_command(sub, common: argparse.ArgumentParser) -> None:
    """Register ``v2a manifest vggsound|folder|music`` on the CLI's sub-parsers."""
    text = "write a manifest (CSV/JSONL of clips) for VGGSound, MUSIC or a folder of videos"
    p = sub.add_parser("manifest", parents=[common], help=text, description=text)
    msub = p.add_subparsers(dest="layout", metavar="LAYOUT", required=True)

    out = argparse.ArgumentParser(add_help=False)
    out.add_argument("-o", "--output", required=True,
                     help="the manifest to write (.csv, or .jsonl for JSON Lines)")
    out.add_argument("--overwrite", action="store_true", help="replace an existing manifest")
    out.add_argument("--no-captions", action="store_true",
                     help="leave the caption column out (by default each clip's label, in words)")
    cut = argparse.ArgumentParser(add_help=False)
    cut.add_argument("--window", type=float, metavar="SECONDS",
                     help="cut each video into windows of this length (probes every file)")
    cut.add_argument("--hop", type=float, metavar="SECONDS",
                     help="seconds between window starts (default: the window)")
    cut.add_argument("--val-fraction", type=float, default=0.0,
                     help="share of videos put in the val split (by a hash of the name)")
    cut.add_argument("--test-fraction", type=float, default=0.0,
                     help="share of videos put in the test split (by a hash of the name)")

    q = msub.add_parser(
        "vggsound", parents=[common, out], help="from VGGSound's vggsound.csv",
        description="Clips from vggsound.csv (youtube id, start seconds, label, split) and a "
        "folder of downloaded videos.",
    )
    q.add_argument("csv", help="VGGSound's vggsound.csv")
    q.add_argument("--videos", required=True, help="the folder holding the downloaded videos")
    q.add_argument("--pattern", help=f"file name of a row in --videos (default "
                   f"{VGGSOUND_PATTERN!r}; fields {{id}} {{start}} {{end}} {{start_ms}} "
                   "{end_ms} {label} {split})")
    q.add_argument("--whole-videos", action="store_true",
                   help="the files are whole YouTube videos: each clip starts at the CSV's start")
    q.add_argument("--seconds", type=float, default=10.0, help="clip length (VGGSound: 10)")
    q.add_argument("--val-fraction", type=float, default=0.0,
                   help="share of the train clips moved to the val split (by a hash of the "
                   "YouTube id)")
    q.add_argument("--no-check", action="store_true", help="keep rows whose file is missing")
    q.set_defaults(func=run)

    q = msub.add_parser(
        "folder", parents=[common, out, cut], help="from every video in a folder",
        description="One clip per video below FOLDER (or one per window with --window).",
    )
    q.add_argument("folder", help="the folder of videos (searched recursively)")
    q.add_argument("--labels", action="store_true", help="label each clip with its sub-folder")
    q.set_defaults(func=run)

    q = msub.add_parser(
        "music", parents=[common, out, cut], help="from the MUSIC dataset's JSON files",
        description="Clips from MUSIC_solo_videos.json / MUSIC21_solo_videos.json / "
        "MUSIC_duet_videos.json and a folder of downloaded videos.",
    )
    q.add_argument("json", nargs="+", help="one or more MUSIC JSON files")
    q.add_argument("--videos", required=True, help="the folder holding the downloaded videos")
    q.add_argument("--pattern", help=f"file name of a video in --videos (default "
                   f"{MUSIC_PATTERN!r}; fields {{id}} {{label}})")
    q.add_argument("--no-check", action="store_true", help="keep entries whose file is missing")
    q.set_defaults(func=run)
