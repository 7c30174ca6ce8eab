"""Frames through the network a chunk at a time (`recipe.chunks`), with output identical to
one batch: memory of the network call stops growing with the video's length.

For an image model frames are independent except through cross-frame attention; its
processors keep, per step, the anchor frame's attention input (from the chunk that holds
the anchor, which runs first) and the previous chunk's last frame (`FrameState.cache`), so
no frame is computed twice and no anchor is re-denoised. Video networks attend across
frames themselves: they take `windows` instead.
"""

from __future__ import annotations

import torch

from zeroshot.recipe import RecipeError


def chunk_ranges(num_frames: int, size: int, first: int = 0) -> list[tuple[int, int]]:
    """Consecutive `[start, end)` chunks of `size` frames, the one holding frame `first` first."""
    ranges = [(s, min(s + size, num_frames)) for s in range(0, num_frames, size)]
    return sorted(ranges, key=lambda r: not r[0] <= first < r[1])


def check(recipe, family) -> None:
    c = recipe.chunks
    if c is None:
        return
    if c.size < 2:
        raise RecipeError(f"chunks.size must be >= 2, got {c.size}")
    if not family.image_model:
        raise RecipeError(
            f"chunks: {family.family} models attend across frames in the network; use windows for long videos"
        )
    if recipe.smoothing is not None and not recipe.smoothing.mask_video:
        raise RecipeError("chunks: smoothing's attention masks need all frames in one call; use smoothing.mask_video")


def apply(run) -> None:
    c = run.recipe.chunks
    if c is None:
        return
    state = run.extras.get("frame_state")  # cross-frame attention, when installed
    anchor = state.anchor if state is not None else 0
    inner = run.model_fn

    def model_fn(x: torch.Tensor, t, cond) -> torch.Tensor:
        f = x.shape[2]
        if f <= c.size:
            return inner(x, t, cond)
        out = torch.empty_like(x)
        if state is not None:
            state.cache = {}
        try:
            for start, end in chunk_ranges(f, c.size, anchor):
                if state is not None:
                    state.offset = start
                out[:, :, start:end] = inner(x[:, :, start:end], t, cond.frames(start, end))
        finally:
            if state is not None:
                state.cache, state.offset = None, 0
        return out

    run.model_fn = model_fn
