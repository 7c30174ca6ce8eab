"""Text2Video-Zero's motion dynamics (`recipe.motion`): frame 0 is denoised to T', copied,
warped by the motion field and re-noised to T; then all frames are denoised
(zeroshot.methods.t2v_zero). Any family with one latent frame per video frame takes it; the
scheduler must restart mid-schedule and know `alphas_cumprod` (the re-noising).

With an input image (`recipe.image`) on an image model (`IMAGE_FAMILIES`), the image is
frame 0: it is resized to the recipe's size, encoded by the VAE (the posterior's mean, scaled)
and frame 0 is held to it while the others follow the motion (methods.t2v_zero.sample)."""

from __future__ import annotations

import torch

from zeroshot.motion import PADDINGS, WARP_MODES
from zeroshot.recipe import RecipeError, scaled_warp_steps
from zeroshot.sampling import SCHEDULER_CLASSES, init_noise_sigma, make_scheduler


#: Families whose input image becomes frame 0 (one VAE latent per frame): of T2V-Zero's motion, or
#: held without it (`techniques.image_anchor`).
IMAGE_FAMILIES = ("sd", "sdxl", "animatediff")


def check(recipe, family) -> None:
    m = recipe.motion
    if m is None or not m.dynamics:  # without dynamics the request only drives flow-warped noise
        return
    if getattr(family, "continuous_timesteps", False):
        raise RecipeError(
            f"motion (t2v-zero): {family.family} models sample continuous noise levels; its re-noising needs "
            "a discrete schedule with alphas_cumprod"
        )
    if getattr(family, "temporal_compression", 1) > 1:
        raise RecipeError(
            f"motion (t2v-zero): {family.family} latents compress time ({family.temporal_compression} frames per "
            "latent frame); the warp needs one latent frame per video frame"
        )
    if m.mode is not None and m.mode not in WARP_MODES:
        raise RecipeError(f"motion.mode must be one of {', '.join(WARP_MODES)}, got {m.mode!r}")
    if m.padding is not None and m.padding not in PADDINGS:
        raise RecipeError(f"motion.padding must be one of {', '.join(PADDINGS)}, got {m.padding!r}")
    if m.zoom <= 0:
        raise RecipeError(f"motion.zoom must be > 0, got {m.zoom}")
    if m.t0 is not None and m.t1 is not None:
        n = recipe.num_inference_steps
        if not 0 <= m.t0 < m.t1:
            raise RecipeError(f"motion.t0 must be >= 0 and < motion.t1, got t0={m.t0}, t1={m.t1}")
        if n is not None and m.t1 > n - 1:
            raise RecipeError(f"motion.t1 must be <= num_inference_steps - 1 = {n - 1}, got {m.t1}")


def check_scheduler(scheduler) -> None:
    """T2V-Zero restarts the schedule at T and re-noises with alphas_cumprod."""
    known = tuple(SCHEDULER_CLASSES.values())
    if type(scheduler).__name__ not in known or not hasattr(scheduler, "alphas_cumprod"):
        raise RecipeError(
            f"motion (t2v-zero) needs a scheduler that restarts mid-schedule and has alphas_cumprod "
            f"({', '.join(SCHEDULER_CLASSES)}); the model's is {type(scheduler).__name__}: set scheduler"
        )


def warp_fn(recipe, height: int, width: int):
    """The motion field of the recipe as `fn(latents (b, c, f, h, w)) -> warped`."""
    from zeroshot.motion import field_from_recipe, warp

    m = recipe.motion
    field = field_from_recipe(m, recipe.num_frames, height, width)

    def fn(x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        flow = field.flow(recipe.num_frames, height, width, grid=(h, w), device=x.device, dtype=torch.float32)
        return warp(x, flow, scale=(height / h, width / w), mode=m.mode, padding=m.padding)

    return fn


def warp_steps(recipe, num_steps: int) -> tuple[int, int]:
    """(t0, t1) for a pass of `num_steps` steps (rescaled from the recipe's step count)."""
    m = recipe.motion
    if num_steps == recipe.num_inference_steps:
        return m.t0, m.t1
    return scaled_warp_steps(num_steps, m.t0, m.t1, recipe.num_inference_steps)


def apply(run) -> None:
    recipe = run.recipe
    if recipe.motion is None or not recipe.motion.dynamics:
        return
    from zeroshot.methods import t2v_zero

    check_scheduler(make_scheduler(recipe.scheduler, run.model.scheduler))
    warp = warp_fn(recipe, recipe.height, recipe.width)
    if run.renoise_noise is None:  # drawn right after the initial noise, from the same prior
        from zeroshot import noise as priors

        m = run.model
        run.renoise_noise = priors.sample(recipe.noise, run.shape, run.generator, device=m.device, dtype=m.dtype)

    image_latents = encode_image(run) if recipe.image is not None else None

    def sample(latents: torch.Tensor, num_steps: int) -> torch.Tensor:
        scheduler = run.new_scheduler(num_steps)
        t0, t1 = warp_steps(recipe, num_steps)
        before_final = None
        if run.before_final is not None:
            i_T = t2v_zero.warp_indices(num_steps, t0, t1)[0]
            before_final = run.before_final(scheduler, scheduler.timesteps[i_T:])
        return t2v_zero.sample(
            run.eps_fn(),
            scheduler,
            latents * init_noise_sigma(scheduler),
            t0=t0,
            t1=t1,
            warp_fn=warp,
            renoise_noise=run.renoise_noise,
            before_final=before_final,
            image_latents=image_latents,
            **run.step_kwargs(),
        )

    run.sample = sample


def image_frame(recipe) -> torch.Tensor:
    """The input image as one frame `(1, 3, H, W)` in [0, 1], resized (bicubic) to the recipe's
    height and width when its size differs (the aspect ratio is not kept)."""
    import numpy as np
    from PIL import Image

    from zeroshot.families.base import open_image

    image = open_image(recipe.image)
    if image.size != (recipe.width, recipe.height):
        image = image.resize((recipe.width, recipe.height), Image.BICUBIC)
    return torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1)[None]


def encode_image(run) -> torch.Tensor:
    """Frame 0's clean latent `(1, c, 1, h, w)`: the input image encoded by the model's VAE."""
    from zeroshot.families.sd import encode_frames

    model = run.model
    if not hasattr(model, "vae"):
        raise RecipeError(f"image: this {type(model).__name__} has no VAE to encode the input image")
    frame = image_frame(run.recipe).to(model.device)
    return encode_frames(model.vae, frame[None]).to(model.dtype)  # 1 c 1 h w


def unet_calls(recipe, num_steps: int) -> int:
    """Network calls of one pass of `num_steps` steps (the progress bar's share)."""
    if recipe.motion is None or not recipe.motion.dynamics:
        return num_steps
    t0, t1 = warp_steps(recipe, num_steps)
    i_T, i_Tp = num_steps - t1 - 1, num_steps - t0 - 1
    extra = (num_steps - i_T) if recipe.smoothing is not None else 0  # the mask pass
    first = 0 if recipe.image is not None else i_Tp  # from an image, frame 0 is not denoised
    return first + (num_steps - i_T) + extra
