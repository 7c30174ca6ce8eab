"""Stable Diffusion XL (`StableDiffusionXLPipeline`): two text encoders, pooled text
embeddings and size/crop time ids, run frame by frame like `sd`.

Prompts are encoded by diffusers' own `StableDiffusionXLPipeline.encode_prompt` (so clip
skip, LoRA text-encoder scaling and the zeroed empty negative prompt behave as there). The
time ids are SDXL's micro-conditioning for an uncropped image of the output size:
(H, W, 0, 0, H, W).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from zeroshot.families.base import Cond
from zeroshot.families.sd import SD, _per_frame, fold


@dataclass
class SDXL(SD):
    """SDXL components as a video model."""

    text_encoder_2: Any = None
    tokenizer_2: Any = None
    force_zeros_for_empty_prompt: bool = True

    family: ClassVar[str] = "sdxl"
    pipelines: ClassVar[tuple[str, ...]] = ("StableDiffusionXLPipeline",)

    @classmethod
    def component_names(cls) -> tuple[str, ...]:
        return SD.component_names() + ("text_encoder_2", "tokenizer_2")

    @classmethod
    def from_pipeline(cls, pipe, **kwargs):
        model = super().from_pipeline(pipe, **kwargs)
        model.force_zeros_for_empty_prompt = bool(pipe.config.get("force_zeros_for_empty_prompt", True))
        return model

    def pipeline(self):
        from diffusers import StableDiffusionXLPipeline

        return StableDiffusionXLPipeline(
            **{k: getattr(self, k) for k in self.component_names()},
            force_zeros_for_empty_prompt=self.force_zeros_for_empty_prompt,
        )

    @torch.no_grad()
    def encode(self, prompts: list[str], negative: list[str] | None = None) -> Cond:
        """`prompt_embeds` (b, L, D1 + D2) and pooled `text_embeds` (b, D2); an all-empty
        negative prompt is zeros when the model says so (`force_zeros_for_empty_prompt`)."""
        guided = negative is not None
        empty = guided and all(not n for n in negative)
        pe, npe, pooled, npooled = self.pipeline().encode_prompt(
            prompt=prompts,
            device=self.device,
            num_images_per_prompt=1,
            do_classifier_free_guidance=guided,
            negative_prompt=None if empty else negative,
        )
        dtype = self.unet.dtype
        pos = {"prompt_embeds": pe.to(dtype), "text_embeds": pooled.to(dtype)}
        neg = {"prompt_embeds": npe.to(dtype), "text_embeds": npooled.to(dtype)} if guided else None
        return Cond(pos, neg)

    def frame_kwargs(self, x: torch.Tensor, c: dict[str, torch.Tensor]) -> dict:
        """Per-frame text embeddings, pooled embeddings and time ids (H, W, 0, 0, H, W)."""
        b, ch, f, h, w = x.shape
        s = self.vae_scale_factor
        time_ids = torch.tensor([[h * s, w * s, 0, 0, h * s, w * s]], dtype=x.dtype, device=x.device)
        added = {"text_embeds": _per_frame(c["text_embeds"], f, ndim=2), "time_ids": time_ids.expand(b * f, 6)}
        return {"encoder_hidden_states": _per_frame(c["prompt_embeds"], f), "added_cond_kwargs": added}

    def forward(self, x: torch.Tensor, t, c: dict[str, torch.Tensor]) -> torch.Tensor:
        b, ch, f, h, w = x.shape
        flat = fold(x)  # (b f) c h w
        out = self.unet(flat, t, **self.frame_kwargs(x, c), **self.residuals(x, t, c), return_dict=False)[0]
        return out.reshape(b, f, -1, h, w).permute(0, 2, 1, 3, 4)  # b c f h w
