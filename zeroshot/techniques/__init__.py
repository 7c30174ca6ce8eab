"""Techniques: each one owns its checks and its wiring, listed in one visible tuple.

A technique is a module with two functions:

    check(recipe, family) -> None   # RecipeError in one line; no-op when its part is off
    apply(run) -> None              # wires itself into a `Run`: enters scoped hooks on
                                    # run.stack, wraps run.model_fn, or swaps run.sample

`check` sees the model's family class only (so the CLI can refuse before loading weights);
`apply` sees the loaded model and refuses, in one line, when the model offers nothing to
act on (e.g. no per-frame spatial self-attention). `generate()` runs `check` then `apply`
of every technique in `TECHNIQUES`, in order.
"""

from __future__ import annotations

from zeroshot.techniques import (
    animatediff,
    chunks,
    controlnet,
    cross_frame,
    edit,
    flow_adapter,
    freeinit,
    guidance_interval,
    image_anchor,
    noise,
    prompt_travel,
    smoothing,
    step_cache,
    t2v_zero,
    token_merge,
    warped_noise,
    windows,
)
from zeroshot.techniques.run import Run

#: Every technique, in the order they wire themselves in: the model first (animatediff) and
#: its conditioning (prompt_travel), cross_frame (whose state controlnet shares on its ControlNets),
#: flow_adapter after controlnet (its residuals add to the ControlNets'),
#: then wrappers of the model function (cross_frame innermost, then chunks, which feed it
#: one chunk at a time, then windows, so each window sees its own frames, then step_cache, whose
#: steps span every chunk and window; token_merge wraps the cross-frame processors; guidance_interval
#: outermost of the model-function wrappers, dropping the negative branch for every chunk and window), then samplers (t2v_zero with
#: smoothing inside it; image_anchor, frame 0 held to an input image without the dynamics; edit, which starts from the encoded input), FreeInit around whatever sampler results, and flow-warped noise
#: outermost (it replaces the initial noise that FreeInit and T2V-Zero start from).
TECHNIQUES = (
    noise, animatediff, prompt_travel, cross_frame, controlnet, flow_adapter, chunks, windows, step_cache, token_merge,
    guidance_interval, t2v_zero, image_anchor, smoothing, edit, freeinit, warped_noise,
)


def check_all(recipe, family) -> None:
    """Every technique's check of a resolved recipe against a family class."""
    for technique in TECHNIQUES:
        technique.check(recipe, family)


def apply_all(run: Run) -> None:
    for technique in TECHNIQUES:
        technique.apply(run)


__all__ = ["Run", "TECHNIQUES", "apply_all", "check_all"]
