"""ModelScope / ZeroScope text-to-video (`TextToVideoSDPipeline`, `UNet3DConditionModel`).

The network sees whole videos `(b, c, f, h, w)`: spatial transformer blocks run per frame
(`attentions`), temporal ones across frames (`temp_attentions`, `transformer_in`).
Prompts are encoded and frames decoded as in Stable Diffusion.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from zeroshot.families.sd import SD


@dataclass
class UNet3D(SD):
    """A `UNet3DConditionModel` text-to-video model."""

    family: ClassVar[str] = "unet3d"
    pipelines: ClassVar[tuple[str, ...]] = ("TextToVideoSDPipeline",)
    image_model: ClassVar[bool] = False

    def pipeline(self):
        from diffusers import TextToVideoSDPipeline

        return TextToVideoSDPipeline(**{k: getattr(self, k) for k in self.component_names()})

    def forward(self, x: torch.Tensor, t, c: dict[str, torch.Tensor]) -> torch.Tensor:
        """One UNet3D call on `(B, c, f, h, w)` (it repeats the text per frame itself)."""
        return self.unet(x, t, encoder_hidden_states=c["prompt_embeds"], return_dict=False)[0]

    def attention_layers(self, kind: str) -> list[str]:
        names = list(self.unet.attn_processors)
        temporal = [n for n in names if ".temp_attentions." in n or n.startswith("transformer_in.")]
        spatial = [n for n in names if n not in temporal]
        if kind == "spatial_self":
            return [n for n in spatial if ".attn1." in n]
        if kind == "cross":
            return [n for n in spatial if ".attn2." in n]
        if kind == "temporal":
            return temporal
        raise ValueError(f"attention kind must be spatial_self, cross or temporal, got {kind!r}")
