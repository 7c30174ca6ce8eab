"""Noise priors for video latents: correlated Gaussian noise over frames.

Every prior is a pure function ``prior(shape, generator=None, *, <params>, device=None,
dtype=None) -> Tensor`` for ``shape = (b, c, f, h, w)``. Each element has mean 0 and
variance 1; the priors differ only in how frames are correlated (each docstring gives the
correlation between frames i and j and cites the paper). Draws come from ``generator``
only: the global RNG is never used. With ``generator=None`` a fresh, nondeterministically
seeded generator is made.

Draws happen on the generator's device (CPU when there is none) in float32 (float64 when
``dtype`` is float64) and are then moved to ``device`` and cast to ``dtype``, as diffusers'
``randn_tensor`` does, so a CPU generator gives the same numbers for any target device.

``PRIORS`` maps the names used in recipes (``Noise.prior``) to the functions; ``sample``
draws from a ``zeroshot.recipe.Noise``; ``step_noise_fn`` gives the stochastic samplers'
per-step noise from the same prior; ``theoretical_correlation`` is the (f, f) frame
correlation matrix a prior produces. See docs/noise.md.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch

from zeroshot.recipe import Noise, RecipeError

__all__ = [
    "PRIORS",
    "check",
    "flow_warped",
    "freenoise",
    "iid",
    "mixed",
    "progressive",
    "sample",
    "step_noise_fn",
    "theoretical_correlation",
    "videofusion",
]


# ---------------------------------------------------------------------------------------
# drawing helpers


def _video_shape(shape: Sequence[int]) -> tuple[int, int, int, int, int]:
    shape = tuple(int(s) for s in shape)
    if len(shape) != 5 or min(shape) < 1:
        raise ValueError(f"shape must be (b, c, f, h, w) with positive sizes, got {shape}")
    return shape  # type: ignore[return-value]


class _Draw:
    """Where and how a prior draws: the generator, its device, and the working dtype."""

    def __init__(self, generator: torch.Generator | None, device: Any, dtype: torch.dtype | None):
        self.out_device = torch.device(device) if device is not None else None
        if generator is None:  # a fresh, OS-seeded generator, never the global RNG
            on_cuda = self.out_device is not None and self.out_device.type == "cuda"
            generator = torch.Generator(device=self.out_device if on_cuda else "cpu")
            generator.seed()
        self.generator = generator
        self.device = generator.device
        self.out_device = self.out_device or self.device
        self.out_dtype = dtype or torch.float32
        self.work_dtype = torch.float64 if self.out_dtype == torch.float64 else torch.float32

    def randn(self, *shape: int) -> torch.Tensor:
        return torch.randn(shape, generator=self.generator, device=self.device, dtype=self.work_dtype)

    def permutations(self, rows: int, n: int) -> torch.Tensor:
        """`rows` independent uniform permutations of range(n), shape (rows, n)."""
        keys = torch.rand((rows, n), generator=self.generator, device=self.device)
        return torch.argsort(keys, dim=1)

    def out(self, x: torch.Tensor) -> torch.Tensor:
        return x.to(device=self.out_device, dtype=self.out_dtype)


def _check_alpha(alpha: float) -> float:
    if not (math.isfinite(alpha) and alpha >= 0):
        raise ValueError(f"alpha must be a finite number >= 0, got {alpha}")
    return float(alpha)


def _check_lam(lam: float) -> float:
    if not 0.0 <= lam <= 1.0:
        raise ValueError(f"lam must be in [0, 1], got {lam}")
    return float(lam)


def _check_key_frame(key_frame: int | None, num_frames: int) -> None:
    if key_frame is not None and not 0 <= key_frame < num_frames:
        raise ValueError(f"key_frame must be in [0, {num_frames - 1}] or None, got {key_frame}")


def _check_window(window: int, stride: int) -> None:
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    if not 1 <= stride <= window:
        raise ValueError(f"stride must be in [1, window={window}], got {stride}")


# ---------------------------------------------------------------------------------------
# priors


def iid(
    shape: Sequence[int],
    generator: torch.Generator | None = None,
    *,
    device: Any = None,
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Independent standard normal noise: correlation 0 between any two frames.

    The usual diffusion prior (Ho et al., DDPM, arXiv 2006.11239); one draw of `shape`.
    """
    b, c, f, h, w = _video_shape(shape)
    d = _Draw(generator, device, dtype)
    return d.out(d.randn(b, c, f, h, w))


