"""Stable Diffusion 1.x / 2.x (`StableDiffusionPipeline`): a 2-D UNet run frame by frame.

Epsilon- and v-prediction alike (the scheduler reads `prediction_type`). Frames are folded
into the batch for the UNet call, `(b, c, f, h, w) -> ((b f), c, h, w)`; frames interact only
through the hooks techniques install (cross-frame attention) or the latents they prepare.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from zeroshot.families.base import Components, Cond, ModelFn, guided, layers_of_kind

#: Video frames per chunk of `decoded_chunks` (both `decode` and a streamed write go by it,
#: so they make the same VAE calls and the same frames).
DECODE_FRAMES = 8


@dataclass
class SD(Components):
    """The frozen components of a Stable Diffusion model, as a video model."""

    unet: Any
    vae: Any
    text_encoder: Any
    tokenizer: Any
    scheduler: Any

    family: ClassVar[str] = "sd"
    #: diffusers pipeline classes (model_index.json `_class_name`) this family loads.
    pipelines: ClassVar[tuple[str, ...]] = ("StableDiffusionPipeline",)
    #: Whether the network sees one frame at a time (a 2-D image model).
    image_model: ClassVar[bool] = True
    #: Whether its UNet takes ControlNet residuals (zeroshot.techniques.controlnet).
    controlnet: ClassVar[bool] = True
    #: `(x, t, c) -> {down_block_additional_residuals, mid_block_additional_residual}` or {}:
    #: set on the instance for one run by the controlnet technique (scoped), None otherwise.
    residuals_fn: ClassVar[Any] = None

    # ------------------------------------------------------------------ construction

    @classmethod
    def component_names(cls) -> tuple[str, ...]:
        return ("unet", "vae", "text_encoder", "tokenizer", "scheduler")

    def pipeline(self):
        """A diffusers pipeline over these components (shared), e.g. for its LoRA loaders."""
        from diffusers import StableDiffusionPipeline

        return StableDiffusionPipeline(
            **{k: getattr(self, k) for k in self.component_names()},
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )

    # ------------------------------------------------------------------ the protocol

    def latent_shape(self, num_videos: int, num_frames: int, height: int, width: int) -> tuple[int, ...]:
        s = self.vae_scale_factor
        return (num_videos, self.unet.config.in_channels, num_frames, height // s, width // s)

    @torch.no_grad()
    def encode_prompt(self, prompts: list[str]) -> torch.Tensor:
        """Text embeddings `(n, L, D)` as Stable Diffusion computes them."""
        tok = self.tokenizer(
            prompts,
            padding="max_length",
            max_length=self.tokenizer.model_max_length,
            truncation=True,
            return_tensors="pt",
        )
        ids = tok.input_ids.to(self.text_encoder.device)
        mask = None
        if getattr(self.text_encoder.config, "use_attention_mask", False):
            mask = tok.attention_mask.to(ids.device)
        return self.text_encoder(ids, attention_mask=mask)[0].to(self.unet.dtype)

    def encode(self, prompts: list[str], negative: list[str] | None = None) -> Cond:
        """`Cond` with `prompt_embeds` (b, L, D); `negative` given means guidance."""
        pos = {"prompt_embeds": self.encode_prompt(prompts)}
        neg = None if negative is None else {"prompt_embeds": self.encode_prompt(negative)}
        return Cond(pos, neg)

    def frame_kwargs(self, x: torch.Tensor, c: dict[str, torch.Tensor]) -> dict[str, Any]:
        """The conditioning keywords of a 2-D network call on the frames of `x` (B, c, f, h, w)
        folded into the batch: the UNet's, and a ControlNet's beside it."""
        return {"encoder_hidden_states": _per_frame(c["prompt_embeds"], x.shape[2])}

    def residuals(self, x: torch.Tensor, t, c: dict[str, torch.Tensor]) -> dict[str, Any]:
        """Additional residuals of this call (ControlNets, while a run sets `residuals_fn`)."""
        return {} if self.residuals_fn is None else self.residuals_fn(x, t, c)

    def forward(self, x: torch.Tensor, t, c: dict[str, torch.Tensor]) -> torch.Tensor:
        """One UNet call on video latents `(B, c, f, h, w)`, frames folded into the batch."""
        return unet2d_forward(self.unet, x, t, c, **self.residuals(x, t, c))

    def model_fn(self, guidance_scale: float) -> ModelFn:
        return guided(self.forward, guidance_scale)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor, *, chunk: int = 2) -> torch.Tensor:
        """`(b, c, f, h, w)` latents to frames `(b, f, 3, H, W)` in [0, 1] (CPU float32), in chunks."""
        return decode_frames(self.vae, latents, chunk=chunk)

    def decode_chunks(self, latents: torch.Tensor, *, frames: int = DECODE_FRAMES) -> Iterator[torch.Tensor]:
        """The frames of `decode`, `frames` at a time: `(b, k, 3, H, W)` chunks in order."""
        return decoded_chunks(self.vae, latents, frames=frames)

    def attention_layers(self, kind: str) -> list[str]:
        """Processor names of one kind: per-frame spatial self-attention (attn1), text
        cross-attention (attn2); an image UNet has no temporal attention."""
        return layers_of_kind(list(self.unet.attn_processors), lambda n: False, kind)


def fold(x: torch.Tensor) -> torch.Tensor:
    """Video latents `(b, c, f, h, w)` -> `((b f), c, h, w)`."""
    b, ch, f, h, w = x.shape
    return x.permute(0, 2, 1, 3, 4).reshape(b * f, ch, h, w)


def unet2d_forward(unet, x: torch.Tensor, t, c: dict[str, torch.Tensor], **kwargs) -> torch.Tensor:
    """A 2-D UNet on video latents `(B, c, f, h, w)`: frames folded into the batch
    (`kwargs`: more keywords of the UNet call, e.g. ControlNet residuals)."""
    b, ch, f, h, w = x.shape
    flat = fold(x)  # (b f) c h w
    out = unet(flat, t, encoder_hidden_states=_per_frame(c["prompt_embeds"], f), return_dict=False, **kwargs)[0]
    return out.reshape(b, f, -1, h, w).permute(0, 2, 1, 3, 4)  # b c f h w


_REPEATED: dict = {}


def _per_frame(embeds: torch.Tensor, f: int, ndim: int = 3) -> torch.Tensor:
    """`(B, L, D) -> ((B f), L, D)`, each video's embedding repeated for its frames (cached);
    a per-frame tensor `(B, f, L, D)` (one more axis than a video's `ndim`, e.g. prompt
    travel) is folded as it is."""
    if embeds.ndim == ndim + 1:
        if embeds.shape[1] != f:
            raise ValueError(f"per-frame conditioning has {embeds.shape[1]} frames for a call of {f}")
        return embeds.flatten(0, 1)
    if f == 1:
        return embeds
    key = (id(embeds), f)
    hit = _REPEATED.get(key)
    if hit is None or hit[0] is not embeds:
        _REPEATED.clear()  # keep one entry: the conditioning of the running video
        hit = _REPEATED[key] = (embeds, embeds.repeat_interleave(f, dim=0))
    return hit[1]


def encoded(out) -> torch.Tensor:
    """The latents of a VAE's `encode` output: an `AutoencoderKL`'s posterior mode, or an
    `AutoencoderTiny`'s latents (deterministic, already in the scaled space: its
    `scaling_factor` is 1)."""
    dist = getattr(out, "latent_dist", None)
    return dist.mode() if dist is not None else out.latents


@torch.no_grad()
def encode_frames(vae, frames: torch.Tensor, *, chunk: int = 2, scale: bool = True) -> torch.Tensor:
    """Frames `(b, f, 3, H, W)` in [0, 1] to latents `(b, c, f, h, w)`: the mean of the VAE's
    posterior (diffusers' `sample_mode="argmax"`), times its scaling factor when `scale`."""
    b, f = frames.shape[:2]
    flat = (frames.flatten(0, 1) * 2 - 1).to(device=vae.device, dtype=vae.dtype)  # (b f) 3 H W in [-1, 1]
    parts = [encoded(vae.encode(flat[i : i + chunk])) for i in range(0, b * f, chunk)]
    latents = torch.cat(parts) * (vae.config.scaling_factor if scale else 1.0)
    return latents.reshape(b, f, *latents.shape[1:]).permute(0, 2, 1, 3, 4)  # b c f h w


@torch.no_grad()
def decoded_chunks(vae, latents: torch.Tensor, *, frames: int = DECODE_FRAMES, chunk: int = 2) -> Iterator[torch.Tensor]:
    """Decode `(b, c, f, h, w)` latents `frames` video frames at a time: yields `(b, k, 3, H, W)`
    in [0, 1] (CPU float32) for consecutive frame ranges; the VAE sees `chunk` frames per call."""
    if frames < 1:
        raise ValueError(f"frames must be >= 1, got {frames}")
    n = latents.shape[0]
    for start in range(0, latents.shape[2], frames):
        flat = (fold(latents[:, :, start : start + frames]) / vae.config.scaling_factor).to(vae.dtype)  # (n k) c h w
        images = [
            (vae.decode(flat[i : i + chunk], return_dict=False)[0] / 2 + 0.5).clamp(0, 1).float().cpu()
            for i in range(0, len(flat), chunk)
        ]
        out = torch.cat(images) if len(images) > 1 else images[0]
        yield out.reshape(n, -1, *out.shape[1:])  # n k 3 H W


@torch.no_grad()
def decode_frames(vae, latents: torch.Tensor, *, chunk: int = 2) -> torch.Tensor:
    """Decode `(b, c, f, h, w)` latents frame by frame to `(b, f, 3, H, W)` in [0, 1].

    The chunks of `decoded_chunks` are written into the output as they come, so the decoded
    video is held once (not as a list of chunks plus their concatenation).
    """
    n, _, f = latents.shape[:3]
    out = None
    start = 0
    for part in decoded_chunks(vae, latents, chunk=chunk):
        if out is None:
            out = torch.empty((n, f, *part.shape[2:]), dtype=torch.float32)
        out[:, start : start + part.shape[1]] = part
        start += part.shape[1]
    return out
