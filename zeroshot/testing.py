"""Tiny, real Stable Diffusion components built offline (tests, benchmarks, examples).

Nothing here is trained: the weights are random but the classes, configs and folder layout
are exactly those of a diffusers Stable Diffusion checkpoint, so everything that loads SD
loads these, and every code path runs on them in seconds.
"""

from __future__ import annotations

import functools
from pathlib import Path

WORDS = (
    "a an the red green blue yellow black white cat dog car circle square triangle star "
    "on in of with background forest city sky sea running walking flying photo painting"
).split()

SIZES = {
    # 32x32 px, VAE factor 4 -> 8x8 latents; attention at 8x8 and 4x4.
    "tiny": dict(
        unet=dict(
            block_out_channels=(32, 64),
            layers_per_block=1,
            down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
            cross_attention_dim=32,
            attention_head_dim=8,
            norm_num_groups=8,
            sample_size=8,
        ),
        vae=dict(block_out_channels=(8, 16, 16), norm_num_groups=8),
        text=dict(hidden_size=32, intermediate_size=64, num_attention_heads=4, num_hidden_layers=2),
        size=32,
    ),
    # SD 1.x topology (3 cross-attention levels + a plain one, 2 layers each), narrow.
    "mid": dict(
        unet=dict(
            block_out_channels=(64, 128, 192, 192),
            layers_per_block=2,
            down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
            up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
            cross_attention_dim=128,
            attention_head_dim=8,
            norm_num_groups=32,
            sample_size=16,
        ),
        vae=dict(block_out_channels=(32, 32, 64, 64), norm_num_groups=32),
        text=dict(hidden_size=128, intermediate_size=256, num_attention_heads=4, num_hidden_layers=2),
        size=128,
    ),
    # Stable Diffusion 1.x shapes (random weights): for GPU benchmarks at 512 px.
    "sd15": dict(
        unet=dict(
            block_out_channels=(320, 640, 1280, 1280),
            layers_per_block=2,
            down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
            up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
            cross_attention_dim=768,
            attention_head_dim=8,
            norm_num_groups=32,
            sample_size=64,
        ),
        vae=dict(block_out_channels=(128, 256, 512, 512), norm_num_groups=32, layers_per_block=2),
        text=dict(hidden_size=768, intermediate_size=3072, num_attention_heads=12, num_hidden_layers=12),
        size=512,
    ),
}


def build_sd_components(size: str = "tiny", *, seed: int = 0, directory=None):
    """Random SD components of a given size: dict of unet, vae, text_encoder, tokenizer, scheduler.

    The tokenizer is written to `directory/tokenizer` (a temporary folder if not given).
    """
    import tempfile

    import torch
    from diffusers import DDIMScheduler

    from zeroshot.tokenizer import word_tokenizer

    spec = SIZES[size]
    directory = Path(directory or tempfile.mkdtemp(prefix="zeroshot-sd-"))
    tokenizer = word_tokenizer(WORDS, directory / "tokenizer")
    # diffusers/transformers initialise from the global RNG: seed it inside a fork so the
    # caller's RNG state is left as it was.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet, vae, text_encoder = _random_modules(spec, len(tokenizer), tokenizer)
    scheduler = DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )
    for module in (unet, vae, text_encoder):
        module.eval()
    return dict(unet=unet, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, scheduler=scheduler)


def build_sd_folder(directory, size: str = "tiny", *, seed: int = 0) -> Path:
    """Save random SD components as a standard diffusers folder (model_index.json, ...)."""
    import tempfile

    from diffusers import StableDiffusionPipeline

    directory = Path(directory)
    with tempfile.TemporaryDirectory() as tmp:
        parts = build_sd_components(size, seed=seed, directory=tmp)
        pipe = StableDiffusionPipeline(
            **parts, safety_checker=None, feature_extractor=None, requires_safety_checker=False
        )
        pipe.save_pretrained(str(directory), safe_serialization=True)
    return directory


