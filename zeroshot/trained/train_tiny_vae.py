"""Distil a tiny VAE from a model's VAE: a diffusers `AutoencoderTiny` (TAESD's design: plain
conv blocks, no normalisation or attention) that decodes the model's latents to what its own
VAE decodes, and encodes images to its own VAE's latents.

    python -m zeroshot.trained.train_tiny_vae --world v2 --time-limit 1800    # CPU, the embedded v2 model
    zeroshot generate "a red circle on a striped blue background" --vae vae_tiny

Each step draws shapes-world images (`ShapesImages`: held-out captions excluded), encodes them
with the frozen VAE, draws latents from its posterior (scaled by its `scaling_factor`: the
space the denoiser works in) and decodes those with the frozen VAE. The tiny decoder learns
that decoding (mean squared plus absolute error: distillation, not reconstruction, so it
copies the big decoder's output, its errors included); the tiny encoder learns the posterior
means (squared error). The tiny VAE's `scaling_factor` is 1: it reads and writes the scaled
latents directly, as TAESD does for Stable Diffusion.

Widths are one number for every level (`--channels`: AutoencoderTiny's up- and down-sampling
keep the width), as many levels as the model's VAE has (the same pixels per latent), and
`--blocks` conv blocks per level (one at full resolution). The output is a diffusers
`AutoencoderTiny` folder (`--out`), written atomically at the end of every run. Runs are
seeded and resumable as `train_motion`'s.
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from zeroshot.trained.train_controlnet import ShapesImages, batches, save_pretrained_atomic
from zeroshot.trained.train_motion import (
    EMBEDDED_MODEL,
    EMBEDDED_MODEL_V2,
    add_run_arguments,
    load_components,
    optimize,
    run_fields,
    run_training,
    start_run,
)

logger = logging.getLogger(__name__)


def default_paths(world: str = "v2") -> tuple[str, str]:
    """(out folder, checkpoint) defaults of a world: the out folder sits in the model's folder."""
    model = EMBEDDED_MODEL if world == "v1" else EMBEDDED_MODEL_V2
    return str(model / "vae_tiny"), f"/tmp/zeroshot-tiny-vae/checkpoint_{world}.pt"


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a tiny-VAE distillation run."""

    model: str | None = None  # SD folder; None: the embedded shapes model of `world`
    out: str = default_paths()[0]
    checkpoint: str = default_paths()[1]
    world: str = "v2"
    channels: int = 32
    blocks: int = 1
    steps: int = 3000
    batch_size: int = 32
    lr: float = 1e-3
    warmup: int = 100
    grad_clip: float = 1.0
    seed: int = 0
    save_every: int = 200
    device: str = "cpu"


def new_tiny_vae(vae_config: Any, *, channels: int, blocks: int, seed: int = 0):
    """An `AutoencoderTiny` with the pixels per latent and latent channels of the `AutoencoderKL`
    config `vae_config`: one level per level of it, `channels` wide, `blocks` conv blocks per
    level (one at full resolution), `scaling_factor` 1 (it works on scaled latents)."""
    from diffusers import AutoencoderTiny

    levels = len(vae_config["block_out_channels"])
    if channels < 1 or blocks < 1:
        raise ValueError(f"channels and blocks must be >= 1, got {channels} and {blocks}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return AutoencoderTiny(
            in_channels=vae_config["in_channels"], out_channels=vae_config["out_channels"],
            encoder_block_out_channels=(channels,) * levels, decoder_block_out_channels=(channels,) * levels,
            num_encoder_blocks=(1,) + (blocks,) * (levels - 1), num_decoder_blocks=(blocks,) * (levels - 1) + (1,),
            latent_channels=vae_config["latent_channels"], upsampling_scaling_factor=2, scaling_factor=1.0,
        )


def distillation_loss(tiny: Any, vae: Any, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """The tiny decoder's error against the frozen VAE's decoding of posterior draws (squared
    plus absolute), plus the tiny encoder's squared error against the posterior means; latents
    in the scaled space. `images` (b, 3, H, W) in [0, 1]."""
    x = images.to(vae.device, vae.dtype) * 2 - 1
    scale = vae.config.scaling_factor
    with torch.no_grad():
        posterior = vae.encode(x).latent_dist
        z = posterior.sample(generator=generator) * scale
        target = vae.decode(z / scale).sample.clamp(-1, 1)
        mean = posterior.mean * scale
    decoded = tiny.decode(z).sample
    encoded = tiny.encode(x).latents
    return F.mse_loss(decoded, target) + F.l1_loss(decoded, target) + F.mse_loss(encoded, mean)


def _images(items):
    return torch.stack([image for image, _ in items])


def train(config: TrainConfig, *, components: dict[str, Any] | None = None, progress: bool = True,
          stop_at: int | None = None, time_limit_s: float | None = None) -> dict:
    """Distil (or resume) a tiny VAE; returns {"losses", "vae", "steps"}. `components` (needs
    "vae") default to the model folder's; `stop_at` and `time_limit_s` end the run early with a
    checkpoint, as `train_controlnet.train`. The folder is written to `config.out` when set."""
    from tqdm.auto import tqdm

    device = torch.device(config.device)
    if components is None:
        default = EMBEDDED_MODEL if config.world == "v1" else EMBEDDED_MODEL_V2
        components = load_components(config.model or default, config.device)
    vae = components["vae"]
    size = int(vae.config.sample_size)
    tiny = new_tiny_vae(vae.config, channels=config.channels, blocks=config.blocks, seed=config.seed)
    tiny = tiny.to(device).train()
    params = list(tiny.parameters())
    run = start_run(config, params, device, key="tiny_vae", weights=tiny.state_dict, load=tiny.load_state_dict)
    dataset = ShapesImages(config.seed, size, config.steps * config.batch_size, config.world)
    bar = tqdm(batches(dataset, run.start, config.steps, config.batch_size, collate=_images), total=config.steps,
               initial=run.start, disable=not progress, desc="tiny vae")
    step = optimize(bar, lambda images: distillation_loss(tiny, vae, images, run.generator), optimizer=run.optimizer,
                    schedule=run.schedule, params=params, grad_clip=config.grad_clip, losses=run.losses,
                    start=run.start, save_every=config.save_every, checkpoint=run.checkpoint, stop_at=stop_at,
                    time_limit_s=time_limit_s)
    tiny.eval().requires_grad_(False)
    if config.out:
        save_pretrained_atomic(tiny, config.out)
    return {"losses": run.losses, "vae": tiny, "steps": step}


def main(argv: list[str] | None = None) -> int:
    defaults = TrainConfig()
    parser = argparse.ArgumentParser(prog="python -m zeroshot.trained.train_tiny_vae", description=__doc__.split("\n")[0])
    parser.add_argument("--world", choices=("v1", "v2"), default="v2",
                        help="shapes world of the images (held-out captions excluded)")
    parser.add_argument("--model", default=None, help="SD model folder (default: the embedded shapes model of --world)")
    parser.add_argument("--out", default=None, help="AutoencoderTiny folder to write (default: vae_tiny in the model's folder)")
    parser.add_argument("--checkpoint", default=None,
                        help="resumable checkpoint file ('' for none; default under /tmp/zeroshot-tiny-vae/)")
    parser.add_argument("--channels", type=int, default=defaults.channels, help="width of every level")
    parser.add_argument("--blocks", type=int, default=defaults.blocks, help="conv blocks per level (one at full size)")
    add_run_arguments(parser, defaults)
    args = parser.parse_args(argv)
    if args.steps < 1 or args.batch_size < 1 or args.channels < 1 or args.blocks < 1:
        parser.error("--steps, --batch-size, --channels and --blocks must be >= 1")
    model = args.model or str(EMBEDDED_MODEL if args.world == "v1" else EMBEDDED_MODEL_V2)
    if not (Path(model) / "model_index.json").is_file():
        parser.error(f"--model {model}: not a diffusers model folder (no model_index.json)")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    out, checkpoint = default_paths(args.world)
    if args.model is not None:
        out = str(Path(model) / "vae_tiny")
    config = TrainConfig(
        model=model, out=out if args.out is None else args.out,
        checkpoint=checkpoint if args.checkpoint is None else args.checkpoint, world=args.world,
        channels=args.channels, blocks=args.blocks, **run_fields(args),
    )
    return run_training(parser, train, config, time_limit_s=args.time_limit, log=args.log)


if __name__ == "__main__":
    raise SystemExit(main())
