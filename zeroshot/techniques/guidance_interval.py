"""Classifier-free guidance on part of the schedule only (`recipe.guidance_interval`).

Kynkäänniemi et al., "Applying Guidance in a Limited Interval Improves Sample and
Distribution Quality in Diffusion Models" (NeurIPS 2024, arXiv 2404.07724) guide only in a
middle range of noise levels; diffusers offers the same idea for speed as "dynamic
classifier-free guidance" (`callbacks.SDCFGCutoffCallback`: guidance off after a share of the
steps, the batch halved). Here the range
is a share of the schedule's steps, `[start, end)`: steps inside it run the guided batch
([negative, positive], `families.base.guided`), steps outside it the conditional branch
alone, one network call on half the batch. `start=0, end=1` is plain guidance; an empty
range (`start == end`) is the run without guidance (`guidance_scale=1`), exactly.
"""

from __future__ import annotations

import dataclasses
import math

from zeroshot.recipe import RecipeError


def guided_steps(num_steps: int, start: float, end: float) -> range:
    """The step indices `[ceil(start * n), ceil(end * n))` that run with guidance."""
    return range(math.ceil(start * num_steps - 1e-9), math.ceil(end * num_steps - 1e-9))


def check(recipe, family) -> None:
    g = recipe.guidance_interval
    if g is None:
        return
    if not 0.0 <= g.start <= g.end <= 1.0:
        raise RecipeError(f"guidance_interval: need 0 <= start <= end <= 1, got start={g.start}, end={g.end}")


def apply(run) -> None:
    g = run.recipe.guidance_interval
    if g is None:
        return
    inner = run.model_fn

    def model_fn(x, t, cond):
        if not cond.guided or run.timesteps is None:
            return inner(x, t, cond)
        index, num_steps = run.step(t)
        if index in guided_steps(num_steps, g.start, g.end):
            return inner(x, t, cond)
        return inner(x, t, dataclasses.replace(cond, negative=None, partial=None, guidance=None, _batched={}))

    run.model_fn = model_fn