def _random_modules(spec, vocab_size, tokenizer):
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    unet = UNet2DConditionModel(in_channels=4, out_channels=4, **spec["unet"])
    nv = len(spec["vae"]["block_out_channels"])
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        down_block_types=("DownEncoderBlock2D",) * nv,
        up_block_types=("UpDecoderBlock2D",) * nv,
        sample_size=spec["size"],
        **spec["vae"],
    )
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=vocab_size,
            max_position_embeddings=77,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
            **spec["text"],
        )
    )
    return unet, vae, text_encoder


# ---------------------------------------------------------------------------------------
# other families: tiny SDXL, AnimateDiff and ModelScope (UNet3D) folders in diffusers' layouts


def _tiny_scheduler():
    from diffusers import DDIMScheduler

    return DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )


def _seeded(seed: int, build):
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()


def build_sdxl_folder(directory, *, seed: int = 0) -> Path:
    """A tiny random SDXL folder (`StableDiffusionXLPipeline.save_pretrained` layout), 32 px."""
    from diffusers import StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from zeroshot.tokenizer import word_tokenizer

    directory = Path(directory)
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        tokenizer = word_tokenizer(WORDS, Path(tmp) / "tokenizer")
        tokenizer_2 = word_tokenizer(WORDS, Path(tmp) / "tokenizer_2")
        text = dict(
            vocab_size=len(tokenizer),
            max_position_embeddings=77,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
            hidden_size=32,
            intermediate_size=37,
            num_attention_heads=4,
            num_hidden_layers=3,
            projection_dim=32,
        )

        def modules():
            unet = UNet2DConditionModel(
                block_out_channels=(32, 64),
                layers_per_block=1,
                sample_size=8,
                in_channels=4,
                out_channels=4,
                down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
                attention_head_dim=(2, 4),
                use_linear_projection=True,
                addition_embed_type="text_time",
                addition_time_embed_dim=8,
                transformer_layers_per_block=(1, 2),
                projection_class_embeddings_input_dim=6 * 8 + 32,
                cross_attention_dim=64,
                norm_num_groups=8,
            )
            _, vae, _ = _random_modules(SIZES["tiny"], len(tokenizer), tokenizer)
            return unet, vae, CLIPTextModel(CLIPTextConfig(**text)), CLIPTextModelWithProjection(CLIPTextConfig(**text))

        unet, vae, enc, enc2 = _seeded(seed, modules)
        pipe = StableDiffusionXLPipeline(
            vae=vae.eval(),
            text_encoder=enc.eval(),
            text_encoder_2=enc2.eval(),
            tokenizer=tokenizer,
            tokenizer_2=tokenizer_2,
            unet=unet.eval(),
            scheduler=_tiny_scheduler(),
        )
        pipe.save_pretrained(str(directory), safe_serialization=True)
    return directory


def tiny_motion_adapter(unet, *, seed: int = 0, max_frames: int = 16):
    """A random (not zero-initialised) `MotionAdapter` that fits `unet`: the motion layers
    really act, so parity tests compare something."""
    from zeroshot.trained.inflate import new_motion_adapter

    return new_motion_adapter(
        unet, seed=seed, zero_init=False, num_attention_heads=4, max_seq_length=max_frames
    )


def build_animatediff_folder(directory, *, seed: int = 0) -> Path:
    """A tiny random AnimateDiff folder (`AnimateDiffPipeline.save_pretrained` layout)."""
    import tempfile

    from diffusers import AnimateDiffPipeline

    directory = Path(directory)
    with tempfile.TemporaryDirectory() as tmp:
        parts = build_sd_components("tiny", seed=seed, directory=tmp)
        adapter = tiny_motion_adapter(parts["unet"], seed=seed + 1)
        pipe = AnimateDiffPipeline(motion_adapter=adapter, **parts)
        pipe.save_pretrained(str(directory), safe_serialization=True)
    return directory


