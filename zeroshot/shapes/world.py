"""The shapes world: one coloured shape on a plain or patterned background, as images and videos.

Version 1 (the first embedded model) has plain backgrounds only. Version 2 adds patterned
backgrounds (`PATTERNS`: striped, checkered, dotted), drawn in the background colour and a
second shade of it (`shade`). The pattern's kind and colour are in the caption ("a red
circle on a blue striped background"); its orientation, period and offset are free (not in
the caption), so a per-frame video may change them and a consistent one keeps them. v2
videos move the object (`ShapeMotion`, with curved paths) and the background (a camera pan
of the pattern, `BackgroundMotion`) separately, with ground truth for both.

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
#: v2 adds curved paths.
MOTION_KINDS_V2: tuple[str, ...] = MOTION_KINDS + ("curve",)
BACKGROUND_KINDS: tuple[str, ...] = ("still", "pan")

#: Every word a caption can contain (the embedded model's tokenizer vocabulary).
VOCABULARY: tuple[str, ...] = ("a", "an", "on", "background") + SHAPES + COLORS
#: Background patterns of world v2; "plain" is v1's flat background (and caption).
PATTERNS: tuple[str, ...] = ("plain", "striped", "checkered", "dotted")
#: Every word of a v2 caption.
VOCABULARY_V2: tuple[str, ...] = VOCABULARY + PATTERNS[1:]
#: Pattern period range as a fraction of the image size (64 px: 8..16 px).
PERIOD_RANGE = (0.125, 0.25)
#: The pattern's second shade: this fraction of the colour's brightness; colours darker
#: than `_DARK` luminance (black) get a lighter shade instead (40 % of the way to white).
SHADE_BRIGHTNESS = 0.6
_DARK = 60.0
#: Dot radius as a fraction of the period.
DOT_RADIUS = 0.3
#: Orientations are unique modulo this many degrees (stripes 180, grids 90).
PATTERN_SYMMETRY_DEG = {"plain": 360.0, "striped": 180.0, "checkered": 90.0, "dotted": 90.0}


def shade(color: str) -> tuple[float, float, float]:
    """RGB (0..255) of the pattern's second shade of a palette colour."""
    c = np.array(PALETTE[color], np.float64)
    luminance = 0.299 * c[0] + 0.587 * c[1] + 0.114 * c[2]
    out = c * SHADE_BRIGHTNESS if luminance >= _DARK else c + 0.4 * (255.0 - c)
    return tuple(float(v) for v in out)


def _too_close_to_shade(fg: str, bg: str) -> bool:
    """A foreground colour the detector cannot tell from the background's shade."""
    d = np.linalg.norm(np.array(PALETTE[fg], np.float64) - np.array(shade(bg)))
    return bool(d < 64.0)


#: (fg, bg) pairs never drawn on a patterned background (gray on white or black stripes).
PATTERN_EXCLUDED: frozenset[tuple[str, str]] = frozenset(
    (f, b) for f in COLORS for b in COLORS if f != b and _too_close_to_shade(f, b)
)


def _held_out() -> frozenset[tuple[str, str, str]]:
    combos = [(s, f, b) for s in SHAPES for f in COLORS for b in COLORS if f != b]
    combos.remove(
        ("circle", "red", "blue")
    )  # the README's example stays a training caption
    pick = np.random.default_rng(2024).choice(len(combos), size=64, replace=False)
    return frozenset(combos[i] for i in pick)


#: 64 (shape, fg, bg) combinations never shown in training; evaluation prompts come from here.
HELD_OUT: frozenset[tuple[str, str, str]] = _held_out()


def _held_out_v2() -> frozenset[tuple[str, str, str, str]]:
    plain = {(s, f, b, "plain") for s, f, b in HELD_OUT}
    patterned = [
        (s, f, b, p)
        for p in PATTERNS[1:]
        for s in SHAPES
        for f in COLORS
        for b in COLORS
        if f != b and (f, b) not in PATTERN_EXCLUDED
    ]
    pick = np.random.default_rng(2026).choice(len(patterned), size=96, replace=False)
    return frozenset(plain | {patterned[i] for i in pick})


