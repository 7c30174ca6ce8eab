"""What every model family provides, and classifier-free guidance in one place.

A family turns a diffusers model into a video model with one small protocol
(`VideoModel`): the latent shape, prompts encoded into a `Cond`, a raw model call over
video latents `(b, c, f, h, w)`, decoding, and the names of its attention layers by kind.
Techniques (`zeroshot.techniques`) ask these questions and never guess from layer names.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from zeroshot.recipe import RecipeError

#: The kinds of attention layer a family names (`VideoModel.attention_layers`).
ATTENTION_KINDS = ("spatial_self", "cross", "temporal")


@dataclass(frozen=True)
class Cond:
    """The conditioning of a batch of `b` videos: the model call's extra arguments.

    positive / negative: name -> tensor with the videos on dim 0 (text embeddings
    `(b, L, D)`, pooled embeddings, time ids, ...); `negative` is None without guidance.
    frame_keys: names whose tensors have a frame axis on dim 1 (`(b, f, ...)`, e.g. image
    latents or control maps); `frames(s, e)` slices them, so context windows and chunks can
    run the model on part of the video.
    guidance: per-frame guidance scales `(f,)` that replace the model function's scalar
    scale (`guided`), for families whose guidance varies over the frames (SVD); sliced by
    `frames(s, e)` like the frame-wise tensors.
    partial / partial_scale: a third branch between negative and positive, for guidance on
    two conditions (InstructPix2Pix: the input image, then the text): the conditioning with
    the first condition only, weighted by `partial_scale` against the negative; the positive
    is then weighted by the guidance scale against it (`guided`).
    """

    positive: dict[str, torch.Tensor]
    negative: dict[str, torch.Tensor] | None = None
    frame_keys: tuple[str, ...] = ()
    guidance: torch.Tensor | None = None
    partial: dict[str, torch.Tensor] | None = None
    partial_scale: float = 1.0
    _batched: dict = field(default_factory=dict, compare=False, repr=False)

    @property
    def guided(self) -> bool:
        return self.negative is not None

    def frames(self, start: int, end: int) -> Cond:
        """The conditioning of frames [start, end) (tensors without a frame axis are shared)."""
        if not self.frame_keys and self.guidance is None:
            return self

        def cut(d: dict | None) -> dict | None:
            if d is None or not self.frame_keys:
                return d
            return {k: (v[:, start:end] if k in self.frame_keys else v) for k, v in d.items()}

        guidance = None if self.guidance is None else self.guidance[start:end]
        return Cond(cut(self.positive), cut(self.negative), self.frame_keys, guidance, cut(self.partial),
                    self.partial_scale)

    def batched(self) -> dict[str, torch.Tensor]:
        """[negative videos, (partial videos,) positive videos] concatenated on dim 0 (computed once)."""
        if not self._batched:
            if self.negative is None:
                self._batched.update(self.positive)
            elif self.partial is None:
                self._batched.update({k: torch.cat([self.negative[k], v]) for k, v in self.positive.items()})
            else:
                self._batched.update(
                    {k: torch.cat([self.negative[k], self.partial[k], v]) for k, v in self.positive.items()}
                )
        return self._batched


#: (latents (b, c, f, h, w), timestep, cond) -> the raw prediction (epsilon or v), same shape.
ModelFn = Callable[[torch.Tensor, Any, Cond], torch.Tensor]
#: (latents (B, c, f, h, w), timestep, tensors with B on dim 0) -> raw prediction: one network call.
Forward = Callable[[torch.Tensor, Any, dict[str, torch.Tensor]], torch.Tensor]


def guided(forward: Forward, guidance_scale: float | torch.Tensor) -> ModelFn:
    """Classifier-free guidance (Ho & Salimans 2022) around a family's network call.

    With a negative conditioning the network sees one batch [negative, positive] and the
    result is `neg + scale * (pos - neg)`; without one, the positive call only. The scale
    is `guidance_scale`, a number or one per frame `(f,)`, unless the conditioning carries
    its own per-frame scales (`Cond.guidance`, sliced with the frames it conditions).
    With a partial conditioning (`Cond.partial`; InstructPix2Pix, Brooks et al., CVPR 2023,
    Eq. 3) the batch is [negative, partial, positive] and the result
    `neg + partial_scale * (partial - neg) + scale * (pos - partial)`.
    """

    def model_fn(x: torch.Tensor, t: Any, cond: Cond) -> torch.Tensor:
        if not cond.guided:
            return forward(x, t, cond.positive)
        if cond.partial is not None:
            out = forward(torch.cat([x, x, x]), t, cond.batched())
            neg, partial, pos = out.chunk(3)
            scale = _frame_scale(guidance_scale if cond.guidance is None else cond.guidance, x.shape[2], out)
            return neg + cond.partial_scale * (partial - neg) + scale * (pos - partial)
        out = forward(torch.cat([x, x]), t, cond.batched())
        neg, pos = out.chunk(2)
        scale = _frame_scale(guidance_scale if cond.guidance is None else cond.guidance, x.shape[2], out)
        return neg + scale * (pos - neg)

    return model_fn


def _frame_scale(scale: float | torch.Tensor, num_frames: int, out: torch.Tensor) -> float | torch.Tensor:
    """A guidance scale as it multiplies `out` (b, c, f, h, w): a number, or one per frame `(f,)` broadcast."""
    if not isinstance(scale, torch.Tensor):
        return scale
    if scale.shape != (num_frames,):
        raise ValueError(f"per-frame guidance has {tuple(scale.shape)} scales for {num_frames} frames")
    return scale.to(device=out.device, dtype=out.dtype)[None, None, :, None, None]  # 1 1 f 1 1


def read_config(folder, component: str) -> dict[str, Any]:
    """A component's `config.json` in a diffusers folder ({} when absent or unreadable)."""
    import json
    from pathlib import Path

    try:
        return json.loads((Path(folder) / component / "config.json").read_text())
    except (OSError, ValueError):
        return {}


