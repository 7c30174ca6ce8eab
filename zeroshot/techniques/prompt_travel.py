"""Prompt travel (`recipe.prompt_at`): prompts pinned to frames, text conditioning
interpolated linearly between them, held after the last.

Entries are "FRAME:PROMPT"; the `generate()` prompt holds frame 0 unless an entry pins
frame 0. Each distinct prompt is encoded once by the family; every conditioning tensor of
the positive side gets a frame axis (`Cond.frame_keys`), so chunks and windows slice it like
the frames. Families whose network takes one text per video (unet3d) refuse it.
"""

from __future__ import annotations

import torch

from zeroshot.families.base import Cond
from zeroshot.recipe import RecipeError

FAMILIES = ("sd", "sdxl", "animatediff")


def parse(entries, num_frames: int | None) -> list[tuple[int, str]]:
    """(frame, prompt) pairs of "FRAME:PROMPT" entries; RecipeError for a bad one (frames
    outside the video only when `num_frames` is known)."""
    out: dict[int, str] = {}
    for entry in entries:
        head, sep, text = entry.partition(":")
        try:
            frame = int(head.strip())
        except ValueError:
            frame = None
        if not sep or frame is None or not text.strip():
            raise RecipeError(f"prompt_at: expected FRAME:PROMPT, got {entry!r}")
        if frame < 0 or (num_frames is not None and frame >= num_frames):
            top = "num_frames - 1" if num_frames is None else num_frames - 1
            raise RecipeError(f"prompt_at: frame {frame} is outside the video (0..{top})")
        if frame in out:
            raise RecipeError(f"prompt_at: frame {frame} is given twice")
        out[frame] = text.strip()
    return sorted(out.items())


def weights(keys: list[int], num_frames: int) -> torch.Tensor:
    """(num_frames, len(keys)) linear interpolation weights between key frames (held at the ends)."""
    w = torch.zeros(num_frames, len(keys), dtype=torch.float64)
    for f in range(num_frames):
        if f <= keys[0]:
            w[f, 0] = 1
        elif f >= keys[-1]:
            w[f, -1] = 1
        else:
            j = max(i for i, k in enumerate(keys) if k <= f)
            a = (f - keys[j]) / (keys[j + 1] - keys[j])
            w[f, j], w[f, j + 1] = 1 - a, a
    return w


def check(recipe, family) -> None:
    if not recipe.prompt_at:
        return
    parse(recipe.prompt_at, recipe.num_frames)
    if family.family not in FAMILIES:
        raise RecipeError(f"prompt_at: {family.family} models take one text per video; works on {', '.join(FAMILIES)}")


def apply(run) -> None:
    recipe = run.recipe
    if not recipe.prompt_at:
        return
    pinned = parse(recipe.prompt_at, recipe.num_frames)
    keys = dict([(0, run.prompt)] + pinned)  # an entry at frame 0 replaces the prompt there
    frames, texts = zip(*sorted(keys.items()))
    encode = run.encode

    def travel(prompts: list[str], negative: list[str] | None) -> Cond:
        n = len(prompts)
        conds = [encode([text] * n, negative) for text in texts]
        w = weights(list(frames), recipe.num_frames)  # f k
        positive = {
            name: torch.einsum("fk,kb...->bf...", w.to(conds[0].positive[name]), torch.stack([c.positive[name] for c in conds]))
            for name in conds[0].positive
        }
        negative_part = None
        if conds[0].negative is not None:
            negative_part = {
                name: v[:, None].expand(v.shape[0], recipe.num_frames, *v.shape[1:])
                for name, v in conds[0].negative.items()
            }
        return Cond(positive, negative_part, frame_keys=tuple(positive))

    run.encode = travel
