"""Detector for the shapes world (OpenCV): shape, colours, centroid, area and mask of a frame.

The instrument every quality number is measured with. Steps: the background colour is the
most common palette colour on the image border; foreground pixels are those far from the
background's actual colour; the largest connected foreground component is the shape; its
colour is the palette colour nearest to the median of its interior; its class comes from
a hole test and the symmetry of its outline (Fourier harmonics of the radius).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from zeroshot.shapes.world import COLORS, PALETTE

_PALETTE_RGB = np.array([PALETTE[c] for c in COLORS], np.float32) / 255.0  # (k, 3)

#: A pixel is foreground if its RGB distance to the background colour exceeds this.
FG_THRESHOLD = 0.25
#: Components smaller than this (px at 64x64, scaled with the area) are noise.
MIN_AREA_64 = 12
#: Below this relative amplitude of harmonics 3, 4 and 5 an outline is a circle.
HARMONIC_MIN = 0.04


@dataclass(frozen=True)
class Detection:
    """What the detector sees in one frame.

    shape/fg are None when no foreground object is found (then centroid is (nan, nan)
    and area 0). centroid is (x, y) in px (pixel centres at integers); area is the mask's
    pixel count; mask is bool (H, W).
    """

    shape: str | None
    fg: str | None
    bg: str
    centroid: tuple[float, float]
    area: float
    mask: np.ndarray


def to_hwc(frame) -> np.ndarray:
    """A frame as float32 (H, W, 3) in [0, 1] from (3, H, W) float (tensor/ndarray) or (H, W, 3) uint8."""
    if hasattr(frame, "detach"):
        frame = frame.detach().to("cpu").float().numpy()
    frame = np.asarray(frame)
    if frame.ndim != 3:
        raise ValueError(
            f"frame must be (3, H, W) float or (H, W, 3) uint8, got shape {frame.shape}"
        )
    if frame.dtype == np.uint8:
        if frame.shape[2] != 3:
            raise ValueError(f"uint8 frame must be (H, W, 3), got shape {frame.shape}")
        return frame.astype(np.float32) / 255.0
    if frame.shape[0] != 3:
        raise ValueError(
            f"float frame must be (3, H, W) in [0, 1], got shape {frame.shape}"
        )
    return np.clip(np.transpose(frame, (1, 2, 0)).astype(np.float32), 0.0, 1.0)


def nearest_color(rgb) -> str:
    """Name of the palette colour nearest to an RGB triple in [0, 1]."""
    d = ((_PALETTE_RGB - np.asarray(rgb, np.float32)[None]) ** 2).sum(1)
    return COLORS[int(np.argmin(d))]


def _classify_pixels(pixels: np.ndarray) -> np.ndarray:
    """Palette index of each of (n, 3) pixels."""
    d = ((pixels[:, None, :] - _PALETTE_RGB[None]) ** 2).sum(-1)
    return d.argmin(1)


def _border(img: np.ndarray, width: int) -> np.ndarray:
    return np.concatenate(
        [
            img[:width].reshape(-1, 3),
            img[-width:].reshape(-1, 3),
            img[:, :width].reshape(-1, 3),
            img[:, -width:].reshape(-1, 3),
        ]
    )


def radius_profile(mask: np.ndarray, samples: int = 256) -> np.ndarray:
    """The outline's distance from the mask's centroid at `samples` angles in [-pi, pi).

    Angles are image angles, atan2(dy, dx) with y down (-pi/2 points up).
    """
    import cv2

    m = mask.astype(np.uint8)
    contours, _ = cv2.findContours(m, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    outer = max(contours, key=cv2.contourArea)
    filled = np.zeros_like(m)
    cv2.drawContours(filled, [outer], -1, 1, thickness=cv2.FILLED)
    ys, xs = np.nonzero(filled)
    pts = outer[:, 0, :].astype(np.float64)
    dx, dy = pts[:, 0] - xs.mean(), pts[:, 1] - ys.mean()
    angle, radius = np.arctan2(dy, dx), np.hypot(dx, dy)
    order = np.argsort(angle)
    grid = np.linspace(-np.pi, np.pi, samples, endpoint=False)
    return np.interp(grid, angle[order], radius[order], period=2 * np.pi)


def radial_harmonics(mask: np.ndarray, orders=(3, 4, 5)) -> np.ndarray:
    """Relative amplitudes of the given Fourier orders of the outline's radius r(angle).

    The outline of a shape with k-fold symmetry has energy at multiples of k only: a
    triangle at 3, a square at 4, a five-pointed star at 5, a circle at none. This is
    robust to blur and scale (amplitudes are divided by the mean radius).
    """
    r = radius_profile(mask)
    spectrum = 2 * np.abs(np.fft.rfft(r)) / len(r) / max(r.mean(), 1e-6)
    return spectrum[list(orders)]


#: (symmetry order, image angle of a vertex in degrees) of the world's upright shapes
UPRIGHT = {"triangle": (3, -90.0), "square": (4, -45.0), "star": (5, -90.0)}


def turn_deg(mask: np.ndarray, shape: str) -> float:
    """How far a triangle, square or star is turned from the world's upright pose, degrees.

    In [0, 180/k] for k-fold symmetry: 0 is how the world draws it (a vertex up; a square
    on its side), 180/k is turned as far as its symmetry allows (a triangle or star
    pointing down, a square on a corner). From the phase of harmonic k of
    `radius_profile`. NaN for circles and rings (no orientation).
    """
    if shape not in UPRIGHT:
        return math.nan
    order, upright = UPRIGHT[shape]
    r = radius_profile(mask)
    grid = np.linspace(-np.pi, np.pi, len(r), endpoint=False)
    phase = float(np.angle(np.sum(r * np.exp(1j * order * grid))))  # r ~ cos(k*theta - phase)
    period = 360.0 / order
    offset = (math.degrees(phase / order) - upright) % period
    return float(min(offset, period - offset))


def classify_shape(mask: np.ndarray) -> str:
    """Shape class of one connected bool mask.

    ring: the outline encloses a hole (mask fills < 86% of its outer outline);
    otherwise the strongest of the radius harmonics 3/4/5 (triangle/square/star), or
    circle when none reaches `HARMONIC_MIN`.
    """
    import cv2

    m = mask.astype(np.uint8)
    contours, _ = cv2.findContours(m, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    outer = max(contours, key=cv2.contourArea)
    filled = np.zeros_like(m)
    cv2.drawContours(filled, [outer], -1, 1, thickness=cv2.FILLED)
    if m.sum() / filled.sum() < 0.86:
        return "ring"
    h = radial_harmonics(mask)
    if h.max() < HARMONIC_MIN:
        return "circle"
    return ("triangle", "square", "star")[int(h.argmax())]


def detect(frame) -> Detection:
    """Detect the shape in one frame: (3, H, W) float in [0, 1] (tensor or ndarray) or (H, W, 3) uint8."""
    import cv2

    img = to_hwc(frame)
    h, w, _ = img.shape
    border = _border(img, max(1, min(h, w) // 32))
    labels = _classify_pixels(border)
    bg_index = int(np.bincount(labels, minlength=len(COLORS)).argmax())
    bg_ref = np.median(border[labels == bg_index], axis=0)
    dist = np.sqrt(((img - bg_ref[None, None]) ** 2).sum(-1))
    fg_mask = (dist > FG_THRESHOLD).astype(np.uint8)
    n, comp, stats, _ = cv2.connectedComponentsWithStats(fg_mask, connectivity=8)
    min_area = MIN_AREA_64 * (h * w) / (64 * 64)
    if n <= 1 or stats[1:, cv2.CC_STAT_AREA].max() < min_area:
        return Detection(
            None,
            None,
            COLORS[bg_index],
            (math.nan, math.nan),
            0.0,
            np.zeros((h, w), bool),
        )
    largest = 1 + int(stats[1:, cv2.CC_STAT_AREA].argmax())
    rough = (comp == largest).astype(np.uint8)
    inner = cv2.erode(rough, np.ones((3, 3), np.uint8)).astype(bool)
    core = inner if inner.sum() >= 4 else rough.astype(bool)
    fg_ref = np.median(img[core], axis=0)
    fg = nearest_color(fg_ref)
    # Refine: a pixel belongs to the shape if it is at least half way from bg to fg colour
    # (the ground truth's "at least half covered"), near the rough component.
    axis = fg_ref - bg_ref
    frac = ((img - bg_ref[None, None]) @ axis) / max(float(axis @ axis), 1e-6)
    near = cv2.dilate(rough, np.ones((3, 3), np.uint8)).astype(bool)
    refined = ((frac >= 0.5 - 1 / 64) & near).astype(np.uint8)
    n, comp, stats, _ = cv2.connectedComponentsWithStats(refined, connectivity=8)
    mask = (
        comp == (1 + int(stats[1:, cv2.CC_STAT_AREA].argmax()))
        if n > 1
        else rough.astype(bool)
    )
    ys, xs = np.nonzero(mask)
    return Detection(
        shape=classify_shape(mask),
        fg=fg,
        bg=COLORS[bg_index],
        centroid=(float(xs.mean()), float(ys.mean())),
        area=float(mask.sum()),
        mask=mask,
    )