#: World v2's held-out (shape, fg, bg, pattern) combinations: v1's 64 on plain backgrounds
#: (so v1 and v2 are compared on the same unseen captions) and 96 patterned ones.
HELD_OUT_V2: frozenset[tuple[str, str, str, str]] = _held_out_v2()

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
    #: v2 background: kind, orientation (degrees, clockwise from the x axis), period (px)
    #: and offset (px): the pattern is drawn shifted by `pattern_offset`, so a camera pan
    #: of v px/frame adds v to it every frame.
    pattern: str = "plain"
    pattern_angle_deg: float = 0.0
    pattern_period: float = 12.0
    pattern_offset: tuple[float, float] = (0.0, 0.0)

    @property
    def caption(self) -> str:
        return caption(self.shape, self.fg, self.bg, self.pattern)

    @property
    def pattern_phase(self) -> tuple[float, float]:
        """The offset in periods along the pattern's two axes, each in [0, 1)."""
        return pattern_phase(self.pattern_offset, self.pattern_angle_deg, self.pattern_period)


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
    #: curve: the velocity turns by this many degrees every frame (clockwise on screen).
    turn_deg: float = 0.0


@dataclass(frozen=True)
class BackgroundMotion:
    """How a v2 background moves: still, or a camera pan of `velocity` px/frame."""

    kind: str = "still"
    velocity: tuple[float, float] = (0.0, 0.0)


@dataclass(frozen=True)
class Video:
    """A rendered clip: frames `(f, 3, H, W)` float32 in [0, 1] and per-frame ground truth."""

    frames: np.ndarray  # (f, 3, H, W)
    masks: np.ndarray  # (f, H, W) bool
    centroids: np.ndarray  # (f, 2) px, (x, y) of the mask
    areas: np.ndarray  # (f,) px, mask pixel count
    scenes: tuple[Scene, ...]  # the scene of each frame
    motion: ShapeMotion
    background: BackgroundMotion = BackgroundMotion()

    @property
    def caption(self) -> str:
        return self.scenes[0].caption

    def flow(self, frame: int) -> np.ndarray:
        """Ground-truth flow (H, W, 2) px from `frame` to `frame + 1`, (dx, dy) per pixel.

        Object pixels (the mask of `frame`) move with the object (translation plus the
        change of radius about its centre); every other pixel with the background.
        """
        a, b = self.scenes[frame], self.scenes[frame + 1]
        size = a.size
        ys, xs = np.mgrid[:size, :size].astype(np.float64)
        k = b.radius / a.radius
        obj = np.stack(
            [b.center[0] + k * (xs - a.center[0]) - xs, b.center[1] + k * (ys - a.center[1]) - ys], -1
        )
        bg = np.broadcast_to(np.array(self.background.velocity, np.float64), obj.shape)
        return np.where(self.masks[frame][..., None], obj, bg).astype(np.float32)


def caption(shape: str, fg: str, bg: str, pattern: str = "plain") -> str:
    """'a red circle on a blue background' (with 'an' before a vowel); v2 patterns add a
    word: 'a red circle on a blue striped background'."""
    kind = "" if pattern == "plain" else f" {pattern}"
    return f"{_article(fg)} {fg} {shape} on {_article(bg)} {bg}{kind} background"


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def parse_caption(text: str) -> tuple[str, str, str]:
    """(shape, fg, bg) of a caption written by `caption`; ValueError for anything else."""
    return parse_caption_v2(text)[:3]


def parse_caption_v2(text: str) -> tuple[str, str, str, str]:
    """(shape, fg, bg, pattern) of a v1 or v2 caption; ValueError for anything else."""
    words = text.lower().split()
    pattern = "plain"
    if len(words) == 8 and words[6] in PATTERNS[1:]:
        pattern = words.pop(6)
    if (
        len(words) != 7
        or words[2] not in SHAPES
        or words[1] not in PALETTE
        or words[5] not in PALETTE
        or words[3] != "on"
        or words[6] != "background"
    ):
        raise ValueError(
            f"caption {text!r} is not of the form 'a <colour> <shape> on a <colour> [<pattern>] background'"
        )
    return words[2], words[1], words[5], pattern


