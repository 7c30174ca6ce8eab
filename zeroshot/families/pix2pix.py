"""InstructPix2Pix (`StableDiffusionInstructPix2PixPipeline`; Brooks et al., arXiv 2211.09800)
as a video editor: Text2Video-Zero's Video Instruct-Pix2Pix.

A Stable Diffusion UNet with 8 input channels: the noisy latents concatenated with the VAE
latents of the input frame (the posterior's mean, without the scaling factor, as the pipeline
encodes it). Every frame of the input video (`recipe.video`) conditions its own output frame;
frames interact through the hooks techniques install (cross-frame attention, as the `pix2pix`
method does). Guidance is three-way (`base.guided` with `Cond.partial`): the batch is
[negative text + no image, negative text + image, text + image] and the prediction
`uncond + image_guidance_scale * (image - uncond) + guidance_scale * (text - image)`, the
pipeline's formula; without guidance (`guidance_scale <= 1`) one call with the text and the image.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import ClassVar

import torch

from zeroshot.families.base import Cond, ModelFn, guided
from zeroshot.families.sd import SD, encode_frames, unet2d_forward
from zeroshot.recipe import Pix2Pix as Settings
from zeroshot.recipe import RecipeError

#: The refusal of a run without an input video.
NO_VIDEO = "video: pix2pix models edit an input video; give one (zeroshot edit VIDEO INSTRUCTION --method pix2pix)"


@dataclass
class Pix2Pix(SD):
    """The frozen components of an instruct-pix2pix model, as a video editor."""

    family: ClassVar[str] = "pix2pix"
    pipelines: ClassVar[tuple[str, ...]] = ("StableDiffusionInstructPix2PixPipeline",)
    #: Its UNet's input is latents and image latents: no ControlNet is made for it.
    controlnet: ClassVar[bool] = False

    @classmethod
    def from_pipeline(cls, pipe, **kwargs):
        model = super().from_pipeline(pipe, **kwargs)
        unet, latent = model.unet.config, model.vae.config.latent_channels
        if unet.in_channels != unet.out_channels + latent:
            raise ValueError(
                f"{model.model_id}: an instruct-pix2pix UNet takes latents and image latents "
                f"({unet.out_channels} + {latent} channels); this one takes {unet.in_channels}"
            )
        return model

    def pipeline(self):
        """A diffusers pipeline over these components (shared)."""
        from diffusers import StableDiffusionInstructPix2PixPipeline

        return StableDiffusionInstructPix2PixPipeline(
            **{k: getattr(self, k) for k in self.component_names()},
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )

    # ------------------------------------------------------------------ the recipe

    @classmethod
    def prepare_recipe(cls, recipe):
        """The recipe with its `pix2pix` part filled in; RecipeError (one line) without an input
        video or with a negative image guidance."""
        if recipe.video is None:
            raise RecipeError(NO_VIDEO)
        s = recipe.pix2pix or Settings()
        if s.image_guidance_scale < 0:
            raise RecipeError(f"pix2pix.image_guidance_scale must be >= 0, got {s.image_guidance_scale}")
        return recipe if recipe.pix2pix is s else replace(recipe, pix2pix=s)

    # ------------------------------------------------------------------ the protocol

    def latent_shape(self, num_videos: int, num_frames: int, height: int, width: int) -> tuple[int, ...]:
        s = self.vae_scale_factor
        return (num_videos, self.unet.config.out_channels, num_frames, height // s, width // s)

    def input_frames(self, video, recipe=None) -> torch.Tensor:
        """The input video `(f, 3, H, W)` in [0, 1]: a tensor as given, or read from a path
        (checked against the recipe's frames and size when given)."""
        if isinstance(video, torch.Tensor):
            return video
        from zeroshot.control import fit, read_input_video

        frames = read_input_video(str(video), "video")
        if recipe is None:
            return frames
        return fit(frames, recipe.num_frames, recipe.height, recipe.width, resize=False, where="video",
                   path=str(video), hint="pix2pix edits the input's frame count and size")

    @torch.no_grad()
    def encode(self, prompts: list[str], negative: list[str] | None = None, *, video=None, recipe=None) -> Cond:
        """The conditioning of `len(prompts)` edits of one video (a path, or frames `(f, 3, H, W)`
        in [0, 1]): `prompt_embeds` (b, L, D) and frame-wise `image_latents` (b, f, c, h, w);
        `negative` given means three-way guidance with `recipe.pix2pix.image_guidance_scale`
        (`Pix2Pix()`'s without a recipe)."""
        if video is None:
            raise RecipeError(NO_VIDEO)
        frames = self.input_frames(video, recipe).to(self.device)
        latents = encode_frames(self.vae, frames[None], scale=False).to(self.dtype)  # 1 c f h w
        latents = latents.permute(0, 2, 1, 3, 4).expand(len(prompts), -1, -1, -1, -1)  # b f c h w
        pos = {"prompt_embeds": self.encode_prompt(prompts), "image_latents": latents}
        if negative is None:
            return Cond(pos, frame_keys=("image_latents",))
        text = self.encode_prompt(negative)
        settings = (recipe.pix2pix if recipe is not None else None) or Settings()
        return Cond(
            pos,
            {"prompt_embeds": text, "image_latents": torch.zeros_like(latents)},
            frame_keys=("image_latents",),
            partial={"prompt_embeds": text, "image_latents": latents},
            partial_scale=settings.image_guidance_scale,
        )

    def forward(self, x: torch.Tensor, t, c: dict[str, torch.Tensor]) -> torch.Tensor:
        """One UNet call on `(B, c, f, h, w)`: each frame's image latents concatenated to it."""
        image = c["image_latents"].permute(0, 2, 1, 3, 4).to(x.dtype)  # B c f h w
        return unet2d_forward(self.unet, torch.cat([x, image], dim=1), t, c)

    def model_fn(self, guidance_scale: float) -> ModelFn:
        return guided(self.forward, guidance_scale)