def mixed(
    shape: Sequence[int],
    generator: torch.Generator | None = None,
    *,
    alpha: float = 1.0,
    device: Any = None,
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """PYoCo mixed noise: a component shared by all frames plus one per frame.

    eps_i = eps_shared + eps_ind_i with eps_shared ~ N(0, a^2/(1+a^2)) and
    eps_ind_i ~ N(0, 1/(1+a^2)), so corr(eps_i, eps_j) = a^2/(1+a^2) for i != j
    (0.5 at the default a = 1; a = 0 is iid). Ge et al., "Preserve Your Own Correlation",
    ICCV 2023 (arXiv 2305.10474), the "mixed noise model" of its video noise prior.
    Draw order: shared (b, c, 1, h, w), then per-frame (b, c, f, h, w).
    """
    b, c, f, h, w = _video_shape(shape)
    alpha = _check_alpha(alpha)
    d = _Draw(generator, device, dtype)
    shared_var = alpha**2 / (1 + alpha**2)
    shared = d.randn(b, c, 1, h, w)
    ind = d.randn(b, c, f, h, w)
    return d.out(math.sqrt(shared_var) * shared + math.sqrt(1 - shared_var) * ind)


def progressive(
    shape: Sequence[int],
    generator: torch.Generator | None = None,
    *,
    alpha: float = 2.0,
    device: Any = None,
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """PYoCo progressive noise: an AR(1) process over frames.

    eps_0 ~ N(0, 1); eps_i = r * eps_{i-1} + eps_ind_i with r = a / sqrt(1+a^2) and
    eps_ind_i ~ N(0, 1/(1+a^2)), so corr(eps_i, eps_j) = r^|i-j| (r = 0.894 at the default
    a = 2; a = 0 is iid). Ge et al., ICCV 2023 (arXiv 2305.10474), the
    "progressive noise model" of its video noise prior. Draw order: one unit draw
    z (b, c, f, h, w); eps_0 = z_0 and eps_i = r eps_{i-1} + sqrt(1-r^2) z_i.
    """
    b, c, f, h, w = _video_shape(shape)
    alpha = _check_alpha(alpha)
    d = _Draw(generator, device, dtype)
    r = alpha / math.sqrt(1 + alpha**2)
    z = d.randn(b, c, f, h, w)
    frames = [z[:, :, 0]]
    for i in range(1, f):
        frames.append(r * frames[-1] + math.sqrt(1 - r**2) * z[:, :, i])
    return d.out(torch.stack(frames, dim=2))


def videofusion(
    shape: Sequence[int],
    generator: torch.Generator | None = None,
    *,
    lam: float = 0.5,
    key_frame: int | None = None,
    device: Any = None,
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """VideoFusion decomposed noise: base noise shared by all frames plus a residual.

    eps_i = sqrt(lam) * base + sqrt(1-lam) * res_i with base, res_i ~ N(0, 1), so
    corr(eps_i, eps_j) = lam for i != j. With `key_frame = k`, frame k gets the pure base
    noise (eps_k = base) and corr(eps_k, eps_j) = sqrt(lam). Luo et al., "VideoFusion:
    Decomposed Diffusion Models", CVPR 2023 (arXiv 2303.08320), its decomposed
    diffusion process. The same family as `mixed` with lam = a^2/(1+a^2).
    Draw order: base (b, c, 1, h, w), then residual (b, c, f, h, w) (drawn for every frame,
    so `key_frame` does not shift the other frames' numbers).
    """
    b, c, f, h, w = _video_shape(shape)
    lam = _check_lam(lam)
    _check_key_frame(key_frame, f)
    d = _Draw(generator, device, dtype)
    base = d.randn(b, c, 1, h, w)
    res = d.randn(b, c, f, h, w)
    out = math.sqrt(lam) * base + math.sqrt(1 - lam) * res
    if key_frame is not None:
        out[:, :, key_frame] = base[:, :, 0]
    return d.out(out)


def _freenoise_sources(num_frames: int, window: int, stride: int) -> list[tuple[int, int, range]]:
    """FreeNoise blocks: (start, length, source frames) for every frame past the window."""
    blocks = []
    for start in range(window, num_frames, stride):
        length = min(stride, num_frames - start)
        blocks.append((start, length, range(start - window, start - window + stride)))
    return blocks


def freenoise(
    shape: Sequence[int],
    generator: torch.Generator | None = None,
    *,
    window: int = 16,
    stride: int = 4,
    device: Any = None,
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """FreeNoise noise rescheduling for videos longer than the model's window.

    The first `window` frames are iid. Each later block of `stride` frames starting at
    frame s copies the noise of frames [s - window, s - window + stride) in a uniformly
    shuffled order (a last, shorter block takes a prefix of the shuffle). So every frame
    is an exact copy of one of the first `window` frames; corr(eps_i, eps_j) is 1 for
    copies of the same frame and 0 otherwise, and its expectation over the shuffles is
    `theoretical_correlation` (e.g. 1/stride between a frame and the source block of its
    own block, 0 inside a block). Qiu et al., "FreeNoise: Tuning-Free Longer Video
    Diffusion via Noise Rescheduling", ICLR 2024 (arXiv 2310.15169), noise rescheduling.
    Each batch element gets its own shuffles (videos in a batch are independent).
    Draw order: the window (b, c, min(f, window), h, w), then one uniform (b, stride)
    draw per block for the shuffles.
    """
    b, c, f, h, w = _video_shape(shape)
    _check_window(window, stride)
    d = _Draw(generator, device, dtype)
    base = d.randn(b, c, min(f, window), h, w)
    if f <= window:
        return d.out(base)
    index = torch.arange(window, device=d.device).expand(b, window)  # (b, window): drawn frame of each frame
    for start, length, sources in _freenoise_sources(f, window, stride):
        perm = d.permutations(b, stride)[:, :length]  # (b, length)
        picked = torch.gather(index[:, sources.start : sources.stop], 1, perm)
        index = torch.cat([index, picked], dim=1)
    gather_index = index[:, None, :, None, None].expand(b, c, f, h, w)
    return d.out(torch.gather(base, 2, gather_index))


def _degradation_correlation(degradation: float) -> float:
    """Correlation along the flow between two frames of `flow_warped` at this degradation."""
    d = degradation
    return (1 - d) ** 2 / ((1 - d) ** 2 + d**2)


def _check_degradation(degradation: float) -> float:
    if not 0.0 <= degradation <= 1.0:
        raise ValueError(f"degradation must be in [0, 1], got {degradation}")
    return float(degradation)


def _split_cells(x: torch.Tensor, z: torch.Tensor, s: int) -> torch.Tensor:
    """Cells `x (B, h, w)` split into s x s sub-cells given fresh `z (B, h s, w s)`:
    x / s + (z - mean of z over the cell). The sub-cells are iid N(0, 1) when x and z are,
    and each cell's sub-cells sum to s x exactly (a Brownian-bridge split)."""
    b, hs, ws = z.shape
    blocks = z.reshape(b, hs // s, s, ws // s, s)
    zero_mean = blocks - blocks.mean(dim=(2, 4), keepdim=True)
    return (x[:, :, None, :, None] / s + zero_mean).reshape(b, hs, ws)


def _transport(
    canvas: torch.Tensor, origin: tuple[int, int], index_x: torch.Tensor, index_y: torch.Tensor, z: torch.Tensor
) -> torch.Tensor:
    """One frame's sub-cells `(B, H, W)` taken from canvas sub-cells, re-Gaussianised.

    canvas: `(B, Hc, Wc)` iid N(0, 1) sub-cells; origin: canvas index of frame 0's (0, 0);
    index_x / index_y: `(H, W)` integer source of every target sub-cell in frame-0 sub-cell
    units; z: fresh `(B, H, W)`. A canvas value u picked by n targets gives each of them
    u / sqrt(n) + (z_t - mean of z over the n), so the n copies are iid N(0, 1) and sum to
    sqrt(n) u (Go-with-the-Flow's regaussianisation); targets whose source is off the
    canvas take their fresh z.
    """
    bsz, hc, wc = canvas.shape
    ix, iy = index_x.flatten() + origin[1], index_y.flatten() + origin[0]
    valid = (ix >= 0) & (ix < wc) & (iy >= 0) & (iy < hc)
    idx = (iy * wc + ix)[valid]
    flat_z = z.reshape(bsz, -1)
    out = flat_z.clone()
    counts = torch.bincount(idx, minlength=hc * wc).to(z.dtype)
    z_sum = torch.zeros(bsz, hc * wc, dtype=z.dtype, device=z.device).index_add_(1, idx, flat_z[:, valid])
    n = counts[idx]
    out[:, valid] = canvas.reshape(bsz, -1)[:, idx] / n.sqrt() + flat_z[:, valid] - z_sum[:, idx] / n
    return out.reshape(z.shape)


def flow_warped(
    shape: Sequence[int],
    generator: torch.Generator | None = None,
    *,
    flow_px: torch.Tensor | None = None,
    scale: float | tuple[float, float] = 1.0,
    degradation: float = 0.0,
    base: torch.Tensor | None = None,
    device: Any = None,
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Flow-warped noise: frame 0's noise carried along a motion field, every frame N(0, I).

    Each latent cell is treated as the sum of s x s white-noise sub-cells (s = the flow's
    sub-grid factor, e.g. the VAE factor: one sub-cell per output pixel). Frame 0's cells
    are split into sub-cells conditioned on their values (x / s + (z - mean z), the
    Brownian-bridge split of integral noise warping: Chang et al., "How I Warped Your
    Noise", ICLR 2024, arXiv 2504.03072); sub-cells beyond frame 0 are fresh. Frame k takes
    every sub-cell from the frame-0 sub-cell its backward flow points at (nearest) and sums
    its cell's s x s sub-cells / s. A source taken n times gives its n copies
    u / sqrt(n) + (z - mean z) with fresh z (the regaussianisation of Go-with-the-Flow:
    Burgert et al., CVPR 2025, arXiv 2501.08331), so every frame is exactly iid N(0, 1)
    per cell, spatially independent, whatever the flow, and frames whose flow is zero equal
    frame 0 bit for bit. An integer shift by whole cells moves frame 0's cells exactly
    (up to float rounding); newly revealed areas come from the same fresh sub-cells in
    every frame, so they follow the flow too.

    Correlation: along the flow, two frames' cells correlate by the fraction of sub-cells
    they share (1 for whole-cell motion); `degradation` d blends fresh noise into every
    frame, ((1 - d) warped + d fresh) / sqrt((1 - d)^2 + d^2) (Go-with-the-Flow's
    degradation), which scales it by (1 - d)^2 / ((1 - d)^2 + d^2) (0.5 at d = 0.5).
    Without a flow (`flow_px=None`) every frame is frame 0 before degradation.

    shape: (b, c, f, h, w). flow_px: `(f, 2, h s, w s)` backward flow in output px at the
    sub-cell centres (`zeroshot.motion` convention; frame k's content at q comes from
    q + flow[k](q) in frame 0). scale: output px per latent cell, (sy, sx) or one number.
    base: frame 0's noise `(b, c, h, w)` (drawn if None). Draw order: base (b, c, 1, h, w);
    the canvas of sub-cells (b, c, Hc, Wc); per moving frame its z (b, c, h s, w s); the
    degradation noise (b, c, f, h, w) when d > 0.
    """
    b, c, f, h, w = _video_shape(shape)
    degradation = _check_degradation(degradation)
    d = _Draw(generator, device, dtype)
    if base is not None:
        if tuple(base.shape) != (b, c, h, w):
            raise ValueError(f"base must have shape {(b, c, h, w)}, got {tuple(base.shape)}")
        x0 = base.to(device=d.device, dtype=d.work_dtype)
    else:
        x0 = d.randn(b, c, 1, h, w)[:, :, 0]
    frames = [x0] * f
    if flow_px is not None:
        if flow_px.ndim != 4 or flow_px.shape[:2] != (f, 2):
            raise ValueError(f"flow_px must be ({f}, 2, h s, w s), got {tuple(flow_px.shape)}")
        hs, ws = flow_px.shape[-2:]
        s = hs // h
        if s < 1 or (hs, ws) != (h * s, w * s):
            raise ValueError(f"flow_px's grid {hs}x{ws} is not a whole multiple of the latent grid {h}x{w}")
        sy, sx = (float(scale), float(scale)) if isinstance(scale, (int, float)) else (float(scale[0]), float(scale[1]))
        flow = flow_px.to(device=d.device, dtype=d.work_dtype)
        moving = [k for k in range(f) if bool((flow[k] != 0).any())]
        if moving:
            xs = torch.arange(ws, device=d.device, dtype=d.work_dtype)
            ys = torch.arange(hs, device=d.device, dtype=d.work_dtype)[:, None]
            src_x = torch.ceil(xs + flow[:, 0] * (s / sx) - 0.5).long()  # (f, hs, ws), ties round down
            src_y = torch.ceil(ys + flow[:, 1] * (s / sy) - 0.5).long()
            # the canvas: frame 0's sub-cells and, around them, every source a frame uses
            # (at most one frame size on each side; sources further out are fresh)
            lo_x = max(-ws, min(0, int(src_x[moving].min())))
            hi_x = min(2 * ws - 1, max(ws - 1, int(src_x[moving].max())))
            lo_y = max(-hs, min(0, int(src_y[moving].min())))
            hi_y = min(2 * hs - 1, max(hs - 1, int(src_y[moving].max())))
            canvas = d.randn(b * c, hi_y - lo_y + 1, hi_x - lo_x + 1)
            oy, ox = -lo_y, -lo_x
            canvas[:, oy : oy + hs, ox : ox + ws] = _split_cells(
                x0.reshape(b * c, h, w), canvas[:, oy : oy + hs, ox : ox + ws], s
            )
            for k in moving:
                sub = _transport(canvas, (oy, ox), src_x[k], src_y[k], d.randn(b * c, hs, ws))
                frames[k] = sub.reshape(b, c, h, s, w, s).sum(dim=(3, 5)) / s
    out = torch.stack(frames, dim=2)
    if degradation > 0:
        fresh = d.randn(b, c, f, h, w)
        out = ((1 - degradation) * out + degradation * fresh) / math.sqrt((1 - degradation) ** 2 + degradation**2)
    return d.out(out)


PRIORS: dict[str, Callable[..., torch.Tensor]] = {
    "iid": iid,
    "mixed": mixed,
    "progressive": progressive,
    "videofusion": videofusion,
    "freenoise": freenoise,
    "flow-warped": flow_warped,
}


# ---------------------------------------------------------------------------------------
# recipes


def _prior_kwargs(noise: Noise) -> dict[str, Any]:
    """The recipe's parameters for its prior; `None` fields take the prior's default."""
    fields = {
        "iid": {},
        "mixed": {"alpha": noise.alpha},
        "progressive": {"alpha": noise.alpha},
        "videofusion": {"lam": noise.lam, "key_frame": noise.key_frame},
        "freenoise": {"window": noise.window, "stride": noise.stride},
        "flow-warped": {"degradation": noise.degradation},
    }[noise.prior]
    return {k: v for k, v in fields.items() if v is not None}


def check(noise: Noise, num_frames: int | None = None) -> None:
    """Raise RecipeError (one line, naming the `noise.` field) if `noise` is invalid."""
    if noise.prior not in PRIORS:
        raise RecipeError(f"noise.prior {noise.prior!r} unknown; valid: {', '.join(PRIORS)}")
    if noise.alpha is not None and not (math.isfinite(noise.alpha) and noise.alpha >= 0):
        raise RecipeError(f"noise.alpha must be a finite number >= 0, got {noise.alpha}")
    if noise.lam is not None and not 0.0 <= noise.lam <= 1.0:
        raise RecipeError(f"noise.lam must be in [0, 1], got {noise.lam}")
    if noise.key_frame is not None and num_frames is not None and not 0 <= noise.key_frame < num_frames:
        raise RecipeError(f"noise.key_frame must be in [0, {num_frames - 1}], got {noise.key_frame}")
    if noise.window < 1:
        raise RecipeError(f"noise.window must be >= 1, got {noise.window}")
    if not 1 <= noise.stride <= noise.window:
        raise RecipeError(f"noise.stride must be in [1, noise.window={noise.window}], got {noise.stride}")
    if noise.degradation is not None and not 0.0 <= noise.degradation <= 1.0:
        raise RecipeError(f"noise.degradation must be in [0, 1], got {noise.degradation}")


def sample(
    noise: Noise,
    shape: Sequence[int],
    generator: torch.Generator | None = None,
    *,
    device: Any = None,
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Draw `shape = (b, c, f, h, w)` from the prior a recipe's `Noise` names."""
    check(noise, _video_shape(shape)[2])
    prior = PRIORS[noise.prior]
    return prior(shape, generator, **_prior_kwargs(noise), device=device, dtype=dtype)


def step_noise_fn(
    noise: Noise,
    generator: torch.Generator | None,
    *,
    device: Any,
    dtype: torch.dtype | None,
) -> Callable[[Sequence[int]], torch.Tensor]:
    """The stochastic samplers' per-step noise: `fn(shape) -> Tensor` with fresh draws.

    Draws come from the recipe's prior when `noise.per_step` is true (so DDIM eta > 0 and
    ancestral samplers keep the frame correlation), else iid. Each call advances
    `generator`; shapes are (b, c, f, h, w).
    """
    check(noise)
    prior = noise if noise.per_step else Noise()

    def draw(shape: Sequence[int]) -> torch.Tensor:
        return sample(prior, shape, generator, device=device, dtype=dtype)

    return draw


def _freenoise_correlation(num_frames: int, window: int, stride: int) -> torch.Tensor:
    """Expected frame correlation of `freenoise` over its shuffles (exact, by recursion).

    Frame i copies a drawn frame root(i); corr(i, j) = P(root(i) == root(j)). A block's
    shuffle is independent of all earlier frames, so a block frame matches an earlier
    frame j with the mean probability over the sources, and two frames of one block with
    the mean over distinct source pairs.
    """
    m = torch.eye(num_frames, dtype=torch.float64)
    for start, length, sources in _freenoise_sources(num_frames, window, stride):
        src = list(sources)
        block = slice(start, start + length)
        m[block, :start] = m[src, :start].mean(dim=0)
        m[:start, block] = m[block, :start].T
        if length > 1:
            sub = m[src][:, src]
            pair = (sub.sum() - sub.diagonal().sum()) / (stride * (stride - 1))
            m[block, block] = pair
            m[block, block].fill_diagonal_(1.0)
    return m


def frame_correlation(x: torch.Tensor) -> torch.Tensor:
    """Empirical `(f, f)` correlation between the frames of a `(b, c, f, h, w)` draw.

    Each frame's values over every other axis are one sample vector (float64).
    """
    f = x.shape[2]
    y = x.double().transpose(0, 2).reshape(f, -1)
    y = y - y.mean(dim=1, keepdim=True)
    c = y @ y.T
    d = c.diagonal().sqrt()
    return c / d[:, None] / d[None, :]


def theoretical_correlation(noise: Noise, num_frames: int) -> torch.Tensor:
    """The (f, f) float64 correlation matrix between frames that `sample(noise, ...)` has.

    For `freenoise` it is the expectation over the random shuffles.
    """
    check(noise, num_frames)
    f = num_frames
    kw = _prior_kwargs(noise)
    eye = torch.eye(f, dtype=torch.float64)
    if noise.prior == "iid":
        return eye
    if noise.prior == "mixed":
        alpha = kw.get("alpha", 1.0)
        rho = alpha**2 / (1 + alpha**2)
        return rho + (1 - rho) * eye
    if noise.prior == "progressive":
        alpha = kw.get("alpha", 2.0)
        r = alpha / math.sqrt(1 + alpha**2)
        lag = torch.arange(f, dtype=torch.float64)
        return r ** (lag[:, None] - lag[None, :]).abs()
    if noise.prior == "videofusion":
        lam = kw.get("lam", 0.5)
        out = lam + (1 - lam) * eye
        key = kw.get("key_frame")
        if key is not None:
            out[key, :] = math.sqrt(lam)
            out[:, key] = math.sqrt(lam)
            out[key, key] = 1.0
        return out
    if noise.prior == "flow-warped":
        rho = _degradation_correlation(kw.get("degradation", 0.0))
        return rho + (1 - rho) * eye
    return _freenoise_correlation(f, noise.window, noise.stride)