def pattern_phase(offset, angle_deg: float, period: float) -> tuple[float, float]:
    """An offset (px) in periods along the pattern's axes (u along angle, v across), in [0, 1)."""
    a = math.radians(angle_deg)
    u = offset[0] * math.cos(a) + offset[1] * math.sin(a)
    v = -offset[0] * math.sin(a) + offset[1] * math.cos(a)
    return (u / period) % 1.0, (v / period) % 1.0


def sample_pattern(rng: np.random.Generator, kind: str, size: int = 64) -> dict:
    """Random free parameters of a pattern (orientation, period, offset) as Scene fields."""
    if kind not in PATTERNS:
        raise ValueError(f"pattern {kind!r} is not one of {PATTERNS}")
    if kind == "plain":
        return {"pattern": "plain"}
    period = float(rng.uniform(*PERIOD_RANGE) * size)
    return {
        "pattern": kind,
        "pattern_angle_deg": float(rng.uniform(0.0, PATTERN_SYMMETRY_DEG[kind])),
        "pattern_period": period,
        "pattern_offset": (float(rng.uniform(0, period)), float(rng.uniform(0, period))),
    }


def sample_scene_v2(
    rng: np.random.Generator,
    *,
    size: int = 64,
    pattern=None,
    exclude=frozenset(),
    **fixed,
) -> Scene:
    """A random v2 scene: a uniformly drawn pattern kind (or `pattern`) and a v1 object.

    `exclude`: (shape, fg, bg, pattern) combinations to avoid (`HELD_OUT_V2` when training);
    `fixed`: shape/fg/bg as for `sample_scene`.
    """
    kind = pattern if pattern is not None else PATTERNS[rng.integers(len(PATTERNS))]
    if kind not in PATTERNS:
        raise ValueError(f"pattern {kind!r} is not one of {PATTERNS}")
    while True:
        scene = sample_scene(rng, size=size, **fixed)
        combo = (scene.shape, scene.fg, scene.bg, kind)
        allowed = kind == "plain" or (scene.fg, scene.bg) not in PATTERN_EXCLUDED
        if allowed and combo not in exclude:
            break
        if len(fixed) == 3:
            if not allowed:
                raise ValueError(
                    f"a {scene.fg} shape is not drawn on a {scene.bg} {kind} background "
                    "(too close to its shade)"
                )
            break
    return replace(scene, **sample_pattern(rng, kind, size))


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


def distinct_captions(count: int, seed: int, world: str = "v1") -> list[str]:
    """`count` distinct captions of scenes drawn with a fixed seed (evaluation prompts):
    v1 scenes, or (`world="v2"`) v2 scenes on patterned backgrounds only (a plain one has
    no background to measure)."""
    if world not in ("v1", "v2"):
        raise ValueError(f"world must be 'v1' or 'v2', got {world!r}")
    rng = np.random.default_rng(seed)
    out: list[str] = []
    while len(out) < count:
        if world == "v2":
            text = sample_scene_v2(rng, pattern=PATTERNS[1 + rng.integers(len(PATTERNS) - 1)]).caption
        else:
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


def pattern_coverage(scene: Scene) -> np.ndarray:
    """Fraction of each pixel drawn in the background's shade, float32 (H, W) in [0, 1].

    In pattern coordinates (u, v) = rotation by -angle of (pixel - offset): stripes shade
    the second half of every period of u, a checkerboard alternates cells of half a period,
    dots are discs of `DOT_RADIUS` periods on a square lattice of one period.
    """
    if scene.pattern == "plain":
        return np.zeros((scene.size, scene.size), np.float32)
    s = _SUPERSAMPLE
    grid = (np.arange(scene.size * s) + 0.5) / s - 0.5  # supersample centres in px
    x, y = np.meshgrid(grid - scene.pattern_offset[0], grid - scene.pattern_offset[1])
    a = math.radians(scene.pattern_angle_deg)
    p = scene.pattern_period
    u = (x * math.cos(a) + y * math.sin(a)) / p
    v = (-x * math.sin(a) + y * math.cos(a)) / p
    if scene.pattern == "striped":
        on = (u % 1.0) >= 0.5
    elif scene.pattern == "checkered":
        on = (np.floor(2 * u) + np.floor(2 * v)) % 2 == 1
    elif scene.pattern == "dotted":
        on = (u - np.round(u)) ** 2 + (v - np.round(v)) ** 2 < DOT_RADIUS**2
    else:
        raise ValueError(f"pattern {scene.pattern!r} is not one of {PATTERNS}")
    cov = on.astype(np.float32).reshape(scene.size, s, scene.size, s).mean(axis=(1, 3))
    return cov


