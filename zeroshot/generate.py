"""`generate()`: one explicit function from (model, prompt, recipe, seed) to video frames.

It reads top to bottom: resolve the recipe, encode the prompt, draw the noise prior,
install the hooks the recipe asks for, sample (plain per-frame, or Text2Video-Zero
dynamics; optionally inside FreeInit), decode. Every hook is scoped: when `generate()`
returns or raises, the model is exactly as it was.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass

import torch

from zeroshot import noise as noise_priors
from zeroshot.hooks import cross_frame_attention
from zeroshot.models import Model
from zeroshot.recipe import Recipe, RecipeError, get_method, resolve, scaled_warp_steps, validate
from zeroshot.sampling import denoise, guided_eps_fn, make_scheduler

log = logging.getLogger(__name__)


@dataclass
class VideoResult:
    """Frames `(n, f, 3, H, W)` in [0, 1] (CPU, float32) and the clean latents `(n, c, f, h, w)`."""

    frames: torch.Tensor
    latents: torch.Tensor
    recipe: Recipe
    prompt: str
    seed: int | None
    model_id: str

    @property
    def negative_prompt(self) -> str:
        return self.recipe.negative_prompt


def prepare_recipe(model: Model, recipe: Recipe | str, prompt: str | None = None) -> Recipe:
    """Resolve a recipe against the model's defaults and check it (and the prompt's words)."""
    if isinstance(recipe, str):
        recipe = get_method(recipe)
    recipe = resolve(recipe, model.defaults)
    validate(recipe, vae_scale_factor=model.vae_scale_factor)
    noise_priors.check(recipe.noise, recipe.num_frames)
    check_inputs(model, recipe)
    if prompt is not None and model.vocabulary:
        from zeroshot.tokenizer import unknown_words

        unknown = unknown_words(prompt, model.vocabulary)
        if unknown:
            raise RecipeError(
                f"prompt words not in the model's vocabulary: {', '.join(unknown)} "
                f"(known: {' '.join(sorted(model.vocabulary))})"
            )
    return recipe


def check_inputs(model: Model, recipe: Recipe) -> None:
    """Fail before any model work when a file the recipe names is missing or malformed:
    the motion field's source (path file, trajectories, reference video), the mask video
    and the motion adapter. (Their contents are read where they are used.)"""
    import os

    if recipe.motion is not None:
        from zeroshot.motion import field_from_recipe

        field_from_recipe(recipe.motion, recipe.num_frames, recipe.height, recipe.width)
    for name, path in (  # field_from_recipe reads a reference video only when the flow is needed
        ("motion.from_video", recipe.motion and recipe.motion.from_video),
        ("smoothing.mask_video", recipe.smoothing and recipe.smoothing.mask_video),
    ):
        if path and not os.path.exists(path):
            raise RecipeError(f"{name}: {path!r} does not exist")
    if recipe.animatediff is not None:
        from zeroshot.trained.animatediff import resolve_adapter_path

        adapter = resolve_adapter_path(model, recipe.animatediff.adapter)
        if not adapter.exists():
            raise RecipeError(f"animatediff.adapter: {adapter} is neither a folder nor a file")


def step_active(index: int, num_steps: int, steps: tuple[float, float]) -> bool:
    """Whether a step-gated hook is on at schedule index `index` (fractions `steps`)."""
    start, end = steps
    x = index / num_steps
    return start <= x and (x < end or end >= 1.0)


def denoising_steps(recipe: Recipe) -> int:
    """How many UNet calls a resolved recipe makes (the progress bar's total)."""

    def one_pass(n: int) -> int:
        if recipe.motion is None:
            return n
        t0, t1 = recipe.motion.t0, recipe.motion.t1
        if n != recipe.num_inference_steps:
            t0, t1 = scaled_warp_steps(n, t0, t1, recipe.num_inference_steps)
        i_T, i_Tp = n - t1 - 1, n - t0 - 1
        extra = (n - i_T) if recipe.smoothing is not None else 0  # the mask pass
        return i_Tp + (n - i_T) + extra

    if recipe.freeinit is None:
        return one_pass(recipe.num_inference_steps)
    from zeroshot.methods.freeinit import step_counts

    return sum(one_pass(n) for n in step_counts(recipe.freeinit, recipe.num_inference_steps))


@torch.no_grad()
def decode(vae, latents: torch.Tensor, *, chunk: int = 2) -> torch.Tensor:
    """Decode `(n, c, f, h, w)` latents to frames `(n, f, 3, H, W)` in [0, 1], in chunks."""
    n, c, f, h, w = latents.shape
    flat = latents.permute(0, 2, 1, 3, 4).reshape(n * f, c, h, w) / vae.config.scaling_factor
    images = [vae.decode(part, return_dict=False)[0] for part in flat.split(chunk)]
    frames = (torch.cat(images) / 2 + 0.5).clamp(0, 1).float().cpu()
    return frames.reshape(n, f, *frames.shape[1:])


def _warp_fn(recipe: Recipe, height: int, width: int):
    """The motion field of the recipe as `fn(latents (b, c, f, h, w)) -> warped`."""
    from zeroshot.motion import field_from_recipe, warp

    m = recipe.motion
    field = field_from_recipe(m, recipe.num_frames, height, width)

    def fn(x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        flow = field.flow(recipe.num_frames, height, width, grid=(h, w), device=x.device, dtype=torch.float32)
        return warp(x, flow, scale=(height / h, width / w), mode=m.mode, padding=m.padding)

    return fn


@torch.no_grad()
def generate(
    model,
    prompt: str,
    recipe: Recipe | str = "t2v-zero",
    *,
    seed: int | None = 0,
    generator: torch.Generator | None = None,
    num_videos: int = 1,
    callback=None,
    progress: bool = True,
    latents: torch.Tensor | None = None,
    renoise_noise: torch.Tensor | None = None,
) -> VideoResult:
    """Generate `num_videos` videos of `prompt` with a frozen text-to-image model.

    model: a `zeroshot.models.Model` or a diffusers Stable Diffusion pipeline.
    recipe: a `Recipe` or a method name (`zeroshot.recipe.METHODS`).
    seed / generator: the generator (CPU) is seeded from `seed` unless one is given.
    callback(step_index, t, latents): after every denoising step.
    latents / renoise_noise: optional initial noise `(n, c, f, h, w)` (not yet scaled by
    the scheduler's `init_noise_sigma`) and T2V-Zero re-noising noise, to reproduce
    another implementation's draws.
    """
    if not isinstance(model, Model):
        model = Model.from_pipeline(model)
    if num_videos < 1:
        raise RecipeError(f"num_videos must be >= 1, got {num_videos}")
    recipe = prepare_recipe(model, recipe, prompt)
    if generator is None:
        generator = torch.Generator("cpu").manual_seed(0 if seed is None else seed)
    device, dtype = model.device, model.dtype
    n, f = num_videos, recipe.num_frames
    H, W = recipe.height, recipe.width
    s = model.vae_scale_factor
    shape = (n, model.unet.config.in_channels, f, H // s, W // s)

    cond = model.encode_prompt([prompt] * n)
    guided = recipe.guidance_scale > 1.0
    uncond = model.encode_prompt([recipe.negative_prompt] * n) if guided else None
    noise = latents if latents is not None else noise_priors.sample(
        recipe.noise, shape, generator, device=device, dtype=dtype
    )
    noise = noise.to(device=device, dtype=dtype)
    if recipe.motion is not None and renoise_noise is None:
        renoise_noise = noise_priors.sample(recipe.noise, shape, generator, device=device, dtype=dtype)
    noise_fn = noise_priors.step_noise_fn(recipe.noise, generator, device=device, dtype=dtype)

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=denoising_steps(recipe), desc=f"{recipe.method} {f}x{H}x{W}", unit="step", leave=False)

    with contextlib.ExitStack() as stack:
        if bar is not None:
            stack.callback(bar.close)
        frame_state = None
        if recipe.cross_frame is not None:
            cf = recipe.cross_frame
            frame_state = stack.enter_context(
                cross_frame_attention(model.unet, f, mode=cf.mode, anchor=cf.anchor, layers=cf.layers)
            )

        schedule = {}  # the running sample's timesteps, for step-gated hooks

        def on_call(num_frames: int, t) -> None:
            if frame_state is not None:
                frame_state.num_frames = num_frames
                steps = schedule["timesteps"]
                i = int((steps == t).nonzero()[0]) if (steps == t).any() else 0
                frame_state.active = step_active(i, len(steps), recipe.cross_frame.steps)

        if recipe.animatediff is None:
            eps_fn = guided_eps_fn(model.unet, cond, uncond, recipe.guidance_scale, on_call=on_call)
        else:  # trained-module path: a new UNetMotionModel; model.unet is not touched
            from zeroshot.trained.animatediff import motion_eps_fn, motion_unet_for

            ad = recipe.animatediff
            eps_fn = motion_eps_fn(
                motion_unet_for(model, ad.adapter),
                cond,
                uncond,
                recipe.guidance_scale,
                context_length=ad.context_length,
                context_stride=ad.context_stride,
                on_call=on_call,
            )

        def sample_fn(init_noise: torch.Tensor, num_steps: int) -> torch.Tensor:
            scheduler = make_scheduler(recipe.scheduler, model.scheduler.config)
            scheduler.set_timesteps(num_steps, device=device)

            schedule["timesteps"] = scheduler.timesteps
            x_T = init_noise * scheduler.init_noise_sigma
            kw = dict(eta=recipe.eta, generator=generator, noise_fn=noise_fn, callback=callback, progress=bar)
            if recipe.motion is None:
                return denoise(eps_fn, scheduler, x_T, scheduler.timesteps, **kw)
            from zeroshot.methods import t2v_zero

            m = recipe.motion
            t0, t1 = m.t0, m.t1
            if num_steps != recipe.num_inference_steps:
                t0, t1 = scaled_warp_steps(num_steps, t0, t1, recipe.num_inference_steps)
            before_final = None
            if recipe.smoothing is not None:  # background smoothing: methods/smoothing.py
                from zeroshot.methods.smoothing import BackgroundSmoothing

                i_T = t2v_zero.warp_indices(num_steps, t0, t1)[0]
                mask_kw = {**kw, "callback": None}
                before_final = BackgroundSmoothing.for_recipe(
                    recipe, model, prompt, lambda x: denoise(eps_fn, scheduler, x, scheduler.timesteps[i_T:], **mask_kw)
                )
            return t2v_zero.sample(
                eps_fn,
                scheduler,
                x_T,
                t0=t0,
                t1=t1,
                warp_fn=_warp_fn(recipe, H, W),
                renoise_noise=renoise_noise,
                before_final=before_final,
                **kw,
            )

        if recipe.freeinit is None:
            x0 = sample_fn(noise, recipe.num_inference_steps)
        else:
            from zeroshot.methods.freeinit import freeinit

            ref = make_scheduler(recipe.scheduler, model.scheduler.config)

            def first_timestep(num_steps: int) -> int:
                ref.set_timesteps(num_steps)
                return int(ref.timesteps[0])  # coarse-to-fine schedules start elsewhere

            x0 = freeinit(
                sample_fn,
                noise,
                config=recipe.freeinit,
                alphas_cumprod=ref.alphas_cumprod,
                timestep=first_timestep,
                num_inference_steps=recipe.num_inference_steps,
                generator=generator,
                noise_fn=noise_fn,
            )
    frames = decode(model.vae, x0)
    return VideoResult(
        frames=frames,
        latents=x0.float().cpu(),
        recipe=recipe,
        prompt=prompt,
        seed=seed,
        model_id=model.model_id,
    )
