"""An input image as frame 0 without T2V-Zero's warp (`recipe.image` with motion dynamics off).

On the image families (`t2v_zero.IMAGE_FAMILIES`) the image is encoded as with T2V-Zero
(`t2v_zero.encode_image`) and frame 0 is held to it for the whole schedule: it starts as the
image latent noised to the first timestep with frame 0's initial noise, and after every step it
is replaced by the image latent noised to the next step's timestep (the clean latent after the
last), so it decodes to the VAE's reconstruction of the image. The other frames are denoised
from their own noise and see frame 0 through what the run gives them: AnimateDiff's motion
modules (steered by a flow adapter or flow-warped noise when a motion request is given) or
cross-frame attention anchored on frame 0. This is the image-to-video-with-motion path of the
trained modules (Motion-I2V / DragNUWA's use case); with the dynamics on, T2V-Zero's own
image path runs instead (`zeroshot.techniques.t2v_zero`).
"""

from __future__ import annotations

import torch

from zeroshot.recipe import RecipeError
from zeroshot.sampling import denoise, init_noise_sigma


def active(recipe) -> bool:
    """Whether the recipe holds frame 0 to an image without T2V-Zero's dynamics."""
    return recipe.image is not None and (recipe.motion is None or not recipe.motion.dynamics)


def check(recipe, family) -> None:
    """Nothing to check without the model's family: `check_carried` runs from
    `families.base.family_recipe`, where it is known (a recipe is first validated as sd's)."""


def check_carried(recipe, family) -> None:
    """Without the dynamics, only temporal layers or cross-frame attention carry the image to
    the other frames of an image model; a plain per-frame run would ignore it: refused."""
    if active(recipe) and family.image_model and recipe.animatediff is None and recipe.cross_frame is None:
        raise RecipeError(
            f"image: on {family.family} models the input image is frame 0 and the other frames follow it through "
            "T2V-Zero's motion (--method t2v-zero), motion modules (--method animatediff) or cross-frame attention "
            "(--set cross_frame=on); this recipe has none of them"
        )


def apply(run) -> None:
    from zeroshot.families.base import takes_image

    recipe = run.recipe
    if not active(recipe) or takes_image(type(run.model)):  # svd, cogvideox-i2v: their own conditioning
        return
    from zeroshot.methods.t2v_zero import held_frame
    from zeroshot.techniques.t2v_zero import encode_image

    image_latents = encode_image(run)  # 1 c 1 h w

    def sample(latents: torch.Tensor, num_steps: int) -> torch.Tensor:
        scheduler = run.new_scheduler(num_steps)
        b, c, _, h, w = latents.shape
        frame0_at, hold = held_frame(scheduler, image_latents.to(latents.dtype).expand(b, c, 1, h, w), latents[:, :, :1])
        x_T = torch.cat([frame0_at(0), latents[:, :, 1:] * init_noise_sigma(scheduler)], dim=2)
        return denoise(run.eps_fn(), scheduler, x_T, scheduler.timesteps, after_step=hold, **run.step_kwargs())

    run.sample = sample
