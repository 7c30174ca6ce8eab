"""CogVideoX text-to-video (`CogVideoXPipeline`): a `CogVideoXTransformer3DModel` with
joint 3-D attention over all latent frames, space and text.

Time is compressed: a video of `f` frames has `(f - 1) // 4 + 1` latent frames (the VAE's
`temporal_compression_ratio`), and CogVideoX 1.5 (`patch_size_t`) pads the latent frames at
the front to a multiple of its temporal patch, dropped before decoding. The causal VAE
decodes `n` latent frames to `4n - 3` frames when `n` is odd and `4n` when it is even (it
decodes them two at a time, the first three together), so a video has 1, 8k or 8k + 1
frames (49 and 48 as the pipeline makes them). Sizes are multiples of the VAE factor times
the patch size (16). The schedules end at zero SNR (`rescale_betas_zero_snr`). Prompts are
T5-encoded to the transformer's `max_text_seq_length` tokens; guidance is classifier-free
with a constant scale. Every attention layer mixes frames, space and text at once: there is
no per-frame spatial self-attention (`frame_attention = False`) and no separate text
cross-attention.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from zeroshot.families.base import Cond, read_config
from zeroshot.families.transformer import TextToVideoTransformer
from zeroshot.recipe import RecipeError


@dataclass
class CogVideoX(TextToVideoTransformer):
    """The frozen components of a CogVideoX model, as a video model (its first sampling step
    is pure noise: `alphas_cumprod` = 0 there)."""

    family: ClassVar[str] = "cogvideox"
    pipelines: ClassVar[tuple[str, ...]] = ("CogVideoXPipeline",)
    scheduler_kind: ClassVar[str] = "their own scheduler (with its SNR shift)"
    #: The pipeline's own defaults, under a folder's zeroshot.json (`generate.prepare_recipe`).
    recommended: ClassVar[dict[str, Any]] = {
        "height": 480,
        "width": 720,
        "num_inference_steps": 50,
        "guidance_scale": 6.0,
    }

    # ------------------------------------------------------------------ construction

    @classmethod
    def folder_defaults(cls, folder) -> dict[str, Any]:
        """The trained frame count and size (49 frames at 480 x 720 for 1.0, 81 at 768 x 1360
        for 1.5), as the pipeline takes them when not given."""
        config = read_config(folder, "transformer")
        out = {"num_frames": config.get("sample_frames")}
        out.update({k: config[f"sample_{k}"] * 8 for k in ("height", "width") if f"sample_{k}" in config})
        return {k: int(v) for k, v in out.items() if v is not None}

    @classmethod
    def from_pipeline(cls, pipe, *, model_id=None, defaults=None, vocabulary=None, path=None):
        """Wrap the components of a diffusers pipeline (shared, not copied)."""
        if type(pipe.scheduler).__name__ != "CogVideoXDDIMScheduler":
            from zeroshot.models import ModelError

            raise ModelError(
                f"cogvideox: the scheduler {type(pipe.scheduler).__name__} is not supported (CogVideoXDPMScheduler "
                "draws its own noise inside each step); CogVideoXDDIMScheduler with the same config runs: set it "
                "as _class_name in the folder's scheduler/scheduler_config.json"
            )
        return super().from_pipeline(pipe, model_id=model_id, defaults=defaults, vocabulary=vocabulary, path=path)

    # ------------------------------------------------------------------ the recipe

    @classmethod
    def latent_frames(cls, num_frames: int) -> int:
        """Latent frames of a video of `num_frames` frames (before any 1.5 padding)."""
        return (num_frames - 1) // cls.temporal_compression + 1

    @classmethod
    def decoded_frames(cls, latent_frames: int) -> int:
        """Frames the VAE decodes from `latent_frames` (two at a time; an odd count's first three together)."""
        c = cls.temporal_compression
        return c * latent_frames if latent_frames % 2 == 0 else c * (latent_frames - 1) + 1

    @classmethod
    def frame_counts(cls, up_to: int) -> list[int]:
        """The video lengths up to `up_to` frames that the model makes (1, 8, 9, 16, 17, ...)."""
        return [f for f in range(1, up_to + 1) if cls.decoded_frames(cls.latent_frames(f)) == f]

    @classmethod
    def prepare_recipe(cls, recipe):
        """The recipe as is; RecipeError (one line naming the valid values) for a frame count
        the VAE does not decode to, a size off the 16-px grid, or a scheduler other than the model's."""
        f = recipe.num_frames
        if cls.decoded_frames(cls.latent_frames(f)) != f:
            near = [n for n in cls.frame_counts(f + 8) if abs(n - f) <= 8]
            below, above = max(n for n in near if n < f), min(n for n in near if n > f)
            raise RecipeError(
                f"num_frames: cogvideox models make 1, 8k or 8k+1 frames (..., 40, 41, 48, 49; nearest "
                f"{below} or {above}), got {f}"
            )
        cls.check_grid(recipe)
        return recipe

    # ------------------------------------------------------------------ the protocol

    def _latent_frames(self, num_frames: int) -> tuple[int, int]:
        """(latent frames of the video, padding frames in front): CogVideoX 1.5 (`patch_size_t`)
        pads up to a multiple of its temporal patch."""
        f = (num_frames - 1) // self.vae.config.temporal_compression_ratio + 1
        p_t = self.transformer.config.patch_size_t
        return f, 0 if p_t is None else (-f) % p_t

    def latent_shape(self, num_videos: int, num_frames: int, height: int, width: int) -> tuple[int, ...]:
        s = self.vae_scale_factor
        f, pad = self._latent_frames(num_frames)
        return (num_videos, self.transformer.config.out_channels, pad + f, height // s, width // s)

    @torch.no_grad()
    def encode_prompt(self, prompts: list[str]) -> torch.Tensor:
        """T5 embeddings `(n, L, D)` of `L = max_text_seq_length` tokens, as the pipeline computes them."""
        tokens = self.tokenizer(
            prompts,
            padding="max_length",
            max_length=self.transformer.config.max_text_seq_length,
            truncation=True,
            add_special_tokens=True,
            return_tensors="pt",
        )
        return self.text_encoder(tokens.input_ids.to(self.text_encoder.device))[0].to(self.dtype)

    def rotary_embedding(self, num_frames: int, h: int, w: int):
        """The transformer's 3-D rotary position embedding (cos, sin) for `num_frames` latent
        frames of `h x w` latents (None for models with learned or sin-cos positions)."""
        config = self.transformer.config
        if not config.use_rotary_positional_embeddings:
            return None
        from diffusers.models.embeddings import get_3d_rotary_pos_embed
        from diffusers.pipelines.cogvideo.pipeline_cogvideox import get_resize_crop_region_for_grid

        p = config.patch_size
        grid = (h // p, w // p)
        base = (config.sample_height // p, config.sample_width // p)
        if config.patch_size_t is None:  # CogVideoX 1.0: the grid cropped into the trained one
            return get_3d_rotary_pos_embed(
                embed_dim=config.attention_head_dim,
                crops_coords=get_resize_crop_region_for_grid(grid, base[1], base[0]),
                grid_size=grid,
                temporal_size=num_frames,
                device=self.device,
            )
        return get_3d_rotary_pos_embed(  # CogVideoX 1.5: slices of the trained grid
            embed_dim=config.attention_head_dim,
            crops_coords=None,
            grid_size=grid,
            temporal_size=(num_frames + config.patch_size_t - 1) // config.patch_size_t,
            grid_type="slice",
            max_size=base,
            device=self.device,
        )

    def forward(self, x: torch.Tensor, t, c: dict[str, torch.Tensor]) -> torch.Tensor:
        """One transformer call on `(B, c, f, h, w)` latents (it patchifies frames and space)."""
        b, _, f, h, w = x.shape
        timestep = torch.as_tensor(t, device=x.device).expand(b)
        hidden = x.permute(0, 2, 1, 3, 4).to(self.dtype)  # B f c h w
        extra = {}
        if "image_latents" in c:  # image-to-video: the image's latents beside the noisy ones
            hidden = torch.cat([hidden, c["image_latents"].to(self.dtype)], dim=2)
            if self.transformer.config.ofs_embed_dim is not None:  # 1.5: the pipeline's fixed offset
                extra["ofs"] = hidden.new_full((1,), 2.0)
        out = self.transformer(
            hidden_states=hidden,
            encoder_hidden_states=c["prompt_embeds"],
            timestep=timestep,
            image_rotary_emb=self.rotary_embedding(f, h, w),
            return_dict=False,
            **extra,
        )[0]
        return out.float().permute(0, 2, 1, 3, 4)  # B c f h w

    @torch.no_grad()
    def decode(self, latents: torch.Tensor, *, recipe=None) -> torch.Tensor:
        """`(b, c, f, h, w)` latents to frames `(b, 4(f - 1) + 1, 3, H, W)` in [0, 1] (CPU
        float32): the causal 3-D VAE decodes each video whole. With `recipe`, the padding
        frames of CogVideoX 1.5 (in front) are dropped first."""
        pad = self._latent_frames(recipe.num_frames)[1] if recipe is not None else 0
        z = latents[:, :, pad:] / self.vae.config.scaling_factor
        frames = self.vae.decode(z.to(self.vae.dtype)).sample  # b 3 F H W
        return (frames.float().permute(0, 2, 1, 3, 4) / 2 + 0.5).clamp(0, 1).cpu()

    def attention_layers(self, kind: str) -> list[str]:
        """Every attention layer is joint over frames, space and text: listed as temporal (it
        mixes frames); none is per-frame spatial self-attention or text cross-attention."""
        if kind in ("spatial_self", "cross"):
            return []
        if kind == "temporal":
            return list(self.transformer.attn_processors)
        raise ValueError(f"attention kind must be spatial_self, cross or temporal, got {kind!r}")


@dataclass
class CogVideoXImageToVideo(CogVideoX):
    """CogVideoX image-to-video (`CogVideoXImageToVideoPipeline`): the input image's VAE
    latents (a sample of the posterior, drawn from the run's generator, scaled) fill the first
    latent frame of a second latent video (zeros after it) that the transformer sees beside
    the noisy one, channel-wise; 1.5 models also take the pipeline's fixed `ofs` offset. The
    prompt still conditions (unlike SVD)."""

    family: ClassVar[str] = "cogvideox-i2v"
    pipelines: ClassVar[tuple[str, ...]] = ("CogVideoXImageToVideoPipeline",)

    @classmethod
    def prepare_recipe(cls, recipe):
        """As `CogVideoX`'s, and the input image is required."""
        if recipe.image is None:
            raise RecipeError("image: cogvideox-i2v models animate an input image; give one (--image PATH)")
        return super().prepare_recipe(recipe)

    @torch.no_grad()
    def encode_image(self, image, num_videos: int, num_frames: int, height: int, width: int,
                     generator: torch.Generator | None) -> torch.Tensor:
        """Image latents `(b, F, c, h, w)`: frame 0 the image's (one posterior sample per video,
        in order), the others zero; F counts 1.5's padding frames, as the pipeline lays them out."""
        from diffusers.image_processor import VaeImageProcessor

        from zeroshot.families.base import open_image

        pil = open_image(image) if isinstance(image, str) else image.convert("RGB")
        pixels = VaeImageProcessor(vae_scale_factor=self.vae_scale_factor).preprocess(pil, height=height, width=width)
        pixels = pixels.to(self.device, self.vae.dtype)[:, :, None]  # 1 3 1 H W in [-1, 1]
        config = self.vae.config
        scale = 1 / config.scaling_factor if config.get("invert_scale_latents", False) else config.scaling_factor
        first = torch.cat([self.vae.encode(pixels).latent_dist.sample(generator) for _ in range(num_videos)])
        first = (scale * first.to(self.dtype)).permute(0, 2, 1, 3, 4)  # b 1 c h w
        f, pad = self._latent_frames(num_frames)
        rest = first.new_zeros((num_videos, pad + f - 1, *first.shape[2:]))
        return torch.cat([first, rest], dim=1)

    def encode(self, prompts: list[str], negative: list[str] | None = None, *, image=None, recipe=None,
               generator: torch.Generator | None = None) -> Cond:
        """`Cond` with `prompt_embeds` (b, L, D) and `image_latents` (b, F, c, h, w) (a frame
        axis: windows slice it); the negative side shares the image latents, as in the pipeline."""
        if image is None:
            raise RecipeError("image: cogvideox-i2v models animate an input image; give one (--image PATH)")
        if recipe is None:
            raise ValueError("cogvideox-i2v encode needs the resolved recipe (frames and size)")
        cond = super().encode(prompts, negative)
        latents = self.encode_image(image, len(prompts), recipe.num_frames, recipe.height, recipe.width, generator)
        pos = {**cond.positive, "image_latents": latents}
        neg = None if cond.negative is None else {**cond.negative, "image_latents": latents}
        return Cond(pos, neg, frame_keys=("image_latents",))
