"""Train an edge ControlNet (Canny maps of shapes-world images) on a frozen text-to-image model.

    python -m zeroshot.trained.train_controlnet --time-limit 1800          # CPU, the embedded model
    python -m zeroshot.trained.train_controlnet --world v2 --steps 4000 --device cuda

The ControlNet is `ControlNetModel.from_unet` of the model's UNet (Zhang et al., arXiv
2302.05543): a trainable copy of its encoder whose zero convolutions start at zero, so step 0
adds nothing to the frozen model. Its conditioning embedding downsamples by the VAE factor, so
it takes control maps at the image size. Each training image is a random shapes-world scene
(`zeroshot.shapes.world`; held-out captions excluded), its condition the Canny edges
`zeroshot.control.canny` computes at inference (the same thresholds, 100 and 200), its loss
the frozen UNet's noise (or v) prediction error with the ControlNet's residuals added,
Min-SNR weighted, and half the captions empty (the paper's 50%, so edges alone steer it).

The output is a diffusers `ControlNetModel` folder (`--out`), written at the end of every run
(atomically: a temporary folder renamed), so `zeroshot generate --controlnet OUT --control
canny:clip.mp4` loads it. Runs are seeded and resumable as `train_motion`'s: a checkpoint
(ControlNet, optimiser, schedule, generator, losses, step) every `--save-every` steps and at
the end; image `i` is a pure function of (seed, i), so a resumed run sees the data and draws an
uninterrupted one would.
"""

from __future__ import annotations

import argparse
import logging
import math
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from zeroshot.trained.train_motion import (
    EMBEDDED_MODEL,
    EMBEDDED_MODEL_V2,
    caption_embeds,
    encode_prompts,
    load_components,
    optimize,
    add_run_arguments,
    run_fields,
    run_training,
    start_run,
)

logger = logging.getLogger(__name__)

WEIGHTS = Path(__file__).resolve().parent / "weights"


def default_paths(world: str = "v1") -> tuple[str, str]:
    """(out folder, checkpoint) defaults of a world."""
    suffix = "" if world == "v1" else f"_{world}"
    return str(WEIGHTS / f"shapes{suffix}_controlnet_canny"), f"/tmp/zeroshot-controlnet/checkpoint{suffix}.pt"


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines an edge-ControlNet training run."""

    model: str | None = None  # SD folder; None: the embedded shapes model of `world`
    out: str = default_paths()[0]
    checkpoint: str = default_paths()[1]
    world: str = "v1"  # shapes world of the images: v1, or v2 (patterned backgrounds)
    steps: int = 2000
    batch_size: int = 8
    lr: float = 1e-4
    weight_decay: float = 1e-2
    warmup: int = 50
    grad_clip: float = 1.0
    seed: int = 0
    empty_prompt_prob: float = 0.5
    min_snr_gamma: float | None = 5.0
    low_threshold: float = 100.0  # Canny thresholds, as zeroshot.control.canny at inference
    high_threshold: float = 200.0
    save_every: int = 100
    device: str = "cpu"


# ---------------------------------------------------------------------------------------
# data


class ShapesImages(torch.utils.data.Dataset):
    """Item `i`: a shapes-world scene drawn from `numpy.random.default_rng([seed, i])`, as
    (image (3, H, W) in [0, 1], caption); held-out captions (`HELD_OUT`, `HELD_OUT_V2`) are
    never drawn."""

    def __init__(self, seed: int, size: int, length: int, world: str = "v1"):
        if world not in ("v1", "v2"):
            raise ValueError(f"world must be v1 or v2, got {world!r}")
        self.seed, self.size, self.length, self.world = seed, size, length, world

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> tuple[torch.Tensor, str]:
        import numpy as np

        from zeroshot.shapes import world

        rng = np.random.default_rng([self.seed, index])
        if self.world == "v2":
            scene = world.sample_scene_v2(rng, size=self.size, exclude=world.HELD_OUT_V2)
        else:
            scene = world.sample_scene(rng, size=self.size, exclude=world.HELD_OUT)
        return torch.from_numpy(world.render(scene)[0]), scene.caption  # 3 H W


class ShapesEdges(ShapesImages):
    """`ShapesImages` with each image's Canny edges (3, H, W) in {0, 1}: (image, edges, caption)."""

    def __init__(self, seed: int, size: int, length: int, world: str = "v1", *, low: float = 100.0,
                 high: float = 200.0):
        super().__init__(seed, size, length, world)
        self.low, self.high = low, high

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, str]:
        from zeroshot.control import canny

        image, caption = super().__getitem__(index)
        return image, canny(image[None], self.low, self.high)[0], caption


