"""Model families: one file per family behind one protocol (`base.VideoModel`).

`FAMILIES` maps a diffusers folder's `model_index.json` `_class_name` (or a pipeline
object's class name) to the family that serves it. Adding a family is one file with a
class like `sd.SD` and one line here; see docs/families.md.
"""

from __future__ import annotations

from zeroshot.families.animatediff import AnimateDiff
from zeroshot.families.base import ATTENTION_KINDS, Cond, ModelFn, VideoModel, family_recipe, guided, inputs_for
from zeroshot.families.cogvideox import CogVideoX, CogVideoXImageToVideo
from zeroshot.families.pix2pix import Pix2Pix
from zeroshot.families.sd import SD
from zeroshot.families.sdxl import SDXL
from zeroshot.families.svd import SVD
from zeroshot.families.unet3d import UNet3D
from zeroshot.families.wan import Wan

#: Every family, by name.
FAMILY_CLASSES: dict[str, type] = {
    cls.family: cls for cls in (SD, SDXL, AnimateDiff, UNet3D, SVD, CogVideoX, CogVideoXImageToVideo, Wan, Pix2Pix)
}
#: diffusers pipeline class name -> family class.
FAMILIES: dict[str, type] = {name: cls for cls in FAMILY_CLASSES.values() for name in cls.pipelines}


class UnsupportedFamily(ValueError):
    """A model whose pipeline class no family serves (one line for users)."""


def family_for(class_name: str, where: str = "model") -> type:
    """The family class serving a pipeline class name; UnsupportedFamily naming the supported ones."""
    if class_name not in FAMILIES:
        supported = ", ".join(f"{k} ({v.family})" for k, v in FAMILIES.items())
        raise UnsupportedFamily(f"{where}: unsupported pipeline {class_name!r}; supported: {supported}")
    return FAMILIES[class_name]


def from_pipeline(pipe, **kwargs) -> VideoModel:
    """Wrap a diffusers pipeline object (components shared, not copied) in its family."""
    return family_for(type(pipe).__name__, "pipeline").from_pipeline(pipe, **kwargs)


__all__ = [
    "ATTENTION_KINDS",
    "AnimateDiff",
    "CogVideoX",
    "CogVideoXImageToVideo",
    "Cond",
    "FAMILIES",
    "FAMILY_CLASSES",
    "ModelFn",
    "Pix2Pix",
    "SD",
    "SDXL",
    "SVD",
    "UNet3D",
    "UnsupportedFamily",
    "Wan",
    "VideoModel",
    "family_for",
    "family_recipe",
    "from_pipeline",
    "guided",
    "inputs_for",
]
