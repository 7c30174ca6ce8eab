"""The zoo's building blocks: temporal layers hooked onto a frozen image UNet's layers.

Every layer here is attached to one layer of a (copied, frozen) `UNet2DConditionModel`
by a forward hook (`attach`): it sees that layer's output (or input) on `(b f)` frames and
returns it changed. All of them start as the identity, so the inflated model equals the
image model frame by frame until trained:

- a residual branch whose last projection is zero (attention, adapters, temporal resnets);
- an identity (Dirac) temporal convolution (Make-A-Video's pseudo-3-D convolution);
- a zero gate on a parameter-free operation (Latent-Shift's channel shift, SimDA's shifted
  keys/values): `x + g * (op(x) - x)` with `g = 0`.

`Frames` tells every layer how many frames the current call has; outside a video call (or
with the temporal layers switched off) the layers pass their input through untouched.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn


@dataclass
class Frames:
    """Shared by one inflated model's layers: frames per video in the current call (None:
    not inside a video call) and whether the temporal layers run (`temporal=False`: images,
    as in joint image-video training and motion-free guidance)."""

    count: int | None = None
    temporal: bool = True


class ZooLayer(nn.Module):
    """A layer attached to one image-model layer by a forward hook.

    Subclasses implement `apply(x, f)` on the hooked layer's output `(b f) ...` and say
    whether they are temporal (skipped when `Frames.temporal` is off) or per-frame.
    """

    temporal_layer = True

    def __init__(self) -> None:
        super().__init__()
        self.frames: Frames | None = None

    def frame_count(self) -> int | None:
        frames = self.frames
        if frames is None or frames.count is None or (self.temporal_layer and not frames.temporal):
            return None
        return frames.count

    def attach(self, target: nn.Module):
        return target.register_forward_hook(self._after, with_kwargs=True)

    def _after(self, module, args, kwargs, output):
        f = self.frame_count()
        if f is None:
            return None
        if isinstance(output, torch.Tensor):
            return self.apply(output, f, args=args, kwargs=kwargs)
        if isinstance(output, tuple):  # Transformer2DModel(..., return_dict=False)
            return (self.apply(output[0], f, args=args, kwargs=kwargs), *output[1:])
        output.sample = self.apply(output.sample, f, args=args, kwargs=kwargs)
        return output

    def apply(self, x: torch.Tensor, f: int, *, args=(), kwargs=None) -> torch.Tensor:
        raise NotImplementedError


def zero_(*modules: nn.Module) -> None:
    """Zero the weights and biases of `modules` (the output projections of residual branches)."""
    with torch.no_grad():
        for m in modules:
            for p in m.parameters(recurse=False):
                p.zero_()


def default_heads(channels: int, heads: int | None = None) -> int:
    """`heads` checked against `channels`, or the largest of 8, 4, 2, 1 that divides it."""
    if heads is None:
        return next(h for h in (8, 4, 2, 1) if channels % h == 0)
    if heads < 1 or channels % heads:
        raise ValueError(f"heads={heads} must divide the layer's {channels} channels")
    return heads


def sinusoid(num_positions: int, dim: int, *, device=None, dtype=None) -> torch.Tensor:
    """Sinusoidal position table (positions, dim) (Vaswani et al., 2017, Sec. 3.5)."""
    position = torch.arange(num_positions, device=device, dtype=torch.float32)[:, None]
    freq = torch.exp(torch.arange(0, dim, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / dim))
    table = torch.zeros(num_positions, dim, device=device)
    table[:, 0::2] = torch.sin(position * freq)
    table[:, 1::2] = torch.cos(position * freq)[:, : dim // 2]
    return table.to(dtype)


def t5_buckets(relative: torch.Tensor, num_buckets: int, max_distance: int) -> torch.Tensor:
    """Bucket of each relative distance `j - i`: exact for small distances, logarithmic up to
    `max_distance`, one side per sign (Raffel et al., T5, 2020, Sec. 2.1; VDM's temporal bias)."""
    half = num_buckets // 2
    bucket = (relative > 0).long() * half
    n = relative.abs()
    exact = half // 2
    large = exact + (
        torch.log(n.float().clamp(min=1) / exact) / math.log(max_distance / exact) * (half - exact)
    ).long()
    return bucket + torch.where(n < exact, n, large.clamp(max=half - 1))


class TemporalProcessor(nn.Module):
    """Attention processor over frames with one of the zoo's position schemes.

    `position`: "none", "relative-bias" (a learned scalar per head and bucketed distance
    added to the logits: VDM), "relative" (learned key and value vectors per clipped
    distance, Shaw et al. 2018: LVDM), "rotary" (queries and keys rotated by the frame
    index, Su et al. 2021: LaVie). `causal`: frame i attends to frames <= i only
    (MagicVideo's directed attention). Projections are the diffusers `Attention`'s own.
    """

    def __init__(
        self,
        head_dim: int,
        heads: int,
        *,
        position: str = "none",
        causal: bool = False,
        num_buckets: int = 32,
        max_distance: int = 32,
    ):
        super().__init__()
        if position not in ("none", "relative-bias", "relative", "rotary"):
            raise ValueError(f"unknown temporal position scheme {position!r}")
        if position == "rotary" and head_dim % 2:
            raise ValueError(f"rotary positions need an even head size, got {head_dim}")
        self.position, self.causal = position, causal
        self.num_buckets, self.max_distance = num_buckets, max_distance
        if position == "relative-bias":
            self.bias = nn.Parameter(torch.zeros(heads, num_buckets))
        if position == "relative":
            # LVDM initialises its relative tables with xavier_uniform
            self.rel_k = nn.Parameter(nn.init.xavier_uniform_(torch.empty(2 * max_distance + 1, head_dim)))
            self.rel_v = nn.Parameter(nn.init.xavier_uniform_(torch.empty(2 * max_distance + 1, head_dim)))

    def _relative(self, f: int, device) -> torch.Tensor:
        i = torch.arange(f, device=device)
        return i[None, :] - i[:, None]  # (f, f): j - i

    def _mask(self, f: int, device, dtype) -> torch.Tensor | None:
        mask = None
        if self.position == "relative-bias":
            mask = self.bias[:, t5_buckets(self._relative(f, device), self.num_buckets, self.max_distance)]  # H f f
        if self.causal:
            causal = torch.full((f, f), float("-inf"), device=device).triu(1)
            mask = causal if mask is None else mask + causal
        return None if mask is None else mask.to(dtype)

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, **kwargs):
        from diffusers.models.embeddings import apply_rotary_emb, get_1d_rotary_pos_embed

        source = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        split = lambda t: rearrange(t, "n s (h d) -> n h s d", h=attn.heads)  # noqa: E731
        q, k, v = split(attn.to_q(hidden_states)), split(attn.to_k(source)), split(attn.to_v(source))
        f = q.shape[2]
        if self.position == "rotary":
            freqs = get_1d_rotary_pos_embed(q.shape[-1], f, use_real=True)
            q, k = apply_rotary_emb(q, freqs), apply_rotary_emb(k, freqs)
        mask = self._mask(f, q.device, q.dtype)
        if self.position == "relative":
            idx = self._relative(f, q.device).clamp(-self.max_distance, self.max_distance) + self.max_distance
            rk, rv = self.rel_k[idx].to(q.dtype), self.rel_v[idx].to(q.dtype)  # f f d
            logits = (q @ k.transpose(-1, -2) + torch.einsum("nhid,ijd->nhij", q, rk)) * attn.scale
            if mask is not None:
                logits = logits + mask
            weights = logits.softmax(-1)
            out = weights @ v + torch.einsum("nhij,ijd->nhid", weights, rv)
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=attn.scale)
        out = rearrange(out, "n h s d -> n s (h d)")
        return attn.to_out[1](attn.to_out[0](out))


