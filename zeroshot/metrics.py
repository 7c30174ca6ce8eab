"""Video metrics that need no downloaded network.

Every function takes a decoded video `frames` of shape (f, 3, H, W), float in [0, 1]
(a torch tensor or a numpy array), and compares consecutive frames, so it needs f >= 2.

- `warp_error`: optical-flow warping error (Lai et al., ECCV 2018, "Learning Blind Video
  Temporal Consistency", Sec. 4, with mean absolute instead of squared error). Frame k+1
  is warped onto frame k along OpenCV DIS flow; pixels that fail a forward-backward
  consistency check (Sundaram et al., ECCV 2010) or leave the image are excluded. It is
  always returned beside the mean flow magnitude: a still video has zero warping error,
  so the error alone rewards videos that do not move.
- `flicker`: mean absolute change of the per-frame mean luminance.
- `frame_difference`: mean absolute difference of consecutive frames.
- `ssim_consecutive`: mean SSIM (Wang et al., 2004) of consecutive frames' luminance.

All intensities are in [0, 1] units; flow is in pixels of the given frames.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

# Rec. 601 luma weights, the ones OpenCV uses for RGB -> gray.
LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)

# DIS works on images of at least this size (short side); smaller videos are upsampled
# by an integer factor for the flow and the flow is averaged back down.
MIN_FLOW_SIDE = 128


def mean_and_sem(values: Any) -> tuple[float, float]:
    """Mean of the finite values and its standard error (NaN where there are too few)."""
    values = np.asarray([v for v in values if v is not None], dtype=np.float64).ravel()
    finite = values[np.isfinite(values)]
    mean = float(finite.mean()) if finite.size else float("nan")
    sem = float(finite.std(ddof=1) / math.sqrt(finite.size)) if finite.size > 1 else float("nan")
    return mean, sem


def as_frames(frames: Any) -> np.ndarray:
    """A video (f, 3, H, W) float [0, 1] tensor or array as a (f, H, W, 3) float32 array."""
    if hasattr(frames, "detach"):
        frames = frames.detach().to("cpu").float().numpy()
    arr = np.asarray(frames, dtype=np.float32)
    if arr.ndim != 4 or arr.shape[1] != 3:
        raise ValueError(f"frames must have shape (f, 3, H, W), got {tuple(arr.shape)}")
    if arr.shape[0] < 2:
        raise ValueError(f"frames must hold at least 2 frames to compare, got {arr.shape[0]}")
    return np.ascontiguousarray(np.clip(arr, 0.0, 1.0).transpose(0, 2, 3, 1))


def luminance(frames_hwc: np.ndarray) -> np.ndarray:
    """Luma (..., H, W) of RGB images (..., H, W, 3) in [0, 1]."""
    return frames_hwc @ LUMA


def dis_flow(first: np.ndarray, second: np.ndarray, *, min_side: int = MIN_FLOW_SIDE) -> np.ndarray:
    """Dense DIS optical flow (H, W, 2) in px from gray image `first` to `second`.

    `first(q)` matches `second(q + flow(q))`. Images whose short side is below
    `min_side` are upsampled by an integer factor (bicubic) for the flow computation and
    the flow is area-averaged back to the input size and divided by the factor.
    """
    import cv2

    height, width = first.shape
    factor = max(1, math.ceil(min_side / min(height, width)))
    a = np.clip(first * 255.0 + 0.5, 0, 255).astype(np.uint8)
    b = np.clip(second * 255.0 + 0.5, 0, 255).astype(np.uint8)
    if factor > 1:
        size = (width * factor, height * factor)
        a = cv2.resize(a, size, interpolation=cv2.INTER_CUBIC)
        b = cv2.resize(b, size, interpolation=cv2.INTER_CUBIC)
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    flow = dis.calc(a, b, None)
    if factor > 1:
        flow = cv2.resize(flow, (width, height), interpolation=cv2.INTER_AREA) / factor
    return flow.astype(np.float32)


def _sample(image: np.ndarray, flow: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`image` sampled at q + flow(q) (bilinear), and whether that point lies inside."""
    import cv2

    height, width = flow.shape[:2]
    grid_x, grid_y = np.meshgrid(np.arange(width, dtype=np.float32), np.arange(height, dtype=np.float32))
    map_x = grid_x + flow[..., 0]
    map_y = grid_y + flow[..., 1]
    sampled = cv2.remap(image, map_x, map_y, interpolation=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    inside = (map_x >= 0) & (map_x <= width - 1) & (map_y >= 0) & (map_y <= height - 1)
    return sampled, inside


def _pair_warp_error(first: np.ndarray, second: np.ndarray) -> tuple[float, float, float]:
    """(error, mean flow magnitude px, share of pixels kept) for one frame pair (H, W, 3)."""
    gray_a, gray_b = luminance(first), luminance(second)
    forward = dis_flow(gray_a, gray_b)
    backward = dis_flow(gray_b, gray_a)
    warped, inside = _sample(second, forward)
    back_at_target, _ = _sample(backward, forward)
    # Sundaram et al. 2010: |F + B(q + F)|^2 < 0.01 (|F|^2 + |B(q + F)|^2) + 0.5
    round_trip = np.sum((forward + back_at_target) ** 2, axis=-1)
    bound = 0.01 * (np.sum(forward**2, axis=-1) + np.sum(back_at_target**2, axis=-1)) + 0.5
    valid = inside & (round_trip < bound)
    magnitude = float(np.linalg.norm(forward, axis=-1).mean())
    if not valid.any():
        return float("nan"), magnitude, 0.0
    error = float(np.abs(first - warped).mean(axis=-1)[valid].mean())
    return error, magnitude, float(valid.mean())


def warp_error(frames: Any) -> dict[str, float]:
    """Optical-flow warping error of consecutive frames, with the flow that explains it.

    Returns `warp_error` (mean absolute RGB error of frame k against frame k+1 warped
    onto it, over pixels that pass the forward-backward check; [0, 1] units),
    `flow_magnitude` (mean forward flow length, px per frame) and `valid_fraction` (share
    of pixels that passed the check). Pairs where no pixel passes are skipped.
    """
    video = as_frames(frames)
    errors, magnitudes, kept = [], [], []
    for first, second in zip(video[:-1], video[1:]):
        error, magnitude, share = _pair_warp_error(first, second)
        magnitudes.append(magnitude)
        kept.append(share)
        if not math.isnan(error):
            errors.append(error)
    return {
        "warp_error": float(np.mean(errors)) if errors else float("nan"),
        "flow_magnitude": float(np.mean(magnitudes)),
        "valid_fraction": float(np.mean(kept)),
    }


def flicker(frames: Any) -> float:
    """Mean absolute change of the per-frame mean luminance between consecutive frames."""
    means = luminance(as_frames(frames)).mean(axis=(1, 2))
    return float(np.abs(np.diff(means)).mean())


def frame_difference(frames: Any) -> float:
    """Mean absolute difference between consecutive frames (all pixels and channels)."""
    video = as_frames(frames)
    return float(np.abs(np.diff(video, axis=0)).mean())


def ssim(first: np.ndarray, second: np.ndarray) -> float:
    """SSIM of two gray images in [0, 1] (Gaussian window 11, sigma 1.5, K1 0.01, K2 0.03)."""
    import cv2

    c1, c2 = 0.01**2, 0.03**2

    def blur(x: np.ndarray) -> np.ndarray:
        return cv2.GaussianBlur(x, (11, 11), 1.5, borderType=cv2.BORDER_REFLECT)

    a = first.astype(np.float64)
    b = second.astype(np.float64)
    mu_a, mu_b = blur(a), blur(b)
    var_a = blur(a * a) - mu_a**2
    var_b = blur(b * b) - mu_b**2
    cov = blur(a * b) - mu_a * mu_b
    numerator = (2 * mu_a * mu_b + c1) * (2 * cov + c2)
    denominator = (mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2)
    return float((numerator / denominator).mean())


def ssim_consecutive(frames: Any) -> float:
    """Mean SSIM between the luminance of consecutive frames (1.0 for a still video)."""
    gray = luminance(as_frames(frames))
    return float(np.mean([ssim(a, b) for a, b in zip(gray[:-1], gray[1:])]))


def edge_f_score(edges: Any, reference: Any, *, tolerance: int = 1) -> dict[str, float]:
    """How well one video's edges follow another's (ControlNet edge following, structure kept
    by an edit): precision = share of `edges` pixels within `tolerance` px (chessboard
    distance) of a `reference` edge pixel, recall = share of `reference` edge pixels within
    `tolerance` of an `edges` pixel, pooled over all frames; F = their harmonic mean.

    edges, reference: edge maps `(f, H, W)` or `(f, C, H, W)` (any channel; non-zero = edge),
    e.g. `zeroshot.control.canny` of generated frames and the control maps. NaN where a side
    has no edge pixels at all."""
    import cv2

    def binary(maps: Any) -> np.ndarray:
        a = np.asarray(maps.detach().cpu() if hasattr(maps, "detach") else maps)
        return (a[:, 0] if a.ndim == 4 else a) > 0

    e, r = binary(edges), binary(reference)
    if e.shape != r.shape:
        raise ValueError(f"edge maps differ in shape: {e.shape} vs {r.shape}")
    kernel = np.ones((2 * tolerance + 1, 2 * tolerance + 1), np.uint8)
    near_r = np.stack([cv2.dilate(m.astype(np.uint8), kernel) for m in r]).astype(bool)
    near_e = np.stack([cv2.dilate(m.astype(np.uint8), kernel) for m in e]).astype(bool)
    nan = float("nan")
    precision = float((e & near_r).sum() / e.sum()) if e.any() else nan
    recall = float((r & near_e).sum() / r.sum()) if r.any() else nan
    f = 2 * precision * recall / (precision + recall) if precision + recall > 0 else (0.0 if np.isfinite(precision + recall) else nan)
    return {"edge_precision": precision, "edge_recall": recall, "edge_f": float(f)}


def video_metrics(frames: Any) -> dict[str, float]:
    """Every metric of this module in one dict (keys as the functions' names)."""
    video = as_frames(frames).transpose(0, 3, 1, 2)
    out = dict(warp_error(video))
    out["flicker"] = flicker(video)
    out["frame_difference"] = frame_difference(video)
    out["ssim"] = ssim_consecutive(video)
    return out


__all__ = [
    "as_frames",
    "dis_flow",
    "edge_f_score",
    "flicker",
    "frame_difference",
    "luminance",
    "ssim",
    "ssim_consecutive",
    "video_metrics",
    "warp_error",
]
