"""ModelScope / ZeroScope text-to-video (`TextToVideoSDPipeline`, `UNet3DConditionModel`).

The network sees whole videos `(b, c, f, h, w)`: spatial transformer blocks run per frame
(`attentions`), temporal ones across frames (`temp_attentions`, `transformer_in`).
Prompts are encoded and frames decoded as in Stable Diffusion.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from zeroshot.families.base import layers_of_kind
from zeroshot.families.sd import SD


@dataclass
class UNet3D(SD):
    """A `UNet3DConditionModel` text-to-video model."""

    family: ClassVar[str] = "unet3d"
    pipelines: ClassVar[tuple[str, ...]] = ("TextToVideoSDPipeline",)
    image_model: ClassVar[bool] = False
    controlnet: ClassVar[bool] = False  # no diffusers ControlNet pipeline conditions UNet3D models

    def pipeline(self):
        from diffusers import TextToVideoSDPipeline

        return TextToVideoSDPipeline(**{k: getattr(self, k) for k in self.component_names()})

    def forward(self, x: torch.Tensor, t, c: dict[str, torch.Tensor]) -> torch.Tensor:
        """One UNet3D call on `(B, c, f, h, w)` (it repeats the text per frame itself)."""
        return self.unet(x, t, encoder_hidden_states=c["prompt_embeds"], return_dict=False)[0]

    def attention_layers(self, kind: str) -> list[str]:
        """Spatial blocks (`attentions`) and temporal ones (`temp_attentions`, `transformer_in`)."""
        return layers_of_kind(
            list(self.unet.attn_processors),
            lambda n: ".temp_attentions." in n or n.startswith("transformer_in."),
            kind,
        )
