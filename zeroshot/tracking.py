"""Point tracks in any video, and the trajectory error (ObjMC) of the trajectory papers.

ObjMC (DragNUWA, MotionCtrl, DragAnything) is the mean pixel distance between the points a
user asked for and where a tracker finds them in the generated video. The papers track
with a learned tracker (CoTracker); here the tracker is OpenCV's pyramidal Lucas-Kanade
(Bouguet's implementation of Lucas & Kanade 1981, `cv2.calcOpticalFlowPyrLK`), which needs
no download:

- every point starts at its requested frame-0 position and is followed frame to frame on
  the RGB frames;
- its window is chosen by scale selection at its position in the frame each step starts
  from: of `WINDOWS` (up to the frame's short side), the one in which the smaller eigenvalue
  of the summed structure tensor (Shi & Tomasi, CVPR 1994), per window pixel, is largest.
  A point inside a flat region (the middle of a uniformly coloured shape) is so tracked by
  the edges around it, as a point of a rigid object should be, and the window grows with a
  shape that grows. Where other things move inside that window (a panning pattern behind
  the shape) they pull the estimate: on world v2's patterned backgrounds the tracks are off
  by about 1 px (bench/tracking_check.py), against 0.06 px on plain ones;
- a point is *lost* from the first frame where LK fails, the point leaves the frame, or the
  forward-backward check fails (Kalal et al., ICPR 2010: tracking the new position back to
  the previous frame must land within `FB_THRESHOLD_PX` of where it started); lost points
  stay lost (NaN).

How lost points count: they are left out of the error and counted in `lost` (frame-point
pairs) beside it, never given a made-up position. Frame 0 is the start point itself (zero
error by construction) and is left out too, so ObjMC is the mean over frames 1..f-1.

Positions are output pixels, x right, y down, pixel centres at integers (as `zeroshot.motion`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

#: Candidate Lucas-Kanade window sides (px), smallest first; larger ones up to the frame's
#: short side are added as needed.
WINDOWS = (15, 21, 31, 45, 63)
#: A point whose forward-backward round trip misses by more than this (px) is lost.
FB_THRESHOLD_PX = 1.0
#: Pyramid levels above the frame (fewer where the top level would be under 16 px).
LEVELS = 3


def _frames_uint8(frames: Any) -> np.ndarray:
    """(f, 3, H, W) float [0, 1] (tensor or array) -> (f, H, W, 3) uint8 RGB."""
    from zeroshot.metrics import as_frames

    video = as_frames(frames)  # (f, H, W, 3) float32 in [0, 1]
    return np.clip(np.rint(video * 255.0), 0, 255).astype(np.uint8)


def _structure(image: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-pixel structure tensor entries (Ix², IxIy, Iy²) of an (H, W, 3) uint8 image,
    summed over channels (intensities in [0, 1], Sobel gradients per px)."""
    import cv2

    x = image.astype(np.float32) / 255.0
    gx = cv2.Sobel(x, cv2.CV_32F, 1, 0, ksize=3, borderType=cv2.BORDER_REFLECT_101) / 8.0
    gy = cv2.Sobel(x, cv2.CV_32F, 0, 1, ksize=3, borderType=cv2.BORDER_REFLECT_101) / 8.0
    return (gx * gx).sum(-1), (gx * gy).sum(-1), (gy * gy).sum(-1)


def _windows(height: int, width: int) -> list[int]:
    """`WINDOWS` below the frame's short side, then 1.5x steps up to it (odd sides)."""
    top = min(height, width) if min(height, width) % 2 else min(height, width) - 1
    sizes = [w for w in WINDOWS if w < top]
    while sizes and sizes[-1] * 1.5 < top:
        sizes.append(int(sizes[-1] * 1.5) | 1)
    return [*sizes, top]


def choose_windows(image: np.ndarray, points_px: np.ndarray) -> np.ndarray:
    """The LK window side (px) of every point: the candidate (`_windows`) in which the
    smaller eigenvalue of the structure tensor summed about the point, per window pixel, is
    largest (scale selection by peak normalised cornerness; the largest window where the
    frame is flat around the point)."""
    height, width = image.shape[:2]
    sxx, sxy, syy = (np.pad(np.cumsum(np.cumsum(a, 0), 1), ((1, 0), (1, 0))) for a in _structure(image))
    sizes = _windows(height, width)
    out = np.full(len(points_px), sizes[-1], dtype=np.int64)
    for i, (x, y) in enumerate(points_px):
        cx, cy = int(round(x)), int(round(y))
        best = 0.0
        for size in sizes:
            half = size // 2
            x0, x1 = max(0, cx - half), min(width, cx + half + 1)
            y0, y1 = max(0, cy - half), min(height, cy + half + 1)
            a, b, c = (s[y1, x1] - s[y0, x1] - s[y1, x0] + s[y0, x0] for s in (sxx, sxy, syy))
            cornerness = 0.5 * (a + c - math.sqrt((a - c) ** 2 + 4 * b * b)) / (size * size)
            if cornerness > best:
                best, out[i] = cornerness, size
    return out


