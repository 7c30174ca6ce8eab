"""AnimateDiff (`AnimateDiffPipeline`): an image UNet with motion modules, `UNetMotionModel`.

Loads a folder written by `AnimateDiffPipeline.save_pretrained` (its UNet already carries
the motion layers), or is built from any `sd` model plus a motion adapter
(`AnimateDiff.from_image_model`; the image UNet is copied, never changed). The network sees
whole videos; temporal attention lives in `motion_modules`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from zeroshot.families.base import layers_of_kind
from zeroshot.families.sd import SD, _per_frame


@dataclass
class AnimateDiff(SD):
    """An SD model whose UNet is a `UNetMotionModel` (`unet`), with its motion adapter."""

    motion_adapter: Any = None

    family: ClassVar[str] = "animatediff"
    pipelines: ClassVar[tuple[str, ...]] = ("AnimateDiffPipeline",)
    image_model: ClassVar[bool] = False

    @classmethod
    def component_names(cls) -> tuple[str, ...]:
        return SD.component_names() + ("motion_adapter",)

    @classmethod
    def from_image_model(cls, model: SD, adapter: Any) -> AnimateDiff:
        """`model` (an `sd` model) animated by a loaded `MotionAdapter`; model.unet is untouched."""
        from zeroshot.trained.inflate import inflate

        parts = {k: getattr(model, k) for k in SD.component_names()}
        parts["unet"] = inflate(model.unet, adapter)
        return cls(
            **parts,
            motion_adapter=adapter,
            model_id=model.model_id,
            defaults=model.defaults,
            vocabulary=model.vocabulary,
            path=model.path,
        )

    def pipeline(self):
        from diffusers import AnimateDiffPipeline

        return AnimateDiffPipeline(**{k: getattr(self, k) for k in self.component_names()})

    @property
    def max_frames(self) -> int:
        """The longest clip the motion module attends over at once (its positional table)."""
        return int(self.unet.config.motion_max_seq_length)

    def forward(self, x: torch.Tensor, t, c: dict[str, torch.Tensor]) -> torch.Tensor:
        """One `UNetMotionModel` call on `(B, c, f, h, w)` (it folds the frames itself)."""
        f = x.shape[2]
        ctx = _per_frame(c["prompt_embeds"], f)
        extra = self.residuals(x, t, c)  # ControlNet residuals of the frames folded into the batch
        return self.unet(x.to(self.unet.dtype), t, encoder_hidden_states=ctx.to(self.unet.dtype), **extra).sample

    def attention_layers(self, kind: str) -> list[str]:
        """Image layers as in `sd`; temporal attention in the `motion_modules`."""
        return layers_of_kind(list(self.unet.attn_processors), lambda n: "motion_modules" in n, kind)