def build_unet3d_folder(directory, *, seed: int = 0) -> Path:
    """A tiny random ModelScope-style folder (`TextToVideoSDPipeline` layout, `UNet3DConditionModel`)."""
    import tempfile

    from diffusers import TextToVideoSDPipeline, UNet3DConditionModel

    directory = Path(directory)
    with tempfile.TemporaryDirectory() as tmp:
        parts = build_sd_components("tiny", seed=seed, directory=tmp)

        def unet():
            return UNet3DConditionModel(
                block_out_channels=(16, 32),
                layers_per_block=1,
                sample_size=8,
                in_channels=4,
                out_channels=4,
                down_block_types=("CrossAttnDownBlock3D", "DownBlock3D"),
                up_block_types=("UpBlock3D", "CrossAttnUpBlock3D"),
                cross_attention_dim=32,
                attention_head_dim=4,
                norm_num_groups=4,
            )

        parts["unet"] = _seeded(seed + 1, unet).eval()
        TextToVideoSDPipeline(**parts).save_pretrained(str(directory), safe_serialization=True)
    return directory


#: Builders of a tiny folder of every family (`zeroshot.families.FAMILY_CLASSES`).
FAMILY_FOLDERS = {
    "sd": lambda d, seed=0: build_sd_folder(d, "tiny", seed=seed),
    "sdxl": build_sdxl_folder,
    "animatediff": build_animatediff_folder,
    "unet3d": build_unet3d_folder,
}


def build_svd_folder(directory, *, seed: int = 0) -> Path:
    """A tiny random Stable Video Diffusion folder (`StableVideoDiffusionPipeline` layout):
    `UNetSpatioTemporalConditionModel`, temporal-decoder VAE (factor 4), a CLIP vision
    encoder on 224 px (32 px patches) and SVD's continuous-sigma Euler scheduler; 32 px."""
    from diffusers import (
        AutoencoderKLTemporalDecoder,
        EulerDiscreteScheduler,
        StableVideoDiffusionPipeline,
        UNetSpatioTemporalConditionModel,
    )
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

    def modules():
        unet = UNetSpatioTemporalConditionModel(
            block_out_channels=(32, 64),
            layers_per_block=1,
            sample_size=8,
            in_channels=8,
            out_channels=4,
            down_block_types=("CrossAttnDownBlockSpatioTemporal", "DownBlockSpatioTemporal"),
            up_block_types=("UpBlockSpatioTemporal", "CrossAttnUpBlockSpatioTemporal"),
            cross_attention_dim=32,
            num_attention_heads=(2, 4),
            addition_time_embed_dim=8,
            projection_class_embeddings_input_dim=3 * 8,
        )
        vae = AutoencoderKLTemporalDecoder(
            block_out_channels=(32, 32, 32),
            down_block_types=("DownEncoderBlock2D",) * 3,
            latent_channels=4,
            sample_size=32,
        )
        encoder = CLIPVisionModelWithProjection(
            CLIPVisionConfig(
                hidden_size=32,
                projection_dim=32,
                num_hidden_layers=2,
                num_attention_heads=4,
                intermediate_size=37,
                image_size=224,
                patch_size=32,
            )
        )
        return unet.eval(), vae.eval(), encoder.eval()

    unet, vae, image_encoder = _seeded(seed, modules)
    scheduler = EulerDiscreteScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        interpolation_type="linear",
        num_train_timesteps=1000,
        prediction_type="v_prediction",
        sigma_max=700.0,
        sigma_min=0.002,
        steps_offset=1,
        timestep_spacing="leading",
        timestep_type="continuous",
        use_karras_sigmas=True,
    )
    feature_extractor = CLIPImageProcessor(crop_size=224, size=224)
    pipe = StableVideoDiffusionPipeline(
        vae=vae, image_encoder=image_encoder, unet=unet, scheduler=scheduler, feature_extractor=feature_extractor
    )
    directory = Path(directory)
    pipe.save_pretrained(str(directory), safe_serialization=True)
    return directory


