"""The shapes world: one coloured shape on a plain background, as images and videos.

Everything is generated on the fly from a `numpy.random.Generator`, so a seed fixes a scene,
its caption, its pixels and its ground truth exactly. Images are float32 `(3, H, W)` in
[0, 1]; videos `(f, 3, H, W)`. Shapes are drawn anti-aliased (4x supersampling); the ground
truth mask of a pixel is "at least half of it is covered by the shape".

Coordinates are pixels of the image: x to the right, y down, pixel centres at integers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

#: Named colours (RGB, 0..255), chosen far apart so they survive the VAE and a tiny model.
PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 170, 50),
    "blue": (30, 60, 220),
    "yellow": (240, 220, 40),
    "magenta": (210, 40, 210),
    "cyan": (40, 210, 220),
    "orange": (245, 140, 20),
    "white": (245, 245, 245),
    "gray": (128, 128, 128),
    "black": (15, 15, 15),
}
COLORS: tuple[str, ...] = tuple(PALETTE)
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "ring")
MOTION_KINDS: tuple[str, ...] = ("translate", "bounce", "zoom")

#: Every word a caption can contain (the embedded model's tokenizer vocabulary).
VOCABULARY: tuple[str, ...] = ("a", "an", "on", "background") + SHAPES + COLORS


def _held_out() -> frozenset[tuple[str, str, str]]:
    combos = [(s, f, b) for s in SHAPES for f in COLORS for b in COLORS if f != b]
    combos.remove(
        ("circle", "red", "blue")
    )  # the README's example stays a training caption
    pick = np.random.default_rng(2024).choice(len(combos), size=64, replace=False)
    return frozenset(combos[i] for i in pick)


#: 64 (shape, fg, bg) combinations never shown in training; evaluation prompts come from here.
HELD_OUT: frozenset[tuple[str, str, str]] = _held_out()

#: Circumradius range of a shape, as a fraction of the image size (64 px: 7..19 px).
RADIUS_RANGE = (0.11, 0.30)
RING_INNER = 0.55  # inner radius of a ring, as a fraction of its outer radius
STAR_INNER = (
    0.5  # inner radius of the star's notches, as a fraction of its tips' radius
)
_SUPERSAMPLE = 4


@dataclass(frozen=True)
class Scene:
    """One shape: its kind, colours, centre (x, y) and circumradius, in px of a `size` image.

    `angle_deg` turns the shape clockwise about its centre (the world itself always draws
    shapes upright, angle 0; personalisation styles use it).
    """

    shape: str
    fg: str
    bg: str
    center: tuple[float, float]
    radius: float
    size: int = 64
    angle_deg: float = 0.0

    @property
    def caption(self) -> str:
        return caption(self.shape, self.fg, self.bg)


@dataclass(frozen=True)
class ShapeMotion:
    """How a scene's shape moves over a clip.

    translate: constant `velocity` px/frame (the clip is chosen so the shape stays inside).
    bounce: `velocity` px/frame, reflected at the image borders.
    zoom: the radius is multiplied by `zoom` every frame (clamped to stay inside).
    """

    kind: str = "translate"
    velocity: tuple[float, float] = (0.0, 0.0)
    zoom: float = 1.0


@dataclass(frozen=True)
class Video:
    """A rendered clip: frames `(f, 3, H, W)` float32 in [0, 1] and per-frame ground truth."""

    frames: np.ndarray  # (f, 3, H, W)
    masks: np.ndarray  # (f, H, W) bool
    centroids: np.ndarray  # (f, 2) px, (x, y) of the mask
    areas: np.ndarray  # (f,) px, mask pixel count
    scenes: tuple[Scene, ...]  # the scene of each frame
    motion: ShapeMotion

    @property
    def caption(self) -> str:
        return self.scenes[0].caption


def caption(shape: str, fg: str, bg: str) -> str:
    """'a red circle on a blue background' (with 'an' before a vowel)."""
    return f"{_article(fg)} {fg} {shape} on {_article(bg)} {bg} background"


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def parse_caption(text: str) -> tuple[str, str, str]:
    """(shape, fg, bg) of a caption written by `caption`; ValueError for anything else."""
    words = text.lower().split()
    if (
        len(words) != 7
        or words[2] not in SHAPES
        or words[1] not in PALETTE
        or words[5] not in PALETTE
        or words[3] != "on"
        or words[6] != "background"
    ):
        raise ValueError(
            f"caption {text!r} is not of the form 'a <colour> <shape> on a <colour> background'"
        )
    return words[2], words[1], words[5]


def sample_scene(
    rng: np.random.Generator,
    *,
    size: int = 64,
    shape=None,
    fg=None,
    bg=None,
    exclude=frozenset(),
) -> Scene:
    """A random scene; `shape`/`fg`/`bg` fix those parts (bg is always different from fg).

    `exclude`: (shape, fg, bg) combinations to avoid (e.g. `HELD_OUT` when training).
    """
    while True:
        s = shape if shape is not None else SHAPES[rng.integers(len(SHAPES))]
        f = fg if fg is not None else COLORS[rng.integers(len(COLORS))]
        if bg is None:
            others = [c for c in COLORS if c != f]
            b = others[rng.integers(len(others))]
        else:
            b = bg
        if (s, f, b) not in exclude or None not in (shape, fg, bg):
            break
    shape, fg, bg = s, f, b
    if shape not in SHAPES or fg not in PALETTE or bg not in PALETTE or fg == bg:
        raise ValueError(
            f"scene needs shape in {SHAPES} and two different colours of {COLORS}"
        )
    radius = float(rng.uniform(*RADIUS_RANGE) * size)
    margin = radius + 1.0
    cx, cy = rng.uniform(margin, size - 1 - margin, size=2)
    return Scene(shape, fg, bg, (float(cx), float(cy)), radius, size)


def distinct_captions(count: int, seed: int) -> list[str]:
    """`count` distinct captions of scenes drawn with a fixed seed (evaluation prompts)."""
    rng = np.random.default_rng(seed)
    out: list[str] = []
    while len(out) < count:
        text = sample_scene(rng).caption
        if text not in out:
            out.append(text)
    return out


def sample_motion(
    rng: np.random.Generator, kind: str | None = None, *, size: int = 64
) -> ShapeMotion:
    """A random motion of the given kind (random kind if None); speeds 1..3 px/frame at 64 px."""
    kind = kind if kind is not None else MOTION_KINDS[rng.integers(len(MOTION_KINDS))]
    if kind not in MOTION_KINDS:
        raise ValueError(f"motion kind {kind!r} is not one of {MOTION_KINDS}")
    if kind == "zoom":
        factor = float(rng.uniform(1.04, 1.10))
        return ShapeMotion("zoom", zoom=factor if rng.random() < 0.5 else 1.0 / factor)
    speed = rng.uniform(1.0, 3.0) * size / 64
    angle = rng.uniform(0, 2 * math.pi)
    return ShapeMotion(
        kind, velocity=(float(speed * math.cos(angle)), float(speed * math.sin(angle)))
    )


def _outline(shape: str, cx: float, cy: float, r: float) -> list[np.ndarray]:
    """Polygons (float px) of a shape; the first is filled, the rest are holes."""
    if shape in ("circle", "ring"):
        t = np.linspace(0, 2 * np.pi, 96, endpoint=False)
        outer = np.stack([cx + r * np.cos(t), cy + r * np.sin(t)], 1)
        if shape == "circle":
            return [outer]
        ri = r * RING_INNER
        return [outer, np.stack([cx + ri * np.cos(t), cy + ri * np.sin(t)], 1)]
    if shape == "square":
        h = r / math.sqrt(2)
        return [
            np.array(
                [[cx - h, cy - h], [cx + h, cy - h], [cx + h, cy + h], [cx - h, cy + h]]
            )
        ]
    if shape == "triangle":
        # Upright equilateral triangle centred on its centroid.
        t = -np.pi / 2 + np.arange(3) * 2 * np.pi / 3
        return [np.stack([cx + r * np.cos(t), cy + r * np.sin(t)], 1)]
    if shape == "star":
        t = -np.pi / 2 + np.arange(10) * np.pi / 5
        rr = np.where(np.arange(10) % 2 == 0, r, r * STAR_INNER)
        return [np.stack([cx + rr * np.cos(t), cy + rr * np.sin(t)], 1)]
    raise ValueError(f"shape {shape!r} is not one of {SHAPES}")


def coverage(scene: Scene) -> np.ndarray:
    """Fraction of each pixel covered by the shape, float32 (H, W) in [0, 1]."""
    import cv2

    s = _SUPERSAMPLE
    big = np.zeros((scene.size * s, scene.size * s), np.uint8)
    polys = _outline(scene.shape, *scene.center, scene.radius)
    if scene.angle_deg:
        a = math.radians(scene.angle_deg)
        turn = np.array([[math.cos(a), math.sin(a)], [-math.sin(a), math.cos(a)]])
        c = np.array(scene.center)
        polys = [(p - c) @ turn + c for p in polys]
    # Pixel centre x maps to supersampled centre x*s + (s-1)/2; cv2 fixed point (shift=4).
    to_fixed = [np.round(((p * s) + (s - 1) / 2) * 16).astype(np.int32) for p in polys]
    cv2.fillPoly(big, to_fixed[:1], 255, lineType=cv2.LINE_8, shift=4)
    if len(to_fixed) > 1:
        cv2.fillPoly(big, to_fixed[1:], 0, lineType=cv2.LINE_8, shift=4)
    cov = big.reshape(scene.size, s, scene.size, s).mean(axis=(1, 3)) / 255.0
    return cov.astype(np.float32)


def _compose(scene: Scene, cov: np.ndarray) -> np.ndarray:
    fg = np.array(PALETTE[scene.fg], np.float32)[:, None, None] / 255.0
    bg = np.array(PALETTE[scene.bg], np.float32)[:, None, None] / 255.0
    return (bg + (fg - bg) * cov[None]).astype(np.float32)


def render(scene: Scene) -> tuple[np.ndarray, np.ndarray]:
    """(image (3, H, W) float32 in [0, 1], mask (H, W) bool) of a scene."""
    cov = coverage(scene)
    return _compose(scene, cov), cov >= 0.5


def render_image(scene: Scene, size: int | None = None) -> np.ndarray:
    """The scene as a float32 (3, H, W) image in [0, 1]; `size` rescales the scene."""
    if size is not None and size != scene.size:
        k = size / scene.size
        scene = replace(
            scene,
            center=(scene.center[0] * k, scene.center[1] * k),
            radius=scene.radius * k,
            size=size,
        )
    return render(scene)[0]


def scene_at(scene: Scene, motion: ShapeMotion, frame: int) -> Scene:
    """The scene after `frame` frames of `motion` (frame 0 is `scene`)."""
    size = scene.size
    if motion.kind == "zoom":
        lo, hi = (
            0.06 * size,
            min(
                scene.center[0],
                scene.center[1],
                size - 1 - scene.center[0],
                size - 1 - scene.center[1],
            )
            - 1.0,
        )
        radius = float(np.clip(scene.radius * motion.zoom**frame, lo, max(lo, hi)))
        return replace(scene, radius=radius)
    dx, dy = motion.velocity
    x, y = scene.center[0] + dx * frame, scene.center[1] + dy * frame
    if motion.kind == "bounce":
        lo, hi = scene.radius + 1.0, size - 2.0 - scene.radius
        x, y = _reflect(x, lo, hi), _reflect(y, lo, hi)
    elif motion.kind != "translate":
        raise ValueError(f"motion kind {motion.kind!r} is not one of {MOTION_KINDS}")
    return replace(scene, center=(float(x), float(y)))


def _reflect(v: float, lo: float, hi: float) -> float:
    span = hi - lo
    if span <= 0:
        return lo
    u = (v - lo) % (2 * span)
    return lo + (u if u <= span else 2 * span - u)


def fit_translation(scene: Scene, motion: ShapeMotion, num_frames: int) -> Scene:
    """Move the start of a translating scene so the whole path stays inside the image."""
    if motion.kind != "translate":
        return scene
    size, m = scene.size, scene.radius + 1.0
    start = []
    for c, v in zip(scene.center, motion.velocity):
        end_shift = v * (num_frames - 1)
        lo, hi = m - min(0.0, end_shift), size - 1 - m - max(0.0, end_shift)
        start.append(
            float(np.clip(c, lo, hi)) if lo <= hi else (size - 1) / 2 - end_shift / 2
        )
    return replace(scene, center=(start[0], start[1]))


def render_video(scene: Scene, motion: ShapeMotion, num_frames: int) -> Video:
    """Render `num_frames` frames of `scene` under `motion`, with per-frame ground truth.

    A translating scene is first shifted (`fit_translation`) so it stays inside the frame.
    """
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    scene = fit_translation(scene, motion, num_frames)
    scenes = tuple(scene_at(scene, motion, k) for k in range(num_frames))
    frames, masks = zip(*(render(s) for s in scenes))
    masks = np.stack(masks)
    ys, xs = np.mgrid[: scene.size, : scene.size]
    areas = masks.sum(axis=(1, 2)).astype(np.float64)
    cx = (masks * xs).sum(axis=(1, 2)) / np.maximum(areas, 1)
    cy = (masks * ys).sum(axis=(1, 2)) / np.maximum(areas, 1)
    return Video(np.stack(frames), masks, np.stack([cx, cy], 1), areas, scenes, motion)


def sample_video(
    rng: np.random.Generator,
    num_frames: int = 8,
    *,
    size: int = 64,
    kind: str | None = None,
) -> Video:
    """A random scene under a random motion, rendered."""
    scene = sample_scene(rng, size=size)
    return render_video(scene, sample_motion(rng, kind, size=size), num_frames)


def sample_batch(
    rng: np.random.Generator, n: int, *, size: int = 64, exclude=frozenset()
) -> tuple[np.ndarray, list[str]]:
    """n random images (n, 3, H, W) float32 and their captions."""
    scenes = [sample_scene(rng, size=size, exclude=exclude) for _ in range(n)]
    return np.stack([render(s)[0] for s in scenes]), [s.caption for s in scenes]
