"""Wan 2.1 text-to-video (`WanPipeline`): a `WanTransformer3DModel` with self-attention over
all latent frames and space at once, text cross-attention, a flow-matching schedule.

Time is compressed by the causal 3-D VAE (`AutoencoderKLWan`): a video of `f = 4k + 1` frames
has `k + 1` latent frames, and `n` latent frames decode to `4(n - 1) + 1` frames (the first
alone, then four per latent frame), so a video has 1, 5, 9, ..., 81 frames. Sizes are
multiples of the VAE factor (8) times the spatial patch (2). Latents are normalised per
channel by the VAE's `latents_mean`/`latents_std`. Prompts are UMT5-encoded to 512 tokens,
each prompt's padding zeroed, as the pipeline does. The model predicts the flow velocity;
the schedule (UniPC or flow-match Euler with the model's `flow_shift`) starts at pure noise
(sigma 1). Self-attention mixes frames and space jointly: no per-frame spatial
self-attention (`frame_attention = False`).

Wan 2.2 folders (a second, low-noise transformer, or per-token timesteps) are refused when
they load, in one line.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from zeroshot.families.transformer import TextToVideoTransformer
from zeroshot.recipe import RecipeError


@dataclass
class Wan(TextToVideoTransformer):
    """The frozen components of a Wan 2.1 text-to-video model, as a video model (flow
    matching starts at sigma = 1: its first step is pure noise)."""

    family: ClassVar[str] = "wan"
    pipelines: ClassVar[tuple[str, ...]] = ("WanPipeline",)
    scheduler_kind: ClassVar[str] = "their own flow-matching scheduler"
    #: Text tokens per prompt (the pipeline's `max_sequence_length`).
    max_sequence_length: ClassVar[int] = 512
    #: The pipeline's own defaults, under a folder's zeroshot.json (`generate.prepare_recipe`).
    recommended: ClassVar[dict[str, Any]] = {
        "height": 480,
        "width": 832,
        "num_frames": 81,
        "num_inference_steps": 50,
        "guidance_scale": 5.0,
    }

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_pipeline(cls, pipe, *, model_id=None, defaults=None, vocabulary=None, path=None):
        """Wrap the components of a diffusers pipeline (shared, not copied); Wan 2.2's
        two-transformer or per-token-timestep folders raise ModelError in one line."""
        from zeroshot.models import ModelError

        if getattr(pipe, "transformer_2", None) is not None or pipe.config.get("boundary_ratio") is not None:
            raise ModelError("wan: Wan 2.2 folders with a second (low-noise) transformer are not supported; Wan 2.1 runs")
        if pipe.config.get("expand_timesteps", False):
            raise ModelError("wan: folders with per-token timesteps (Wan 2.2 TI2V, expand_timesteps) are not supported")
        if pipe.transformer is None:
            raise ModelError("wan: the folder has no transformer")
        return super().from_pipeline(pipe, model_id=model_id, defaults=defaults, vocabulary=vocabulary, path=path)

    # ------------------------------------------------------------------ properties

    @property
    def vae_scale_factor(self) -> int:
        return 2 ** len(self.vae.config.temperal_downsample)

    # ------------------------------------------------------------------ the recipe

    @classmethod
    def latent_frames(cls, num_frames: int) -> int:
        """Latent frames of a video of `num_frames = 4k + 1` frames."""
        return (num_frames - 1) // cls.temporal_compression + 1

    @classmethod
    def decoded_frames(cls, latent_frames: int) -> int:
        """Frames the VAE decodes from `latent_frames`: the first alone, then four each."""
        return cls.temporal_compression * (latent_frames - 1) + 1

    @classmethod
    def prepare_recipe(cls, recipe):
        """The recipe as is; RecipeError (one line naming the valid values) for a frame count
        other than 4k + 1, a size off the 16-px grid, or a scheduler other than the model's."""
        f, c = recipe.num_frames, cls.temporal_compression
        if f % c != 1:
            below = f - (f - 1) % c
            raise RecipeError(
                f"num_frames: wan models make 4k+1 frames (..., 77, 81; nearest {below} or {below + c}), got {f}"
            )
        cls.check_grid(recipe)
        return recipe

    # ------------------------------------------------------------------ the protocol

    def latent_shape(self, num_videos: int, num_frames: int, height: int, width: int) -> tuple[int, ...]:
        s = self.vae_scale_factor
        return (num_videos, self.transformer.config.in_channels, self.latent_frames(num_frames), height // s, width // s)

    @torch.no_grad()
    def encode_prompt(self, prompts: list[str]) -> torch.Tensor:
        """UMT5 embeddings `(n, 512, D)`, each prompt's padding positions zero, as the pipeline
        computes them (its own text cleaning included)."""
        from diffusers.pipelines.wan.pipeline_wan import prompt_clean

        L = self.max_sequence_length
        tokens = self.tokenizer(
            [prompt_clean(p) for p in prompts],
            padding="max_length",
            max_length=L,
            truncation=True,
            add_special_tokens=True,
            return_attention_mask=True,
            return_tensors="pt",
        )
        device = self.text_encoder.device
        mask = tokens.attention_mask.to(device)
        embeds = self.text_encoder(tokens.input_ids.to(device), mask).last_hidden_state
        lengths = mask.gt(0).sum(dim=1)
        keep = torch.arange(L, device=device)[None, :] < lengths[:, None]
        return (embeds * keep[..., None]).to(self.dtype)

    def forward(self, x: torch.Tensor, t, c: dict[str, torch.Tensor]) -> torch.Tensor:
        """One transformer call on `(B, c, f, h, w)` latents (it patchifies frames and space)."""
        timestep = torch.as_tensor(t, device=x.device).expand(x.shape[0])
        out = self.transformer(
            hidden_states=x.to(self.dtype),
            timestep=timestep,
            encoder_hidden_states=c["prompt_embeds"],
            return_dict=False,
        )[0]
        return out.float()

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """`(b, c, n, h, w)` latents to frames `(b, 4(n - 1) + 1, 3, H, W)` in [0, 1] (CPU
        float32): un-normalised per channel, then the causal VAE decodes each video whole."""
        config = self.vae.config
        shape = (1, config.z_dim, 1, 1, 1)
        mean = torch.tensor(config.latents_mean, device=latents.device).view(shape)
        std = torch.tensor(config.latents_std, device=latents.device).view(shape)
        z = latents.float() * std + mean
        frames = self.vae.decode(z.to(self.vae.dtype)).sample  # b 3 F H W
        return (frames.float().permute(0, 2, 1, 3, 4) / 2 + 0.5).clamp(0, 1).cpu()

    def attention_layers(self, kind: str) -> list[str]:
        """Self-attention is joint over frames and space: listed as temporal (it mixes
        frames); cross-attention (`attn2`) attends to the text; none is per-frame spatial."""
        processors = list(self.transformer.attn_processors)
        if kind == "spatial_self":
            return []
        if kind == "cross":
            return [n for n in processors if ".attn2." in n]
        if kind == "temporal":
            return [n for n in processors if ".attn1." in n]
        raise ValueError(f"attention kind must be spatial_self, cross or temporal, got {kind!r}")