def layers_of_kind(names, is_temporal, kind: str) -> list[str]:
    """Attention processor names of one kind (`ATTENTION_KINDS`), given which are temporal:
    per-frame spatial self-attention (attn1) and text/image cross-attention (attn2) among the
    others, and the temporal ones."""
    temporal = [n for n in names if is_temporal(n)]
    spatial = [n for n in names if not is_temporal(n)]
    if kind == "spatial_self":
        return [n for n in spatial if ".attn1." in n]
    if kind == "cross":
        return [n for n in spatial if ".attn2." in n]
    if kind == "temporal":
        return temporal
    raise ValueError(f"attention kind must be one of {', '.join(ATTENTION_KINDS)}, got {kind!r}")


def vae_scale_factor(config) -> int | None:
    """Pixels per latent a side of a per-frame VAE config: an `AutoencoderKL`'s (one halving per
    block after the first) or an `AutoencoderTiny`'s (`upsampling_scaling_factor` per decoder
    block after the first); None for other layouts."""
    if config.get("decoder_block_out_channels"):  # AutoencoderTiny (it also registers block_out_channels)
        return config.get("upsampling_scaling_factor", 2) ** (len(config["decoder_block_out_channels"]) - 1)
    if config.get("block_out_channels"):
        return 2 ** (len(config["block_out_channels"]) - 1)
    return None


@dataclass(kw_only=True)
class Components:
    """What every family's dataclass shares: the model's identity and recommendations, wrapping
    a diffusers pipeline's components (listed by `component_names()`), where they live
    (`denoiser`'s device and dtype), moving them."""

    model_id: str = "unknown"
    defaults: dict[str, Any] = field(default_factory=dict)  # recommended recipe settings (zeroshot.json)
    vocabulary: list[str] | None = None  # the words a closed-vocabulary model knows
    path: str | None = None  # the folder it was loaded from (relative defaults resolve here)
    execution_device: torch.device | None = None  # where tensors go under model CPU offload (zeroshot.memory)

    @classmethod
    def component_names(cls) -> tuple[str, ...]:
        raise NotImplementedError

    @classmethod
    def folder_defaults(cls, folder) -> dict[str, Any]:
        """Recipe settings a diffusers folder's configs imply, as its pipeline takes them when
        not given (SVD's frame count, CogVideoX's trained size); under its zeroshot.json's."""
        return {}

    @classmethod
    def from_pipeline(cls, pipe, *, model_id=None, defaults=None, vocabulary=None, path=None):
        """Wrap the components of a diffusers pipeline (shared, not copied)."""
        name = model_id or getattr(pipe, "name_or_path", None) or pipe.config.get("_name_or_path", "pipeline")
        return cls(
            **{k: getattr(pipe, k) for k in cls.component_names()},
            model_id=str(name),
            defaults=dict(defaults or {}),
            vocabulary=vocabulary,
            path=None if path is None else str(path),
        )

    def modules(self) -> list[torch.nn.Module]:
        return [m for m in (getattr(self, k) for k in self.component_names()) if isinstance(m, torch.nn.Module)]

    @property
    def denoiser(self) -> torch.nn.Module:
        """The denoising network; attention hooks go on it."""
        return self.unet

    @property
    def vae_scale_factor(self) -> int:
        return vae_scale_factor(self.vae.config)

    @property
    def device(self) -> torch.device:
        return self.execution_device or self.denoiser.device

    @property
    def dtype(self) -> torch.dtype:
        return self.denoiser.dtype

    def to(self, device=None, dtype=None):
        kwargs = {k: v for k, v in (("device", device), ("dtype", dtype)) if v is not None}
        for module in self.modules():
            module.to(**kwargs)
        return self