def write_test_image(path, *, size=(40, 48), seed: int = 0) -> Path:
    """A small RGB PNG of smooth random colours (the input image of image-to-video tests)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    h, w = size
    y, x = np.mgrid[0:h, 0:w] / max(h, w)
    a, b, c = rng.uniform(0.5, 3.0, size=3)
    image = np.stack([np.sin(a * x + b * y), np.cos(b * x - c * y), np.sin(c * (x + y))], axis=-1)
    Image.fromarray(((image + 1) * 127.5).astype(np.uint8)).save(path)
    return Path(path)


FAMILY_FOLDERS["svd"] = build_svd_folder  # image-to-video: its runs need an input image (write_test_image)


def t2v_zero_reference_noise(num_frames: int, channels: int, height: int, width: int, seed: int):
    """(latents, renoise_noise) `(1, c, f, h, w)` holding the draws diffusers' Text2Video-Zero
    pipelines make from `torch.Generator().manual_seed(seed)`: frame 0's initial noise, then
    the re-noising noise of frames 1..f-1 (zeros elsewhere), for parity tests."""
    import torch
    from diffusers.utils.torch_utils import randn_tensor

    gen = torch.Generator().manual_seed(seed)
    first = randn_tensor((1, channels, height, width), generator=gen)
    eps = randn_tensor((num_frames - 1, channels, height, width), generator=gen)
    latents = torch.zeros(1, channels, num_frames, height, width)
    latents[:, :, 0] = first[0]
    renoise_noise = torch.zeros(1, channels, num_frames, height, width)
    renoise_noise[0, :, 1:] = eps.permute(1, 0, 2, 3)
    return latents, renoise_noise


def tiny_t5(model_class, config_class, tokenizer):
    """A one-layer T5-family text encoder (T5, UMT5) over `tokenizer`'s vocabulary."""
    return model_class(
        config_class(
            vocab_size=len(tokenizer),
            d_model=32,
            d_kv=8,
            d_ff=37,
            num_layers=1,
            num_heads=4,
            relative_attention_num_buckets=8,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
            decoder_start_token_id=tokenizer.pad_token_id,
        )
    )


