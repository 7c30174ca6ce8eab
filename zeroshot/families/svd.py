"""Stable Video Diffusion (`StableVideoDiffusionPipeline`): image-to-video with a
`UNetSpatioTemporalConditionModel`.

The conditioning is an image, not text: its CLIP image embedding (the cross-attention
context), its VAE latents (concatenated to the noisy latents of every frame) and three
added time ids (fps - 1, motion bucket, noise-augmentation strength); the negative side is
zeros, as in the pipeline. Guidance rises linearly over the frames from
`svd.min_guidance_scale` to the recipe's `guidance_scale` (`Cond.guidance`, applied by
`base.guided`). The scheduler is EulerDiscrete on continuous noise levels (karras sigmas,
v-prediction): the network is conditioned on `0.25 log sigma`, so only that schedule runs.
Frames are decoded by the temporal VAE decoder, `svd.decode_chunk_size` frames at a time.
The text prompt conditions nothing (it names the output).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any, ClassVar

import torch

from zeroshot.families.base import Components, Cond, ModelFn, guided, layers_of_kind, open_image, read_config
from zeroshot.recipe import SVD as Settings
from zeroshot.recipe import RecipeError

#: The image encoder's input size (the pipeline resizes to it with antialiasing).
CLIP_SIZE = (224, 224)
#: Recipe schedulers that keep the model's continuous-sigma Euler schedule.
SCHEDULERS = ("auto", "euler")


@dataclass
class SVD(Components):
    """The frozen components of a Stable Video Diffusion model, as a video model."""

    unet: Any
    vae: Any
    image_encoder: Any
    feature_extractor: Any
    scheduler: Any

    family: ClassVar[str] = "svd"
    pipelines: ClassVar[tuple[str, ...]] = ("StableVideoDiffusionPipeline",)
    image_model: ClassVar[bool] = False
    #: Timesteps are continuous noise levels, not indices into `alphas_cumprod`.
    continuous_timesteps: ClassVar[bool] = True
    #: The pipeline's own defaults, under a folder's zeroshot.json (`generate.prepare_recipe`).
    recommended: ClassVar[dict[str, Any]] = {
        "height": 576,
        "width": 1024,
        "num_inference_steps": 25,
        "guidance_scale": 3.0,
    }

    # ------------------------------------------------------------------ construction

    @classmethod
    def component_names(cls) -> tuple[str, ...]:
        return ("unet", "vae", "image_encoder", "feature_extractor", "scheduler")

    @classmethod
    def folder_defaults(cls, folder) -> dict[str, Any]:
        """The frames the UNet was trained on (14 for SVD, 25 for SVD-XT), as the pipeline takes them."""
        frames = read_config(folder, "unet").get("num_frames")
        return {} if frames is None else {"num_frames": int(frames)}

    def pipeline(self):
        """A diffusers pipeline over these components (shared)."""
        from diffusers import StableVideoDiffusionPipeline

        return StableVideoDiffusionPipeline(**{k: getattr(self, k) for k in self.component_names()})

    # ------------------------------------------------------------------ the recipe

    @classmethod
    def prepare_recipe(cls, recipe):
        """The recipe with its `svd` part filled in; RecipeError (one line) for what an SVD
        model cannot take: no image, a negative prompt, another scheduler, bad settings."""
        if recipe.image is None:
            raise RecipeError("image: svd models animate an input image; give one (--image PATH)")
        if recipe.negative_prompt:
            raise RecipeError("negative_prompt: svd models are conditioned on the image, not on text; leave it empty")
        if recipe.scheduler not in SCHEDULERS:
            raise RecipeError(
                f"scheduler: svd models are conditioned on continuous noise levels (their Euler schedule); "
                f"use {' or '.join(SCHEDULERS)}, got {recipe.scheduler!r}"
            )
        s = recipe.svd or Settings()
        if s.fps < 1:
            raise RecipeError(f"svd.fps must be >= 1, got {s.fps}")
        if s.motion_bucket_id < 0:
            raise RecipeError(f"svd.motion_bucket_id must be >= 0, got {s.motion_bucket_id}")
        if s.noise_aug_strength < 0:
            raise RecipeError(f"svd.noise_aug_strength must be >= 0, got {s.noise_aug_strength}")
        if s.min_guidance_scale < 0:
            raise RecipeError(f"svd.min_guidance_scale must be >= 0, got {s.min_guidance_scale}")
        if s.decode_chunk_size is not None and s.decode_chunk_size < 1:
            raise RecipeError(f"svd.decode_chunk_size must be >= 1, got {s.decode_chunk_size}")
        return recipe if recipe.svd is s else replace(recipe, svd=s)

    # ------------------------------------------------------------------ the protocol

    def latent_shape(self, num_videos: int, num_frames: int, height: int, width: int) -> tuple[int, ...]:
        s = self.vae_scale_factor
        return (num_videos, self.unet.config.out_channels, num_frames, height // s, width // s)

    @torch.no_grad()
    def encode_image(self, image) -> torch.Tensor:
        """The CLIP image embedding `(1, 1, D)` of an RGB `PIL.Image`, as the pipeline computes it:
        resized to 224 px with antialiasing in [-1, 1], then the feature extractor's normalisation."""
        import numpy as np
        from kornia.geometry.transform import resize

        pixels = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1)[None]  # 1 3 H W
        pixels = resize(pixels * 2 - 1, CLIP_SIZE, interpolation="bicubic", align_corners=True, antialias=True)
        pixels = self.feature_extractor(
            images=(pixels + 1) / 2,
            do_normalize=True,
            do_center_crop=False,
            do_resize=False,
            do_rescale=False,
            return_tensors="pt",
        ).pixel_values
        encoder_dtype = next(self.image_encoder.parameters()).dtype
        embeds = self.image_encoder(pixels.to(device=self.device, dtype=encoder_dtype)).image_embeds
        return embeds[:, None].to(self.dtype)  # 1 1 D

    @torch.no_grad()
    def encode(
        self,
        prompts: list[str],
        negative: list[str] | None = None,
        *,
        image=None,
        recipe=None,
        generator: torch.Generator | None = None,
    ) -> Cond:
        """The conditioning of `len(prompts)` videos of one image (a path or a `PIL.Image`).

        `image_embeds` (b, 1, D), `image_latents` (b, c, h, w) (every frame's), `time_ids`
        (b, 3); `negative` given means guidance (the negative side is zeros, the prompts'
        text is not used). `recipe` (resolved) gives the size, the frames and `recipe.svd`;
        without it the image's own size, the `SVD` defaults and one scale for all frames.
        The noise augmentation is drawn from `generator`.
        """
        from diffusers.image_processor import VaeImageProcessor
        from diffusers.utils.torch_utils import randn_tensor

        if image is None:
            raise RecipeError("image: svd models animate an input image; give one (--image PATH)")
        pil = open_image(image) if isinstance(image, str) else image.convert("RGB")
        settings = (recipe.svd if recipe is not None else None) or Settings()
        height, width = (recipe.height, recipe.width) if recipe is not None else (pil.height, pil.width)
        n = len(prompts)

        embeds = self.encode_image(pil)
        pixels = VaeImageProcessor(vae_scale_factor=self.vae_scale_factor).preprocess(pil, height=height, width=width)
        pixels = pixels.to(self.device)  # 1 3 H W in [-1, 1]
        noise = randn_tensor(pixels.shape, generator=generator, device=self.device, dtype=pixels.dtype)
        pixels = pixels + settings.noise_aug_strength * noise
        with _upcast(self.vae) as dtype:
            latents = self.vae.encode(pixels.to(dtype)).latent_dist.mode().to(self.dtype)  # 1 c h w
        ids = [[settings.fps - 1, settings.motion_bucket_id, settings.noise_aug_strength]]  # fps - 1, as trained
        time_ids = torch.tensor(ids, dtype=self.dtype, device=self.device)
        pos = {"image_embeds": embeds.repeat(n, 1, 1), "image_latents": latents.repeat(n, 1, 1, 1),
               "time_ids": time_ids.repeat(n, 1)}
        neg = None
        if negative is not None:
            neg = {"image_embeds": torch.zeros_like(pos["image_embeds"]),
                   "image_latents": torch.zeros_like(pos["image_latents"]), "time_ids": pos["time_ids"]}
        scales = None
        if recipe is not None:
            scales = torch.linspace(settings.min_guidance_scale, recipe.guidance_scale, recipe.num_frames)
        return Cond(pos, neg, guidance=scales)

    def forward(self, x: torch.Tensor, t, c: dict[str, torch.Tensor]) -> torch.Tensor:
        """One UNet call on `(B, c, f, h, w)`: the image latents concatenated to every frame."""
        b, _, f, h, w = x.shape
        image = c["image_latents"][:, None].expand(-1, f, -1, -1, -1)  # B f c h w
        sample = torch.cat([x.permute(0, 2, 1, 3, 4), image], dim=2).to(self.unet.dtype)  # B f 2c h w
        out = self.unet(
            sample, t, encoder_hidden_states=c["image_embeds"], added_time_ids=c["time_ids"], return_dict=False
        )[0]
        return out.permute(0, 2, 1, 3, 4)  # B c f h w

    def model_fn(self, guidance_scale: float) -> ModelFn:
        """Guided model function; the per-frame scales come with the conditioning (`Cond.guidance`)."""
        return guided(self.forward, guidance_scale)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor, *, recipe=None) -> torch.Tensor:
        """`(b, c, f, h, w)` latents to frames `(b, f, 3, H, W)` in [0, 1] (CPU float32); the
        temporal decoder sees `recipe.svd.decode_chunk_size` frames of a video at a time (all
        without one)."""
        return torch.cat(list(self.decode_chunks(latents, recipe=recipe)), dim=1)

    @torch.no_grad()
    def decode_chunks(self, latents: torch.Tensor, *, recipe=None) -> Iterator[torch.Tensor]:
        """The frames of `decode` as the temporal decoder makes them: `(b, k, 3, H, W)` chunks
        of `recipe.svd.decode_chunk_size` frames of every video (one chunk without it)."""
        chunk = recipe.svd.decode_chunk_size if recipe is not None and recipe.svd is not None else None
        z = latents.permute(0, 2, 1, 3, 4) / self.vae.config.scaling_factor  # b f c h w
        for start in range(0, z.shape[1], chunk or z.shape[1]):
            parts = [
                self.vae.decode(video.to(self.vae.dtype), num_frames=len(video)).sample
                for video in z[:, start : start + (chunk or z.shape[1])]
            ]
            yield (torch.stack(parts).float() / 2 + 0.5).clamp(0, 1).cpu()  # b k 3 H W

    def attention_layers(self, kind: str) -> list[str]:
        """Spatial blocks (`transformer_blocks`: attn1 per-frame self-attention, attn2 image
        cross-attention) and temporal ones (`temporal_transformer_blocks`)."""
        return layers_of_kind(list(self.unet.attn_processors), lambda n: ".temporal_transformer_blocks." in n, kind)


@contextlib.contextmanager
def _upcast(vae):
    """The VAE in float32 for the block when it is float16 and asks for it (`force_upcast`, as
    the pipeline encodes the image); the dtype to feed it. Restored on leaving."""
    dtype = vae.dtype
    if dtype != torch.float16 or not vae.config.get("force_upcast", False):
        yield dtype
        return
    vae.to(dtype=torch.float32)
    try:
        yield torch.float32
    finally:
        vae.to(dtype=dtype)
