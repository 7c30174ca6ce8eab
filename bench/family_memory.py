"""Peak memory and time of the transformer video families at their real sizes, diffusers'
pipeline beside zeroshot in the same process, with and without `--offload` / `--vae-tiling`.

Random-weight models with the published architectures (no download): `wan-1.3b` (Wan 2.1
T2V 1.3B: 30 layers of width 1536, UMT5-XXL-sized encoder, Wan VAE; 480x832, 81 frames)
and `cogvideox-2b` (30 layers of width 1920, T5-XXL-sized encoder, CogVideoX VAE; 480x720,
49 frames). The text encoders keep their real width and depth but a small vocabulary (the
embedding table of 32k-256k tokens is 0.1-1 GB of their weight). `tiny` is the test
components, to check the script on a CPU.

On CUDA each configuration reports `torch.cuda.max_memory_allocated` over one generation
(components already loaded, or in CPU memory under offload) and its wall time; on a CPU,
wall time only. Sampling runs `--steps` steps (the memory peak does not depend on how many).

    python bench/family_memory.py --preset wan-1.3b --steps 4            # on a GPU
    python bench/family_memory.py --preset tiny --device cpu             # smoke test
"""

from __future__ import annotations

import argparse
import gc
import json
import tempfile
import time
import warnings
from pathlib import Path

import torch

PRESETS = {
    "tiny-wan": dict(family="wan", frames=5, height=32, width=32),
    "tiny-cogvideox": dict(family="cogvideox", frames=9, height=32, width=32),
    "wan-1.3b": dict(family="wan", frames=81, height=480, width=832),
    "cogvideox-2b": dict(family="cogvideox", frames=49, height=480, width=720),
}


def build_folder(preset: str, directory: Path, dtype: torch.dtype) -> Path:
    """A diffusers folder of the preset's architecture with random weights."""
    from zeroshot import testing

    family = PRESETS[preset]["family"]
    if preset.startswith("tiny"):
        return testing.FAMILY_FOLDERS[family](directory)
    from transformers import T5Config, T5EncoderModel, UMT5Config, UMT5EncoderModel

    from zeroshot.tokenizer import word_tokenizer

    tokenizer = word_tokenizer(testing.WORDS, directory / "_tokenizer")
    encoder = dict(vocab_size=len(tokenizer), d_model=4096, d_kv=64, d_ff=10240, num_layers=24, num_heads=64,
                   relative_attention_num_buckets=32, pad_token_id=tokenizer.pad_token_id,
                   eos_token_id=tokenizer.eos_token_id, decoder_start_token_id=tokenizer.pad_token_id,
                   feed_forward_proj="gated-gelu")
    with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
        if family == "wan":
            from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanPipeline, WanTransformer3DModel

            pipe = WanPipeline(
                tokenizer=tokenizer,
                text_encoder=UMT5EncoderModel(UMT5Config(**encoder)).to(dtype),
                vae=AutoencoderKLWan().to(torch.float32),
                transformer=WanTransformer3DModel(num_attention_heads=12, attention_head_dim=128, ffn_dim=8960,
                                                  num_layers=30).to(dtype),
                scheduler=UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True,
                                                  flow_shift=3.0),
            )
        else:
            from diffusers import (
                AutoencoderKLCogVideoX,
                CogVideoXDDIMScheduler,
                CogVideoXPipeline,
                CogVideoXTransformer3DModel,
            )

            pipe = CogVideoXPipeline(
                tokenizer=tokenizer,
                text_encoder=T5EncoderModel(T5Config(**encoder)).to(dtype),
                vae=AutoencoderKLCogVideoX().to(dtype),
                transformer=CogVideoXTransformer3DModel(num_attention_heads=30, attention_head_dim=64,
                                                        num_layers=30).to(dtype),
                scheduler=CogVideoXDDIMScheduler(beta_schedule="scaled_linear", prediction_type="v_prediction",
                                                 rescale_betas_zero_snr=True, snr_shift_scale=3.0,
                                                 timestep_spacing="trailing", clip_sample=False),
            )
    pipe.save_pretrained(str(directory / "model"), safe_serialization=True)
    del pipe
    gc.collect()
    torch.cuda.empty_cache() if torch.cuda.is_available() else None
    return directory / "model"


def measure(fn, device: torch.device) -> tuple[float, float | None]:
    """(seconds, peak GiB allocated on CUDA or None) of `fn()`."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        return time.perf_counter() - start, torch.cuda.max_memory_allocated(device) / 2**30
    return time.perf_counter() - start, None


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="tiny-wan")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--dtype", choices=("bfloat16", "float16", "float32"), default=None,
                        help="default: bfloat16 on CUDA, float32 on a CPU")
    parser.add_argument("--configs", nargs="+",
                        default=["diffusers", "zeroshot", "zeroshot+tiling", "zeroshot+offload+tiling",
                                 "diffusers+offload+tiling"])
    parser.add_argument("--json", default=None, help="write the rows here")
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore")
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype or ("bfloat16" if device.type == "cuda" else "float32"))
    spec = PRESETS[args.preset]

    from zeroshot import memory, models
    from zeroshot.generate import generate
    from zeroshot.models import _pipeline_class
    from zeroshot.recipe import Recipe

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = build_folder(args.preset, Path(tmp), dtype)
        family = models.folder_family(folder, str(folder))
        for config in args.configs:
            offload, tiling = "offload" in config, "tiling" in config
            latents_seed = torch.Generator().manual_seed(0)
            if config.startswith("diffusers"):
                pipe = _pipeline_class(family).from_pretrained(str(folder), torch_dtype=dtype)
                pipe.set_progress_bar_config(disable=True)
                if tiling:
                    pipe.vae.enable_tiling()
                pipe.enable_model_cpu_offload(device=device) if offload else pipe.to(device)

                def run(pipe=pipe):
                    pipe("a red cat", num_frames=spec["frames"], height=spec["height"], width=spec["width"],
                         num_inference_steps=args.steps, generator=latents_seed, output_type="pt")
            else:
                model = models.load(str(folder), device="cpu" if offload else device, dtype=dtype)
                if tiling:
                    memory.enable_vae_tiling(model)
                if offload:
                    memory.enable_offload(model, device)
                recipe = Recipe(method="video", num_frames=spec["frames"], height=spec["height"],
                                width=spec["width"], num_inference_steps=args.steps)

                def run(model=model, recipe=recipe):
                    generate(model, "a red cat", recipe, seed=0, progress=False)
            seconds, peak = measure(run, device)
            row = dict(preset=args.preset, config=config, device=str(device), seconds=round(seconds, 2),
                       peak_gib=None if peak is None else round(peak, 2))
            print(json.dumps(row), flush=True)
            rows.append(row)
            del run
            pipe = model = None
            gc.collect()
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