def _compose(scene: Scene, cov: np.ndarray) -> np.ndarray:
    fg = np.array(PALETTE[scene.fg], np.float32)[:, None, None] / 255.0
    bg = np.array(PALETTE[scene.bg], np.float32)[:, None, None] / 255.0
    if scene.pattern != "plain":
        dark = np.array(shade(scene.bg), np.float32)[:, None, None] / 255.0
        bg = bg + (dark - bg) * pattern_coverage(scene)[None]
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
            pattern_period=scene.pattern_period * k,
            pattern_offset=(scene.pattern_offset[0] * k, scene.pattern_offset[1] * k),
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
    if motion.kind == "curve":
        dx, dy = _curve_offset(motion, frame)
        return replace(scene, center=(scene.center[0] + dx, scene.center[1] + dy))
    dx, dy = motion.velocity
    x, y = scene.center[0] + dx * frame, scene.center[1] + dy * frame
    if motion.kind == "bounce":
        lo, hi = scene.radius + 1.0, size - 2.0 - scene.radius
        x, y = _reflect(x, lo, hi), _reflect(y, lo, hi)
    elif motion.kind != "translate":
        raise ValueError(f"motion kind {motion.kind!r} is not one of {MOTION_KINDS_V2}")
    return replace(scene, center=(float(x), float(y)))


def _curve_offset(motion: ShapeMotion, frame: int) -> tuple[float, float]:
    """Displacement after `frame` frames of a velocity turning `turn_deg` per frame."""
    a = math.radians(motion.turn_deg) * np.arange(frame)
    vx, vy = motion.velocity
    dx = float(np.sum(vx * np.cos(a) - vy * np.sin(a)))
    dy = float(np.sum(vx * np.sin(a) + vy * np.cos(a)))
    return dx, dy


def background_at(scene: Scene, background: BackgroundMotion, frame: int) -> Scene:
    """The scene with its pattern moved by `frame` frames of a camera pan."""
    if background.kind not in BACKGROUND_KINDS:
        raise ValueError(f"background motion {background.kind!r} is not one of {BACKGROUND_KINDS}")
    if background.kind == "still":
        return scene
    ox, oy = scene.pattern_offset
    vx, vy = background.velocity
    return replace(scene, pattern_offset=(ox + vx * frame, oy + vy * frame))


def _reflect(v: float, lo: float, hi: float) -> float:
    span = hi - lo
    if span <= 0:
        return lo
    u = (v - lo) % (2 * span)
    return lo + (u if u <= span else 2 * span - u)


def fit_translation(scene: Scene, motion: ShapeMotion, num_frames: int) -> Scene:
    """Move the start of a translating (or curving) scene so the whole path stays inside."""
    if motion.kind not in ("translate", "curve"):
        return scene
    size, m = scene.size, scene.radius + 1.0
    start = []
    path = np.array([_curve_offset(motion, k) for k in range(num_frames)])
    if motion.kind == "translate":
        path = np.outer(np.arange(num_frames), motion.velocity)
    for c, low, high in zip(scene.center, path.min(0), path.max(0)):
        end_shift = high + low
        lo, hi = m - low, size - 1 - m - high
        start.append(
            float(np.clip(c, lo, hi)) if lo <= hi else (size - 1) / 2 - end_shift / 2
        )
    return replace(scene, center=(start[0], start[1]))


