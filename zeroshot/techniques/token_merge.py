"""Token merging on spatial self-attention (`recipe.token_merge`; ToMe for SD: Bolya &
Hoffman, "Token Merging for Fast Stable Diffusion", CVPRW 2023, arXiv 2303.17604, after ToMe,
Bolya et al., ICLR 2023).

Before a spatial self-attention layer, `r = ratio * N` of its N tokens are merged away by
bipartite soft matching: the tokens are split into destinations (one per `stride` x `stride`
cell of the token grid, its top-left token) and sources (the rest); each source's most
similar destination (cosine similarity of the tokens) is its edge, and the `r` sources with
the most similar edges are averaged into their destinations. Attention runs on the N - r
tokens left; after it every merged source takes its destination's output (unmerge). Layers
whose grid is more than `max_downsample` times coarser than the latents are left alone.

Our own implementation, as a wrapper of the installed attention processor (so it composes
with cross-frame attention: the anchor frame's merged tokens give the keys and values).
The `tomesd` package (0.1.3, May 2023, unmaintained) runs on diffusers 0.42 but replaces the
transformer blocks' class with its own copy of their forward; it is not used. Destinations
are fixed (top-left of each cell) rather than drawn at random, so a run needs no generator.
"""

from __future__ import annotations

import math

import torch

from zeroshot.recipe import RecipeError


def bipartite_soft_matching(x: torch.Tensor, grid: tuple[int, int], r: int, stride: int = 2):
    """(merge, unmerge) functions for tokens `x` (B, N, C) on an `grid` = (h, w) token grid.

    `merge(y)` (B, N, C') -> (B, N - r, C'): the `r` sources most similar to a destination
    averaged into it; `unmerge(z)` (B, N - r, C') -> (B, N, C'): every token back in its
    place, merged sources taking their destination's value.
    """
    b, n, _ = x.shape
    h, w = grid
    hs, ws = h // stride, w // stride
    is_dst = torch.zeros(h, w, dtype=torch.bool, device=x.device)
    is_dst[: hs * stride : stride, : ws * stride : stride] = True  # top-left of every full cell
    is_dst = is_dst.flatten()
    dst_pos = is_dst.nonzero().squeeze(1)  # (Nb,)
    src_pos = (~is_dst).nonzero().squeeze(1)  # (Na,)
    r = min(r, len(src_pos))
    with torch.no_grad():
        metric = x / x.norm(dim=-1, keepdim=True).clamp_min(1e-6)
        scores = metric[:, src_pos] @ metric[:, dst_pos].transpose(1, 2)  # B Na Nb
        best, best_dst = scores.max(dim=-1)  # B Na
        order = best.argsort(dim=-1, descending=True)
        merged_src, kept_src = order[:, :r], order[:, r:]  # indices into the sources
        merged_dst = best_dst.gather(1, merged_src)  # B r: the destination of each merged source

    def take(y: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        return y.gather(1, idx.unsqueeze(-1).expand(-1, -1, y.shape[-1]))

    def merge(y: torch.Tensor) -> torch.Tensor:
        src, dst = y[:, src_pos], y[:, dst_pos]
        dst = dst.scatter_reduce(1, merged_dst.unsqueeze(-1).expand(-1, -1, y.shape[-1]), take(src, merged_src),
                                 reduce="mean", include_self=True)
        return torch.cat([take(src, kept_src), dst], dim=1)  # B (N - r) C

    def unmerge(z: torch.Tensor) -> torch.Tensor:
        kept, dst = z[:, : kept_src.shape[1]], z[:, kept_src.shape[1] :]
        c = z.shape[-1]
        src = torch.empty(b, len(src_pos), c, dtype=z.dtype, device=z.device)
        src.scatter_(1, kept_src.unsqueeze(-1).expand(-1, -1, c), kept)
        src.scatter_(1, merged_src.unsqueeze(-1).expand(-1, -1, c), take(dst, merged_dst))
        out = torch.empty(b, n, c, dtype=z.dtype, device=z.device)
        out[:, src_pos] = src
        out[:, dst_pos] = dst
        return out

    return merge, unmerge


def token_grid(num_tokens: int, latent_hw: tuple[int, int]) -> tuple[int, tuple[int, int]]:
    """(downsampling, (h, w)) of a layer with `num_tokens` tokens in a UNet on `latent_hw` latents."""
    h, w = latent_hw
    down = max(1, round(math.sqrt(h * w / num_tokens)))
    return down, (math.ceil(h / down), math.ceil(w / down))


class TokenMergeProcessor:
    """Wraps an installed attention processor: merge the tokens, attend, unmerge."""

    def __init__(self, inner, *, ratio: float, stride: int, max_downsample: int, latent_hw: tuple[int, int]):
        self.inner = inner
        self.ratio, self.stride, self.max_downsample = ratio, stride, max_downsample
        self.latent_hw = latent_hw

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, *args, **kwargs):
        n = hidden_states.shape[1] if hidden_states.ndim == 3 else 0
        r = int(n * self.ratio)
        down, grid = token_grid(n, self.latent_hw) if n else (0, (0, 0))
        if r == 0 or encoder_hidden_states is not None or down > self.max_downsample or grid[0] * grid[1] != n:
            return self.inner(attn, hidden_states, encoder_hidden_states, attention_mask, *args, **kwargs)
        merge, unmerge = bipartite_soft_matching(hidden_states, grid, r, self.stride)
        out = self.inner(attn, merge(hidden_states), None, attention_mask, *args, **kwargs)
        return unmerge(out)


def check(recipe, family) -> None:
    tm = recipe.token_merge
    if tm is None:
        return
    if not 0.0 <= tm.ratio < 1.0:
        raise RecipeError(f"token_merge.ratio must be in [0, 1), got {tm.ratio}")
    if tm.stride < 2:
        raise RecipeError(f"token_merge.stride must be >= 2, got {tm.stride}")
    if tm.max_downsample < 1:
        raise RecipeError(f"token_merge.max_downsample must be >= 1, got {tm.max_downsample}")
    if not getattr(family, "frame_attention", True):
        raise RecipeError(
            f"token_merge: {family.family} models attend jointly over frames, space and text; "
            "there is no per-frame spatial self-attention to merge"
        )


def apply(run) -> None:
    tm = run.recipe.token_merge
    if tm is None:
        return
    from zeroshot.hooks import wrapped_processors

    names = frozenset(run.model.attention_layers("spatial_self"))
    if not names:
        raise RecipeError(f"token_merge: the {run.model.family} model has no per-frame spatial self-attention")
    latent_hw = tuple(run.shape[-2:])

    def wrap(name, processor):
        return TokenMergeProcessor(processor, ratio=tm.ratio, stride=tm.stride, max_downsample=tm.max_downsample,
                                   latent_hw=latent_hw)

    run.stack.enter_context(wrapped_processors(run.model.denoiser, names.__contains__, wrap))
