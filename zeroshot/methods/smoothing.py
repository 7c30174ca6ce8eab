"""Text2Video-Zero background smoothing, with masks from the model's own cross-attention.

The paper's official code (not diffusers) defines the step; it never ran there because
the saliency model it calls was not shipped. Here the foreground masks come from the
UNet itself: the cross-attention probabilities of the prompt's subject tokens, averaged
over heads, layers and steps of one denoising pass, propagated along the UNet's own
self-attention at the latent grid (M <- A_self M), thresholded per frame (Otsu) and
dilated. A user mask video is the alternative.

With M_FG[k] the foreground mask of frame k (latent grid), W_k the warp of frame 0 to
frame k by the motion field and a = 1 - strength:

    M_BG[k] = (1 - M_FG[k]) * (1 - W_k(M_FG[0]))
    x_T[k] <- (1 - M_BG) x_T[k] + M_BG (a x_T[k] + (1 - a) W_k(x_T[0] * (1 - M_FG[0])))

applied once at T (frame 0 unchanged), after which all frames are denoised again from T.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from einops import rearrange

from zeroshot.motion import MotionField, warp
from zeroshot.recipe import RecipeError, Smoothing

# ---------------------------------------------------------------------------------------
# cross-attention capture


def _cond_half(x: torch.Tensor, per_call: int) -> torch.Tensor | None:
    """The conditional part (the last) of a guidance batch `[uncond, cond]` or
    `[uncond, partial, cond]` (pix2pix), the batch itself without guidance, or None when the
    batch is not `per_call` (or two or three times that) long."""
    if x.shape[0] in (2 * per_call, 3 * per_call):
        return x[-per_call:]
    return x if x.shape[0] == per_call else None


def _attention_probs(attn, query_states: torch.Tensor, key_states: torch.Tensor) -> torch.Tensor:
    """Softmax attention probabilities `(batch, heads, n, L)` of an attention module."""
    query = attn.to_q(query_states)
    key = attn.to_k(key_states)
    heads = attn.heads
    if getattr(attn, "norm_q", None) is not None:
        b, n, _ = query.shape
        query = attn.norm_q(query.view(b, n, heads, -1)).view(b, n, -1)
    if getattr(attn, "norm_k", None) is not None:
        b, L, _ = key.shape
        key = attn.norm_k(key.view(b, L, heads, -1)).view(b, L, -1)
    probs = attn.get_attention_scores(attn.head_to_batch_dim(query), attn.head_to_batch_dim(key), None)
    return probs.view(query.shape[0], heads, *probs.shape[1:])  # b heads n L


def propagate(maps: torch.Tensor, affinity: torch.Tensor, steps: int) -> torch.Tensor:
    """Spread per-frame maps `(b, f, h, w)` along row-stochastic affinities
    `(b, f, h*w, h*w)`: M <- A M, `steps` times.

    Each cell becomes the affinity-weighted mean of the map over the cells it attends
    to, so a map that is uneven inside one object and its surroundings evens out along
    the object (a constant map stays constant; `steps=0` is the identity).
    """
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    b, f, h, w = maps.shape
    if affinity.shape != (b, f, h * w, h * w):
        raise ValueError(f"affinity must be {(b, f, h * w, h * w)}, got {tuple(affinity.shape)}")
    flat = maps.reshape(b, f, h * w, 1).to(affinity.dtype)
    for _ in range(steps):
        flat = affinity @ flat
    return flat.reshape(b, f, h, w).to(maps.dtype)


@dataclass
class CrossAttentionStore:
    """Running weighted sum of the subject tokens' cross-attention per frame, on the latent grid,
    and the mean self-attention of the UNet's latent-grid layers per frame.

    Only UNet calls whose batch is `num_videos * num_frames` (no guidance) or twice that
    (`[uncond videos, cond videos]`, frames minor) are recorded, and of those only the
    conditional half. Set `active = False` to pause recording. `refine` is how many times
    `maps()` propagates the cross-attention along the recorded self-attention (0: never,
    and no self-attention is recorded).
    """

    token_indices: list[int]
    num_frames: int
    grid: tuple[int, int]
    num_videos: int = 1
    refine: int = 1
    active: bool = True
    total: torch.Tensor | None = field(default=None, repr=False)
    weight: float = 0.0
    calls: int = 0
    affinity: torch.Tensor | None = field(default=None, repr=False)
    self_calls: int = 0

    def record(self, attn, hidden_states: torch.Tensor, context: torch.Tensor) -> None:
        per_call = self.num_videos * self.num_frames
        n = hidden_states.shape[1]
        hidden_states, context = _cond_half(hidden_states, per_call), _cond_half(context, per_call)
        if hidden_states is None or context is None:
            return
        if getattr(attn, "norm_cross", None) is not None:
            context = attn.norm_encoder_hidden_states(context)
        probs = _attention_probs(attn, hidden_states, context)  # (b f) heads n L
        subject = probs[..., self.token_indices].sum(-1).float()  # (b f) heads n
        subject = subject.mean(1)  # (b f) n
        h, w = _layer_size(n, self.grid)
        subject = rearrange(subject, "bf (h w) -> bf 1 h w", h=h)
        subject = F.interpolate(subject, size=self.grid, mode="bilinear", align_corners=False)
        subject = rearrange(subject, "(b f) 1 h w -> b f h w", b=self.num_videos)
        peak = subject.flatten(2).amax(-1).clamp_min(1e-12)[..., None, None]
        weighted = subject / peak * n  # each layer's map scaled to peak 1, weighted by its size
        self.total = weighted if self.total is None else self.total + weighted.to(self.total.device)
        self.weight += n
        self.calls += 1

    def record_self(self, attn, hidden_states: torch.Tensor) -> None:
        """Add one self-attention layer's probabilities, each frame attending to its own
        positions, when the layer runs at the latent grid (the cross-frame hook changes
        only where the UNet reads keys; this is the layer's own affinity within a frame)."""
        h, w = self.grid
        if self.refine == 0 or hidden_states.shape[1] != h * w:
            return
        per_call = self.num_videos * self.num_frames
        hidden_states = _cond_half(hidden_states, per_call)
        if hidden_states is None:
            return
        # one frame at a time: the peak is heads * n^2 values, not frames * heads * n^2
        probs = torch.stack([_attention_probs(attn, x, x).float().mean(1)[0] for x in hidden_states.split(1)])
        probs = rearrange(probs, "(b f) n m -> b f n m", b=self.num_videos)
        self.affinity = probs if self.affinity is None else self.affinity + probs.to(self.affinity.device)
        self.self_calls += 1

    def maps(self) -> torch.Tensor:
        """The weighted mean map `(num_videos, num_frames, h, w)` over recorded calls.

        Each call's map (one layer at one step) is scaled to a peak of 1 and weighted by
        its number of positions, so fine layers, whose maps follow the subject's outline,
        count more than coarse ones (on the shapes model this lifts the mean IoU with the
        detector's mask from 0.46 to 0.65). With `refine` > 0 and self-attention recorded,
        the map is then propagated `refine` times along the mean self-attention of the
        latent-grid layers (`propagate`): 0.69 -> 0.74 on the shapes model (docs/motion.md).
        """
        if self.total is None:
            raise RuntimeError("no cross-attention was recorded (no matching UNet call ran)")
        maps = self.total / self.weight
        if self.refine and self.affinity is not None:
            maps = propagate(maps, (self.affinity / self.self_calls).to(maps.device), self.refine)
        return maps


def _layer_size(tokens: int, grid: tuple[int, int]) -> tuple[int, int]:
    """The (h, w) of a UNet level with `tokens` positions: the latent grid halved d times."""
    h, w = grid
    for _ in range(12):
        if h * w == tokens:
            return h, w
        h, w = math.ceil(h / 2), math.ceil(w / 2)
    raise ValueError(f"cannot place {tokens} attention positions on the latent grid {grid}")


class CrossAttentionCapture:
    """Wraps an installed cross-attention processor: records, then delegates unchanged."""

    def __init__(self, processor, store: CrossAttentionStore):
        self.processor = processor
        self.store = store

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, *args, **kwargs):
        if self.store.active and encoder_hidden_states is not None and hidden_states.ndim == 3:
            self.store.record(attn, hidden_states, encoder_hidden_states)
        return self.processor(attn, hidden_states, encoder_hidden_states, attention_mask, *args, **kwargs)


