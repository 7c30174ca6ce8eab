"""`generate()`: one explicit function from (model, prompt, recipe, seed) to video frames,
the same for every model family.

It reads top to bottom: resolve and check the recipe, draw the noise, let each technique
wire itself in (`zeroshot.techniques.TECHNIQUES`: hooks, model-function wrappers, samplers),
encode the prompt, sample, decode. Every hook is scoped: when `generate()` returns or
raises, the model is exactly as it was.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from zeroshot import noise as noise_priors
from zeroshot.families import VideoModel, family_recipe, from_pipeline
from zeroshot.families.base import inputs_for
from zeroshot.recipe import Recipe, RecipeError, get_method, natural_method, resolve, validate
from zeroshot.techniques import Run, apply_all, freeinit, t2v_zero

log = logging.getLogger(__name__)


@dataclass
class VideoResult:
    """Frames `(n, f, 3, H, W)` in [0, 1] (CPU, float32; None when not decoded) and the clean
    latents `(n, c, f, h, w)`."""

    frames: torch.Tensor | None
    latents: torch.Tensor
    recipe: Recipe
    prompt: str
    seed: int | None
    model_id: str

    @property
    def negative_prompt(self) -> str:
        return self.recipe.negative_prompt


def family_of(model) -> type:
    """The family class of a loaded model or of a `ModelCard` (which names it without weights)."""
    return getattr(model, "family_class", None) or (type(model) if hasattr(model, "attention_layers") else None)


def prepare_recipe(model, recipe: Recipe | str | None, prompt: str | None = None) -> Recipe:
    """Resolve a recipe against the model's defaults and check it (and the prompt's words).

    `model`: a loaded model or a `zeroshot.models.ModelCard` (checks before any weights load).
    `recipe=None` is the model's natural method (`recipe.natural_method`). The family's own
    recommendations (`recommended`) come under the model's; its parts are filled and its
    inputs checked (`families.family_recipe`).
    """
    from zeroshot.families import SD

    family = family_of(model) or SD
    if recipe is None:
        recipe = natural_method(family)
    if isinstance(recipe, str):
        recipe = get_method(recipe)
    from zeroshot.techniques.controlnet import with_model_controlnets

    recipe = resolve(with_model_controlnets(model, recipe), {**getattr(family, "recommended", {}), **model.defaults})
    validate(recipe, vae_scale_factor=model.vae_scale_factor, family=family)
    if family_of(model) is not None:
        recipe = family_recipe(family, recipe)
    check_inputs(model, recipe)
    if prompt is not None and model.vocabulary:
        from zeroshot.tokenizer import unknown_words

        texts = [prompt, *(entry.partition(":")[2] for entry in recipe.prompt_at)]
        unknown = list(dict.fromkeys(w for text in texts for w in unknown_words(text, model.vocabulary)))
        if unknown:
            raise RecipeError(
                f"prompt words not in the model's vocabulary: {', '.join(unknown)} "
                f"(known: {' '.join(sorted(model.vocabulary))})"
            )
    return recipe


def check_inputs(model, recipe: Recipe) -> None:
    """Fail before any model work when a file the recipe names is missing or malformed:
    the input image (read), the motion field's source (path file, trajectories, reference
    video), the mask video, the motion and flow adapters, the ControlNets (made for this base), their
    control videos and the input video of an edit (frames and size). (Their contents are read where they are used.)"""
    if recipe.image is not None:
        from zeroshot.families.base import open_image

        open_image(recipe.image)
    if recipe.motion is not None:
        from zeroshot.motion import field_from_recipe

        field_from_recipe(recipe.motion, recipe.num_frames, recipe.height, recipe.width)
    for name, path in (  # field_from_recipe reads a reference video only when the flow is needed
        ("motion.from_video", recipe.motion and recipe.motion.from_video),
        ("smoothing.mask_video", recipe.smoothing and recipe.smoothing.mask_video),
    ):
        if path and not os.path.exists(path):
            raise RecipeError(f"{name}: {path!r} does not exist")
    from zeroshot.techniques import controlnet, edit, flow_adapter

    controlnet.check_inputs(model, recipe)
    edit.check_inputs(model, recipe)
    flow_adapter.check_inputs(model, recipe)
    if recipe.animatediff is not None and (family_of(model) is None or family_of(model).family == "sd"):
        from zeroshot.trained.animatediff import resolve_adapter_path

        adapter = resolve_adapter_path(model, recipe.animatediff.adapter)
        if not adapter.exists():
            raise RecipeError(f"animatediff.adapter: {adapter} is neither a folder nor a file")
        from zeroshot.techniques.animatediff import check_module_file

        check_module_file(model, adapter)


def denoising_steps(recipe: Recipe) -> int:
    """How many network calls a resolved recipe makes (the progress bar's total)."""
    return freeinit.unet_calls(recipe, lambda n: t2v_zero.unet_calls(recipe, n))


def decode(vae, latents: torch.Tensor, *, chunk: int = 2) -> torch.Tensor:
    """Decode `(n, c, f, h, w)` latents to frames `(n, f, 3, H, W)` in [0, 1], in chunks."""
    from zeroshot.families.sd import decode_frames

    return decode_frames(vae, latents, chunk=chunk)


def decode_chunks(model, latents: torch.Tensor, recipe: Recipe | None = None) -> Iterator[torch.Tensor]:
    """The frames of clean latents `(n, c, f, h, w)` as `(n, k, 3, H, W)` chunks in [0, 1], in
    order, for writing as they come (`zeroshot.io.save_result(..., chunks=...)`).

    Families that decode frame by frame (sd, sdxl, animatediff, unet3d) yield
    `families.sd.DECODE_FRAMES` frames at a time; svd yields its temporal decoder's chunks
    (`svd.decode_chunk_size`); families whose causal 3-D VAE decodes a video whole
    (cogvideox, wan) yield it as one chunk. The chunks joined equal `model.decode`.
    """
    model = as_video_model(model)
    stream = getattr(model, "decode_chunks", None)
    if stream is None:
        yield model.decode(latents, **inputs_for(model.decode, recipe=recipe))
        return
    yield from stream(latents, **inputs_for(stream, recipe=recipe))


def initial_noise(recipe: Recipe, shape, generator, *, latents=None, renoise_noise=None, **draw) -> torch.Tensor:
    """The initial noise: `latents` if given (checked, with `renoise_noise`, against `shape`),
    else drawn from the recipe's prior."""
    for name, given in (("latents", latents), ("renoise_noise", renoise_noise)):
        if given is not None and tuple(given.shape) != tuple(shape):
            raise RecipeError(f"{name} must have shape {tuple(shape)} for this recipe and model, got {tuple(given.shape)}")
    if latents is None:
        return noise_priors.sample(recipe.noise, shape, generator, **draw)
    return latents.to(**draw)


def progress_bar(recipe: Recipe):
    """A progress bar over the recipe's network calls."""
    from tqdm.auto import tqdm

    label = f"{recipe.method} {recipe.num_frames}x{recipe.height}x{recipe.width}"
    return tqdm(total=denoising_steps(recipe), desc=label, leave=False)


def as_video_model(model) -> VideoModel:
    """A loaded model as is; a diffusers pipeline object wrapped in its family (shared)."""
    return model if hasattr(model, "attention_layers") else from_pipeline(model)


@torch.no_grad()
def generate(
    model,
    prompt: str,
    recipe: Recipe | str | None = None,
    *,
    seed: int | None = 0,
    generator: torch.Generator | None = None,
    num_videos: int = 1,
    callback=None,
    progress: bool = True,
    latents: torch.Tensor | None = None,
    renoise_noise: torch.Tensor | None = None,
    decode: bool = True,
) -> VideoResult:
    """Generate `num_videos` videos of `prompt`.

    model: a loaded model (`zeroshot.models.load`) or a diffusers pipeline of a supported family.
    recipe: a `Recipe`, a method name (`zeroshot.recipe.METHODS`), or None for the model's
    natural method. seed / generator: the generator (CPU) is seeded from `seed` unless given.
    callback(step_index, t, latents): after every denoising step.
    latents / renoise_noise: optional initial noise `(n, c, f, h, w)` (not yet scaled by the
    scheduler's `init_noise_sigma`) and T2V-Zero re-noising noise, to reproduce another
    implementation's draws.
    decode=False: no frames (`VideoResult.frames` is None), only the latents, to decode as they
    are written (`decode_chunks`), so the decoded video is never held whole.
    """
    model = as_video_model(model)
    if num_videos < 1:
        raise RecipeError(f"num_videos must be >= 1, got {num_videos}")
    recipe = prepare_recipe(model, recipe, prompt)
    generator = generator or torch.Generator("cpu").manual_seed(0 if seed is None else seed)
    shape = model.latent_shape(num_videos, recipe.num_frames, recipe.height, recipe.width)
    noise = initial_noise(recipe, shape, generator, latents=latents, renoise_noise=renoise_noise,
                          device=model.device, dtype=model.dtype)
    with contextlib.ExitStack() as stack:
        run = Run(model, recipe, prompt, stack, generator, shape=shape, callback=callback, renoise_noise=renoise_noise)
        apply_all(run)
        run.encode_prompt(num_videos)
        run.progress = stack.enter_context(progress_bar(recipe)) if progress else None
        x0 = run.sample(noise, recipe.num_inference_steps)
    frames = run.decode(x0) if decode else None
    return VideoResult(frames, x0.float().cpu(), recipe, prompt, seed, model.model_id)