def track_points(
    frames: Any,
    points_px: Any,
    *,
    windows: Sequence[int] | None = None,
    levels: int = LEVELS,
    fb_threshold_px: float = FB_THRESHOLD_PX,
) -> np.ndarray:
    """Track frame-0 points through a video with pyramidal Lucas-Kanade.

    frames: (f, 3, H, W) float in [0, 1] (tensor or array), f >= 2.
    points_px: (n, 2) frame-0 positions (x, y) in px.
    windows: LK window side per point (default: `choose_windows` at each point's position
    in the frame each step starts from, so the window follows a shape that grows or shrinks).
    Returns (f, n, 2) float64 positions; NaN from the frame where a point is lost
    (LK failure, outside the frame, or forward-backward miss > `fb_threshold_px`).
    """
    import cv2

    video = _frames_uint8(frames)
    num_frames, height, width = video.shape[:3]
    points = np.asarray(points_px, dtype=np.float64).reshape(-1, 2)
    if windows is not None:
        windows = np.asarray(windows, dtype=np.int64).reshape(-1)
        if len(windows) != len(points):
            raise ValueError(f"windows must give one size per point, got {len(windows)} for {len(points)}")
    top = max(0, min(levels, int(math.floor(math.log2(min(height, width) / 16))) if min(height, width) >= 16 else 0))
    criteria = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 50, 1e-3)
    out = np.full((num_frames, len(points), 2), np.nan)
    out[0] = points
    for k in range(num_frames - 1):
        alive = np.nonzero(np.isfinite(out[k, :, 0]))[0]
        if not alive.size:
            break
        sizes = windows[alive] if windows is not None else choose_windows(video[k], out[k, alive])
        for size in np.unique(sizes):
            idx = alive[sizes == size]
            lk = {"winSize": (int(size), int(size)), "maxLevel": top, "criteria": criteria}
            p0 = out[k, idx].astype(np.float32).reshape(-1, 1, 2)
            p1, ok1, _ = cv2.calcOpticalFlowPyrLK(video[k], video[k + 1], p0, None, **lk)
            back, ok2, _ = cv2.calcOpticalFlowPyrLK(video[k + 1], video[k], p1, None, **lk)
            p1, back = p1.reshape(-1, 2).astype(np.float64), back.reshape(-1, 2).astype(np.float64)
            round_trip = np.linalg.norm(back - out[k, idx], axis=1)
            inside = (p1[:, 0] >= -0.5) & (p1[:, 0] <= width - 0.5) & (p1[:, 1] >= -0.5) & (p1[:, 1] <= height - 0.5)
            keep = ok1.ravel().astype(bool) & ok2.ravel().astype(bool) & inside & (round_trip <= fb_threshold_px)
            out[k + 1, idx[keep]] = p1[keep]
    return out


def objmc(requested_px: Any, tracked_px: Any) -> dict[str, Any]:
    """Trajectory error of tracked points against requested ones.

    requested_px, tracked_px: (f, n, 2) positions (tracked NaN where lost).
    Returns `objmc` (mean distance px over every tracked (frame, point) pair of frames
    1..f-1), `objmc_sem` (standard error over frames of the per-frame means), `per_frame`
    (mean distance of each frame 1..f-1, None where every point is lost), `per_point` (mean
    over frames of each point), `lost` (lost (frame, point) pairs of frames 1..f-1), `pairs`
    (all of them) and `tracked_frames` (frames 1..f-1 with at least one tracked point).
    """
    from zeroshot.metrics import mean_and_sem

    requested = np.asarray(requested_px, dtype=np.float64)
    tracked = np.asarray(tracked_px, dtype=np.float64)
    if requested.shape != tracked.shape or requested.ndim != 3 or requested.shape[-1] != 2:
        raise ValueError(f"requested and tracked must both be (f, n, 2), got {requested.shape} and {tracked.shape}")
    dist = np.linalg.norm(tracked[1:] - requested[1:], axis=-1)  # (f-1, n), NaN where lost
    found = np.isfinite(dist)
    per_frame = [float(row[ok].mean()) if ok.any() else None for row, ok in zip(dist, found)]
    per_point = [float(col[ok].mean()) if ok.any() else None for col, ok in zip(dist.T, found.T)]
    _, sem = mean_and_sem([v for v in per_frame if v is not None])
    return {
        "objmc": float(dist[found].mean()) if found.any() else float("nan"),
        "objmc_sem": sem,
        "per_frame": per_frame,
        "per_point": per_point,
        "lost": int((~found).sum()),
        "pairs": int(dist.size),
        "tracked_frames": int(found.any(axis=1).sum()),
    }


def requested_positions(trajectories: Sequence[Any], num_frames: int, height: int, width: int) -> np.ndarray:
    """(f, n, 2) positions of trajectories (`zeroshot.motion.Trajectory` or their text,
    the `--trajectory` syntax with `@frame` pins) over a clip; `RecipeError` (one line)
    for a point outside the frame, fewer than two points or bad pins."""
    from zeroshot.motion import Trajectory
    from zeroshot.recipe import RecipeError

    if not trajectories:
        raise RecipeError("motion.trajectories: give at least one trajectory")
    parsed = [t if isinstance(t, Trajectory) else Trajectory.parse(t) for t in trajectories]
    for t in parsed:
        t.check(num_frames, height, width)
    return np.stack([t.positions(num_frames).numpy() for t in parsed], axis=1)  # (f, n, 2)


def trajectory_error(frames: Any, requested_px: Any, **track_options: Any) -> dict[str, Any]:
    """ObjMC of a video against requested positions (f, n, 2): the points are tracked from
    their requested frame-0 positions (`track_points`) and compared (`objmc`); the result
    also holds the `tracked` positions as lists (None where lost)."""
    requested = np.asarray(requested_px, dtype=np.float64)
    tracked = track_points(frames, requested[0], **track_options)
    if tracked.shape != requested.shape:
        raise ValueError(f"the video has {tracked.shape[0]} frames, the request {requested.shape[0]}")
    out = objmc(requested, tracked)
    out["tracked"] = [[None if not np.isfinite(p).all() else [float(p[0]), float(p[1])] for p in row] for row in tracked]
    return out


__all__ = [
    "FB_THRESHOLD_PX",
    "WINDOWS",
    "choose_windows",
    "objmc",
    "requested_positions",
    "track_points",
    "trajectory_error",
]