@contextlib.contextmanager
def capture_cross_attention(
    unet,
    token_indices: list[int],
    num_frames: int,
    *,
    grid: tuple[int, int],
    num_videos: int = 1,
    refine: int = 1,
) -> Iterator[CrossAttentionStore]:
    """Record the cross-attention of `token_indices` per frame while the UNet runs.

    Wraps every text cross-attention processor (attn2) for the block and restores the
    very same processor objects on exit, even on error. With `refine` > 0 it also
    records, through forward pre-hooks removed on exit, the self-attention (attn1) of
    the layers that run at the latent grid, from their inputs, so it sees the same
    thing whatever processor (cross-frame or other) is installed and in whichever
    order. Memory: `num_videos * num_frames * (h*w)**2` floats (2 MB for 8 frames of a
    16x16 grid, 0.5 GB for 8 frames of SD's 64x64). Yields the store; read
    `store.maps()` after the UNet calls.
    """
    from zeroshot.hooks import is_cross_attention, is_spatial_self_attention, wrapped_processors

    if not token_indices:
        raise ValueError("token_indices must name at least one prompt token")
    if refine < 0:
        raise ValueError(f"refine must be >= 0, got {refine}")
    store = CrossAttentionStore(
        list(token_indices), num_frames, (int(grid[0]), int(grid[1])), num_videos, refine=refine
    )

    def pre_hook(module, args, kwargs):
        hidden_states = args[0] if args else kwargs.get("hidden_states")
        if store.active and hidden_states is not None and hidden_states.ndim == 3:
            store.record_self(module, hidden_states)

    handles = []
    try:
        if refine:
            for name in unet.attn_processors:
                if is_spatial_self_attention(name):
                    module = unet.get_submodule(name.removesuffix(".processor"))
                    handles.append(module.register_forward_pre_hook(pre_hook, with_kwargs=True))
        with wrapped_processors(unet, is_cross_attention, lambda _name, proc: CrossAttentionCapture(proc, store)):
            yield store
    finally:
        for handle in handles:
            handle.remove()


