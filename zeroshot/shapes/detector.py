"""Detector for the shapes world (OpenCV): shape, colours, centroid, area and mask of a frame.

The instrument every quality number is measured with. Steps: the background colour is the
most common palette colour on the image border; foreground pixels are those far from the
background's actual colour; the largest connected foreground component is the shape; its
colour is the palette colour nearest to the median of its interior; its class comes from
a hole test and the symmetry of its outline (Fourier harmonics of the radius).

World v2's patterned backgrounds (`detect_v2`, `background_shift`): the pattern's kind,
colour, orientation, period and phase from a Fourier model of the background, and the
object against the pattern drawn with those parameters; plain frames keep the steps above.
`python -m zeroshot.shapes.detector --check 2000` measures it on ground-truth scenes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from zeroshot.shapes.world import (
    COLORS,
    PALETTE,
    PATTERN_SYMMETRY_DEG,
    PATTERNS,
    PERIOD_RANGE,
    Scene,
    Video,
    pattern_coverage,
    pattern_phase,
    render,
    render_video,
    sample_background_motion,
    sample_motion_v2,
    sample_scene_v2,
    shade,
)

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
    """Detect the shape in one frame: (3, H, W) float in [0, 1] (tensor or ndarray) or (H, W, 3) uint8.

    Plain (v1) frames: the steps of the module docstring; patterned (v2) frames: `detect_v2`,
    whose result (a `DetectionV2`) this is.
    """
    return detect_v2(frame)


def _detect_plain(img: np.ndarray) -> tuple[Detection, np.ndarray]:
    """The v1 detection of an (H, W, 3) image on a plain background, and the background's
    measured RGB."""
    import cv2

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
        empty = Detection(
            None,
            None,
            COLORS[bg_index],
            (math.nan, math.nan),
            0.0,
            np.zeros((h, w), bool),
        )
        return empty, bg_ref
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
    found = Detection(
        shape=classify_shape(mask),
        fg=fg,
        bg=COLORS[bg_index],
        centroid=(float(xs.mean()), float(ys.mean())),
        area=float(mask.sum()),
        mask=mask,
    )
    return found, bg_ref


# ----------------------------------------------------------------------------- world v2: patterns

_SHADE_RGB = np.array([shade(c) for c in COLORS], np.float32) / 255.0  # (k, 3)

#: On a patterned frame a pixel is background if its RGB distance to the segment between
#: the background colour and its shade is at most this (blur mixes the two along it).
PATTERN_FG_THRESHOLD = 0.125
#: Truncation of the squared segment distance when the background colour is fitted.
_PAIR_TRUNCATION = 0.1
#: A frame is looked at for a pattern when at least this fraction of its border, or of its
#: pixels away from the plain-background object, is far (`_FAR`) from the background colour.
PATTERN_MIN_FRACTION = 0.1
_FAR = 0.1
#: A pattern is accepted when the shade coverage of the background pixels varies (standard
#: deviation at least `PATTERN_MIN_STD`; a drawn pattern's is 0.4-0.5) and its Fourier
#: model explains at least `PATTERN_MIN_R2` of that variance; a varying coverage that fits
#: no lattice is still a pattern, of a kind read from its structure (`pattern_kind`).
PATTERN_MIN_STD = 0.1
PATTERN_MIN_R2 = 0.5
#: Grid patterns (checkered, dotted) have a second peak at 90 degrees from the strongest of
#: at least this fraction of its power; stripes have none.
GRID_MIN_POWER = 0.2
#: Mean shade coverage separating dotted (0.28) from checkered (0.5) backgrounds.
DOTTED_MAX_MEAN = 0.39
#: A background whose shade varies but fits no exact lattice (a generated, imperfect
#: pattern) is striped when the orientation coherence of its shade-coverage gradients
#: (structure tensor, 0 isotropic .. 1 one orientation) is at least this; else a grid.
STRIPE_MIN_COHERENCE = 0.5
#: Blur (Gaussian sigma, px) tried when the fitted pattern is matched to the frame.
_BLUR_SIGMAS = (0.0, 0.5, 0.8, 1.1, 1.5, 2.0, 2.7)
#: Harmonics (multiples of the fundamental frequencies k1, k2 = k1 turned 90 degrees) in
#: the Fourier model of each pattern family.
_HARMONICS = {
    "striped": ((1, 0), (2, 0), (3, 0)),
    "grid": ((1, 0), (0, 1), (1, 1), (1, -1), (2, 0), (0, 2), (2, 1), (1, 2), (2, -1), (1, -2)),
}


@dataclass(frozen=True)
class DetectionV2(Detection):
    """A `Detection` plus the background pattern (world v2).

    pattern is one of `world.PATTERNS`; for a patterned background pattern_angle_deg is
    in [0, `PATTERN_SYMMETRY_DEG[pattern]`), pattern_period in px and pattern_phase the
    offset in periods along the pattern's axes, each in [0, 1), as `Scene.pattern_phase`
    for that angle. Stripes do not show the phase along their length: it is reported as
    0. A checkerboard looks the same shifted by half a period along both axes: its phase
    is reported with the first value in [0, 0.5). On a plain background the angle, period
    and phase are NaN.
    """

    pattern: str
    pattern_angle_deg: float
    pattern_period: float
    pattern_phase: tuple[float, float]


@dataclass(frozen=True)
class PatternFit:
    """A Fourier model of a background's shade coverage t(x) (0 colour, 1 shade).

    `family` is "striped" or "grid"; `k1` the fundamental frequency (cycles/px) whose
    harmonics (`_HARMONICS`, with k2 = k1 turned 90 degrees) make the model; `coef` the
    least-squares constant and (cos, sin) amplitudes at each harmonic, in coordinates
    centred on the image; `r2` the fraction of the variance of t the model explains.
    """

    family: str
    k1: tuple[float, float]
    coef: np.ndarray
    r2: float
    size: int


@dataclass(frozen=True)
class _Background:
    """A patterned frame's background: colour index, shade coverage t (H, W) of every
    pixel, the pixels that are background (`weights`) and its fitted pattern (None when it
    fits no exact lattice: then only its `kind` is known, `pattern_kind`)."""

    index: int
    t: np.ndarray
    weights: np.ndarray
    fit: PatternFit | None
    kind: str | None = None


def _background(img: np.ndarray, plain: Detection, bg_ref: np.ndarray) -> _Background | None:
    """The patterned background of an (H, W, 3) frame; None for a plain one.

    `plain`/`bg_ref`: the frame's v1 detection and plain background colour, which decide
    whether a pattern is looked for at all (`_may_be_patterned`).
    """
    if not _may_be_patterned(img, plain.mask, bg_ref):
        return None
    index = _pattern_background(img)
    t, dist = _segment_coordinates(img, _PALETTE_RGB[index], _SHADE_RGB[index])
    weights = (dist <= PATTERN_FG_THRESHOLD) & ~_keep_out(dist > PATTERN_FG_THRESHOLD)
    fit = fit_pattern(t, weights)
    if fit is not None:
        return _Background(index, t, weights, fit)
    kind = pattern_kind(t, weights)
    return None if kind is None else _Background(index, t, weights, None, kind)


def background_coverage(frame) -> tuple[np.ndarray, np.ndarray] | None:
    """(t, weights) of a patterned frame's background: each pixel's shade coverage t (H, W)
    in [0, 1] (0: the background colour, 1: its shade) and the pixels that are background
    (bool, the object and its edge left out); None when the background is plain. It needs
    no exact lattice, so it reads a model's imperfect drawings too (background metrics)."""
    img = to_hwc(frame)
    bg = _background(img, *_detect_plain(img))
    return None if bg is None else (np.clip(bg.t, 0.0, 1.0), bg.weights)


