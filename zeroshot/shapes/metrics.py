"""Shapes-world metrics: is the subject what the prompt asked, the same in every frame,
and moving as requested?

They read each frame with the world's detector (`zeroshot.shapes.detector.detect`), so
they apply to videos of the embedded shapes model (or any video of that world), whose
prompts have the form "a red circle on a blue background".

- alignment: share of frames whose detected shape, foreground and background colours
  all match the prompt (and the share for each of the three alone);
- consistency: share of frames 1..f-1 whose shape and colours equal frame 0's;
  `size_change` adds the mean relative change of the shape's area against frame 0,
  since the prompt fixes the categories and per-frame sampling can keep them while the
  subject changes size and place;
- motion: `speed_px` is the mean detected centroid displacement (px/frame);
  with a requested motion, `motion_error` is the mean distance (px/frame) between the
  detected per-frame centroid displacement and the displacement the motion field gives
  to frame 0's centroid, `requested_speed_px` the field's mean displacement and
  `along_px` a robust (Theil-Sen) speed of the detected centroid along the requested
  motion (robust to a few jumps and to uneven steps; random jumps centre it on 0,
  motion as asked gives `requested_speed_px`);
- background_change: mean absolute change of background pixels between consecutive
  frames, background being pixels outside both frames' detected masks (dilated by one
  pixel so anti-aliased edges do not count).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from zeroshot.metrics import as_frames

def parse_prompt(prompt: str) -> tuple[str, str, str]:
    """(shape, fg, bg) of a caption like "a red circle on a blue background".

    Raises ValueError naming the expected form when the prompt is not a world caption.
    """
    from zeroshot.shapes.world import parse_caption

    return parse_caption(prompt.strip().rstrip("."))


def _motion_field(motion: Any, num_frames: int, height: int, width: int) -> Any:
    """A motion field object (with `.forward`) from a recipe `Motion` or a field."""
    if hasattr(motion, "forward"):
        return motion
    from zeroshot.motion import field_from_recipe

    if getattr(motion, "translate", 0) is None:
        raise ValueError("motion.translate is unresolved (None); pass a resolved recipe's motion")
    return field_from_recipe(motion, num_frames, height, width)


def requested_track(motion: Any, start_xy: tuple[float, float], num_frames: int, height: int, width: int) -> np.ndarray:
    """(f, 2) positions (x, y px) of a frame-0 point under a motion (recipe Motion or field)."""
    import torch

    field = _motion_field(motion, num_frames, height, width)
    points = torch.tensor([start_xy], dtype=torch.float32)
    track = field.forward(points, num_frames, height, width)  # (f, 1, 2)
    return np.asarray(track, dtype=np.float64)[:, 0, :]


def soft_centroid(image: np.ndarray, mask: np.ndarray) -> tuple[float, float]:
    """Sub-pixel centroid (x, y) of a detected shape in an (H, W, 3) image.

    Each pixel near the mask is weighted by its coverage, read from its colour as the
    fraction of the way from the background colour to the shape's colour (clipped to
    [0, 1]); this follows anti-aliased edges, where the binary mask jumps by whole pixels.
    """
    import cv2

    grown = cv2.dilate(mask.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
    inner = cv2.erode(mask.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
    if not inner.any() or grown.all():
        ys, xs = np.nonzero(mask)
        return float(xs.mean()), float(ys.mean())
    fg_ref = np.median(image[inner], axis=0)
    bg_ref = np.median(image[~grown], axis=0)
    axis = fg_ref - bg_ref
    coverage = ((image - bg_ref) @ axis) / max(float(axis @ axis), 1e-6)
    weight = np.where(grown, np.clip(coverage, 0.0, 1.0), 0.0)
    ys, xs = np.mgrid[: mask.shape[0], : mask.shape[1]]
    total = weight.sum()
    return float((weight * xs).sum() / total), float((weight * ys).sum() / total)


def _along_slope(centroids: np.ndarray, track: np.ndarray) -> float:
    """Robust speed (px/frame) of detected centroids along a requested track.

    Theil-Sen style: for every pair of frames i < j with both detections, the detected
    displacement projected on the requested one, divided by j - i; the median over
    pairs. Robust to a few wrong detections and to motion that advances in uneven steps
    (a warp quantised to latent cells moves 0 or 4 px per frame for 2 px/frame).
    """
    slopes = []
    for i in range(len(centroids)):
        for j in range(i + 1, len(centroids)):
            wanted = track[j] - track[i]
            length = float(np.linalg.norm(wanted))
            got = centroids[j] - centroids[i]
            if length > 1e-6 and np.isfinite(got).all():
                slopes.append(float(got @ wanted) / length / (j - i))
    return float(np.median(slopes)) if slopes else float("nan")


def _background_change(video: np.ndarray, masks: list[np.ndarray]) -> float:
    import cv2

    kernel = np.ones((3, 3), np.uint8)
    grown = [cv2.dilate(m.astype(np.uint8), kernel) > 0 for m in masks]
    changes = []
    for k in range(len(video) - 1):
        background = ~(grown[k] | grown[k + 1])
        if background.any():
            changes.append(float(np.abs(video[k + 1] - video[k]).mean(axis=-1)[background].mean()))
    return float(np.mean(changes)) if changes else float("nan")


def shapes_metrics(frames: Any, prompt: str, motion: Any = None) -> dict[str, float]:
    """Alignment, consistency, motion and background metrics of a shapes-world video.

    frames: (f, 3, H, W) float [0, 1]. prompt: the caption it was made from.
    motion: the requested motion (a resolved `zeroshot.recipe.Motion`, or a field from
    `zeroshot.motion`); None when no motion was requested (motion_error is then NaN).
    """
    from zeroshot.shapes.detector import detect

    shape, fg, bg = parse_prompt(prompt)
    video = as_frames(frames)  # (f, H, W, 3)
    num_frames, height, width = video.shape[:3]
    detections = [detect(np.ascontiguousarray(image.transpose(2, 0, 1))) for image in video]

    def found(d: Any) -> bool:
        return d is not None and d.shape is not None and d.area > 0

    def identity(d: Any) -> tuple | None:
        return (d.shape, d.fg, d.bg) if found(d) else None

    shape_ok = [found(d) and d.shape == shape for d in detections]
    fg_ok = [found(d) and d.fg == fg for d in detections]
    bg_ok = [d is not None and d.bg == bg for d in detections]
    aligned = [a and b and c for a, b, c in zip(shape_ok, fg_ok, bg_ok)]

    first = identity(detections[0])
    same = [first is not None and identity(d) == first for d in detections[1:]]

    areas = np.array([d.area if found(d) else np.nan for d in detections], dtype=np.float64)
    size_change = (
        float(np.nanmean(np.abs(areas[1:] - areas[0]) / areas[0]))
        if found(detections[0]) and np.isfinite(areas[1:]).any()
        else float("nan")
    )

    centroids = np.array(
        [soft_centroid(image, d.mask) if found(d) else (np.nan, np.nan) for image, d in zip(video, detections)],
        dtype=np.float64,
    )  # (f, 2) x, y
    steps = np.diff(centroids, axis=0)  # (f-1, 2)
    step_ok = np.isfinite(steps).all(axis=1)
    speed = float(np.linalg.norm(steps[step_ok], axis=1).mean()) if step_ok.any() else float("nan")

    motion_error = requested_speed = along = float("nan")
    if motion is not None and found(detections[0]):
        track = requested_track(motion, tuple(centroids[0]), num_frames, height, width)
        wanted = np.diff(track, axis=0)  # (f-1, 2)
        requested_speed = float(np.linalg.norm(wanted, axis=1).mean())
        if step_ok.any():
            motion_error = float(np.linalg.norm(steps[step_ok] - wanted[step_ok], axis=1).mean())
        along = _along_slope(centroids, track)

    masks = [d.mask if found(d) else np.zeros((height, width), bool) for d in detections]
    return {
        "alignment": float(np.mean(aligned)),
        "shape_accuracy": float(np.mean(shape_ok)),
        "fg_accuracy": float(np.mean(fg_ok)),
        "bg_accuracy": float(np.mean(bg_ok)),
        "consistency": float(np.mean(same)),
        "size_change": size_change,
        "detected_fraction": float(np.mean([found(d) for d in detections])),
        "speed_px": speed,
        "motion_error": motion_error,
        "requested_speed_px": requested_speed,
        "along_px": along,
        "background_change": _background_change(video, masks),
    }


#: A frame keeps the background if its pattern has frame 0's kind, orientation within this
#: many degrees, period within this fraction, and moved as the camera was asked to within
#: `BACKGROUND_SHIFT_TOLERANCE` px since the previous frame.
BACKGROUND_ANGLE_TOLERANCE = 3.0
BACKGROUND_PERIOD_TOLERANCE = 0.05
BACKGROUND_SHIFT_TOLERANCE = 0.5


def _angle_gap(a: float, b: float, symmetry: float) -> float:
    d = (a - b) % symmetry
    return min(d, symmetry - d)


def background_metrics(frames: Any, prompt: str, camera_px: tuple[float, float] | None = None) -> dict[str, float]:
    """World v2's background metrics of a video, separately from the object's.

    frames: (f, 3, H, W) float [0, 1]; prompt: a v2 caption ("... on a blue striped
    background"); camera_px: the background displacement asked for, px/frame (a pan or the
    global translation of T2V-Zero's motion field; None: a still background).

    - pattern_accuracy: share of frames whose detected pattern kind is the caption's;
    - background_identity: share of frames 1..f-1 whose pattern keeps frame 0's kind,
      orientation and period and whose displacement from the previous frame
      (`detector.background_shift`) is the requested one within
      `BACKGROUND_SHIFT_TOLERANCE` px (phase kept after compensating the camera motion);
      for stripes only the displacement across them is compared (the one along them does
      not show);
    - background_speed_px: the mean detected displacement per frame (across the stripes
      for striped backgrounds); background_motion_error: mean distance to the request.
    NaN where the caption's background is plain (there is no pattern to follow).
    """
    from zeroshot.shapes.detector import background_shift, detect_v2
    from zeroshot.shapes.world import PATTERN_SYMMETRY_DEG, parse_caption_v2

    kind = parse_caption_v2(prompt.strip().rstrip("."))[3]
    video = as_frames(frames)  # (f, H, W, 3)
    chw = [np.ascontiguousarray(image.transpose(2, 0, 1)) for image in video]
    found = [detect_v2(image) for image in chw]
    accuracy = float(np.mean([d.pattern == kind for d in found]))
    nan = float("nan")
    if kind == "plain":
        return {"pattern_accuracy": accuracy, "background_identity": nan,
                "background_speed_px": nan, "background_motion_error": nan}
    wanted = np.array(camera_px if camera_px is not None else (0.0, 0.0), np.float64)
    first = found[0]
    keeps, speeds, errors = [], [], []
    for k in range(1, len(chw)):
        d = found[k]
        same = (
            first.pattern == kind
            and d.pattern == kind
            and _angle_gap(d.pattern_angle_deg, first.pattern_angle_deg, PATTERN_SYMMETRY_DEG[kind])
            <= BACKGROUND_ANGLE_TOLERANCE
            and abs(d.pattern_period - first.pattern_period) <= BACKGROUND_PERIOD_TOLERANCE * first.pattern_period
        )
        shift = np.array(background_shift(chw[k - 1], chw[k]), np.float64) if same else np.full(2, np.nan)
        if kind == "striped" and same:
            a = np.deg2rad(first.pattern_angle_deg)
            normal = np.array([np.cos(a), np.sin(a)])
            observed, asked = np.array([shift @ normal]), np.array([wanted @ normal])
        else:
            observed, asked = shift, wanted
        error = float(np.linalg.norm(observed - asked)) if np.isfinite(observed).all() else nan
        keeps.append(same and np.isfinite(error) and error <= BACKGROUND_SHIFT_TOLERANCE)
        if np.isfinite(error):
            speeds.append(float(np.linalg.norm(observed)))
            errors.append(error)
    return {
        "pattern_accuracy": accuracy,
        "background_identity": float(np.mean(keeps)) if keeps else nan,
        "background_speed_px": float(np.mean(speeds)) if speeds else nan,
        "background_motion_error": float(np.mean(errors)) if errors else nan,
    }


def is_shapes_prompt(prompt: str | None) -> bool:
    """Whether `prompt` parses as a shapes caption."""
    if not prompt:
        return False
    try:
        parse_prompt(prompt)
    except ValueError:
        return False
    return True


__all__ = ["background_metrics", "is_shapes_prompt", "parse_prompt", "requested_track", "shapes_metrics"]