def temporal_attention_module(channels: int, heads: int, processor: nn.Module | None = None):
    """A diffusers `Attention` over `channels` with a zero output projection."""
    from diffusers.models.attention_processor import Attention

    attn = Attention(query_dim=channels, heads=heads, dim_head=channels // heads, out_bias=True)
    if processor is not None:
        attn.set_processor(processor)
    zero_(attn.to_out[0])
    return attn


class TemporalAttention(ZooLayer):
    """Self-attention across the frames at each spatial position, added as a residual
    (VDM's factorised space-time attention; AnimateDiff's motion module without its FFN).

    Hooked after an image layer whose output is `(b f) c h w`. `sinusoidal=True` adds
    sinusoidal frame positions to the attention input (MagicVideo, Video LDM); the
    processor carries any other scheme. The output projection is zero at init.
    """

    def __init__(self, channels: int, heads: int | None = None, *, sinusoidal: bool = False, **processor):
        super().__init__()
        heads = default_heads(channels, heads)
        self.sinusoidal = sinusoidal
        self.norm = nn.LayerNorm(channels)
        self.attn = temporal_attention_module(
            channels, heads, TemporalProcessor(channels // heads, heads, **processor)
        )

    def attend(self, x: torch.Tensor, f: int) -> torch.Tensor:
        """The residual branch alone (zero at init)."""
        h, w = x.shape[-2:]
        seq = rearrange(x, "(b f) c h w -> (b h w) f c", f=f)
        seq = self.norm(seq)
        if self.sinusoidal:
            seq = seq + sinusoid(f, seq.shape[-1], device=seq.device, dtype=seq.dtype)
        out = self.attn(seq)
        return rearrange(out, "(b h w) f c -> (b f) c h w", h=h, w=w)

    def apply(self, x, f, *, args=(), kwargs=None):
        return x + self.attend(x, f)


class PseudoConv3d(ZooLayer):
    """Make-A-Video's pseudo-3-D convolution: a 1-D convolution over frames after a 2-D
    one (Singer et al., 2022, Sec. 3.2), initialised as the identity (Dirac kernel)."""

    def __init__(self, channels: int, kernel_size: int = 3):
        super().__init__()
        self.conv = nn.Conv1d(channels, channels, kernel_size, padding=kernel_size // 2)
        with torch.no_grad():
            nn.init.dirac_(self.conv.weight)
            self.conv.bias.zero_()

    def apply(self, x, f, *, args=(), kwargs=None):
        h, w = x.shape[-2:]
        seq = rearrange(x, "(b f) c h w -> (b h w) c f", f=f)
        return rearrange(self.conv(seq), "(b h w) c f -> (b f) c h w", h=h, w=w)


def shift_frames(x: torch.Tensor, f: int, fold: int, *, dim: int = 1) -> torch.Tensor:
    """Temporal shift (TSM, Lin et al. 2019; Latent-Shift, An et al. 2023, Sec. 3.2):
    channels [0, fold) of `x` ((b f) c ... or (b f) n c with `dim` the channel axis) take the
    previous frame's values, channels [fold, 2 fold) the next frame's; zero-padded at the ends."""
    x = x.movedim(dim, -1)
    v = rearrange(x, "(b f) ... c -> b f ... c", f=f)
    out = v.clone()
    out[:, 1:, ..., :fold] = v[:, :-1, ..., :fold]
    out[:, :1, ..., :fold] = 0
    out[:, :-1, ..., fold : 2 * fold] = v[:, 1:, ..., fold : 2 * fold]
    out[:, -1:, ..., fold : 2 * fold] = 0
    return rearrange(out, "b f ... c -> (b f) ... c").movedim(-1, dim)


class GatedShift(ZooLayer):
    """Latent-Shift's temporal shift on a layer's input, blended in by a per-channel gate
    `g` that starts at zero: `x + g * (shift(x) - x)` (identity at init; at `g = 1` the
    plain parameter-free shift of the paper). `fraction` of the channels shift, half to
    each side."""

    def __init__(self, channels: int, fraction: float = 0.25):
        super().__init__()
        if not 0 < fraction <= 1:
            raise ValueError(f"shift fraction must be in (0, 1], got {fraction}")
        self.fold = max(1, int(channels * fraction) // 2)
        self.gate = nn.Parameter(torch.zeros(2 * self.fold))

    def mix(self, x: torch.Tensor, f: int, dim: int = 1) -> torch.Tensor:
        shape = [1] * x.ndim
        shape[dim] = -1
        g = F.pad(self.gate, (0, x.shape[dim] - 2 * self.fold)).view(shape).to(x.dtype)
        return x + g * (shift_frames(x, f, self.fold, dim=dim) - x)

    def attach(self, target):
        return target.register_forward_pre_hook(self._before, with_kwargs=True)

    def _before(self, module, args, kwargs):
        f = self.frame_count()
        if f is None:
            return None
        return (self.mix(args[0], f), *args[1:]), kwargs


class ShiftedKeys(GatedShift):
    """SimDA's latent-shift attention (Xing et al., 2023, Sec. 3.3): a self-attention layer's
    keys and values come from tokens whose gated channels are taken from the neighbouring
    frames (`GatedShift` on `(b f) n c` tokens); queries stay the frame's own. The layer's
    installed processor does the attention; only where keys and values come from changes."""

    def _before(self, module, args, kwargs):
        f = self.frame_count()
        if f is None or kwargs.get("encoder_hidden_states") is not None:
            return None
        hidden = args[0] if args else kwargs["hidden_states"]
        return args, {**kwargs, "encoder_hidden_states": self.mix(hidden, f, dim=-1)}


class Adapter(ZooLayer):
    """A bottleneck adapter with a zero up-projection, added to a layer's `(b f) c h w`
    output (SimDA, Sec. 3.2). `temporal=True`: a depthwise convolution over frames between
    the projections (the temporal adapter); else per frame (the spatial adapter)."""

    def __init__(self, channels: int, ratio: float = 0.25, *, temporal: bool):
        super().__init__()
        hidden = max(1, int(channels * ratio))
        self.temporal_layer = temporal
        self.down = nn.Linear(channels, hidden)
        self.conv = nn.Conv1d(hidden, hidden, 3, padding=1, groups=hidden) if temporal else None
        self.up = nn.Linear(hidden, channels)
        zero_(self.up)

    def apply(self, x, f, *, args=(), kwargs=None):
        h, w = x.shape[-2:]
        if self.conv is None:
            seq = rearrange(x, "n c h w -> n h w c")
            return x + rearrange(self.up(F.gelu(self.down(seq))), "n h w c -> n c h w")
        seq = self.down(rearrange(x, "(b f) c h w -> (b h w) f c", f=f))
        seq = self.conv(seq.transpose(1, 2)).transpose(1, 2)
        out = self.up(F.gelu(seq))
        return x + rearrange(out, "(b h w) f c -> (b f) c h w", h=h, w=w)


def fit_window(size: int, want: int | None) -> int:
    """The largest divisor of `size` that is at most `want` (None: all of `size`)."""
    want = size if want is None else min(size, want)
    return max(d for d in range(1, want + 1) if size % d == 0)


def to_windows(x: torch.Tensor, f: int, window: tuple[int, int, int]) -> tuple[torch.Tensor, tuple]:
    """(b f) c h w -> (windows, wt*wh*ww, c) tokens of non-overlapping 3-D windows."""
    h, w = x.shape[-2:]
    wt, wh, ww = fit_window(f, window[0]), fit_window(h, window[1]), fit_window(w, window[2])
    tokens = rearrange(
        x, "(b nt wt) c (nh wh) (nw ww) -> (b nt nh nw) (wt wh ww) c", nt=f // wt, wt=wt, wh=wh, ww=ww
    )
    return tokens, (f // wt, h // wh, w // ww, wt, wh, ww)


def from_windows(tokens: torch.Tensor, layout: tuple) -> torch.Tensor:
    nt, nh, nw, wt, wh, ww = layout
    return rearrange(
        tokens, "(b nt nh nw) (wt wh ww) c -> (b nt wt) c (nh wh) (nw ww)", nt=nt, nh=nh, nw=nw, wt=wt, wh=wh
    )


class WindowAttention(ZooLayer):
    """Self-attention inside non-overlapping windows of `frames x size x size` latents
    (W.A.L.T., Gupta et al., 2023, Sec. 3.2: spatial windows with `frames=1`, spatio-temporal
    windows otherwise; None: all frames). Frame positions are added (sinusoidal); the
    output projection is zero at init. diffusers' own attention processor does the work."""

    def __init__(self, channels: int, heads: int | None = None, *, frames: int | None, size: int):
        super().__init__()
        self.window = (frames, size, size)
        self.temporal_layer = frames != 1
        self.norm = nn.LayerNorm(channels)
        self.attn = temporal_attention_module(channels, default_heads(channels, heads))

    def apply(self, x, f, *, args=(), kwargs=None):
        y = self.norm(x.movedim(1, -1)).movedim(-1, 1)
        if self.temporal_layer:
            pos = sinusoid(f, x.shape[1], device=x.device, dtype=x.dtype)  # f c
            y = y + rearrange(pos.repeat(x.shape[0] // f, 1), "n c -> n c 1 1")
        tokens, layout = to_windows(y, f, self.window)
        return x + from_windows(self.attn(tokens), layout)


class SwapAttention(ZooLayer):
    """VideoFactory's swapped cross-attention (Wang et al., 2023, Sec. 3.2): a temporal
    stream (attention over frames at each position) and the spatial stream (the image
    layer's output) cross-attend in 3-D windows, the queries coming from the spatial stream
    (`query="spatial"`) or the temporal one; consecutive layers swap. Zero output at init."""

    def __init__(self, channels: int, heads: int | None = None, *, query: str, window: tuple[int | None, int, int]):
        super().__init__()
        if query not in ("spatial", "temporal"):
            raise ValueError(f"query must be 'spatial' or 'temporal', got {query!r}")
        self.query, self.window = query, window
        self.stream = TemporalAttention(channels, heads, sinusoidal=True)
        # the temporal stream is not zeroed: the cross-attention's zero output keeps the identity
        with torch.no_grad():
            nn.init.xavier_uniform_(self.stream.attn.to_out[0].weight)
        self.norm_q, self.norm_kv = nn.LayerNorm(channels), nn.LayerNorm(channels)
        self.attn = temporal_attention_module(channels, default_heads(channels, heads))

    def apply(self, x, f, *, args=(), kwargs=None):
        t = x + self.stream.attend(x, f)
        q_src, kv_src = (x, t) if self.query == "spatial" else (t, x)
        q, layout = to_windows(self.norm_q(q_src.movedim(1, -1)).movedim(-1, 1), f, self.window)
        kv, _ = to_windows(self.norm_kv(kv_src.movedim(1, -1)).movedim(-1, 1), f, self.window)
        return x + from_windows(self.attn(q, encoder_hidden_states=kv), layout)


class Blended(ZooLayer):
    """Video LDM's merge (Blattmann et al., 2023, Sec. 3.1): `alpha * spatial + (1 - alpha) *
    temporal` with a learned `alpha` (diffusers' `AlphaBlender`), the temporal branch being a
    residual layer whose output projection starts at zero, so the merge is the image layer's
    output at init whatever `alpha` is. `branch(x, f, args)` computes the temporal output."""

    def __init__(self, branch: nn.Module, alpha: float = 0.0):
        super().__init__()
        from diffusers.models.resnet import AlphaBlender

        self.branch = branch
        self.blend = AlphaBlender(alpha=alpha, merge_strategy="learned")

    def apply(self, x, f, *, args=(), kwargs=None):
        return self.blend(x, self.branch(x, f, args))


def norm_groups(channels: int, most: int = 32) -> int:
    """The largest group count <= `most` that divides `channels` (32 for SD's widths)."""
    return next(g for g in range(min(most, channels), 0, -1) if channels % g == 0)


class TemporalResnetBlock(nn.Module):
    """diffusers' `TemporalResnetBlock` (same parameter names, same forward: norm, SiLU, 3x1x1
    conv, + time embedding, norm, SiLU, 3x1x1 conv, residual) with `norm_groups(channels)`
    groups instead of its fixed 32, so that widths 32 does not divide (the v2 shapes model's
    48) take it too; at SD's widths it is diffusers' block exactly (tested)."""

    def __init__(self, channels: int, temb_channels: int, eps: float = 1e-6):
        super().__init__()
        groups = norm_groups(channels)
        self.norm1 = nn.GroupNorm(groups, channels, eps=eps)
        self.conv1 = nn.Conv3d(channels, channels, (3, 1, 1), padding=(1, 0, 0))
        self.time_emb_proj = nn.Linear(temb_channels, channels)
        self.norm2 = nn.GroupNorm(groups, channels, eps=eps)
        self.conv2 = nn.Conv3d(channels, channels, (3, 1, 1), padding=(1, 0, 0))

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:  # x: b c f h w, temb: b f c
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.time_emb_proj(F.silu(temb)).movedim(-1, 1)[..., None, None]
        return x + self.conv2(F.silu(self.norm2(h)))


class TemporalResnet(nn.Module):
    """Video LDM's temporal residual block (`TemporalResnetBlock`: 3x1x1 convolutions with
    the time embedding) on the image resnet's output, last conv zeroed."""

    def __init__(self, channels: int, temb_channels: int, eps: float = 1e-6):
        super().__init__()
        self.block = TemporalResnetBlock(channels, temb_channels, eps=eps)
        zero_(self.block.conv2)

    def forward(self, x, f, args):
        temb = args[1] if len(args) > 1 else None
        v = rearrange(x, "(b f) c h w -> b c f h w", f=f)
        temb = None if temb is None else rearrange(temb, "(b f) c -> b f c", f=f)
        if temb is None:
            temb = torch.zeros(v.shape[0], f, self.block.time_emb_proj.in_features, device=x.device, dtype=x.dtype)
        return rearrange(self.block(v, temb), "b c f h w -> (b f) c h w")


class TemporalTransformer(nn.Module):
    """Video LDM's temporal attention block: diffusers' `TemporalBasicTransformerBlock` over
    the frames at each position with sinusoidal frame positions passed through a learned
    embedding (as SVD's `time_pos_embed`); every residual branch's last layer is zero."""

    def __init__(self, channels: int, heads: int | None = None):
        super().__init__()
        from diffusers.models.attention import TemporalBasicTransformerBlock
        from diffusers.models.embeddings import TimestepEmbedding

        heads = default_heads(channels, heads)
        self.block = TemporalBasicTransformerBlock(channels, channels, heads, channels // heads)
        self.pos = TimestepEmbedding(channels, 4 * channels, out_dim=channels)
        zero_(self.block.ff_in.net[-1], self.block.attn1.to_out[0], self.block.ff.net[-1], self.pos.linear_2)

    def forward(self, x, f, args):
        h, w = x.shape[-2:]
        pos = self.pos(sinusoid(f, x.shape[1], device=x.device, dtype=x.dtype))  # f c
        tokens = rearrange(x, "n c h w -> n (h w) c")
        tokens = tokens + pos.repeat(x.shape[0] // f, 1)[:, None]
        out = self.block(tokens, num_frames=f)
        return rearrange(out, "n (h w) c -> n c h w", h=h, w=w)


class DiffusersTemporal(ZooLayer):
    """A diffusers temporal layer as ModelScope places it (`TemporalConvLayer` after a
    resnet, `TransformerTemporalModel` after a spatial transformer or `conv_in`), both
    residual with their last projection zero at init."""

    def __init__(self, layer: nn.Module):
        super().__init__()
        self.layer = layer

    def apply(self, x, f, *, args=(), kwargs=None):
        from diffusers.models.resnet import TemporalConvLayer

        if isinstance(self.layer, TemporalConvLayer):
            return self.layer(x, num_frames=f)
        return self.layer(x, num_frames=f, return_dict=False)[0]
