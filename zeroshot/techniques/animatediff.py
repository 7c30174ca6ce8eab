"""AnimateDiff motion modules on an image model (`recipe.animatediff`).

On an `sd` model the recipe's adapter (or the model's default one) is inflated into a new
`UNetMotionModel` and the run's model becomes an `animatediff` model; an `animatediff`
folder animates with its own modules. Videos longer than the module's positional table run
its temporal layers on FreeNoise context windows (`trained.animatediff.context_windows`).
"""

from __future__ import annotations

import contextlib

from zeroshot.recipe import RecipeError

FAMILIES = ("sd", "animatediff")


def check(recipe, family) -> None:
    ad = recipe.animatediff
    if ad is None:
        return
    if ad.context_length is not None and ad.context_length < 1:
        raise RecipeError(f"animatediff.context_length must be >= 1, got {ad.context_length}")
    if ad.context_stride < 1:
        raise RecipeError(f"animatediff.context_stride must be >= 1, got {ad.context_stride}")
    if recipe.cross_frame is not None:
        raise RecipeError("cross_frame cannot be combined with animatediff (its temporal layers attend across frames)")
    if family.family not in FAMILIES:
        raise RecipeError(
            f"animatediff: motion modules apply to sd models (or an animatediff folder), not to {family.family} models"
        )
    if family.family == "animatediff" and ad.adapter is not None:
        raise RecipeError("animatediff.adapter: an animatediff model carries its own motion modules; leave it unset")


def apply(run) -> None:
    ad = run.recipe.animatediff
    if ad is None:
        return
    from zeroshot.families import AnimateDiff
    from zeroshot.trained.animatediff import context_windows, load_motion_adapter, resolve_adapter_path

    model = run.model
    if not isinstance(model, AnimateDiff):
        adapter = load_motion_adapter(resolve_adapter_path(model, ad.adapter), device=model.device, dtype=model.dtype)
        run.model = AnimateDiff.from_image_model(model, adapter)
        run.reset_model_fn()
        run.encode = run.model.encode
    motion_unet = run.model.unet
    max_len = run.model.max_frames
    length = max_len if ad.context_length is None else ad.context_length
    if not 1 <= length <= max_len:
        raise RecipeError(f"animatediff.context_length must be in [1, {max_len}], got {length}")
    inner = run.model_fn

    def model_fn(x, t, cond):
        long = x.shape[2] > length
        with context_windows(motion_unet, length, ad.context_stride) if long else contextlib.nullcontext():
            return inner(x, t, cond)

    run.model_fn = model_fn
