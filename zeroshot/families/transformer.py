"""What the text-to-video transformer families share (`cogvideox`, `wan`): a 3-D transformer
whose self-attention is joint over frames and space, a causal 3-D VAE packing 4 frames into
each latent frame, a T5-family text encoder, and a schedule that starts at zero SNR.

A subclass gives its pipeline (`pipelines`), how it encodes prompts (`encode_prompt`), calls
its transformer (`forward`), decodes (`decode`), the frame counts it makes
(`prepare_recipe`, through `check_grid`) and which layers attend to what
(`attention_layers`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from zeroshot.families.base import Components, Cond, ModelFn, guided
from zeroshot.recipe import RecipeError


@dataclass
class TextToVideoTransformer(Components):
    """The frozen components of a text-to-video transformer model, as a video model."""

    transformer: Any
    vae: Any
    text_encoder: Any
    tokenizer: Any
    scheduler: Any

    image_model: ClassVar[bool] = False
    #: Frames have no spatial self-attention of their own (joint 3-D attention).
    frame_attention: ClassVar[bool] = False
    #: Video frames per latent frame (the causal VAEs of CogVideoX and Wan 2.1: 4).
    temporal_compression: ClassVar[int] = 4
    #: The first sampling step is pure noise (zero SNR, or flow matching's sigma = 1).
    zero_terminal_snr: ClassVar[bool] = True
    #: Sizes are multiples of this: the VAE factor 8 times the patch size 2.
    size_grid: ClassVar[int] = 16
    #: How the family names its scheduler in refusals.
    scheduler_kind: ClassVar[str] = "its own scheduler"

    @classmethod
    def component_names(cls) -> tuple[str, ...]:
        return ("transformer", "vae", "text_encoder", "tokenizer", "scheduler")

    def pipeline(self):
        """A diffusers pipeline over these components (shared)."""
        import diffusers

        return getattr(diffusers, self.pipelines[0])(**{k: getattr(self, k) for k in self.component_names()})

    @property
    def denoiser(self) -> torch.nn.Module:
        return self.transformer

    @classmethod
    def check_grid(cls, recipe) -> None:
        """RecipeError (one line) for a size off the family's grid or a scheduler other than the model's."""
        for key in ("height", "width"):
            value = getattr(recipe, key)
            if value % cls.size_grid:
                raise RecipeError(
                    f"{key} must be a multiple of {cls.size_grid} for {cls.family} models "
                    f"(VAE factor x patch size), got {value}"
                )
        if recipe.scheduler != "auto":
            raise RecipeError(
                f"scheduler: {cls.family} models run {cls.scheduler_kind}; use auto, got {recipe.scheduler!r}"
            )

    def encode_prompt(self, prompts: list[str]) -> torch.Tensor:
        raise NotImplementedError

    def encode(self, prompts: list[str], negative: list[str] | None = None) -> Cond:
        """`Cond` with `prompt_embeds` (b, L, D); `negative` given means guidance."""
        pos = {"prompt_embeds": self.encode_prompt(prompts)}
        neg = None if negative is None else {"prompt_embeds": self.encode_prompt(negative)}
        return Cond(pos, neg)

    def forward(self, x: torch.Tensor, t, c: dict[str, torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError

    def model_fn(self, guidance_scale: float) -> ModelFn:
        return guided(self.forward, guidance_scale)
