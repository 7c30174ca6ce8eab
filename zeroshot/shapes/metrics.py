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


#: Steps shorter than this (px) have no direction worth reading (detector jitter).
HEADING_MIN_STEP = 0.5


def heading_steadiness(steps: np.ndarray, min_step: float = HEADING_MIN_STEP) -> float:
    """Mean cosine between consecutive centroid steps (f-1, 2) that both move ≥ `min_step` px.

    1 = a straight path (the world's translations), -1 = reversing every frame, ~0 = a random
    walk; NaN when fewer than two consecutive steps move.
    """
    steps = np.asarray(steps, dtype=np.float64)
    if len(steps) < 2:
        return float("nan")
    a, b = steps[:-1], steps[1:]
    na, nb = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
    ok = np.isfinite(na) & np.isfinite(nb) & (na >= min_step) & (nb >= min_step)
    if not ok.any():
        return float("nan")
    return float(np.mean((a[ok] * b[ok]).sum(axis=1) / (na[ok] * nb[ok])))


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
    heading = heading_steadiness(steps)

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
        "heading": heading,
        "motion_error": motion_error,
        "requested_speed_px": requested_speed,
        "along_px": along,
        "background_change": _background_change(video, masks),
    }


#: A frame keeps the background when its shade coverage correlates with frame 0's, shifted by
#: the camera motion asked for, at least this much (a redrawn pattern: ~0; a kept one: ~1).
BACKGROUND_MIN_CORRELATION = 0.5
#: Pixels both frames must share as background for a correlation to be read.
_MIN_SHARED = 0.2