# ---------------------------------------------------------------------------------------
# subject tokens and masks

STOPWORDS = frozenset(
    {
        "a", "an", "the", "of", "and", "or", "some", "this", "that", "these", "those",
        "its", "his", "her", "their", "my", "your", "our", "one", "two", "is", "are", "be",
        "being", "very",
    }
)
SEPARATORS = frozenset(
    {
        "on", "in", "with", "at", "against", "over", "under", "above", "below", "near",
        "beside", "behind", "by", "through", "across", "along", "into", "onto", "from",
        "during", "while", "inside", "outside",
    }
)


def subject_token_indices(tokenizer, prompt: str) -> list[int]:
    """Positions (in the tokenized prompt, BOS = 0) of the words that name the subject.

    The subject is the part before the first preposition such as " on ", " in ",
    " with " (the whole prompt if there is none); its stopwords ("a", "the", ...) are
    dropped. For "a red circle on a blue background": the tokens of "red" and "circle".
    """
    words = re.findall(r"[\w'-]+|[^\w\s]", prompt.lower())
    if not words:
        raise RecipeError("smoothing needs a prompt that names the subject (or smoothing.mask_video)")
    cut = next((i for i, word in enumerate(words) if i > 0 and word in SEPARATORS), len(words))
    positions, pos = [], 1
    limit = tokenizer.model_max_length - 1
    for i, word in enumerate(words):
        count = len(tokenizer(word, add_special_tokens=False).input_ids)
        if i < cut and word not in STOPWORDS and re.fullmatch(r"[\w'-]+", word):
            positions.extend(p for p in range(pos, pos + count) if p < limit)
        pos += count
    if not positions:
        positions = [p for p in range(1, min(pos, limit))]
    return positions


def otsu_thresholds(values: torch.Tensor, bins: int = 256) -> torch.Tensor:
    """Otsu's threshold of each row of `values (n, m)` in [0, 1]: the bin edge that
    maximises the between-class variance."""
    q = (values.clamp(0, 1) * (bins - 1)).round().long()  # (n, m)
    hist = torch.zeros(values.shape[0], bins, device=values.device, dtype=torch.float64)
    hist.scatter_add_(1, q, torch.ones_like(q, dtype=torch.float64))
    p = hist / hist.sum(1, keepdim=True)
    levels = torch.arange(bins, device=values.device, dtype=torch.float64)
    w0 = p.cumsum(1)
    mu = (p * levels).cumsum(1)
    mu_total = mu[:, -1:]
    between = (mu_total * w0 - mu) ** 2 / (w0 * (1 - w0)).clamp_min(1e-12)
    # an empty gap between the classes is a plateau of maxima: take its middle
    top = between >= between.max(1, keepdim=True).values * (1 - 1e-9)
    first = top.float().argmax(1)
    last = bins - 1 - top.flip(1).float().argmax(1)
    best = (first + last).to(values.dtype) / 2  # class 0 is levels <= best
    return (best + 0.5) / (bins - 1)


