"""Cross-frame self-attention (Text2Video-Zero Sec. 3.3) on a family's per-frame spatial
self-attention layers (`recipe.cross_frame`), switched per step by `cross_frame.steps`."""

from __future__ import annotations

from zeroshot.hooks import cross_frame_attention, in_parts
from zeroshot.recipe import RecipeError

MODES = ("first", "sparse-causal")
PARTS = ("down", "mid", "up")


def step_active(index: int, num_steps: int, steps: tuple[float, float]) -> bool:
    """Whether a step-gated hook is on at schedule index `index` (fractions `steps`)."""
    start, end = steps
    x = index / num_steps
    return start <= x and (x < end or end >= 1.0)


def check(recipe, family) -> None:
    cf = recipe.cross_frame
    if cf is None:
        return
    if not getattr(family, "frame_attention", True):
        raise RecipeError(
            f"cross_frame: {family.family} models attend jointly over all frames, space and text (3-D attention); "
            "there is no per-frame self-attention to redirect"
        )
    if cf.mode not in MODES:
        raise RecipeError(f"cross_frame.mode must be one of {', '.join(MODES)}, got {cf.mode!r}")
    bad = [x for x in cf.layers if x not in PARTS]
    if bad or not cf.layers:
        raise RecipeError(f"cross_frame.layers must be a non-empty subset of {', '.join(PARTS)}, got {cf.layers!r}")
    if cf.anchor < 0 or (recipe.num_frames is not None and cf.anchor >= recipe.num_frames):
        top = "num_frames - 1" if recipe.num_frames is None else recipe.num_frames - 1
        raise RecipeError(f"cross_frame.anchor must be in [0, {top}], got {cf.anchor}")
    s0, s1 = cf.steps
    if not 0.0 <= s0 <= s1 <= 1.0:
        raise RecipeError(f"cross_frame.steps must satisfy 0 <= start <= end <= 1, got {cf.steps!r}")


def layers(model, parts) -> list[str]:
    """The model's per-frame spatial self-attention processors in the given UNet parts."""
    return [n for n in model.attention_layers("spatial_self") if in_parts(n, parts)]


def apply(run) -> None:
    cf = run.recipe.cross_frame
    if cf is None:
        return
    names = layers(run.model, cf.layers)
    if not names:
        raise RecipeError(
            f"cross_frame: the {run.model.family} model has no per-frame spatial self-attention "
            f"in {', '.join(cf.layers)}"
        )
    state = run.stack.enter_context(
        cross_frame_attention(run.model.denoiser, run.recipe.num_frames, mode=cf.mode, anchor=cf.anchor, names=names)
    )
    run.extras["frame_state"] = state
    inner = run.model_fn

    def model_fn(x, t, cond):
        state.num_frames = x.shape[2]
        state.active = step_active(*run.step(t), cf.steps)
        return inner(x, t, cond)

    run.model_fn = model_fn
