"""`zeroshot eval PATH... [--prompt P] [--trajectory T]... [--json]`: metrics of rendered videos.

The metrics are `zeroshot.evaluate`; with `--trajectory` (the syntax of `zeroshot generate
--trajectory`) the trajectory error (ObjMC, `zeroshot.tracking`) instead. This module reads
the flags, prints the table (or JSON) and turns a bad path, a bad trajectory or an
unreadable video into one line on stderr and exit code 2.
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
    parser.add_argument("--trajectory", action="append", default=[], metavar="'X,Y X,Y[@FRAME] ...'",
                        help="a requested trajectory in output px, as for `zeroshot generate --trajectory` (points "
                             "spread evenly over the frames or pinned with @FRAME; r=/mask= regions play no part): "
                             "prints the trajectory error ObjMC (repeatable)")
    parser.add_argument("--json", action="store_true", help="print the metrics as JSON instead of a table")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Run `zeroshot eval`; returns the exit code (2 for a bad path or unreadable video)."""
    try:
        videos = find_videos(args.paths)
    except ValueError as exc:
        return print_error(str(exc), PREFIX)
    if args.trajectory:
        return run_trajectory(args, videos)
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


def run_trajectory(args: argparse.Namespace, videos: list) -> int:
    """`zeroshot eval --trajectory ...`: ObjMC of each video; exit 2 for a trajectory that
    does not fit a video (a point outside the frame, fewer than two points, bad pins) or an
    unreadable video."""
    from zeroshot.evaluate import trajectory_row
    from zeroshot.recipe import RecipeError

    rows = []
    for video in videos:
        try:
            rows.append(trajectory_row(video, args.trajectory))
        except RecipeError as exc:
            message = error_line(exc).replace("motion.trajectories: ", "", 1)
            return print_error(f"--trajectory: {message}", PREFIX)
        except (OSError, ValueError, RuntimeError) as exc:
            return print_error(f"{video}: cannot read it as a video ({error_line(exc)})", PREFIX)
    if args.json:
        print(json.dumps([plain_row(row) for row in rows], indent=2))
        return 0
    for row in rows:
        print(format_trajectory_row(row))
    return 0


def format_trajectory_row(row: dict) -> str:
    """Two lines: `<video>: ObjMC m ± se px (...)` and the per-frame errors."""
    from pathlib import Path

    def px(value) -> str:
        return "-" if value is None or value != value else f"{value:.2f}"

    head = (
        f"{Path(row['path']).name}: ObjMC {px(row['objmc'])} ± {px(row['objmc_sem'])} px over frames 1-{row['frames'] - 1}"
        f" ({row['lost']} of {row['pairs']} frame-points lost)"
    )
    return head + "\n  per frame: " + " ".join(px(v) for v in row["per_frame"])


__all__ = ["add_parser", "format_trajectory_row", "run", "run_trajectory"]