def build_cogvideox_folder(
    directory,
    *,
    seed: int = 0,
    rotary: bool = True,
    patch_size_t: int | None = None,
    image_to_video: bool = False,
) -> Path:
    """A tiny random CogVideoX folder (`CogVideoXPipeline` layout): `CogVideoXTransformer3DModel`
    (one layer; 3-D rotary positions as CogVideoX-5b, or sin-cos ones as 2b; `patch_size_t` as
    1.5), the causal 3-D VAE (factor 8, 4 frames per latent frame), a T5 encoder over the word
    tokenizer and CogVideoX-2b's DDIM scheduler; 32 px, 4k + 1 frames. `image_to_video`: the
    `CogVideoXImageToVideoPipeline` layout (the transformer takes image latents beside the
    noisy ones; with `patch_size_t`, 1.5's `ofs` embedding too)."""
    import tempfile

    from diffusers import (
        AutoencoderKLCogVideoX,
        CogVideoXDDIMScheduler,
        CogVideoXImageToVideoPipeline,
        CogVideoXPipeline,
        CogVideoXTransformer3DModel,
    )
    from transformers import T5Config, T5EncoderModel

    from zeroshot.tokenizer import word_tokenizer

    directory = Path(directory)
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer = word_tokenizer(WORDS, Path(tmp) / "tokenizer")

        def modules():
            transformer = CogVideoXTransformer3DModel(
                num_attention_heads=2,
                attention_head_dim=16,  # 3-D rotary positions split it 4 : 6 : 6 (even parts)
                in_channels=8 if image_to_video else 4,
                out_channels=4,
                ofs_embed_dim=2 if image_to_video and patch_size_t else None,
                time_embed_dim=2,
                text_embed_dim=32,
                num_layers=1,
                sample_width=8,  # latents of 64 px: 1.5's rotary grid is sliced from it
                sample_height=8,
                sample_frames=9,
                patch_size=2,
                patch_size_t=patch_size_t,
                temporal_compression_ratio=4,
                max_text_seq_length=16,
                use_rotary_positional_embeddings=rotary,
            )
            vae = AutoencoderKLCogVideoX(
                down_block_types=("CogVideoXDownBlock3D",) * 4,
                up_block_types=("CogVideoXUpBlock3D",) * 4,
                block_out_channels=(8, 8, 8, 8),
                latent_channels=4,
                layers_per_block=1,
                norm_num_groups=2,
                temporal_compression_ratio=4,
            )
            text_encoder = tiny_t5(T5EncoderModel, T5Config, tokenizer)
            return transformer.eval(), vae.eval(), text_encoder.eval()

        transformer, vae, text_encoder = _seeded(seed, modules)
        scheduler = CogVideoXDDIMScheduler(
            beta_start=0.00085,
            beta_end=0.012,
            beta_schedule="scaled_linear",
            clip_sample=False,
            prediction_type="v_prediction",
            rescale_betas_zero_snr=True,
            set_alpha_to_one=True,
            snr_shift_scale=3.0,
            steps_offset=0,
            timestep_spacing="trailing",
        )
        pipeline = CogVideoXImageToVideoPipeline if image_to_video else CogVideoXPipeline
        pipe = pipeline(
            tokenizer=tokenizer, text_encoder=text_encoder, vae=vae, transformer=transformer, scheduler=scheduler
        )
        pipe.save_pretrained(str(directory), safe_serialization=True)
    return directory


FAMILY_FOLDERS["cogvideox"] = build_cogvideox_folder  # text-to-video over 4k + 1 frames, sizes on a 16-px grid
FAMILY_FOLDERS["cogvideox-i2v"] = functools.partial(build_cogvideox_folder, image_to_video=True)


def build_wan_folder(directory, *, seed: int = 0, scheduler: str = "unipc") -> Path:
    """A tiny random Wan 2.1 folder (`WanPipeline` layout): `WanTransformer3DModel` (one layer,
    3-D rotary positions), the causal 3-D VAE (factor 8, 4 frames per latent frame, per-channel
    latent mean and std), a UMT5 encoder over the word tokenizer, and Wan 2.1's flow-matching
    UniPC scheduler (shift 3) or, with `scheduler="euler"`, `FlowMatchEulerDiscreteScheduler`;
    sizes on a 16-px grid, 4k + 1 frames."""
    import tempfile

    from diffusers import (
        AutoencoderKLWan,
        FlowMatchEulerDiscreteScheduler,
        UniPCMultistepScheduler,
        WanPipeline,
        WanTransformer3DModel,
    )
    from transformers import UMT5Config, UMT5EncoderModel

    from zeroshot.tokenizer import word_tokenizer

    directory = Path(directory)
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer = word_tokenizer(WORDS, Path(tmp) / "tokenizer")

        def modules():
            transformer = WanTransformer3DModel(
                patch_size=(1, 2, 2),
                num_attention_heads=2,
                attention_head_dim=12,  # rotary positions split it 4 : 4 : 4 (frames, rows, columns)
                in_channels=4,
                out_channels=4,
                text_dim=32,
                freq_dim=16,
                ffn_dim=32,
                num_layers=1,
                rope_max_seq_len=32,
            )
            vae = AutoencoderKLWan(
                base_dim=8,
                z_dim=4,
                dim_mult=[1, 2, 2, 2],
                num_res_blocks=1,
                temperal_downsample=[False, True, True],
                latents_mean=[0.1, -0.2, 0.3, -0.4],
                latents_std=[1.5, 0.8, 2.0, 1.2],
            )
            text_encoder = tiny_t5(UMT5EncoderModel, UMT5Config, tokenizer)
            return transformer.eval(), vae.eval(), text_encoder.eval()

        transformer, vae, text_encoder = _seeded(seed, modules)
        if scheduler == "euler":
            sched = FlowMatchEulerDiscreteScheduler(shift=3.0)
        else:
            sched = UniPCMultistepScheduler(
                prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0, num_train_timesteps=1000
            )
        pipe = WanPipeline(tokenizer=tokenizer, text_encoder=text_encoder, vae=vae, transformer=transformer, scheduler=sched)
        pipe.save_pretrained(str(directory), safe_serialization=True)
    return directory


