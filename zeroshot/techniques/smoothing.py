"""Text2Video-Zero background smoothing (`recipe.smoothing`, zeroshot.methods.smoothing):
before the last pass, each frame's background at T is blended toward frame 0's, warped.
Masks come from the subject tokens' cross-attention of an image UNet (or a mask video)."""

from __future__ import annotations

from zeroshot.recipe import RecipeError
from zeroshot.sampling import denoise


def check(recipe, family) -> None:
    s = recipe.smoothing
    if s is None:
        return
    if not 0.0 <= s.strength <= 1.0:
        raise RecipeError(f"smoothing.strength must be in [0, 1], got {s.strength}")
    if recipe.motion is None:
        raise RecipeError("smoothing needs motion (Text2Video-Zero dynamics); set motion=on or smoothing=off")
    if not family.image_model and not s.mask_video:
        raise RecipeError(
            f"smoothing: attention masks need an image UNet's per-frame cross-attention; "
            f"{family.family} models take smoothing.mask_video only"
        )


def apply(run) -> None:
    if run.recipe.smoothing is None:
        return
    from zeroshot.methods.smoothing import BackgroundSmoothing

    def before_final(scheduler, timesteps):
        kw = run.step_kwargs(callback=False)
        return BackgroundSmoothing.for_recipe(
            run.recipe, run.model, run.prompt, lambda x: denoise(run.eps_fn(), scheduler, x, timesteps, **kw)
        )

    run.before_final = before_final