def dilate_masks(masks: torch.Tensor, size: int) -> torch.Tensor:
    """Binary dilation of `(b, f, h, w)` bool masks with a `size x size` square.

    The square is anchored at its cell `size // 2` (kornia's default origin), so an even
    square grows a mask one cell further up and left than down and right; cells outside
    the frame count as background.
    """
    if size <= 1:
        return masks
    from kornia.morphology import dilation

    frames = rearrange(masks.float(), "b f h w -> (b f) 1 h w")
    grown = dilation(frames, torch.ones(size, size, device=masks.device))
    return rearrange(grown > 0.5, "(b f) 1 h w -> b f h w", b=masks.shape[0])


def foreground_masks(maps: torch.Tensor, *, dilate: int = 5) -> torch.Tensor:
    """Foreground masks `(b, f, h, w)` bool from attention maps `(b, f, h, w)`.

    Each frame's map is scaled to [0, 1] and split by Otsu's threshold, then dilated
    with a `dilate x dilate` square (in grid cells; 0 or 1: none). A flat map has no
    foreground.
    """
    if dilate < 0:
        raise ValueError(f"dilate must be >= 0, got {dilate}")
    b, f, h, w = maps.shape
    flat = rearrange(maps.float(), "b f h w -> (b f) (h w)")
    lo, hi = flat.min(1, keepdim=True).values, flat.max(1, keepdim=True).values
    unit = (flat - lo) / (hi - lo).clamp_min(1e-12)
    masks = unit > otsu_thresholds(unit)[:, None]
    masks &= (hi - lo) > 1e-8
    return dilate_masks(rearrange(masks, "(b f) (h w) -> b f h w", b=b, h=h), dilate)


def load_mask_video(path: str | os.PathLike, num_frames: int, grid: tuple[int, int]) -> torch.Tensor:
    """Foreground masks `(f, h, w)` bool from a video or folder of images (white = subject).

    Each frame is converted to gray, area-averaged onto the latent grid and thresholded
    at half intensity.
    """
    import cv2
    import numpy as np

    from zeroshot.motion import read_video

    try:
        frames = read_video(path)
    except RecipeError as exc:
        raise RecipeError(str(exc).replace("motion.from_video", "smoothing.mask_video")) from None
    if len(frames) < num_frames:
        raise RecipeError(
            f"smoothing.mask_video: {os.fspath(path)!r} has {len(frames)} frames, num_frames={num_frames} needs {num_frames}"
        )
    h, w = grid
    out = []
    for frame in frames[:num_frames]:
        gray = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY).astype(np.float32) / 255.0
        out.append(cv2.resize(gray, (w, h), interpolation=cv2.INTER_AREA) > 0.5)
    return torch.from_numpy(np.stack(out))


# ---------------------------------------------------------------------------------------
# the blend


def smooth_background(
    x_T: torch.Tensor,
    fg: torch.Tensor,
    flow_px: torch.Tensor,
    *,
    scale: float | tuple[float, float],
    strength: float = 0.6,
    mode: str = "nearest",
    padding: str = "reflection",
) -> torch.Tensor:
    """Blend each frame's background at T toward frame 0's background warped to it.

    x_T: `(b, c, f, h, w)` latents at T; fg: `(b, f, h, w)` foreground masks (bool or
    [0, 1]); flow_px, scale, mode, padding: the motion field and warp options used for
    the video (`zeroshot.motion.warp`); strength: weight of the warped frame-0
    background (the official code's 1 - a, default 0.6). Frame 0 is returned unchanged.
    """
    if not 0.0 <= strength <= 1.0:
        raise ValueError(f"strength must be in [0, 1], got {strength}")
    b, c, f, h, w = x_T.shape
    if fg.shape != (b, f, h, w):
        raise ValueError(f"fg must be {(b, f, h, w)}, got {tuple(fg.shape)}")
    if f == 1:
        return x_T
    m = fg.to(device=x_T.device, dtype=x_T.dtype)
    m0 = m[:, None, :1].expand(b, 1, f, h, w)
    mask_mode = "nearest" if mode == "nearest" else "bilinear"
    m0_moved = warp(m0, flow_px, scale=scale, mode=mask_mode, padding=padding)[:, 0]  # b f h w
    bg = ((1 - m) * (1 - m0_moved))[:, None]  # b 1 f h w
    first_bg = (x_T[:, :, :1] * (1 - m[:, None, :1])).expand(b, c, f, h, w)
    moved = warp(first_bg, flow_px, scale=scale, mode=mode, padding=padding)  # b c f h w
    a = 1.0 - strength
    out = (1 - bg) * x_T + bg * (a * x_T + (1 - a) * moved)
    return torch.cat([x_T[:, :, :1], out[:, :, 1:]], dim=2)


