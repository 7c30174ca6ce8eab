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
    freeinit,
    noise,
    prompt_travel,
    smoothing,
    t2v_zero,
    warped_noise,
    windows,
)
from zeroshot.techniques.run import Run

#: Every technique, in the order they wire themselves in: the model first (animatediff) and
#: its conditioning (prompt_travel), cross_frame (whose state controlnet shares on its ControlNets),
#: then wrappers of the model function (cross_frame innermost, then chunks, which feed it
#: one chunk at a time, then windows, so each window sees its own frames), then samplers (t2v_zero with
#: smoothing inside it; edit, which starts from the encoded input), FreeInit around whatever sampler results, and flow-warped noise
#: outermost (it replaces the initial noise that FreeInit and T2V-Zero start from).
TECHNIQUES = (
    noise, animatediff, prompt_travel, cross_frame, controlnet, chunks, windows, t2v_zero, smoothing, edit, freeinit,
    warped_noise,
)


def check_all(recipe, family) -> None:
    """Every technique's check of a resolved recipe against a family class."""
    for technique in TECHNIQUES:
        technique.check(recipe, family)


def apply_all(run: Run) -> None:
    for technique in TECHNIQUES:
        technique.apply(run)


__all__ = ["Run", "TECHNIQUES", "apply_all", "check_all"]