def _collate(items):
    return torch.stack([i for i, _, _ in items]), torch.stack([e for _, e, _ in items]), [c for _, _, c in items]


def batches(dataset: torch.utils.data.Dataset, start_step: int, steps: int, batch_size: int, collate=_collate):
    """Batches of `dataset` for steps start_step..steps-1 (deterministic, resumable)."""
    indices = range(start_step * batch_size, steps * batch_size)
    return torch.utils.data.DataLoader(torch.utils.data.Subset(dataset, indices), batch_size=batch_size,
                                       shuffle=False, collate_fn=collate)


# ---------------------------------------------------------------------------------------
# model pieces


def new_controlnet(unet: Any, vae_scale_factor: int, *, seed: int = 0):
    """`ControlNetModel.from_unet(unet)` (its encoder copied, zero convolutions at zero) whose
    conditioning embedding downsamples by `vae_scale_factor` (diffusers' widths, cut to fit)."""
    from diffusers import ControlNetModel

    levels = int(math.log2(vae_scale_factor))
    if 2**levels != vae_scale_factor or not 1 <= levels <= 3:
        raise ValueError(f"the VAE factor must be 2, 4 or 8 for a ControlNet's conditioning embedding, "
                         f"got {vae_scale_factor}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(16, 32, 96, 256)[: levels + 1])


@torch.no_grad()
def encode_images(vae: Any, images: torch.Tensor) -> torch.Tensor:
    """Latents (b, c, h, w) of images (b, 3, H, W) in [0, 1] (posterior means, scaled)."""
    x = images.to(vae.device, vae.dtype) * 2 - 1
    return vae.encode(x).latent_dist.mean * vae.config.scaling_factor


def controlnet_loss(controlnet: Any, unet: Any, scheduler: Any, latents: torch.Tensor, embeds: torch.Tensor,
                    edges: torch.Tensor, generator: torch.Generator, *, min_snr_gamma: float | None = None
                    ) -> torch.Tensor:
    """Squared error of the frozen UNet's prediction with the ControlNet's residuals added, at
    uniformly drawn timesteps (Min-SNR weighted with `min_snr_gamma`, as `train_motion`)."""
    b = latents.shape[0]
    device = latents.device
    noise = torch.randn(latents.shape, generator=generator, device=device, dtype=latents.dtype)
    t = torch.randint(0, scheduler.config.num_train_timesteps, (b,), generator=generator, device=device)
    noisy = scheduler.add_noise(latents, noise, t)
    v_pred = scheduler.config.prediction_type == "v_prediction"
    target = scheduler.get_velocity(latents, noise, t) if v_pred else noise
    down, mid = controlnet(noisy, t, encoder_hidden_states=embeds, controlnet_cond=edges, return_dict=False)
    pred = unet(noisy, t, encoder_hidden_states=embeds, down_block_additional_residuals=down,
                mid_block_additional_residual=mid).sample
    error = ((pred.float() - target.float()) ** 2).mean(dim=(1, 2, 3))  # (b,)
    if min_snr_gamma is None:
        return error.mean()
    ac = scheduler.alphas_cumprod.to(device)[t].float()
    snr = ac / (1 - ac)
    weight = snr.clamp(max=min_snr_gamma) / (snr + 1 if v_pred else snr)
    return (weight * error).mean()


def save_pretrained_atomic(module: Any, out: str | Path) -> Path:
    """Write a diffusers model folder (`save_pretrained`: a ControlNet, a tiny VAE) at `out`,
    replacing it atomically (a temporary folder beside it, renamed)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    module.save_pretrained(str(tmp), safe_serialization=True)
    if out.exists():
        old = out.with_name(out.name + ".old")
        shutil.rmtree(old, ignore_errors=True)
        out.replace(old)
        tmp.replace(out)
        shutil.rmtree(old)
    else:
        tmp.replace(out)
    return out


# ---------------------------------------------------------------------------------------
# training


def train(config: TrainConfig, *, components: dict[str, Any] | None = None, progress: bool = True,
          stop_at: int | None = None, time_limit_s: float | None = None) -> dict:
    """Train (or resume) an edge ControlNet; returns {"losses", "controlnet", "steps"}.

    `components` (unet, vae, text_encoder, tokenizer, scheduler) default to the model folder's.
    `stop_at` (a step) and `time_limit_s` end this run early, with a checkpoint, as an
    interruption would; a later call resumes. The ControlNet is written to `config.out` (when
    set) at the end of every run.
    """
    from tqdm.auto import tqdm

    device = torch.device(config.device)
    if components is None:
        default = EMBEDDED_MODEL if config.world == "v1" else EMBEDDED_MODEL_V2
        components = load_components(config.model or default, config.device)
    unet, vae, text_encoder = components["unet"], components["vae"], components["text_encoder"]
    tokenizer, scheduler = components["tokenizer"], components["scheduler"]
    factor = 2 ** (len(vae.config.block_out_channels) - 1)
    size = int(unet.config.sample_size) * factor
    dataset = ShapesEdges(config.seed, size, config.steps * config.batch_size, config.world,
                          low=config.low_threshold, high=config.high_threshold)

    controlnet = new_controlnet(unet, factor, seed=config.seed).to(device).train()
    params = [p for p in controlnet.parameters() if p.requires_grad]
    run = start_run(config, params, device, key="controlnet", weights=controlnet.state_dict,
                    load=controlnet.load_state_dict)
    optimizer, schedule, generator, losses, start = run.optimizer, run.schedule, run.generator, run.losses, run.start
    checkpoint = run.checkpoint
    empty = encode_prompts(tokenizer, text_encoder, [""])  # 1 n d

    bar = tqdm(batches(dataset, start, config.steps, config.batch_size), total=config.steps, initial=start,
               disable=not progress, desc="edge controlnet")

    def loss_of(batch):
        images, edges, captions = batch
        embeds = caption_embeds(tokenizer, text_encoder, captions, empty, config.empty_prompt_prob, generator)
        latents = encode_images(vae, images)
        return controlnet_loss(controlnet, unet, scheduler, latents, embeds, edges.to(device), generator,
                               min_snr_gamma=config.min_snr_gamma)

    step = optimize(bar, loss_of, optimizer=optimizer, schedule=schedule, params=params, grad_clip=config.grad_clip,
                    losses=losses, start=start, save_every=config.save_every, checkpoint=checkpoint,
                    stop_at=stop_at, time_limit_s=time_limit_s)
    controlnet.eval().requires_grad_(False)
    if config.out:
        save_pretrained_atomic(controlnet, config.out)
    return {"losses": losses, "controlnet": controlnet, "steps": step}


def main(argv: list[str] | None = None) -> int:
    defaults = TrainConfig()
    parser = argparse.ArgumentParser(prog="python -m zeroshot.trained.train_controlnet",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--world", choices=("v1", "v2"), default="v1",
                        help="shapes world of the training images (v2: patterned backgrounds; held-out captions excluded)")
    parser.add_argument("--model", default=None, help="SD model folder (default: the embedded shapes model of --world)")
    parser.add_argument("--out", default=None,
                        help="ControlNet folder to write (default: weights/shapes[_v2]_controlnet_canny)")
    parser.add_argument("--checkpoint", default=None,
                        help="resumable checkpoint file ('' for none; default under /tmp/zeroshot-controlnet/)")
    add_run_arguments(parser, defaults)
    parser.add_argument("--empty-prompt-prob", type=float, default=defaults.empty_prompt_prob)
    args = parser.parse_args(argv)
    if args.steps < 1 or args.batch_size < 1:
        parser.error(f"--steps and --batch-size must be >= 1, got {args.steps} and {args.batch_size}")
    if not 0 <= args.empty_prompt_prob <= 1:
        parser.error(f"--empty-prompt-prob must be in [0, 1], got {args.empty_prompt_prob}")
    model = args.model or str(EMBEDDED_MODEL if args.world == "v1" else EMBEDDED_MODEL_V2)
    if not (Path(model) / "model_index.json").is_file():
        parser.error(f"--model {model}: not a diffusers model folder (no model_index.json)")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    out, checkpoint = default_paths(args.world)
    config = TrainConfig(
        model=model,
        out=out if args.out is None else args.out,
        checkpoint=checkpoint if args.checkpoint is None else args.checkpoint,
        world=args.world,
        **run_fields(args),
        empty_prompt_prob=args.empty_prompt_prob,
    )
    return run_training(parser, train, config, time_limit_s=args.time_limit, log=args.log)

if __name__ == "__main__":
    raise SystemExit(main())
