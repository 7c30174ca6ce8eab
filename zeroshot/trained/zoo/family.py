"""An image model animated by a zoo module: the `animatediff` family with a `ZooUNet`.

It keeps the `animatediff` family's name, calls and techniques (its UNet takes whole videos
with text repeated per frame); only what depends on the motion layers differs: there is
no positional table to window over (`max_frames` is None) and the temporal attention
layers are the zoo's (`temporal.*` processors).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from zeroshot.families.animatediff import AnimateDiff
from zeroshot.families.base import layers_of_kind
from zeroshot.families.sd import SD


@dataclass
class ZooAnimateDiff(AnimateDiff):
    """An `sd` model whose UNet is a `zoo.ZooUNet` (a design other than animatediff)."""

    @classmethod
    def from_zoo(cls, model: SD, unet: Any) -> ZooAnimateDiff:
        """`model` (an `sd` model) with an inflated zoo UNet; model.unet is untouched."""
        parts = {k: getattr(model, k) for k in SD.component_names()}
        parts["unet"] = unet
        return cls(
            **parts,
            motion_adapter=None,
            model_id=model.model_id,
            defaults=model.defaults,
            vocabulary=model.vocabulary,
            path=model.path,
        )

    def pipeline(self):
        raise ValueError(f"a {self.unet.design} zoo model has no diffusers pipeline (modelscope exports one)")

    @property
    def max_frames(self) -> None:
        """No positional table limits the frames the temporal layers see at once."""
        return None

    def attention_layers(self, kind: str) -> list[str]:
        """Image layers as in `sd`; temporal attention in the zoo's layers."""
        return layers_of_kind(list(self.unet.attn_processors), lambda n: n.startswith("temporal."), kind)
