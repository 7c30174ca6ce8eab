"""What every model family provides, and classifier-free guidance in one place.

A family turns a diffusers model into a video model with one small protocol
(`VideoModel`): the latent shape, prompts encoded into a `Cond`, a raw model call over
video latents `(b, c, f, h, w)`, decoding, and the names of its attention layers by kind.
Techniques (`zeroshot.techniques`) ask these questions and never guess from layer names.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

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
    """

    positive: dict[str, torch.Tensor]
    negative: dict[str, torch.Tensor] | None = None
    frame_keys: tuple[str, ...] = ()
    _batched: dict = field(default_factory=dict, compare=False, repr=False)

    @property
    def guided(self) -> bool:
        return self.negative is not None

    def frames(self, start: int, end: int) -> Cond:
        """The conditioning of frames [start, end) (tensors without a frame axis are shared)."""
        if not self.frame_keys:
            return self

        def cut(d: dict | None) -> dict | None:
            if d is None:
                return None
            return {k: (v[:, start:end] if k in self.frame_keys else v) for k, v in d.items()}

        return Cond(cut(self.positive), cut(self.negative), self.frame_keys)

    def batched(self) -> dict[str, torch.Tensor]:
        """[negative videos, positive videos] concatenated on dim 0 (computed once)."""
        if not self._batched:
            if self.negative is None:
                self._batched.update(self.positive)
            else:
                self._batched.update({k: torch.cat([self.negative[k], v]) for k, v in self.positive.items()})
        return self._batched


#: (latents (b, c, f, h, w), timestep, cond) -> the raw prediction (epsilon or v), same shape.
ModelFn = Callable[[torch.Tensor, Any, Cond], torch.Tensor]
#: (latents (B, c, f, h, w), timestep, tensors with B on dim 0) -> raw prediction: one network call.
Forward = Callable[[torch.Tensor, Any, dict[str, torch.Tensor]], torch.Tensor]


def guided(forward: Forward, guidance_scale: float) -> ModelFn:
    """Classifier-free guidance (Ho & Salimans 2022) around a family's network call.

    With a negative conditioning the network sees one batch [negative, positive] and the
    result is `neg + guidance_scale * (pos - neg)`; without one, the positive call only.
    """

    def model_fn(x: torch.Tensor, t: Any, cond: Cond) -> torch.Tensor:
        if not cond.guided:
            return forward(x, t, cond.positive)
        out = forward(torch.cat([x, x]), t, cond.batched())
        neg, pos = out.chunk(2)
        return neg + guidance_scale * (pos - neg)

    return model_fn


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
    def encode(self, prompts: list[str], negative: list[str] | None) -> Cond: ...
    def model_fn(self, guidance_scale: float) -> ModelFn: ...
    def decode(self, latents: torch.Tensor) -> torch.Tensor: ...
    def attention_layers(self, kind: str) -> list[str]: ...