class BackgroundSmoothing:
    """The smoothing step as `fn(x_T) -> x_T` for `t2v_zero.sample(before_final=...)`.

    With attention masks it first runs `denoise_fn(x_T)` (the full pass from T to 0)
    while capturing the subject tokens' cross-attention, builds the masks, and returns
    the blended x_T for the final pass; with `config.mask_video` no extra pass runs.
    `field` (output size `height` x `width`), `mode` and `padding` are the video's motion
    field and warp options. After the call, `foreground` holds the masks `(b, f, h, w)`.
    """

    def __init__(
        self,
        config: Smoothing,
        *,
        unet,
        denoise_fn: Callable[[torch.Tensor], torch.Tensor],
        token_indices: list[int],
        field: MotionField,
        height: int,
        width: int,
        mode: str = "nearest",
        padding: str = "reflection",
    ):
        self.config = config
        self.unet = unet
        self.denoise_fn = denoise_fn
        self.token_indices = token_indices
        self.field = field
        self.height, self.width = height, width
        self.mode = mode
        self.padding = padding
        self.foreground: torch.Tensor | None = None

    @classmethod
    def for_recipe(cls, recipe, model, prompt: str, denoise_fn) -> BackgroundSmoothing:
        """The step `generate()` runs for a recipe with `smoothing` and `motion` on."""
        from zeroshot.motion import field_from_recipe

        if recipe.motion is None:
            raise RecipeError("smoothing needs motion (Text2Video-Zero dynamics); set motion=on or smoothing=off")
        config, m = recipe.smoothing, recipe.motion
        tokens = [] if config.mask_video else subject_token_indices(model.tokenizer, prompt)
        return cls(
            config,
            unet=model.unet,
            denoise_fn=denoise_fn,
            token_indices=tokens,
            field=field_from_recipe(m, recipe.num_frames, recipe.height, recipe.width),
            height=recipe.height,
            width=recipe.width,
            mode=m.mode,
            padding=m.padding,
        )

    def masks(self, x_T: torch.Tensor) -> torch.Tensor:
        b, _, f, h, w = x_T.shape
        if self.config.mask_video:
            fg = load_mask_video(self.config.mask_video, f, (h, w)).to(x_T.device)
            return dilate_masks(fg[None].expand(b, f, h, w), self.config.dilate)
        with capture_cross_attention(self.unet, self.token_indices, f, grid=(h, w), num_videos=b) as store:
            self.denoise_fn(x_T)
        return foreground_masks(store.maps(), dilate=self.config.dilate)

    def __call__(self, x_T: torch.Tensor) -> torch.Tensor:
        _, _, f, h, w = x_T.shape
        if f == 1:
            return x_T
        self.foreground = self.masks(x_T)
        flow = self.field.flow(f, self.height, self.width, grid=(h, w), device=x_T.device)
        return smooth_background(
            x_T,
            self.foreground,
            flow,
            scale=(self.height / h, self.width / w),
            strength=self.config.strength,
            mode=self.mode,
            padding=self.padding,
        )


__all__ = [
    "BackgroundSmoothing",
    "CrossAttentionCapture",
    "CrossAttentionStore",
    "capture_cross_attention",
    "dilate_masks",
    "foreground_masks",
    "load_mask_video",
    "otsu_thresholds",
    "propagate",
    "smooth_background",
    "subject_token_indices",
]