def _shifted(image: np.ndarray, d: np.ndarray, *, nearest: bool = False) -> np.ndarray:
    """`image` moved by d = (dx, dy) px (sub-pixel, bilinear): out(p + d) = image(p); 0 outside."""
    import cv2

    matrix = np.array([[1.0, 0.0, d[0]], [0.0, 1.0, d[1]]], np.float64)
    flags = cv2.INTER_NEAREST if nearest else cv2.INTER_LINEAR
    h, w = image.shape
    return cv2.warpAffine(image.astype(np.float32), matrix, (w, h), flags=flags, borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def background_correlation(first: tuple, other: tuple, displacement) -> float:
    """Pearson correlation of two frames' shade coverage (`detector.background_coverage`)
    over the pixels both show as background, after moving the first by `displacement`
    (dx, dy) px; NaN when they share too few pixels or one of them is flat."""
    (t0, w0), (t1, w1) = first, other
    d = np.asarray(displacement, np.float64)
    moved = _shifted(t0, d)
    inside = _shifted(w0.astype(np.float32), d, nearest=True) > 0.5
    shared = inside & w1
    if shared.sum() < _MIN_SHARED * t0.size:
        return float("nan")
    a, b = moved[shared].astype(np.float64), t1[shared].astype(np.float64)
    if a.std() < 1e-6 or b.std() < 1e-6:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


#: Largest background displacement per frame searched for (px), and the finest step.
_SHIFT_SEARCH_PX, _SHIFT_STEP_PX = 4, 0.1
#: Correlation given up per px of displacement, so that of the lattice's equally good
#: shifts (a periodic pattern's aliases, any shift along stripes) the smallest is read.
_SHIFT_PENALTY = 0.02


def measured_background_shift(first: tuple, other: tuple) -> np.ndarray:
    """The background's displacement (dx, dy) px from one frame to the next: the shift of
    the first frame's shade coverage that correlates best with the second's
    (`background_correlation`; whole pixels within `_SHIFT_SEARCH_PX`, then
    `_SHIFT_STEP_PX` around the best). Periodic patterns show it modulo their lattice, so
    the smallest of equally good shifts is taken (`_SHIFT_PENALTY`): pans under half the
    lattice spacing are read as they are; along stripes it reads ~0."""

    def best(candidates) -> np.ndarray:
        scores = [background_correlation(first, other, d) - _SHIFT_PENALTY * float(np.hypot(*d)) for d in candidates]
        scores = [-np.inf if not np.isfinite(c) else c for c in scores]
        return np.asarray(candidates[int(np.argmax(scores))], np.float64)

    r = _SHIFT_SEARCH_PX
    whole = best([(dx, dy) for dy in range(-r, r + 1) for dx in range(-r, r + 1)])
    fine = np.arange(-0.5, 0.5 + 1e-9, _SHIFT_STEP_PX)
    return best([(whole[0] + dx, whole[1] + dy) for dy in fine for dx in fine])


def background_metrics(frames: Any, prompt: str, camera_px: tuple[float, float] | None = None) -> dict[str, float]:
    """World v2's background metrics of a video, separately from the object's.

    frames: (f, 3, H, W) float [0, 1]; prompt: a v2 caption ("... on a blue striped
    background"); camera_px: the background displacement asked for, px/frame (a pan or the
    global translation of T2V-Zero's motion field; None: a still background).

    Each frame's background is read as its shade coverage (`detector.background_coverage`:
    0 at the background colour, 1 at its shade), which needs no exact lattice, so it reads a
    model's wobbly stripes and uneven dots as well as the world's own drawing.

    - pattern_accuracy: share of frames whose detected pattern kind is the caption's;
    - background_correlation: mean over frames 1..f-1 of the correlation of the frame's
      coverage with frame 0's moved by the camera motion asked for (k x camera_px at frame
      k): 1 when orientation, period and phase are kept, ~0 when the pattern is redrawn;
    - background_identity: share of frames 1..f-1 whose correlation is at least
      `BACKGROUND_MIN_CORRELATION` and whose pattern kind is frame 0's;
    - background_speed_px: the mean measured displacement per frame (phase correlation of
      consecutive frames; across the stripes for striped backgrounds, the displacement
      along them does not show); background_motion_error: mean distance to the request.
    NaN where the caption's background is plain (there is no pattern to follow).
    """
    from zeroshot.shapes.detector import background_coverage, detect_v2, stripe_normal
    from zeroshot.shapes.world import parse_caption_v2

    kind = parse_caption_v2(prompt.strip().rstrip("."))[3]
    video = as_frames(frames)  # (f, H, W, 3)
    chw = [np.ascontiguousarray(image.transpose(2, 0, 1)) for image in video]
    kinds = [detect_v2(image).pattern for image in chw]
    accuracy = float(np.mean([k == kind for k in kinds]))
    nan = float("nan")
    out = {"pattern_accuracy": accuracy, "background_correlation": nan, "background_identity": nan,
           "background_speed_px": nan, "background_motion_error": nan}
    if kind == "plain":
        return out
    wanted = np.array(camera_px if camera_px is not None else (0.0, 0.0), np.float64)
    coverage = [background_coverage(image) for image in chw]
    if coverage[0] is None:  # frame 0 drew no pattern: nothing is kept
        out["background_identity"] = 0.0
        return out
    correlations, keeps, speeds, errors = [], [], [], []
    normal = stripe_normal(*coverage[0]) if kind == "striped" else None
    for k in range(1, len(chw)):
        if coverage[k] is None:
            correlations.append(0.0)
            keeps.append(False)
            continue
        c = background_correlation(coverage[0], coverage[k], k * wanted)
        correlations.append(0.0 if not np.isfinite(c) else c)
        keeps.append(bool(np.isfinite(c) and c >= BACKGROUND_MIN_CORRELATION and kinds[k] == kinds[0]))
        if coverage[k - 1] is not None:
            shift = measured_background_shift(coverage[k - 1], coverage[k])
            observed, asked = (shift, wanted) if normal is None else (np.array([shift @ normal]), np.array([wanted @ normal]))
            speeds.append(float(np.linalg.norm(observed)))
            errors.append(float(np.linalg.norm(observed - asked)))
    out.update(
        background_correlation=float(np.mean(correlations)),
        background_identity=float(np.mean(keeps)),
        background_speed_px=float(np.mean(speeds)) if speeds else nan,
        background_motion_error=float(np.mean(errors)) if errors else nan,
    )
    return out


def requested_camera(motion: Any, num_frames: int, height: int, width: int) -> tuple[float, float]:
    """The background displacement (px/frame) a motion request asks for: the median mean
    step of eight points near the frame's border (T2V-Zero's global translation moves them
    all alike; a drag with the rest still leaves them; a zoom pulls them apart, ~0). None:
    no motion, (0, 0)."""
    if motion is None:
        return (0.0, 0.0)
    field = _motion_field(motion, num_frames, height, width)
    import torch

    xs, ys = (2.0, width / 2, width - 3.0), (2.0, height / 2, height - 3.0)
    points = torch.tensor([(x, y) for x in xs for y in ys if (x, y) != (width / 2, height / 2)], dtype=torch.float64)
    track = np.asarray(torch.as_tensor(field.forward(points, num_frames, height, width)), np.float64)  # (f, n, 2)
    steps = np.diff(track, axis=0).mean(axis=0)  # (n, 2)
    median = np.median(steps, axis=0)
    return float(median[0]), float(median[1])


def is_shapes_prompt(prompt: str | None) -> bool:
    """Whether `prompt` parses as a shapes caption."""
    if not prompt:
        return False
    try:
        parse_prompt(prompt)
    except ValueError:
        return False
    return True


__all__ = ["background_metrics", "is_shapes_prompt", "parse_prompt", "requested_camera", "requested_track",
           "shapes_metrics"]
