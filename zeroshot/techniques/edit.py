"""Video-to-video (`recipe.edit`; SDEdit, Meng et al., arXiv 2108.01073): the input video
(`recipe.video`) is encoded frame by frame by the VAE, noised to the first `strength` of the
schedule and denoised over the rest, as diffusers' img2img pipelines do it (the last
`int(steps * strength)` steps run; strength 0 returns the input's reconstruction).

The noise added to the input is the run's initial noise, drawn from the recipe's prior: the
`edit` method uses one noise for every frame (VideoFusion's prior at lam = 1, Text2Video-Zero's
shared latent), so every frame is disturbed alike and cross-frame attention keeps them
consistent; `noise.prior = "iid"` noises each frame independently, which makes each frame
equal diffusers' `StableDiffusionImg2ImgPipeline` on that frame when cross-frame attention
is off. The input is encoded to the mean of the VAE's posterior (no draw).

The input video is read and checked here (`check_inputs`) for every run that names one; a
video-conditioned family (`families.base.takes_video`: `pix2pix`) takes it without an edit.
"""

from __future__ import annotations

import torch

from zeroshot.recipe import RecipeError

#: Families whose latents are one VAE latent per frame (the input can be encoded).
FAMILIES = ("sd", "sdxl", "animatediff", "unet3d")


def check(recipe, family) -> None:
    from zeroshot.families.base import takes_video

    e = recipe.edit
    if e is None:  # an input video without an edit: for video-conditioned families (families.base.family_recipe)
        return
    if takes_video(family):
        raise RecipeError(f"edit: {family.family} models condition every step on the input video and start from "
                          f"noise; the SDEdit strength (--strength) is for --method edit on text-to-image models")
    if family.family not in FAMILIES:
        raise RecipeError(f"edit: {family.family} models cannot encode a video frame by frame; edit takes "
                          f"{', '.join(FAMILIES)} models")
    if not 0.0 <= e.strength <= 1.0:
        raise RecipeError(f"edit.strength must be in [0, 1], got {e.strength}")
    if recipe.motion is not None and recipe.motion.dynamics:
        raise RecipeError("edit: the edited video keeps its input's motion; T2V-Zero's motion warp does not apply "
                          "(leave motion off)")
    if recipe.freeinit is not None:
        raise RecipeError("edit: FreeInit re-draws the whole schedule from noise; it does not apply to an edit")


def input_frames(recipe) -> torch.Tensor:
    """The input video `(f, 3, H, W)` in [0, 1], checked against the request's frames and size."""
    from zeroshot.control import fit, read_input_video

    frames = read_input_video(recipe.video, "video")
    return fit(frames, recipe.num_frames, recipe.height, recipe.width, resize=False, where="video",
               path=recipe.video, hint="the edit takes the input's frame count and size")


def check_inputs(model, recipe) -> None:
    """Before any model work: an edit has an input video, readable and fitting the request
    (here, not in `check`: a preset may leave its inputs to the command line)."""
    if recipe.edit is not None and recipe.video is None:
        raise RecipeError("edit: no input video (recipe.video; zeroshot edit VIDEO PROMPT)")
    if recipe.video is not None:
        input_frames(recipe)


def start_index(num_steps: int, strength: float) -> int:
    """The schedule index an edit of `strength` starts at (diffusers' img2img `get_timesteps`)."""
    return num_steps - min(int(num_steps * strength), num_steps)


def apply(run) -> None:
    e = run.recipe.edit
    if e is None:
        return
    from zeroshot.families.sd import encode_frames
    from zeroshot.sampling import denoise

    model = run.model
    frames = input_frames(run.recipe).to(device=model.device)
    x0 = encode_frames(model.vae, frames[None]).to(model.dtype)  # 1 c f h w
    x0 = x0.expand(run.shape[0], *x0.shape[1:])

    def sample(noise: torch.Tensor, num_steps: int) -> torch.Tensor:
        scheduler = run.new_scheduler(num_steps)
        begin = start_index(num_steps, e.strength) * scheduler.order
        timesteps = scheduler.timesteps[begin:]
        if len(timesteps) == 0:
            return x0.clone()
        if hasattr(scheduler, "set_begin_index"):
            scheduler.set_begin_index(begin)
        x = scheduler.add_noise(x0, noise, timesteps[:1])
        return denoise(run.eps_fn(), scheduler, x, timesteps, **run.step_kwargs())

    run.sample = sample