FAMILY_FOLDERS["wan"] = build_wan_folder  # text-to-video over 4k + 1 frames, flow matching, sizes on a 16-px grid


def build_pix2pix_folder(directory, *, seed: int = 0) -> Path:
    """A tiny random instruct-pix2pix folder (`StableDiffusionInstructPix2PixPipeline` layout):
    the tiny SD components with an 8-channel UNet (latents and image latents); 32 px."""
    import tempfile

    from diffusers import StableDiffusionInstructPix2PixPipeline, UNet2DConditionModel

    directory = Path(directory)
    with tempfile.TemporaryDirectory() as tmp:
        parts = build_sd_components("tiny", seed=seed, directory=tmp)
        unet = _seeded(seed + 1, lambda: UNet2DConditionModel(in_channels=8, out_channels=4, **SIZES["tiny"]["unet"]))
        parts["unet"] = unet.eval()
        pipe = StableDiffusionInstructPix2PixPipeline(
            **parts, safety_checker=None, feature_extractor=None, requires_safety_checker=False
        )
        pipe.save_pretrained(str(directory), safe_serialization=True)
    return directory


FAMILY_FOLDERS["pix2pix"] = build_pix2pix_folder  # video-to-video: its runs need an input video (write_control_video)


def tiny_controlnet(unet, *, seed: int = 0, vae_scale_factor: int = 4):
    """A `ControlNetModel` made from `unet` (`ControlNetModel.from_unet`) whose conditioning
    embedding downsamples by `vae_scale_factor`, with its zero convolutions re-drawn at random
    (not zero), so the residuals really act and parity tests compare something."""
    import math

    from diffusers import ControlNetModel

    widths = (8, 16, 32, 64)[: int(math.log2(vae_scale_factor)) + 1]

    def build():
        net = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=widths)
        for conv in (net.controlnet_cond_embedding.conv_out, *net.controlnet_down_blocks, net.controlnet_mid_block):
            conv.reset_parameters()
        return net.eval()

    return _seeded(seed, build)


def write_control_video(path, *, num_frames: int = 4, size: int = 32, seed: int = 0) -> Path:
    """A small video (PNG frames: lossless) of a bright square moving over a dark
    gradient, whose Canny edges are the square's outline; `path` without suffix is a folder."""
    import numpy as np

    from zeroshot.io import write_video

    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / size
    frames = np.zeros((num_frames, size, size, 3), np.float32)
    base = rng.uniform(0.1, 0.3, size=3)
    side = size // 3
    for i in range(num_frames):
        frames[i] = base * (0.5 + 0.5 * x[..., None] * y[..., None])
        left = 2 + i * max(1, (size - side - 4) // max(1, num_frames - 1))
        frames[i, side // 2 : side // 2 + side, left : left + side] = rng.uniform(0.7, 1.0, size=3)
    return write_video(torch_frames(frames), path)


def torch_frames(frames):
    """`(f, H, W, 3)` numpy in [0, 1] -> `(f, 3, H, W)` torch."""
    import torch

    return torch.from_numpy(frames).permute(0, 3, 1, 2).contiguous()
