"""`zeroshot eval PATH... [--prompt P] [--json]`: metrics of rendered videos.

The metrics are `zeroshot.evaluate`; this module reads the flags, prints the table (or
JSON) and turns a bad path or unreadable video into one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from zeroshot.cli.common import error_line, print_error
from zeroshot.evaluate import evaluate_video, find_videos, format_table, plain_row, read_record

PREFIX = "zeroshot eval"


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register `zeroshot eval` on an argparse subparsers object."""
    parser = subparsers.add_parser(
        "eval",
        help="metrics of videos or folders of renders",
        description=(
            "Video metrics (warp error, flow, flicker, SSIM) of each video, plus the shapes-world "
            "metrics when its prompt is a shapes caption. Prompt and motion come from the JSON "
            "record beside each video."
        ),
    )
    parser.add_argument("paths", nargs="+", metavar="PATH", help="video file (.mp4/.gif), PNG-frame folder or folder of renders")
    parser.add_argument("--prompt", default=None, help="prompt of every video (default: from each video's JSON record)")
    parser.add_argument("--json", action="store_true", help="print the metrics as JSON instead of a table")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Run `zeroshot eval`; returns the exit code (2 for a bad path or unreadable video)."""
    try:
        videos = find_videos(args.paths)
    except ValueError as exc:
        return print_error(str(exc), PREFIX)
    rows = []
    for video in videos:
        try:
            rows.append(evaluate_video(video, prompt=args.prompt, record=read_record(video)))
        except (OSError, ValueError, RuntimeError) as exc:
            return print_error(f"{video}: {error_line(exc)}", PREFIX)
    if args.json:
        print(json.dumps([plain_row(row) for row in rows], indent=2))
    else:
        print(format_table(rows))
    return 0


__all__ = ["add_parser", "run"]