def stripe_normal(t: np.ndarray, weights: np.ndarray) -> np.ndarray | None:
    """The unit direction (x, y) across a striped coverage map (its gradients' principal
    axis), or None when the gradients share no orientation (`STRIPE_MIN_COHERENCE`)."""
    coherence, angle = _gradient_orientation(t, weights)
    if coherence < STRIPE_MIN_COHERENCE:
        return None
    return np.array([math.cos(angle), math.sin(angle)])


def _gradient_orientation(t: np.ndarray, weights: np.ndarray) -> tuple[float, float]:
    """(coherence in [0, 1], angle in radians) of the structure tensor of t's gradients at
    `weights`: 1 when they all share one axis (stripes), whose direction `angle` is."""
    gy, gx = np.gradient(np.clip(t, 0.0, 1.0).astype(np.float64))
    jxx, jyy, jxy = (gx * gx)[weights].sum(), (gy * gy)[weights].sum(), (gx * gy)[weights].sum()
    coherence = math.sqrt((jxx - jyy) ** 2 + 4 * jxy**2) / max(jxx + jyy, 1e-12)
    return coherence, 0.5 * math.atan2(2 * jxy, jxx - jyy)


def pattern_kind(t: np.ndarray, weights: np.ndarray) -> str | None:
    """The kind of a background whose shade coverage t varies but fits no exact lattice
    (`fit_pattern` refused it: a model's drawing, with wobbly stripes or uneven dots); None
    when t does not vary. Striped when its gradients share one orientation
    (`STRIPE_MIN_COHERENCE`), else dotted or checkered by the mean shade coverage, as
    `pattern_parameters` tells the lattices apart. Gradients are taken inside the
    background only (one pixel in from the object)."""
    import cv2

    if weights.sum() < 0.2 * t.size or t[weights].std() < PATTERN_MIN_STD:
        return None
    inner = cv2.erode(weights.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    if inner.sum() < 0.1 * t.size:
        return None
    if _gradient_orientation(t, inner)[0] >= STRIPE_MIN_COHERENCE:
        return "striped"
    return "dotted" if float(np.clip(t[weights], 0, 1).mean()) < DOTTED_MAX_MEAN else "checkered"


def detect_v2(frame) -> DetectionV2:
    """Detect the object and the background pattern in one frame (any `to_hwc` input).

    A frame is plain unless a pattern is found, and then the object is exactly the v1
    result. Otherwise: the background colour is the palette colour whose (colour, shade)
    segment fits the pixels best (`_pattern_background`); each pixel's shade coverage t is
    its position on that segment; the object is what is far from the segment; a Fourier
    model of t on the rest (`fit_pattern`) gives the kind, orientation, period and phase
    (`pattern_parameters`) — or, when t varies but fits no exact lattice (a model's
    imperfect drawing), only the kind (`pattern_kind`; angle, period and phase NaN, and the
    background's own coverage stands for the drawing); the world's drawing of that pattern (blurred as much as the
    frame is) gives the background colour of every pixel, and the object's mask is "at
    least half way from it to the object's colour", as on plain frames.
    """
    img = to_hwc(frame)
    plain, bg_ref = _detect_plain(img)
    bg = _background(img, plain, bg_ref)
    if bg is None:
        return _plain_v2(plain)
    if bg.fit is None:  # a pattern of a known kind but no exact lattice: its own coverage
        kind, angle, period, phase = bg.kind, math.nan, math.nan, (math.nan, math.nan)
        coverage = np.clip(bg.t, 0.0, 1.0)
    else:
        kind, angle, period, phase = pattern_parameters(bg.fit)
        coverage = _drawn_coverage(kind, angle, period, phase, bg.t, bg.weights)
    low, high = _PALETTE_RGB[bg.index], _SHADE_RGB[bg.index]
    local_bg = low[None, None] + coverage[..., None] * (high - low)[None, None]
    shape, fg, centroid, area, mask = _object_on(img, local_bg)
    return DetectionV2(
        shape=shape,
        fg=fg,
        bg=COLORS[bg.index],
        centroid=centroid,
        area=area,
        mask=mask,
        pattern=kind,
        pattern_angle_deg=angle,
        pattern_period=period,
        pattern_phase=phase,
    )


def background_shift(frame_a, frame_b) -> tuple[float, float]:
    """The background's displacement (dx, dy) px from `frame_a` to `frame_b` (a camera pan).

    The pattern's fundamentals are fitted on frame a (`fit_pattern`, object masked out);
    their amplitudes are fitted on frame b's background pixels at the same frequencies, and
    each fundamental k's phase change is 2 pi k.d. A periodic pattern shows d only modulo
    its lattice, so this is the smallest displacement that explains the change (each k.d
    in [-1/2, 1/2)): for stripes the component across them (the one along them does not
    show), for grids the one in the lattice's cell around zero. Pans shorter than half
    the lattice spacing are recovered as they are: half the period for stripes and dots,
    0.35 of it for checkerboards (whose lattice is the cells' diagonal), so at least
    2.8 px at 64 px. (nan, nan) when frame a has no pattern.
    """
    images = [to_hwc(frame_a), to_hwc(frame_b)]
    a = _background(images[0], *_detect_plain(images[0]))
    if a is None or a.fit is None:
        return math.nan, math.nan
    index = a.index
    t, dist = _segment_coordinates(images[1], _PALETTE_RGB[index], _SHADE_RGB[index])
    weights_b = (dist <= PATTERN_FG_THRESHOLD) & ~_keep_out(dist > PATTERN_FG_THRESHOLD)
    xs, ys = _centred_grid(t.shape[0])
    phases = []
    for frame_t, weights in ((a.t, a.weights), (t, weights_b)):
        waves = _waves(a.fit.family, a.fit.k1, xs[weights], ys[weights])
        coef, _ = _amplitudes(waves, frame_t[weights].astype(np.float64))
        h = len(_HARMONICS[a.fit.family])
        phases.append(np.arctan2(coef[1 + h :], coef[1 : 1 + h]))
    turns = ((phases[1] - phases[0]) / (2 * np.pi) + 0.5) % 1.0 - 0.5
    freqs = _frequencies(a.fit.family, a.fit.k1)
    fundamentals = 1 if a.fit.family == "striped" else 2
    shift = np.linalg.lstsq(freqs[:fundamentals], turns[:fundamentals], rcond=None)[0]
    return float(shift[0]), float(shift[1])


def _plain_v2(found: Detection) -> DetectionV2:
    return DetectionV2(
        found.shape, found.fg, found.bg, found.centroid, found.area, found.mask,
        "plain", math.nan, math.nan, (math.nan, math.nan),
    )


def _may_be_patterned(img: np.ndarray, mask: np.ndarray, bg_ref: np.ndarray) -> bool:
    """Whether enough of the border, or of the image away from `mask`, differs from the
    plain background colour `bg_ref` to look for a pattern."""
    import cv2

    far = np.sqrt(((img - bg_ref[None, None]) ** 2).sum(-1)) > _FAR
    width = max(1, min(far.shape) // 32)
    border = np.ones_like(far)
    border[width:-width, width:-width] = False
    away = ~cv2.dilate(mask.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
    fractions = [far[border].mean(), far[away].mean() if away.any() else 0.0]
    return max(fractions) >= PATTERN_MIN_FRACTION


def _segment_coordinates(
    img: np.ndarray, low: np.ndarray, high: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Each pixel's position t in [0, 1] on the RGB segment low -> high, and its distance."""
    axis = high - low
    t = np.clip(((img - low) @ axis) / float(axis @ axis), 0.0, 1.0)
    nearest = low + t[..., None] * axis
    return t.astype(np.float32), np.sqrt(((img - nearest) ** 2).sum(-1))


def _pattern_background(img: np.ndarray) -> int:
    """Palette index of the background colour of a patterned frame: the colour whose
    (colour, shade) segment is nearest to its border pixels (truncated squared distance;
    the border, because the object, far from it, may lie on another colour's segment)."""
    pixels = _border(img, max(1, min(img.shape[:2]) // 16))
    costs = []
    for low, high in zip(_PALETTE_RGB, _SHADE_RGB):
        _, dist = _segment_coordinates(pixels, low, high)
        costs.append(np.minimum(dist**2, _PAIR_TRUNCATION**2).sum())
    return int(np.argmin(costs))


def _largest_component(binary: np.ndarray, min_area: float) -> np.ndarray:
    """The largest 8-connected component of a bool image (all False if none reaches min_area)."""
    import cv2

    n, comp, stats, _ = cv2.connectedComponentsWithStats(binary.astype(np.uint8), connectivity=8)
    if n <= 1 or stats[1:, cv2.CC_STAT_AREA].max() < min_area:
        return np.zeros(binary.shape, bool)
    return comp == 1 + int(stats[1:, cv2.CC_STAT_AREA].argmax())


def _keep_out(mask: np.ndarray) -> np.ndarray:
    """The largest component of a bool mask, grown by 2 px (what background fits ignore)."""
    import cv2

    rough = _largest_component(mask, 1).astype(np.uint8)
    return cv2.dilate(rough, np.ones((5, 5), np.uint8)).astype(bool)


def _object_on(
    img: np.ndarray, local_bg: np.ndarray
) -> tuple[str | None, str | None, tuple[float, float], float, np.ndarray]:
    """(shape, fg, centroid, area, mask) of the object of a frame whose background colour is
    known at every pixel (`local_bg`, H x W x 3), as `Detection`'s fields."""
    import cv2

    h, w, _ = img.shape
    rough = _largest_component(
        np.sqrt(((img - local_bg) ** 2).sum(-1)) > FG_THRESHOLD, MIN_AREA_64 * h * w / 4096
    )
    if not rough.any():
        return None, None, (math.nan, math.nan), 0.0, rough
    inner = cv2.erode(rough.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    core = inner if inner.sum() >= 4 else rough
    fg_ref = np.median(img[core], axis=0)
    axis = fg_ref[None, None] - local_bg
    frac = ((img - local_bg) * axis).sum(-1) / np.maximum((axis**2).sum(-1), 1e-6)
    near = cv2.dilate(rough.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    mask = _largest_component((frac >= 0.5 - 1 / 64) & near, 1)
    mask = mask if mask.any() else rough
    ys, xs = np.nonzero(mask)
    centroid = (float(xs.mean()), float(ys.mean()))
    return classify_shape(mask), nearest_color(fg_ref), centroid, float(mask.sum()), mask


def _centred_grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates (x, y) of a size x size image relative to its centre, float64."""
    ys, xs = np.mgrid[:size, :size].astype(np.float64)
    c = (size - 1) / 2
    return xs - c, ys - c


def _frequencies(family: str, k1: np.ndarray | tuple[float, float]) -> np.ndarray:
    """(m, 2) frequencies (cycles/px) of a family's harmonics of k1 (and k1 turned 90 deg)."""
    k1 = np.asarray(k1, np.float64)
    k2 = np.array([-k1[1], k1[0]])
    return np.array([m * k1 + n * k2 for m, n in _HARMONICS[family]])


def _waves(
    family: str, k1: np.ndarray | tuple[float, float], xs: np.ndarray, ys: np.ndarray
) -> np.ndarray:
    """exp(2 pi i f.x) (n, m) for every harmonic f of the family's model."""
    k1 = np.asarray(k1, np.float64)
    e1 = np.exp(2j * np.pi * (k1[0] * xs + k1[1] * ys))
    e2 = np.exp(2j * np.pi * (-k1[1] * xs + k1[0] * ys))
    return np.stack([e1**m * e2**n for m, n in _HARMONICS[family]], 1)


def _amplitudes(waves: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares (constant, cos..., sin...) coefficients of `values` and the residual."""
    a = np.concatenate([np.ones((len(values), 1)), waves.real, waves.imag], 1)
    coef = np.linalg.solve(a.T @ a + 1e-9 * np.eye(a.shape[1]), a.T @ values)
    return coef, values - a @ coef


def _refine_frequency(
    family: str,
    k1: np.ndarray,
    xs: np.ndarray,
    ys: np.ndarray,
    values: np.ndarray,
    steps: int = 12,
) -> tuple[np.ndarray, np.ndarray, float]:
    """Gauss-Newton on k1 with the amplitudes solved exactly at every step (variable
    projection); returns k1, the coefficients and the residual sum of squares."""
    m, n = np.array(_HARMONICS[family], np.float64).T
    dphase_dkx = 2 * np.pi * (m[None] * xs[:, None] + n[None] * ys[:, None])
    dphase_dky = 2 * np.pi * (m[None] * ys[:, None] - n[None] * xs[:, None])
    waves = _waves(family, k1, xs, ys)
    coef, resid = _amplitudes(waves, values)
    rss = float(resid @ resid)
    for _ in range(steps):
        h = len(m)
        cos_c, sin_c = coef[1 : 1 + h], coef[1 + h :]
        slope = -waves.imag * cos_c + waves.real * sin_c  # d model / d phase, (n, m)
        jac = np.stack([(slope * dphase_dkx).sum(1), (slope * dphase_dky).sum(1)], 1)
        step = np.linalg.lstsq(jac, resid, rcond=None)[0]
        for _ in range(6):
            trial = _waves(family, k1 + step, xs, ys)
            trial_coef, trial_resid = _amplitudes(trial, values)
            if float(trial_resid @ trial_resid) <= rss:
                break
            step = step / 2
        else:
            break
        k1, waves, coef, resid = k1 + step, trial, trial_coef, trial_resid
        rss = float(resid @ resid)
        if np.hypot(*step) < 1e-7:
            break
    return k1, coef, rss


def _spectrum_peak(t: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, float, float]:
    """Strongest frequency (cycles/px) of the masked, windowed t in the band of the world's
    pattern fundamentals; its power and the power 90 degrees from it."""
    size = t.shape[0]
    pad = 4 * size
    window = np.outer(np.hanning(size), np.hanning(size)) * weights
    mean = (t * window).sum() / max(window.sum(), 1e-6)
    power = np.abs(np.fft.fft2((t - mean) * window, (pad, pad))) ** 2
    f = np.fft.fftfreq(pad)
    fx, fy = np.meshgrid(f, f)
    radius = np.hypot(fx, fy)
    low, high = 0.75 / (PERIOD_RANGE[1] * size), 1.25 * math.sqrt(2) / (PERIOD_RANGE[0] * size)
    band = np.where((radius >= low) & (radius <= high), power, 0.0)
    iy, ix = np.unravel_index(int(band.argmax()), band.shape)
    k1 = np.array([fx[iy, ix], fy[iy, ix]])
    turned = np.round(np.array([-k1[1], k1[0]]) * pad).astype(int)
    around = [
        power[(turned[1] + dy) % pad, (turned[0] + dx) % pad]
        for dy in (-1, 0, 1)
        for dx in (-1, 0, 1)
    ]
    return k1, float(power[iy, ix]), float(max(around))


def fit_pattern(t: np.ndarray, weights: np.ndarray) -> PatternFit | None:
    """Fit a pattern's Fourier model to a shade-coverage image t (H, W) on the pixels
    where `weights` is True; None when there is no periodic pattern.

    The strongest peak of the windowed spectrum is the fundamental k1; a peak of similar
    power at k1 turned 90 degrees makes a grid (checkered or dotted), none a striped
    pattern. k1 is then refined by minimising the least-squares residual of the model
    (its harmonics, `_HARMONICS`) over the background pixels only, so the masked-out
    object biases neither the frequency nor the phases.
    """
    size = t.shape[0]
    if weights.sum() < 0.2 * t.size or t[weights].std() < PATTERN_MIN_STD:
        return None
    k1, p1, p2 = _spectrum_peak(t, weights)
    family = "grid" if p2 >= GRID_MIN_POWER * p1 else "striped"
    xs, ys = _centred_grid(size)
    xs, ys, values = xs[weights], ys[weights], t[weights].astype(np.float64)
    k1, coef, rss = _refine_frequency(family, k1, xs, ys, values)
    r2 = 1.0 - rss / float(((values - values.mean()) ** 2).sum())
    if r2 < PATTERN_MIN_R2:
        return None
    return PatternFit(family, (float(k1[0]), float(k1[1])), coef, r2, size)


def _phase_at_origin(fit: PatternFit, k: np.ndarray) -> float:
    """Phase phi (radians) of the model's component at frequency k (one of its harmonics or
    its negative), as R cos(2 pi k.x - phi) in image coordinates."""
    freqs = _frequencies(fit.family, fit.k1)
    m = len(freqs)
    gaps = np.concatenate([np.hypot(*(freqs - k).T), np.hypot(*(freqs + k).T)])
    j = int(gaps.argmin())
    sign = 1.0 if j < m else -1.0
    j %= m
    centre = (fit.size - 1) / 2
    at_centre = math.atan2(sign * fit.coef[1 + m + j], fit.coef[1 + j])
    return at_centre + 2 * math.pi * (k[0] + k[1]) * centre


def pattern_parameters(fit: PatternFit) -> tuple[str, float, float, tuple[float, float]]:
    """(kind, angle_deg, period_px, phase) of a fitted pattern, in `Scene`'s conventions.

    striped: k1 is across the stripes (angle mod 180, period 1/|k1|); t = 1/2 - (2/pi)
    sin(2 pi u) + ..., so the phase of k1 gives u0. checkered: the fundamentals are the
    cell grid's diagonals k_u +- k_v (angle = their direction - 45 mod 90, period
    sqrt(2)/|k1|); t = 1/2 + (4/pi^2) [cos 2pi(u+v) - cos 2pi(u-v)] + ..., so their
    phases give u0 + v0 and u0 - v0. dotted: the fundamentals are k_u and k_v (period
    1/|k1|), each a cosine peaking on the dots' centres. Dotted and checkered are told
    apart by the mean shade coverage (the model's constant: 0.28 and 0.5).
    """
    k1 = np.asarray(fit.k1)
    direction = math.degrees(math.atan2(k1[1], k1[0]))
    length = float(np.hypot(*k1))
    if fit.family == "striped":
        angle = _wrap(direction, 180.0)
        u0 = (_phase_at_origin(fit, _unit(angle) * length) + math.pi / 2) / (2 * math.pi)
        return "striped", angle, 1.0 / length, (_wrap(u0, 1.0), 0.0)
    if fit.coef[0] < DOTTED_MAX_MEAN:
        angle = _wrap(direction, 90.0)
        u0 = _phase_at_origin(fit, _unit(angle) * length) / (2 * math.pi)
        v0 = _phase_at_origin(fit, _unit(angle + 90.0) * length) / (2 * math.pi)
        return "dotted", angle, 1.0 / length, (_wrap(u0, 1.0), _wrap(v0, 1.0))
    angle = _wrap(direction - 45.0, 90.0)
    period = math.sqrt(2) / length
    k_u, k_v = _unit(angle) / period, _unit(angle + 90.0) / period
    plus = _phase_at_origin(fit, k_u + k_v) / (2 * math.pi)
    minus = (_phase_at_origin(fit, k_u - k_v) - math.pi) / (2 * math.pi)
    u0, v0 = _wrap((plus + minus) / 2, 1.0), _wrap((plus - minus) / 2, 1.0)
    if u0 >= 0.5:  # the same checkerboard, half a period on along both axes
        u0, v0 = u0 - 0.5, _wrap(v0 + 0.5, 1.0)
    return "checkered", angle, period, (u0, v0)


def _wrap(value: float, period: float) -> float:
    """value modulo period, in [0, period) (float % can return period itself)."""
    out = value % period
    return 0.0 if out >= period else float(out)


def _unit(angle_deg: float) -> np.ndarray:
    a = math.radians(angle_deg)
    return np.array([math.cos(a), math.sin(a)])


def pattern_offset(
    angle_deg: float, period: float, phase: tuple[float, float]
) -> tuple[float, float]:
    """An offset (px) with the given phase: the inverse of `world.pattern_phase`."""
    o = period * (phase[0] * _unit(angle_deg) + phase[1] * _unit(angle_deg + 90.0))
    return float(o[0]), float(o[1])


def _drawn_coverage(
    kind: str,
    angle: float,
    period: float,
    phase: tuple[float, float],
    t: np.ndarray,
    weights: np.ndarray,
) -> np.ndarray:
    """The world's drawing of a pattern with these parameters (shade coverage, H x W),
    blurred by the Gaussian of `_BLUR_SIGMAS` that best matches t on `weights`."""
    import cv2

    scene = Scene(
        "circle", COLORS[0], COLORS[1], (0.0, 0.0), 1.0, t.shape[0],
        pattern=kind, pattern_angle_deg=angle, pattern_period=period,
        pattern_offset=pattern_offset(angle, period, phase),
    )
    sharp = pattern_coverage(scene)
    candidates = [sharp if s == 0 else cv2.GaussianBlur(sharp, (0, 0), s) for s in _BLUR_SIGMAS]
    errors = [float(((c - t)[weights] ** 2).sum()) for c in candidates]
    return candidates[int(np.argmin(errors))]


# ----------------------------------------------------------------------------- measuring it

#: Tolerances of `score_v2`: orientation (degrees, modulo the pattern's symmetry), period
#: (relative), phase (periods, circular), pan (px), as in `tests/test_shapes_v2.py`.
ANGLE_TOLERANCE_DEG = 3.0
PERIOD_TOLERANCE = 0.05
PHASE_TOLERANCE = 0.08
SHIFT_TOLERANCE = 0.25


def degrade(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A (3, H, W) image blurred (3x3 Gaussian, sigma 0.8), with N(0, 0.03) noise, clipped:
    the degradation of `tests/test_shapes.py::test_detector_tolerates_noise_and_blur`."""
    import cv2

    hwc = cv2.GaussianBlur(image.transpose(1, 2, 0), (3, 3), 0.8)
    hwc = hwc + rng.normal(0, 0.03, hwc.shape).astype(np.float32)
    return np.ascontiguousarray(np.clip(hwc, 0, 1).transpose(2, 0, 1))


def _circular(a: float, b: float, period: float) -> float:
    d = (a - b) % period
    return min(d, period - d)


def phase_error(scene: Scene, found: DetectionV2) -> float:
    """The detected phase's circular error (periods) against a patterned scene's.

    The scene's phase is re-expressed at the orientation equivalent to the detected one
    (an orientation + one symmetry turn draws stripes and checkerboards with half a period
    of phase more, dots the same); stripes are compared across only, checkerboards modulo
    their half-period shift along both axes. 1.0 when the kinds differ.
    """
    if found.pattern != scene.pattern or scene.pattern == "plain":
        return 1.0
    sym = PATTERN_SYMMETRY_DEG[scene.pattern]
    turns = round((found.pattern_angle_deg - scene.pattern_angle_deg) / sym)
    u, v = pattern_phase(
        scene.pattern_offset, scene.pattern_angle_deg + turns * sym, scene.pattern_period
    )
    if scene.pattern != "dotted" and turns % 2:
        u += 0.5
    got_u, got_v = found.pattern_phase
    if scene.pattern == "striped":
        return _circular(u, got_u, 1.0)
    shifts = (0.0, 0.5) if scene.pattern == "checkered" else (0.0,)
    return min(
        max(_circular(u + h, got_u, 1.0), _circular(v + h, got_v, 1.0)) for h in shifts
    )


def score_v2(scene: Scene, mask: np.ndarray, found: DetectionV2) -> dict[str, bool]:
    """Which fields of a detection match a scene's ground truth (`mask`: its true mask).

    The object's as `tests/test_shapes.py` scores v1 (centroid within 0.5 px, area within
    5 %, mask IoU >= 0.9); orientation, period and phase within the module's tolerances
    (only for patterned scenes: they are absent from the result on plain ones).
    """
    ys, xs = np.nonzero(mask)
    right = {
        "pattern": found.pattern == scene.pattern,
        "bg": found.bg == scene.bg,
        "fg": found.fg == scene.fg,
        "shape": found.shape == scene.shape,
        "centroid": bool(
            np.hypot(found.centroid[0] - xs.mean(), found.centroid[1] - ys.mean()) <= 0.5
        ),
        "area": bool(abs(found.area - mask.sum()) <= 0.05 * mask.sum()),
        "mask": bool((found.mask & mask).sum() >= 0.9 * (found.mask | mask).sum()),
    }
    if scene.pattern != "plain":
        sym = PATTERN_SYMMETRY_DEG[scene.pattern]
        angle = _circular(found.pattern_angle_deg, scene.pattern_angle_deg, sym)
        period = abs(found.pattern_period - scene.pattern_period) / scene.pattern_period
        right["angle"] = bool(angle <= ANGLE_TOLERANCE_DEG)
        right["period"] = bool(period <= PERIOD_TOLERANCE)
        right["phase"] = bool(phase_error(scene, found) <= PHASE_TOLERANCE)
    return right


def check_v2(count: int, seed: int = 0, degraded: bool = False) -> dict[str, float]:
    """Fraction of `count` ground-truth scenes of `world.sample_scene_v2` (pattern kinds
    uniform) whose every field `score_v2` finds right; orientation, period and phase are
    fractions of the patterned scenes. `degraded`: frames pass through `degrade` first."""
    rng, noise = np.random.default_rng(seed), np.random.default_rng(seed + 1)
    totals: dict[str, list[bool]] = {}
    for _ in range(count):
        scene = sample_scene_v2(rng)
        image, mask = render(scene)
        found = detect_v2(degrade(image, noise) if degraded else image)
        for field, ok in score_v2(scene, mask, found).items():
            totals.setdefault(field, []).append(ok)
    return {field: float(np.mean(oks)) for field, oks in totals.items()}


def shift_error(
    video: Video, frame: int = 0, degraded_by: np.random.Generator | None = None
) -> float:
    """|background_shift - true pan| px between `frame` and `frame + 1` of a panning video;
    for stripes only across them (the part a stripe pattern shows)."""
    frames = [video.frames[frame], video.frames[frame + 1]]
    if degraded_by is not None:
        frames = [degrade(f, degraded_by) for f in frames]
    error = np.array(background_shift(*frames)) - np.array(video.background.velocity)
    scene = video.scenes[frame]
    if scene.pattern == "striped":
        return float(abs(error @ _unit(scene.pattern_angle_deg)))
    return float(np.hypot(*error))


def check_shift(count: int, seed: int = 0, degraded: bool = False) -> float:
    """Fraction of `count` two-frame videos (striped, checkered, dotted in turn; a pan of
    0.5..2 px/frame in a random direction, a random object motion) whose pan
    `background_shift` recovers within `SHIFT_TOLERANCE` px."""
    rng, noise = np.random.default_rng(seed), np.random.default_rng(seed + 1)
    right = 0
    for i in range(count):
        scene = sample_scene_v2(rng, pattern=PATTERNS[1 + i % 3])
        pan = sample_background_motion(rng, "pan")
        video = render_video(scene, sample_motion_v2(rng), 2, pan)
        right += shift_error(video, 0, noise if degraded else None) <= SHIFT_TOLERANCE
    return right / count


def main(argv: list[str] | None = None) -> None:
    """`python -m zeroshot.shapes.detector --check 2000`: the detector's accuracy table."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--check", type=int, default=2000, help="scenes (and pans) to measure")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    rows = {
        "ground truth": check_v2(args.check, args.seed),
        "blur + noise": check_v2(args.check, args.seed, degraded=True),
    }
    fields = list(rows["ground truth"])
    print("| frames | " + " | ".join(fields) + " | pan within 0.25 px |")
    print("| --- " * (len(fields) + 2) + "|")
    for name, row in rows.items():
        pan = check_shift(args.check, args.seed, degraded=name != "ground truth")
        cells = [f"{100 * row[f]:.2f}%" for f in fields] + [f"{100 * pan:.2f}%"]
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