def render_video(
    scene: Scene,
    motion: ShapeMotion,
    num_frames: int,
    background: BackgroundMotion = BackgroundMotion(),
) -> Video:
    """Render `num_frames` frames of `scene` under `motion` (and a v2 `background`
    motion), with per-frame ground truth.

    A translating or curving scene is first shifted (`fit_translation`) so it stays inside.
    """
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    scene = fit_translation(scene, motion, num_frames)
    scenes = tuple(
        background_at(scene_at(scene, motion, k), background, k) for k in range(num_frames)
    )
    frames, masks = zip(*(render(s) for s in scenes))
    masks = np.stack(masks)
    ys, xs = np.mgrid[: scene.size, : scene.size]
    areas = masks.sum(axis=(1, 2)).astype(np.float64)
    cx = (masks * xs).sum(axis=(1, 2)) / np.maximum(areas, 1)
    cy = (masks * ys).sum(axis=(1, 2)) / np.maximum(areas, 1)
    return Video(
        np.stack(frames), masks, np.stack([cx, cy], 1), areas, scenes, motion, background
    )


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


def sample_motion_v2(
    rng: np.random.Generator, kind: str | None = None, *, size: int = 64
) -> ShapeMotion:
    """A random v2 object motion: v1's kinds plus curves (1..3 px/frame, turning 10..30 deg/frame)."""
    kind = kind if kind is not None else MOTION_KINDS_V2[rng.integers(len(MOTION_KINDS_V2))]
    if kind != "curve":
        return sample_motion(rng, kind, size=size)
    base = sample_motion(rng, "translate", size=size)
    turn = float(rng.uniform(10.0, 30.0)) * (1 if rng.random() < 0.5 else -1)
    return ShapeMotion("curve", velocity=base.velocity, turn_deg=turn)


def sample_background_motion(
    rng: np.random.Generator, kind: str | None = None, *, size: int = 64
) -> BackgroundMotion:
    """Still (half of the time) or a camera pan of 0.5..2 px/frame in a random direction."""
    kind = kind if kind is not None else BACKGROUND_KINDS[rng.integers(len(BACKGROUND_KINDS))]
    if kind not in BACKGROUND_KINDS:
        raise ValueError(f"background motion {kind!r} is not one of {BACKGROUND_KINDS}")
    if kind == "still":
        return BackgroundMotion()
    speed = rng.uniform(0.5, 2.0) * size / 64
    angle = rng.uniform(0, 2 * math.pi)
    return BackgroundMotion("pan", (float(speed * math.cos(angle)), float(speed * math.sin(angle))))


def sample_video_v2(
    rng: np.random.Generator,
    num_frames: int = 8,
    *,
    size: int = 64,
    kind: str | None = None,
    background: str | None = None,
    exclude=frozenset(),
) -> Video:
    """A random v2 scene under random object and background motions, rendered."""
    scene = sample_scene_v2(rng, size=size, exclude=exclude)
    motion = sample_motion_v2(rng, kind, size=size)
    bg_motion = sample_background_motion(rng, background, size=size)
    if scene.pattern == "plain":
        bg_motion = BackgroundMotion()  # a plain background shows no pan
    return render_video(scene, motion, num_frames, bg_motion)


def sample_batch_v2(
    rng: np.random.Generator, n: int, *, size: int = 64, exclude=frozenset()
) -> tuple[np.ndarray, list[str]]:
    """n random v2 images (n, 3, H, W) float32 and their captions."""
    scenes = [sample_scene_v2(rng, size=size, exclude=exclude) for _ in range(n)]
    return np.stack([render(s)[0] for s in scenes]), [s.caption for s in scenes]


def sample_batch(
    rng: np.random.Generator, n: int, *, size: int = 64, exclude=frozenset()
) -> tuple[np.ndarray, list[str]]:
    """n random images (n, 3, H, W) float32 and their captions."""
    scenes = [sample_scene(rng, size=size, exclude=exclude) for _ in range(n)]
    return np.stack([render(s)[0] for s in scenes]), [s.caption for s in scenes]
