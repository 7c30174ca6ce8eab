"""Metrics of rendered videos: the library behind `zeroshot eval` (`zeroshot.cli.evaluate`).

`find_videos` takes paths: a video file (.mp4, .gif), a folder of PNG frames, or a
folder of renders (every .mp4/.gif in it). The run record beside a video (`<stem>.json`,
written by `zeroshot generate`/`render`) gives its prompt and requested motion; a
`prompt` given to `evaluate_video` overrides the recorded one. Generic video metrics
(`zeroshot.metrics`) are computed for every video; the shapes-world metrics
(`zeroshot.shapes.metrics`) are added when the prompt is a shapes caption.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

VIDEO_SUFFIXES = (".mp4", ".gif")

# (key, header, format) of the printed table, in order.
COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("frames", "frames", "{:d}"),
    ("warp_error", "warp_err", "{:.4f}"),
    ("flow_magnitude", "flow_px", "{:.2f}"),
    ("flicker", "flicker", "{:.4f}"),
    ("frame_difference", "frame_diff", "{:.4f}"),
    ("ssim", "ssim", "{:.3f}"),
    ("alignment", "align", "{:.2f}"),
    ("consistency", "consist", "{:.2f}"),
    ("size_change", "size_chg", "{:.3f}"),
    ("speed_px", "speed_px", "{:.2f}"),
    ("along_px", "along_px", "{:.2f}"),
    ("motion_error", "motion_err", "{:.2f}"),
    ("background_change", "bg_change", "{:.4f}"),
    ("pattern_accuracy", "pattern", "{:.2f}"),
    ("background_correlation", "bg_corr", "{:.2f}"),
    ("background_speed_px", "bg_px", "{:.2f}"),
)


def find_videos(paths: list[str]) -> list[Path]:
    """The videos named by PATH arguments; ValueError (one line) for a bad path."""
    found: list[Path] = []
    for text in paths:
        path = Path(text)
        if path.is_file():
            if path.suffix.lower() not in VIDEO_SUFFIXES:
                raise ValueError(f"{text}: not a video (expected {', '.join(VIDEO_SUFFIXES)} or a folder)")
            found.append(path)
        elif path.is_dir():
            videos = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES)
            if videos:
                found.extend(videos)
            elif any(p.suffix.lower() == ".png" for p in path.iterdir()):
                found.append(path)
            else:
                raise ValueError(f"{text}: folder holds no videos ({', '.join(VIDEO_SUFFIXES)}) or PNG frames")
        else:
            raise ValueError(f"{text}: no such file or folder")
    return found


def read_record(video: Path) -> dict[str, Any] | None:
    """The JSON run record beside a video (`<stem>.json`), or None if there is none."""
    record = video.with_suffix(".json") if video.is_file() else video.parent / f"{video.name}.json"
    if not record.is_file():
        return None
    try:
        return json.loads(record.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        logger.warning("ignoring unreadable record %s: %s", record, exc)
        return None


def record_motion(record: dict[str, Any] | None) -> Any:
    """The requested `Motion` of a record's resolved recipe (None if absent or off)."""
    from zeroshot.recipe import RecipeError, recipe_from_dict

    if not record or not isinstance(record.get("recipe"), dict):
        return None
    try:
        return recipe_from_dict(record["recipe"]).motion
    except RecipeError as exc:
        logger.warning("ignoring the recipe of a record: %s", exc)
        return None


def evaluate_video(path: Path, *, prompt: str | None = None, record: dict[str, Any] | None = None) -> dict[str, Any]:
    """Metrics of one video: generic ones always, shapes-world ones for shapes captions, and
    the background's (`background_metrics`, against the camera motion the record's recipe
    asked for) for captions of a patterned v2 background."""
    from zeroshot.io import read_video
    from zeroshot.metrics import video_metrics
    from zeroshot.shapes.metrics import background_metrics, is_shapes_prompt, requested_camera, shapes_metrics
    from zeroshot.shapes.world import parse_caption_v2

    frames = read_video(path)
    prompt = prompt if prompt is not None else (record or {}).get("prompt")
    row: dict[str, Any] = {"path": str(path), "prompt": prompt, "frames": int(frames.shape[0])}
    row["height"], row["width"] = int(frames.shape[-2]), int(frames.shape[-1])
    row.update(video_metrics(frames))
    if is_shapes_prompt(prompt):
        motion = record_motion(record)
        row.update(shapes_metrics(frames, prompt, motion=motion))
        if parse_caption_v2(prompt.strip().rstrip("."))[3] != "plain":
            camera = requested_camera(motion, int(frames.shape[0]), row["height"], row["width"])
            row.update(background_metrics(frames, prompt, camera))
    return row


def trajectory_row(path: Path, trajectories: list[str]) -> dict[str, Any]:
    """Trajectory error (ObjMC, `zeroshot.tracking`) of one video against requested
    trajectories (`--trajectory` syntax), with the requested and tracked positions.

    RecipeError (one line) when a trajectory does not fit the video."""
    from zeroshot.io import read_video
    from zeroshot.tracking import requested_positions, trajectory_error

    frames = read_video(path)
    num_frames, height, width = int(frames.shape[0]), int(frames.shape[-2]), int(frames.shape[-1])
    if num_frames < 2:
        raise ValueError(f"has {num_frames} frame; a trajectory needs at least 2")
    requested = requested_positions(trajectories, num_frames, height, width)  # (f, n, 2)
    row: dict[str, Any] = {"path": str(path), "frames": num_frames, "height": height, "width": width}
    row["trajectories"] = list(trajectories)
    row.update(trajectory_error(frames, requested))
    row["requested"] = requested.tolist()
    return row


def _cell(value: Any, fmt: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return fmt.format(value)


def format_table(rows: list[dict[str, Any]]) -> str:
    """Rows as an aligned text table (columns without any value are left out)."""
    columns = [c for c in COLUMNS if any(c[0] in row for row in rows)]
    names = [Path(row["path"]).name for row in rows]
    table = [["video", *(header for _, header, _ in columns)]]
    table += [[name, *(_cell(row.get(key), fmt) for key, _, fmt in columns)] for name, row in zip(names, rows)]
    widths = [max(len(line[i]) for line in table) for i in range(len(table[0]))]
    lines = [
        "  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(line, widths)))
        for line in table
    ]
    return "\n".join(lines)


def plain_row(row: dict[str, Any]) -> dict[str, Any]:
    """A row of metrics with NaN as None, for JSON."""
    return {key: None if isinstance(value, float) and math.isnan(value) else value for key, value in row.items()}


__all__ = ["evaluate_video", "find_videos", "format_table", "plain_row", "read_record", "trajectory_row"]