class VideoModel(Protocol):
    """The protocol every family implements (see zeroshot/families/*.py)."""

    family: str
    image_model: bool  # the network sees one frame at a time (frames folded into the batch)
    scheduler: Any
    defaults: dict
    vocabulary: list[str] | None
    model_id: str

    @property
    def vae_scale_factor(self) -> int: ...
    @property
    def device(self) -> torch.device: ...
    @property
    def dtype(self) -> torch.dtype: ...
    @property
    def denoiser(self) -> torch.nn.Module: ...  # the module attention hooks go on

    def latent_shape(self, num_videos: int, num_frames: int, height: int, width: int) -> tuple[int, ...]: ...
    # A family may also name any of `INPUTS` as keyword arguments of encode and decode
    # (`encode(prompts, negative, *, image=None, recipe=None, generator=None)`): `generate()`
    # gives each one what its signature names (`inputs_for`).
    def encode(self, prompts: list[str], negative: list[str] | None) -> Cond: ...
    def model_fn(self, guidance_scale: float) -> ModelFn: ...
    def decode(self, latents: torch.Tensor) -> torch.Tensor: ...
    def attention_layers(self, kind: str) -> list[str]: ...


#: What `generate()` offers a family's `encode` and `decode` beyond prompts and latents:
#: the input image (a path), the input video (a path; pix2pix), the resolved recipe (a
#: family's own settings, e.g. `recipe.svd`) and the run's generator (noise a family draws
#: while encoding, e.g. SVD's noise augmentation of the image).
INPUTS = ("image", "video", "recipe", "generator")
#: Recipe parts that configure one family only, each named after its family.
FAMILY_PARTS = ("svd", "pix2pix")


def _keywords(fn) -> frozenset[str]:
    """The parameter names of `fn` (not cached: closures, such as prompt travel's encode,
    are made per run)."""
    try:
        return frozenset(inspect.signature(fn).parameters)
    except (TypeError, ValueError):
        return frozenset()


def inputs_for(fn: Callable, **available: Any) -> dict[str, Any]:
    """The entries of `available` (of `INPUTS`) that `fn` names as parameters."""
    names = _keywords(getattr(fn, "__func__", fn))
    return {k: v for k, v in available.items() if k in names}


def takes_image(family) -> bool:
    """Whether a family class conditions on an input image (its `encode` names `image`)."""
    return "image" in _keywords(family.encode)


def takes_video(family) -> bool:
    """Whether a family class conditions on an input video (its `encode` names `video`)."""
    return "video" in _keywords(family.encode)


def family_recipe(family, recipe):
    """The resolved recipe as `family` (a family class) runs it: its own recipe part filled
    in and checked (`family.prepare_recipe`, when it has one), and the inputs it cannot take
    refused in one line (RecipeError): an image for a text-only family, another family's part,
    an input video without an edit for a family not conditioned on one."""
    from zeroshot.techniques.t2v_zero import IMAGE_FAMILIES

    if recipe.image is not None and not takes_image(family) and family.family not in IMAGE_FAMILIES:
        raise RecipeError(
            f"image: {family.family} models generate from text; an input image needs an image-to-video model (svd) "
            f"or a {'/'.join(IMAGE_FAMILIES)} model (frame 0 of --method t2v-zero or of motion modules)"
        )
    from zeroshot.techniques.image_anchor import check_carried

    check_carried(recipe, family)  # here, with the model's family known (validate() without one assumes sd)
    for part in FAMILY_PARTS:
        if getattr(recipe, part) is not None and family.family != part:
            from zeroshot.families import FAMILY_CLASSES

            raise RecipeError(f"{part}: settings of {part} models ({', '.join(FAMILY_CLASSES[part].pipelines)}); "
                              f"this is a {family.family} model")
    if recipe.video is not None and recipe.edit is None and not takes_video(family):
        raise RecipeError(
            "video: an input video is edited by the edit method (zeroshot edit VIDEO PROMPT --strength S) "
            "or by a video-conditioned model (pix2pix)"
        )
    prepare = getattr(family, "prepare_recipe", None)
    return prepare(recipe) if prepare is not None else recipe


def open_image(path: str):
    """The image at `path` as an RGB `PIL.Image`; RecipeError (one line) when it cannot be read."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            image.load()
            return image.convert("RGB")
    except FileNotFoundError:
        raise RecipeError(f"image: {path!r} does not exist") from None
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise RecipeError(f"image: {path!r} is not a readable image ({reason})") from None


__all__ = [
    "ATTENTION_KINDS",
    "Cond",
    "FAMILY_PARTS",
    "INPUTS",
    "ModelFn",
    "VideoModel",
    "family_recipe",
    "guided",
    "inputs_for",
    "open_image",
    "takes_image",
    "takes_video",
]
