"""Motion fields and the latent warp (Text2Video-Zero Sec. 3.2, generalised).

Convention. A motion field gives, for every frame k, a *backward* flow in pixels of the
output image: the content at output position q of frame k comes from position
q + flow[k](q) of frame 0 (so frame 0's flow is zero). Positive x moves content right,
positive y moves it down; a translation (dx, dy) px/frame has backward flow (-dx k, -dy k).
Pixel centres sit at integer coordinates: output pixel x covers [x - 0.5, x + 0.5], and
cell j of a grid of width w is centred at x = (j + 0.5) * W / w - 0.5.

Every field is a small frozen dataclass with

- `flow(num_frames, height, width, grid=(h, w), *, device, dtype) -> (f, 2, h, w)`:
  the backward flow (channel 0 = x, 1 = y) evaluated at the grid-cell centres, so
  nothing is ever allocated at a fixed 512 x 512;
- `forward(points_px (n, 2), num_frames, height, width) -> (f, n, 2)`: where given
  frame-0 points are in each frame (what a tracker would measure).

`warp()` applies a flow to latents at grid resolution in one batched `grid_sample`.
"""

from __future__ import annotations

import itertools
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Protocol

import torch
import torch.nn.functional as F
from einops import rearrange

from zeroshot.recipe import Motion, RecipeError

if TYPE_CHECKING:
    import numpy as np

WARP_MODES = ("nearest", "bilinear", "variance-preserving")
PADDINGS = ("reflection", "border", "zeros")


