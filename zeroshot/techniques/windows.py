"""Context windows over any model function (long videos).

The model runs on windows of `length` frames every `stride` frames; each frame's prediction
is the weighted mean of the windows that contain it (pyramid or flat weights, FreeNoise
Eq. 9). The conditioning is sliced to each window (`Cond.frames`). Works for every family
whose network predicts a window of frames on its own.
"""

from __future__ import annotations

import torch

from zeroshot.recipe import RecipeError

WEIGHTINGS = ("pyramid", "flat")


def window_ranges(num_frames: int, length: int, stride: int) -> list[tuple[int, int]]:
    """Frame windows `[start, end)` of `length` frames every `stride`, covering every frame.

    The last window is shifted back to end at `num_frames`, so all windows are full.
    One window when `num_frames <= length`.
    """
    if length < 1 or stride < 1:
        raise ValueError(f"context length and stride must be >= 1, got {length}, {stride}")
    if num_frames <= length:
        return [(0, num_frames)]
    starts = list(range(0, num_frames - length + 1, stride))
    if starts[-1] + length < num_frames:
        starts.append(num_frames - length)
    return [(s, s + length) for s in starts]


def window_weights(length: int, scheme: str = "pyramid") -> torch.Tensor:
    """Per-frame fusion weights of one window: pyramid (1, 2, .., 2, 1) or flat (FreeNoise Eq. 9)."""
    if scheme == "flat":
        return torch.ones(length)
    if scheme == "pyramid":
        i = torch.arange(length)
        return torch.minimum(i + 1, length - i).float()
    raise ValueError(f"weighting must be one of {', '.join(WEIGHTINGS)}, got {scheme!r}")


def windowed(model_fn, length: int, stride: int, weighting: str = "pyramid"):
    """`model_fn` run on frame windows and fused; calls with <= `length` frames pass through."""

    def fn(x: torch.Tensor, t, cond) -> torch.Tensor:
        f = x.shape[2]
        if f <= length:
            return model_fn(x, t, cond)
        weights = window_weights(length, weighting).to(device=x.device, dtype=torch.float32)
        out = torch.zeros(x.shape, device=x.device, dtype=torch.float32)
        total = torch.zeros(f, device=x.device, dtype=torch.float32)
        for start, end in window_ranges(f, length, stride):
            pred = model_fn(x[:, :, start:end], t, cond.frames(start, end))
            out[:, :, start:end] += pred.float() * weights[None, None, :, None, None]
            total[start:end] += weights
        return (out / total[None, None, :, None, None]).to(x.dtype)

    return fn


def check(recipe, family) -> None:
    w = recipe.windows
    if w is None:
        return
    if w.length < 1 or w.stride < 1:
        raise RecipeError(f"windows.length and windows.stride must be >= 1, got {w.length}, {w.stride}")
    if w.weighting not in WEIGHTINGS:
        raise RecipeError(f"windows.weighting must be one of {', '.join(WEIGHTINGS)}, got {w.weighting!r}")


def apply(run) -> None:
    w = run.recipe.windows
    if w is not None:
        run.model_fn = windowed(run.model_fn, w.length, w.stride, w.weighting)