class MotionField(Protocol):
    """What every motion field provides (see the module docstring for the convention)."""

    def flow(
        self,
        num_frames: int,
        height: int,
        width: int,
        grid: tuple[int, int] | None = None,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> torch.Tensor: ...

    def forward(
        self, points_px: torch.Tensor, num_frames: int, height: int, width: int
    ) -> torch.Tensor: ...


# ---------------------------------------------------------------------------------------
# helpers


def cell_centres(
    height: int, width: int, grid: tuple[int, int], *, device=None, dtype=torch.float64
) -> torch.Tensor:
    """Output-pixel positions of the grid-cell centres, `(2, h, w)` (x, y)."""
    h, w = grid
    ys = (torch.arange(h, device=device, dtype=dtype) + 0.5) * (height / h) - 0.5
    xs = (torch.arange(w, device=device, dtype=dtype) + 0.5) * (width / w) - 0.5
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([xx, yy])  # (2, h, w)


def _check_size(num_frames: int, height: int, width: int, grid: tuple[int, int] | None):
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    if height <= 0 or width <= 0:
        raise ValueError(f"height and width must be positive, got {height}x{width}")
    grid = (height, width) if grid is None else (int(grid[0]), int(grid[1]))
    if grid[0] <= 0 or grid[1] <= 0:
        raise ValueError(f"grid must be two positive sizes (h, w), got {grid}")
    return grid


def _points(points_px) -> torch.Tensor:
    p = torch.as_tensor(points_px, dtype=torch.float64).reshape(-1, 2)
    return p


def similarity_matrix(
    translate: tuple[float, float], scale: float, angle_deg: float, center: tuple[float, float]
) -> torch.Tensor:
    """3x3 forward map p -> c + t + s R(angle) (p - c), `angle` counter-clockwise on screen.

    With y pointing down, a counter-clockwise turn on screen is
    R = [[cos a, sin a], [-sin a, cos a]].
    """
    a = math.radians(angle_deg)
    cos, sin = math.cos(a), math.sin(a)
    cx, cy = center
    lin = torch.tensor([[cos, sin], [-sin, cos]], dtype=torch.float64) * scale
    off = torch.tensor([cx + translate[0], cy + translate[1]], dtype=torch.float64) - lin @ torch.tensor(
        [cx, cy], dtype=torch.float64
    )
    m = torch.eye(3, dtype=torch.float64)
    m[:2, :2] = lin
    m[:2, 2] = off
    return m


def _flow_from_matrices(
    mats: torch.Tensor, height: int, width: int, grid: tuple[int, int], device, dtype
) -> torch.Tensor:
    """Backward flow of forward maps `mats (f, 3, 3)` at the grid-cell centres."""
    q = cell_centres(height, width, grid)  # (2, h, w)
    inv = torch.linalg.inv(mats)  # (f, 3, 3)
    src = torch.einsum("fij,jhw->fihw", inv[:, :2, :2], q) + inv[:, :2, 2, None, None]
    flow = src - q  # (f, 2, h, w)
    flow[0] = 0.0
    return flow.to(device=device, dtype=dtype)


def _forward_from_matrices(mats: torch.Tensor, points_px) -> torch.Tensor:
    p = _points(points_px)  # (n, 2)
    out = torch.einsum("fij,nj->fni", mats[:, :2, :2], p) + mats[:, None, :2, 2]
    return out.to(torch.float32)  # (f, n, 2)


# ---------------------------------------------------------------------------------------
# fields


@dataclass(frozen=True)
class Translation:
    """A constant pan: content moves (dx, dy) output px per frame (T2V-Zero's field)."""

    dx: float = 0.0
    dy: float = 0.0

    def flow(self, num_frames, height, width, grid=None, *, device=None, dtype=torch.float32):
        h, w = _check_size(num_frames, height, width, grid)
        k = torch.arange(num_frames, device=device, dtype=torch.float64)
        per_frame = torch.stack([-self.dx * k, -self.dy * k], dim=1)  # (f, 2)
        return per_frame[:, :, None, None].expand(num_frames, 2, h, w).to(dtype).contiguous()

    def forward(self, points_px, num_frames, height, width):
        p = _points(points_px)
        k = torch.arange(num_frames, dtype=torch.float64)[:, None, None]
        return (p[None] + k * torch.tensor([self.dx, self.dy], dtype=torch.float64)).float()


@dataclass(frozen=True)
class Affine:
    """An affine camera: per frame k, scale `zoom**k`, angle `rotate*k` degrees
    (counter-clockwise on screen) about `center`, then shift `translate*k` px.

    Forward map of frame k: p -> c + k t + zoom^k R(k rotate) (p - c); `center=None` is
    the image centre ((W - 1) / 2, (H - 1) / 2). zoom > 1 zooms in (content grows).
    """

    translate: tuple[float, float] = (0.0, 0.0)
    zoom: float = 1.0
    rotate: float = 0.0
    center: tuple[float, float] | None = None

    def __post_init__(self):
        if not self.zoom > 0:
            raise ValueError(f"zoom must be > 0, got {self.zoom}")

    def matrices(self, num_frames: int, height: int, width: int) -> torch.Tensor:
        """Forward maps frame 0 -> frame k, `(f, 3, 3)` in output px."""
        c = self.center if self.center is not None else ((width - 1) / 2, (height - 1) / 2)
        tx, ty = self.translate
        return torch.stack(
            [
                similarity_matrix((tx * k, ty * k), self.zoom**k, self.rotate * k, c)
                for k in range(num_frames)
            ]
        )

    def flow(self, num_frames, height, width, grid=None, *, device=None, dtype=torch.float32):
        grid = _check_size(num_frames, height, width, grid)
        return _flow_from_matrices(self.matrices(num_frames, height, width), height, width, grid, device, dtype)

    def forward(self, points_px, num_frames, height, width):
        return _forward_from_matrices(self.matrices(num_frames, height, width), points_px)


@dataclass(frozen=True)
class Keyframe:
    """The camera at one frame, relative to the clip's start: shift (px), scale, angle (deg)."""

    frame: float
    translate: tuple[float, float] = (0.0, 0.0)
    zoom: float = 1.0
    angle: float = 0.0


@dataclass(frozen=True)
class KeyframedPath:
    """A camera path given at some frames and interpolated in between.

    Translation and angle are interpolated linearly, zoom geometrically (linear in log
    scale, so a constant zoom rate between keys stays constant). Before the first key
    and after the last one the camera holds. Frame k's forward map is the path's
    transform at k composed with the inverse of the one at frame 0, so frame 0 never
    moves even when the first key is not the identity.
    """

    keys: tuple[Keyframe, ...]
    center: tuple[float, float] | None = None

    def __post_init__(self):
        if not self.keys:
            raise ValueError("a keyframed path needs at least one keyframe")
        frames = [k.frame for k in self.keys]
        if any(b <= a for a, b in itertools.pairwise(frames)):
            raise ValueError(f"keyframe frames must be strictly increasing, got {frames}")
        bad = [k.zoom for k in self.keys if not k.zoom > 0]
        if bad:
            raise ValueError(f"keyframe zoom must be > 0, got {bad[0]}")

    @classmethod
    def from_toml(cls, path: str | os.PathLike) -> KeyframedPath:
        """Read a path file: optional `center = [x, y]` and `[[key]]` tables with
        `frame`, `translate = [x, y]`, `zoom`, `angle`."""
        try:
            import tomllib
        except ModuleNotFoundError:  # Python 3.10
            import tomli as tomllib
        try:
            with open(path, "rb") as fh:
                data = tomllib.load(fh)
        except OSError as exc:
            raise RecipeError(f"motion.path: cannot read {os.fspath(path)!r}: {exc.strerror}") from None
        except tomllib.TOMLDecodeError as exc:
            raise RecipeError(f"motion.path: {os.fspath(path)!r} is not valid TOML: {exc}") from None
        unknown = [k for k in data if k not in ("center", "key")]
        if unknown:
            raise RecipeError(f"motion.path: unknown key {unknown[0]!r}; valid keys: center, key")
        keys = []
        for i, item in enumerate(data.get("key", [])):
            bad = [k for k in item if k not in ("frame", "translate", "zoom", "angle")]
            if bad:
                raise RecipeError(
                    f"motion.path: key {i}: unknown field {bad[0]!r}; valid: frame, translate, zoom, angle"
                )
            if "frame" not in item:
                raise RecipeError(f"motion.path: key {i} has no frame")
            try:
                tx, ty = item.get("translate", (0.0, 0.0))
                key = Keyframe(
                    frame=float(item["frame"]),
                    translate=(float(tx), float(ty)),
                    zoom=float(item.get("zoom", 1.0)),
                    angle=float(item.get("angle", 0.0)),
                )
            except (TypeError, ValueError):
                raise RecipeError(
                    f"motion.path: key {i}: expected frame = number, translate = [x, y], zoom = number, "
                    f"angle = number, got {item!r}"
                ) from None
            keys.append(key)
        center = data.get("center")
        try:
            if center is not None:
                cx, cy = center
                center = (float(cx), float(cy))
            return cls(tuple(keys), center)
        except (TypeError, ValueError) as exc:
            raise RecipeError(f"motion.path: {exc}") from None

    def at(self, frame: float) -> tuple[tuple[float, float], float, float]:
        """The interpolated (translate, zoom, angle) at a (fractional) frame."""
        keys = self.keys
        if frame <= keys[0].frame:
            k = keys[0]
            return k.translate, k.zoom, k.angle
        if frame >= keys[-1].frame:
            k = keys[-1]
            return k.translate, k.zoom, k.angle
        for a, b in itertools.pairwise(keys):
            if a.frame <= frame <= b.frame:
                u = (frame - a.frame) / (b.frame - a.frame)
                tr = tuple(ta + u * (tb - ta) for ta, tb in zip(a.translate, b.translate))
                zoom = math.exp(math.log(a.zoom) + u * (math.log(b.zoom) - math.log(a.zoom)))
                return (tr[0], tr[1]), zoom, a.angle + u * (b.angle - a.angle)
        raise AssertionError("unreachable: keys are sorted")

    def matrices(self, num_frames: int, height: int, width: int) -> torch.Tensor:
        c = self.center if self.center is not None else ((width - 1) / 2, (height - 1) / 2)
        mats = torch.stack([similarity_matrix(*self.at(k), c) for k in range(num_frames)])
        return mats @ torch.linalg.inv(mats[0])

    def flow(self, num_frames, height, width, grid=None, *, device=None, dtype=torch.float32):
        grid = _check_size(num_frames, height, width, grid)
        return _flow_from_matrices(self.matrices(num_frames, height, width), height, width, grid, device, dtype)

    def forward(self, points_px, num_frames, height, width):
        return _forward_from_matrices(self.matrices(num_frames, height, width), points_px)


def parse_drag(text: str) -> tuple[float, float, float, float]:
    """Parse a drag `"x0,y0->x1,y1"` (output px) into (x0, y0, x1, y1)."""
    start, sep, end = str(text).partition("->")
    try:
        if not sep:
            raise ValueError
        x0, y0 = (float(v) for v in start.split(","))
        x1, y1 = (float(v) for v in end.split(","))
    except ValueError:
        raise RecipeError(f"motion.trajectories: expected 'x0,y0->x1,y1', got {text!r}") from None
    values = (x0, y0, x1, y1)
    if not all(math.isfinite(v) for v in values):
        raise RecipeError(f"motion.trajectories: expected finite numbers, got {text!r}")
    return values


DENSIFIERS = ("rbf", "gaussian")
TRAJECTORY_FORM = "'x,y x,y ...' (output px; 'x,y@frame' pins a point to a frame; options r=RADIUS, mask=IMAGE)"


def load_mask(path: str | os.PathLike, where: str) -> np.ndarray:
    """A mask image as `(H, W)` bool (white = inside: gray level > 127)."""
    import cv2

    path = os.fspath(path)
    if not os.path.exists(path):
        raise RecipeError(f"{where}: mask image {path!r} does not exist")
    img = cv2.imread(path, cv2.IMREAD_GRAYSCALE)
    if img is None:
        raise RecipeError(f"{where}: cannot read {path!r} as an image")
    return img > 127


def _finite(text: str, where: str, whole: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise RecipeError(f"{where}: expected {TRAJECTORY_FORM}, got {whole!r}") from None
    if not math.isfinite(value):
        raise RecipeError(f"{where}: expected finite numbers, got {whole!r}")
    return value


@dataclass(frozen=True)
class Trajectory:
    """One trajectory: a polyline over time in output px, optionally dragging a region.

    `points[i]` is where the trajectory is at frame `frames[i]`; a `None` frame (or
    `frames=()`) spreads the points evenly in time: the first unpinned point is at frame 0,
    the last at the last frame, and points between two known frames are spaced evenly
    between them. The position is linear in time between points and holds before the
    first and after the last. A region moves rigidly with the trajectory: the disk of
    `radius_px` about the first point, or the white pixels of the image `mask` (frame 0's
    pixels, at the output size). Without a region only the point itself is constrained.
    """

    points: tuple[tuple[float, float], ...]
    frames: tuple[float | None, ...] = ()
    radius_px: float | None = None
    mask: str | None = None
    region: Any = field(default=None, compare=False, repr=False)  # (H, W) bool array of `mask`
    text: str | None = field(default=None, compare=False, repr=False)  # as the user wrote it

    def __post_init__(self):
        if len(self.points) < 2:
            raise RecipeError(f"motion.trajectories: a trajectory needs at least two points, got {len(self.points)}")
        if self.frames and len(self.frames) != len(self.points):
            raise ValueError(f"frames must give one entry per point, got {len(self.frames)} for {len(self.points)}")
        if self.radius_px is not None and not self.radius_px > 0:
            raise RecipeError(f"motion.trajectories: r must be > 0, got {self.radius_px}")
        if self.mask is not None and self.region is None:
            object.__setattr__(self, "region", load_mask(self.mask, "motion.trajectories"))

    @classmethod
    def parse(cls, text: str) -> Trajectory:
        """`"x0,y0 x1,y1 x2,y2"`, points optionally pinned `"x,y@frame"`, options `r=8` and
        `mask=region.png`; the older `"x0,y0->x1,y1"` is the two-point case."""
        where = "motion.trajectories"
        points, frames, radius, mask = [], [], None, None
        for token in str(text).replace("->", " ").split():
            key, eq, value = token.partition("=")
            if eq:
                if key in ("r", "radius"):
                    radius = _finite(value, where, text)
                elif key == "mask":
                    mask = value
                else:
                    raise RecipeError(f"{where}: unknown option {key!r} in {text!r}; valid: r=RADIUS, mask=IMAGE")
                continue
            xy, at, frame = token.partition("@")
            parts = xy.split(",")
            if len(parts) != 2:
                raise RecipeError(f"{where}: expected {TRAJECTORY_FORM}, got {text!r}")
            points.append((_finite(parts[0], where, text), _finite(parts[1], where, text)))
            frames.append(_finite(frame, where, text) if at else None)
        if len(points) < 2:
            raise RecipeError(f"{where}: a trajectory needs at least two points, got {len(points)} in {text!r}")
        pins = tuple(frames) if any(t is not None for t in frames) else ()
        return cls(tuple(points), pins, radius, mask, text=str(text))

    @property
    def has_region(self) -> bool:
        return self.radius_px is not None or self.mask is not None

    def times(self, num_frames: int) -> list[float]:
        """The frame of every point (pins kept, the others spread evenly between them)."""
        n = len(self.points)
        known = list(self.frames) if self.frames else [None] * n
        known[0] = 0.0 if known[0] is None else float(known[0])
        known[-1] = float(num_frames - 1) if known[-1] is None else float(known[-1])
        pinned = [i for i, t in enumerate(known) if t is not None]
        for a, b in itertools.pairwise(pinned):
            for i in range(a + 1, b):
                known[i] = known[a] + (i - a) / (b - a) * (known[b] - known[a])
        return [float(t) for t in known]

    def check(self, num_frames: int, height: int, width: int) -> None:
        """RecipeError (one line) if a point is outside the frame, a pin outside the clip
        or out of order, or the mask not of the output size."""
        where, name = "motion.trajectories", repr(self.text) if self.text else "a trajectory"
        for x, y in self.points:
            if not (-0.5 <= x <= width - 0.5 and -0.5 <= y <= height - 0.5):
                raise RecipeError(
                    f"{where}: point ({x:g}, {y:g}) of {name} is outside the {width}x{height} frame "
                    f"(x in [-0.5, {width - 0.5:g}], y in [-0.5, {height - 0.5:g}])"
                )
        pins = [t for t in self.frames if t is not None]
        if any(not 0 <= t <= num_frames - 1 for t in pins) or any(b <= a for a, b in itertools.pairwise(pins)):
            raise RecipeError(
                f"{where}: frame pins of {name} must increase within [0, {num_frames - 1}], got "
                f"{', '.join(f'{t:g}' for t in pins)}"
            )
        if num_frames > 1:
            times = self.times(num_frames)
            if any(b <= a for a, b in itertools.pairwise(times)):
                raise RecipeError(
                    f"{where}: the points of {name} fall on frames {', '.join(f'{t:g}' for t in times)}; "
                    f"each needs a later frame than the one before, within [0, {num_frames - 1}]"
                )
        if self.region is not None and self.region.shape != (height, width):
            h, w = self.region.shape
            raise RecipeError(f"{where}: mask {self.mask!r} is {w}x{h}, the video is {width}x{height}")

    def positions(self, num_frames: int) -> torch.Tensor:
        """Where the trajectory is in every frame, `(f, 2)` float64 output px."""
        import numpy as np

        pts = np.asarray(self.points, dtype=np.float64)
        if num_frames == 1:
            return torch.from_numpy(pts[:1].copy())
        times = self.times(num_frames)
        k = np.arange(num_frames, dtype=np.float64)
        out = np.stack([np.interp(k, times, pts[:, 0]), np.interp(k, times, pts[:, 1])], axis=1)
        return torch.from_numpy(out)

    def inside(self, p: torch.Tensor) -> torch.Tensor:
        """Whether frame-0 positions `p (..., 2)` lie in the region (all False without one)."""
        if self.radius_px is not None:
            x0, y0 = self.points[0]
            return (p[..., 0] - x0) ** 2 + (p[..., 1] - y0) ** 2 <= self.radius_px**2
        if self.region is not None:
            return _mask_at(torch.from_numpy(self.region), p)
        return torch.zeros(p.shape[:-1], dtype=torch.bool)


def _mask_at(mask: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """A `(H, W)` bool mask at positions `p (..., 2)` (nearest pixel; False outside)."""
    h, w = mask.shape
    ix = torch.floor(p[..., 0] + 0.5).long()
    iy = torch.floor(p[..., 1] + 0.5).long()
    ok = (ix >= 0) & (ix < w) & (iy >= 0) & (iy < h)
    return ok & mask[iy.clamp(0, h - 1), ix.clamp(0, w - 1)]


def _convolve_axis(x: torch.Tensor, kernel: torch.Tensor, dim: int) -> torch.Tensor:
    """Zero-padded linear convolution of `x` with an odd, centred 1-D `kernel` along `dim`,
    same size as `x` (by FFT: large kernels cost what small ones do)."""
    n, k = x.shape[dim], kernel.numel()
    size = n + k - 1
    spectrum = torch.fft.rfft(x, n=size, dim=dim)
    shape = [1] * x.ndim
    shape[dim] = -1
    out = torch.fft.irfft(spectrum * torch.fft.rfft(kernel, n=size).view(shape), n=size, dim=dim)
    return out.narrow(dim, (k - 1) // 2, n)


def _gaussian_blur(image: torch.Tensor, sigma: float, pad: int) -> torch.Tensor:
    """`(H, W)` float64 map zero-padded by `pad` on each side and blurred with the
    peak-normalised kernel exp(-d^2 / (2 sigma^2)), truncated at 3 sigma (not divided by its sum)."""
    r = math.ceil(3 * sigma)
    x = torch.arange(-r, r + 1, dtype=torch.float64)
    kernel = torch.exp(-(x**2) / (2 * sigma**2))
    img = F.pad(image, (pad, pad, pad, pad))
    return _convolve_axis(_convolve_axis(img, kernel, 1), kernel, 0)


def _sample_map(image: torch.Tensor, pad: int, p: torch.Tensor) -> torch.Tensor:
    """Bilinear value of a padded map (see `_gaussian_blur`) at output px `p (..., 2)`."""
    hp, wp = image.shape
    gx = (2 * (p[..., 0] + pad) + 1) / wp - 1
    gy = (2 * (p[..., 1] + pad) + 1) / hp - 1
    grid = torch.stack([gx, gy], dim=-1).reshape(1, 1, -1, 2)
    out = F.grid_sample(image[None, None], grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return out.reshape(p.shape[:-1])


@dataclass(frozen=True)
class Trajectories:
    """Sparse trajectories densified into a motion field.

    `drags` are `Trajectory`s (a legacy drag (x0, y0, x1, y1) is the two-point trajectory
    from frame 0 to the last frame). In frame k trajectory i is at P_i(k) and has moved
    D_i(k) = P_i(k) - P_i(0); its backward flow there is -D_i(k). In between:

    - `densify="rbf"`: Gaussian radial-basis interpolation exp(-r^2 / (2 sigma^2)) whose
      weights are solved so the field passes exactly through every trajectory point and
      decays to zero far from them;
    - `densify="gaussian"`: the sparse displacement map blurred with a large Gaussian
      (MotionCtrl, Tora, DragNUWA): every constrained pixel (a point, or each pixel of a
      region) spreads its displacement with the peak-normalised kernel above; where the
      weights of several constraints add up to more than 1 the field is their weighted
      mean (normalised convolution) instead of their sum, so it never exceeds the drags.
      A lone point gives exactly the blurred sparse map.

    A region (`Trajectory.radius_px` or `.mask`) moves rigidly: inside it the flow is
    exactly -D_i(k) (a later trajectory wins where regions overlap). `still` fixes pixels:
    a mask image's white pixels have zero flow in every frame (with "gaussian" they also
    pull the field to zero around them), and "rest" keeps everything outside the moved
    regions still (every trajectory needs a region). `sigma_px=None` is a quarter of the
    smaller image side. `forward()` applies the same rules to frame-0 points with forward
    displacements D_i(k), so it passes through the trajectories; away from them it is the
    inverse of the backward flow only approximately.
    """

    drags: tuple = ()
    sigma_px: float | None = None
    densify: str = "rbf"
    still: str | None = None  # None, "rest", or a mask image (white = still)
    still_mask: Any = field(default=None, compare=False, repr=False)

    def __post_init__(self):
        drags = tuple(
            d if isinstance(d, Trajectory) else Trajectory(((d[0], d[1]), (d[2], d[3]))) for d in self.drags
        )
        object.__setattr__(self, "drags", drags)
        if not drags:
            raise ValueError("trajectories need at least one drag")
        if self.sigma_px is not None and not self.sigma_px > 0:
            raise ValueError(f"sigma_px must be > 0, got {self.sigma_px}")
        if self.densify not in DENSIFIERS:
            raise RecipeError(f"motion.densify must be one of {', '.join(DENSIFIERS)}, got {self.densify!r}")
        if self.still == "rest":
            bare = [i for i, d in enumerate(drags) if not d.has_region]
            if bare:
                raise RecipeError(
                    f"motion.still=rest keeps everything outside the dragged regions still; trajectory {bare[0]} "
                    "has no region (give it r=RADIUS or mask=IMAGE)"
                )
        elif self.still is not None and self.still_mask is None:
            object.__setattr__(self, "still_mask", load_mask(self.still, "motion.still"))

    @classmethod
    def parse(
        cls, texts: Sequence[str], sigma_px: float | None = None, *, densify: str = "rbf", still: str | None = None
    ) -> Trajectories:
        return cls(tuple(Trajectory.parse(t) for t in texts), sigma_px, densify, still)

    def check(self, num_frames: int, height: int, width: int) -> None:
        """RecipeError (one line) for a point outside the frame, a bad pin or a mask of another size."""
        for d in self.drags:
            d.check(num_frames, height, width)
        if self.still_mask is not None and self.still_mask.shape != (height, width):
            h, w = self.still_mask.shape
            raise RecipeError(f"motion.still: mask {self.still!r} is {w}x{h}, the video is {width}x{height}")

    def _sigma(self, height: int, width: int) -> float:
        return self.sigma_px if self.sigma_px is not None else min(height, width) / 4

    @staticmethod
    def _interpolate(centres, values, query, sigma):
        """Gaussian RBF through (centres (f, n, 2), values (f, n, 2)) at query (f, m, 2)."""
        k_nn = torch.exp(-torch.cdist(centres, centres).square() / (2 * sigma**2))  # (f, n, n)
        weights = torch.linalg.pinv(k_nn) @ values  # (f, n, 2)
        k_mn = torch.exp(-torch.cdist(query, centres).square() / (2 * sigma**2))  # (f, m, n)
        return k_mn @ weights  # (f, m, 2)

    def _dense(self, query: torch.Tensor, num_frames: int, height: int, width: int, *, backward: bool) -> torch.Tensor:
        """The field at `query (m, 2)` output px in every frame, `(f, m, 2)` float64.

        backward: flow of frame-k positions (constraints where the trajectories are in frame
        k, value -D); else forward displacement of frame-0 positions (constraints at frame
        0, value +D)."""
        self.check(num_frames, height, width)
        sigma = self._sigma(height, width)
        pos = torch.stack([d.positions(num_frames) for d in self.drags], dim=1)  # (f, n, 2)
        disp = pos - pos[:1]  # (f, n, 2) D_i(k)
        anchors = pos if backward else pos[:1].expand_as(pos)
        values = -disp if backward else disp
        f, m = num_frames, query.shape[0]
        q = query[None].expand(f, m, 2)
        # where each constraint's region is, in frame-0 coordinates, for every query
        shift = disp if backward else torch.zeros_like(disp)
        src = q[:, :, None, :] - shift[:, None, :, :]  # (f, m, n, 2)
        if self.densify == "rbf":
            out = self._interpolate(anchors, values, q, sigma)
        else:
            num = torch.zeros(f, m, 2, dtype=torch.float64)
            den = torch.zeros(f, m, dtype=torch.float64)
            pad = math.ceil(3 * sigma)
            for i, d in enumerate(self.drags):
                if d.has_region:  # blurred membership of the (rigidly moving) region
                    cells = cell_centres(height, width, (height, width)).permute(1, 2, 0)  # (H, W, 2)
                    blurred = _gaussian_blur(d.inside(cells).double(), sigma, pad)
                    g = _sample_map(blurred, pad, src[:, :, i])
                else:
                    g = torch.exp(-(q - anchors[:, None, i]).square().sum(-1) / (2 * sigma**2))
                num += g[..., None] * values[:, None, i]
                den += g
            if self.still_mask is not None:
                blurred = _gaussian_blur(torch.from_numpy(self.still_mask).double(), sigma, pad)
                den += _sample_map(blurred, pad, q)
            out = num / den.clamp(min=1.0)[..., None]
        inside = torch.stack([d.inside(src[:, :, i]) for i, d in enumerate(self.drags)], dim=-1)  # (f, m, n)
        if self.still == "rest":
            out = torch.zeros_like(out)
        elif self.still_mask is not None:
            out = torch.where(_mask_at(torch.from_numpy(self.still_mask), q)[..., None], 0.0, out)
        for i in range(len(self.drags)):  # regions last, a later one on top
            out = torch.where(inside[..., i, None], values[:, None, i], out)
        return out

    def flow(self, num_frames, height, width, grid=None, *, device=None, dtype=torch.float32):
        h, w = _check_size(num_frames, height, width, grid)
        q = cell_centres(height, width, (h, w)).flatten(1).T  # (h w, 2)
        out = self._dense(q, num_frames, height, width, backward=True)
        flow = out.transpose(1, 2).reshape(num_frames, 2, h, w)
        flow[0] = 0.0
        return flow.to(device=device, dtype=dtype)

    def forward(self, points_px, num_frames, height, width):
        p = _points(points_px)
        return (p[None] + self._dense(p, num_frames, height, width, backward=False)).float()


def read_video(path: str | os.PathLike) -> np.ndarray:
    """Frames of a video file or a folder of images as `(f, H, W, 3)` uint8 RGB."""
    import cv2
    import numpy as np

    path = os.fspath(path)
    frames = []
    if os.path.isdir(path):
        names = sorted(n for n in os.listdir(path) if n.lower().endswith((".png", ".jpg", ".jpeg", ".bmp")))
        for name in names:
            img = cv2.imread(os.path.join(path, name), cv2.IMREAD_COLOR)
            if img is not None:
                frames.append(cv2.cvtColor(img, cv2.COLOR_BGR2RGB))
    elif os.path.exists(path):
        cap = cv2.VideoCapture(path)
        try:
            while True:
                ok, img = cap.read()
                if not ok:
                    break
                frames.append(cv2.cvtColor(img, cv2.COLOR_BGR2RGB))
        finally:
            cap.release()
        if not frames:
            import imageio.v3 as iio

            try:
                frames = [np.asarray(f)[..., :3] for f in iio.imiter(path)]
            except (OSError, ValueError):
                frames = []
    else:
        raise RecipeError(f"motion.from_video: {path!r} does not exist")
    if not frames:
        raise RecipeError(f"motion.from_video: no frames could be read from {path!r}")
    return np.stack(frames)


def _gray(frames) -> np.ndarray:
    """`(f, H, W, 3)` uint8 RGB or `(f, 3, H, W)` float [0, 1] -> `(f, H, W)` uint8 gray."""
    import numpy as np

    a = frames.detach().cpu().numpy() if isinstance(frames, torch.Tensor) else np.asarray(frames)
    if a.ndim == 4 and a.shape[1] in (1, 3) and a.shape[-1] not in (1, 3):
        a = a.transpose(0, 2, 3, 1)
    if a.dtype != np.uint8:
        a = np.clip(np.rint(a * 255.0), 0, 255).astype(np.uint8)
    if a.ndim == 4 and a.shape[-1] == 3:
        a = (a.astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)).round().astype(np.uint8)
    elif a.ndim == 4:
        a = a[..., 0]
    return np.ascontiguousarray(a)


#: DIS runs on frames whose short side is at least this (smaller ones are upsampled first): its
#: 8-px patches and pyramid need room; on 64-px world clips it takes a third off the composed
#: flow's error (0.46 -> 0.30 px, docs/flow.md).
DIS_MIN_SIDE = 256


def optical_flow(prev, nxt, *, method: str = "dis") -> np.ndarray:
    """Dense flow `(H, W, 2)` in px such that prev(x) ~ nxt(x + flow(x)) (gray uint8 images)."""
    import cv2

    if method == "dis":
        dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
        scale = math.ceil(DIS_MIN_SIDE / min(prev.shape[:2]))
        if scale <= 1:
            return dis.calc(prev, nxt, None)
        up = [cv2.resize(a, None, fx=scale, fy=scale, interpolation=cv2.INTER_CUBIC) for a in (prev, nxt)]
        flow = dis.calc(up[0], up[1], None)
        return cv2.resize(flow, (prev.shape[1], prev.shape[0]), interpolation=cv2.INTER_AREA) / scale
    if method == "farneback":
        return cv2.calcOpticalFlowFarneback(prev, nxt, None, 0.5, 4, 15, 5, 7, 1.5, 0)
    raise ValueError(f"optical flow method must be dis or farneback, got {method!r}")


@dataclass(frozen=True)
class VideoFlow:
    """The motion of a reference video (OpenCV DIS or Farneback optical flow).

    Frame k's backward flow is the flow from the video's frame k to its frame 0 (frames taken
    `step` apart from `start`), composed of the optical flows between consecutive frames
    (`_backward_flows`; `forward` carries points frame to frame the same way), rescaled from
    the video's size to the output size and area-averaged onto the grid. `source` is a path (video file or
    folder of images); `VideoFlow.from_frames(frames)` takes frames already in memory.
    """

    source: str
    start: int = 0
    step: int = 1
    method: str = "dis"
    frames: object = field(default=None, compare=False, repr=False)

    @classmethod
    def from_frames(cls, frames, *, start: int = 0, step: int = 1, method: str = "dis") -> VideoFlow:
        """From `(f, H, W, 3)` uint8 RGB or `(f, 3, H, W)` float frames in [0, 1]."""
        return cls("<frames>", start, step, method, _gray(frames))

    def _gray_frames(self, num_frames: int):
        gray = self.frames if self.frames is not None else _gray(read_video(self.source))
        idx = [self.start + self.step * k for k in range(num_frames)]
        if idx[-1] >= len(gray):
            raise RecipeError(
                f"motion.from_video: {self.source!r} has {len(gray)} frames; num_frames={num_frames} "
                f"with start={self.start}, step={self.step} needs {idx[-1] + 1}"
            )
        return gray[idx]

    def flow(self, num_frames, height, width, grid=None, *, device=None, dtype=torch.float32):
        import cv2
        import numpy as np

        h, w = _check_size(num_frames, height, width, grid)
        gray = self._gray_frames(num_frames)
        ref_h, ref_w = gray.shape[1:]
        out = np.zeros((num_frames, 2, h, w), dtype=np.float32)
        shrink = h <= ref_h and w <= ref_w
        for k, f in enumerate(self._backward_flows(gray), start=1):  # (H_ref, W_ref, 2)
            f = f * np.array([width / ref_w, height / ref_h], dtype=np.float32)
            f = cv2.resize(f, (w, h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
            out[k] = f.transpose(2, 0, 1)
        return torch.from_numpy(out).to(device=device, dtype=dtype)

    def forward(self, points_px, num_frames, height, width):
        import cv2
        import numpy as np

        p = _points(points_px).numpy()
        gray = self._gray_frames(num_frames)
        ref_h, ref_w = gray.shape[1:]
        sx, sy = ref_w / width, ref_h / height
        ref = np.stack([(p[:, 0] + 0.5) * sx - 0.5, (p[:, 1] + 0.5) * sy - 0.5], axis=1).astype(np.float32)
        out = np.repeat(p[None].astype(np.float32), num_frames, axis=0)
        here = ref.copy()
        for k in range(1, num_frames):  # frame to frame, each point carried on from where it is
            f = optical_flow(gray[k - 1], gray[k], method=self.method)
            here = here + cv2.remap(f, here[:, 0:1], here[:, 1:2], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)[:, 0]
            out[k] = p + (here - ref) / np.array([sx, sy])
        return torch.from_numpy(out)

    def _backward_flows(self, gray):
        """Frame k's flow to frame 0, k = 1..f-1, composed of frame-to-frame flows:
        B_k(x) = b_k(x) + B_{k-1}(x + b_k(x)), b_k the flow from frame k to frame k-1. Short
        steps are what optical flow measures well; one jump from frame k to frame 0 misses
        large displacements of untextured regions (on 64-px world clips 2.5 px off vs 0.3)."""
        import cv2
        import numpy as np

        h, w = gray.shape[1:]
        grid = np.stack(np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32)), axis=-1)
        total = np.zeros((h, w, 2), dtype=np.float32)
        for k in range(1, len(gray)):
            step = optical_flow(gray[k], gray[k - 1], method=self.method)
            at = grid + step
            total = step + cv2.remap(total, at[..., 0], at[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
            yield total


def check_request(motion: Motion) -> None:
    """RecipeError (one line) for a bad densifier, sigma or still region of a recipe's
    `Motion` (what needs no file or frame size; `field_from_recipe` checks the rest)."""
    if motion.densify not in DENSIFIERS:
        raise RecipeError(f"motion.densify must be one of {', '.join(DENSIFIERS)}, got {motion.densify!r}")
    if motion.sigma is not None and not motion.sigma > 0:
        raise RecipeError(f"motion.sigma must be > 0 (px), got {motion.sigma}")
    if motion.still is not None and not motion.trajectories:
        raise RecipeError("motion.still fixes pixels among trajectories; give motion.trajectories too")


def field_from_recipe(motion: Motion, num_frames: int, height: int, width: int) -> MotionField:
    """The motion field a recipe's `Motion` part asks for, its inputs checked.

    translate/zoom/rotate make a `Translation` (pure pan, the paper's field) or an
    `Affine` camera; `path`, `trajectories` and `from_video` each replace the camera and
    exclude one another (an error names the conflicting fields). `translate=None` is no pan.
    Trajectory points, pins and mask images are checked against the frame size, and a
    reference video is read (RecipeError naming the field when it cannot be read or is too
    short), so bad input fails here, before any model work.
    """
    check_request(motion)
    sources = [
        name
        for name, on in (
            ("motion.path", motion.path),
            ("motion.trajectories", motion.trajectories),
            ("motion.from_video", motion.from_video),
        )
        if on
    ]
    if len(sources) > 1:
        raise RecipeError(f"{sources[0]} and {sources[1]} cannot be combined; give one motion source")
    translate = tuple(motion.translate) if motion.translate is not None else (0.0, 0.0)
    camera = translate != (0.0, 0.0) or motion.zoom != 1.0 or motion.rotate != 0.0
    if sources and camera:
        raise RecipeError(
            f"{sources[0]} cannot be combined with motion.translate/zoom/rotate; "
            "set motion.translate=0,0, motion.zoom=1, motion.rotate=0"
        )
    if motion.path:
        return KeyframedPath.from_toml(motion.path)
    if motion.trajectories:
        field = Trajectories.parse(motion.trajectories, motion.sigma, densify=motion.densify, still=motion.still)
        field.check(num_frames, height, width)
        return field
    if motion.from_video:
        video = VideoFlow.from_frames(read_video(motion.from_video))
        video = replace(video, source=motion.from_video)
        video._gray_frames(num_frames)  # enough frames, or RecipeError
        return video
    if motion.zoom <= 0:
        raise RecipeError(f"motion.zoom must be > 0, got {motion.zoom}")
    if motion.zoom == 1.0 and motion.rotate == 0.0:
        return Translation(*translate)
    return Affine(translate=translate, zoom=motion.zoom, rotate=motion.rotate)


# ---------------------------------------------------------------------------------------
# warp


def _scale_pair(scale) -> tuple[float, float]:
    if isinstance(scale, (int, float)):
        return float(scale), float(scale)
    sy, sx = scale
    return float(sy), float(sx)


def warp(
    latents: torch.Tensor,
    flow_px: torch.Tensor,
    *,
    scale: float | tuple[float, float] = 1.0,
    mode: str = "nearest",
    padding: str = "reflection",
) -> torch.Tensor:
    """Warp frames by a backward flow in output px, all frames in one `grid_sample`.

    latents: `(b, c, f, h, w)`, or `(n, c, h, w)` with n = b * f frames, frame minor.
    flow_px: `(f, 2, h, w)` (x, y) backward flow in output px at the grid-cell centres.
    scale: output px per grid cell, `(sy, sx)` or one number (the VAE factor).
    Cell j samples position j + flow_x / sx (cell units, align_corners=False).

    Modes: "nearest" copies the nearest cell (ties round down, which reproduces
    diffusers' T2V-Zero warp), keeping every value a sample of the input (white noise
    stays white noise per pixel); "bilinear" interpolates (at a half-cell shift in x and
    y it cuts the std of white noise to 0.5); "variance-preserving" is bilinear divided by
    the root of the sum of squared bilinear weights, so unit white noise keeps unit
    variance at every fractional shift (it also scales smooth content up by the same
    factor, at most 2). Frames whose flow is exactly zero are returned unchanged.
    """
    if mode not in WARP_MODES:
        raise ValueError(f"mode must be one of {', '.join(WARP_MODES)}, got {mode!r}")
    if padding not in PADDINGS:
        raise ValueError(f"padding must be one of {', '.join(PADDINGS)}, got {padding!r}")
    if flow_px.ndim != 4 or flow_px.shape[1] != 2:
        raise ValueError(f"flow_px must be (f, 2, h, w), got {tuple(flow_px.shape)}")
    f, _, h, w = flow_px.shape
    video = latents.ndim == 5
    if video:
        b, c, nf, lh, lw = latents.shape
        if nf != f:
            raise ValueError(f"latents have {nf} frames but flow_px has {f}")
        x = rearrange(latents, "b c f h w -> (b f) c h w")
    elif latents.ndim == 4:
        n, c, lh, lw = latents.shape
        if n % f:
            raise ValueError(f"latents have {n} frames, not a multiple of the flow's {f}")
        b, x = n // f, latents
    else:
        raise ValueError(f"latents must be (b, c, f, h, w) or (n, c, h, w), got {tuple(latents.shape)}")
    if (lh, lw) != (h, w):
        raise ValueError(f"flow_px grid {h}x{w} does not match the latents' {lh}x{lw}")
    sy, sx = _scale_pair(scale)

    work = torch.float64 if x.dtype == torch.float64 else torch.float32
    flow = flow_px.to(device=x.device, dtype=work)
    ys = torch.arange(h, device=x.device, dtype=work)
    xs = torch.arange(w, device=x.device, dtype=work)
    pos_x = xs + flow[:, 0] / sx  # (f, h, w) cell units
    pos_y = ys[:, None] + flow[:, 1] / sy
    if mode == "nearest":
        pos_x, pos_y = torch.ceil(pos_x - 0.5), torch.ceil(pos_y - 0.5)
    grid = torch.stack([(2 * pos_x + 1) / w - 1, (2 * pos_y + 1) / h - 1], dim=-1)  # (f, h, w, 2)
    grid = grid.repeat(b, 1, 1, 1)  # (b f) h w 2
    sample_mode = "nearest" if mode == "nearest" else "bilinear"
    out = F.grid_sample(x.to(work), grid, mode=sample_mode, padding_mode=padding, align_corners=False)
    if mode == "variance-preserving":
        fx, fy = pos_x - torch.floor(pos_x), pos_y - torch.floor(pos_y)
        norm = torch.sqrt(((1 - fx) ** 2 + fx**2) * ((1 - fy) ** 2 + fy**2))  # (f, h, w)
        out = out / norm.repeat(b, 1, 1)[:, None]
    still = (flow_px == 0).flatten(1).all(dim=1).to(x.device).repeat(b)  # (b f,)
    out = torch.where(still[:, None, None, None], x.to(work), out).to(x.dtype)
    if video:
        out = rearrange(out, "(b f) c h w -> b c f h w", b=b)
    return out


__all__ = [
    "DENSIFIERS",
    "Affine",
    "Keyframe",
    "KeyframedPath",
    "MotionField",
    "Trajectories",
    "Trajectory",
    "Translation",
    "VideoFlow",
    "cell_centres",
    "check_request",
    "field_from_recipe",
    "load_mask",
    "optical_flow",
    "parse_drag",
    "read_video",
    "similarity_matrix",
    "warp",
]
