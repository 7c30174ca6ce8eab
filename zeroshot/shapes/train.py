"""Train the embedded shapes-world model: `python -m zeroshot.shapes.train`.

Two stages, each resumable from its checkpoint in `--ckpt` (keep it outside the repo):

1. VAE: an `AutoencoderKL` (64x64 px -> 4x16x16 latents) on the world's images, MSE plus a
   small KL term, decoding a sample of the posterior.
2. UNet + text encoder, jointly: epsilon prediction on the frozen VAE's latents with the SD
   noise schedule, Min-SNR-5 loss weighting (Hang et al. 2023), 10% empty captions for
   classifier-free guidance, AdamW, EMA of the weights. Captions of `world.HELD_OUT` are
   never shown, so evaluation prompts are new to the model.

Every step draws its data and noise from generators seeded by (seed, stage, step), so a
run is reproducible and a resumed run continues exactly where it stopped. `--export`
writes the EMA weights as a standard diffusers Stable Diffusion folder.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from zeroshot.shapes import world

log = logging.getLogger(__name__)

VAE_CONFIG = {
    "in_channels": 3,
    "out_channels": 3,
    "latent_channels": 4,
    "down_block_types": ("DownEncoderBlock2D",) * 3,
    "up_block_types": ("UpDecoderBlock2D",) * 3,
    "block_out_channels": (16, 32, 32),
    "layers_per_block": 1,
    "norm_num_groups": 8,
    "mid_block_add_attention": False,
    "sample_size": 64,
}
UNET_CONFIG = {
    "sample_size": 16,
    "in_channels": 4,
    "out_channels": 4,
    "block_out_channels": (32, 64, 64),
    "layers_per_block": 1,
    "down_block_types": ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    "cross_attention_dim": 64,
    "attention_head_dim": 2,  # diffusers' legacy name: the number of heads
    "norm_num_groups": 8,
}
TEXT_CONFIG = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_attention_heads": 4,
    "num_hidden_layers": 2,
}
SCHEDULE = {
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "num_train_timesteps": 1000,
}

#: Recommended sampling defaults written to the model's zeroshot.json (see docs/shapes.md).
DEFAULTS = {
    "height": 64,
    "width": 64,
    "num_inference_steps": 25,
    "guidance_scale": 2.0,
    "motion.t0": 4,
    "motion.t1": 5,
    "motion.translate": [2.0, 0.0],
    "motion.mode": "bilinear",
    "motion.padding": "border",
}


#: World v2 (patterned backgrounds) needs more capacity to draw 8-16 px patterns: a wider
#: VAE (same 4x16x16 latents) and a wider UNet; the text encoder is unchanged.
VAE_CONFIG_V2 = {**VAE_CONFIG, "block_out_channels": (32, 64, 64)}
UNET_CONFIG_V2 = {**UNET_CONFIG, "block_out_channels": (48, 96, 96), "attention_head_dim": 4}


@dataclass(frozen=True)
class World:
    """What a world version trains on: its image sampler, held-out combinations, words, sizes."""

    sample_batch: object
    held_out: frozenset
    vocabulary: tuple
    captions: object  # () -> every training caption
    vae: dict
    unet: dict


def _captions_v1():
    return [world.caption(s, f, b) for s in world.SHAPES for f in world.COLORS for b in world.COLORS if f != b]


def _captions_v2():
    return [
        world.caption(s, f, b, p)
        for s in world.SHAPES
        for f in world.COLORS
        for b in world.COLORS
        for p in world.PATTERNS
        if f != b
    ]


WORLDS = {
    "v1": World(world.sample_batch, world.HELD_OUT, world.VOCABULARY, _captions_v1, VAE_CONFIG, UNET_CONFIG),
    "v2": World(
        world.sample_batch_v2, world.HELD_OUT_V2, world.VOCABULARY_V2, _captions_v2, VAE_CONFIG_V2, UNET_CONFIG_V2
    ),
}


@dataclass(frozen=True)
class TrainConfig:
    world: str = "v1"
    seed: int = 0
    batch_size: int = 32
    vae_steps: int = 4500
    vae_lr: float = 1e-3
    kl_weight: float = 1e-6
    vae_crop: int = (
        32  # the VAE is fully convolutional: train it on random crops of 64-px images
    )
    decoder_steps: int = 3000
    decoder_lr: float = 5e-4
    decoder_batch_size: int = 16
    unet_steps: int = 4500
    lr: float = 1e-3
    warmup: int = 200
    ema_decay: float = 0.999
    min_snr_gamma: float = 5.0
    drop_caption: float = 0.1
    checkpoint_every: int = 250


# ----------------------------------------------------------------------------- models


def build_vae(world_version: str = "v1", **overrides):
    from diffusers import AutoencoderKL

    return AutoencoderKL(**{**WORLDS[world_version].vae, **overrides})


def build_unet(world_version: str = "v1", **overrides):
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(**{**WORLDS[world_version].unet, **overrides})


def build_text_encoder(tokenizer, **overrides):
    from transformers import CLIPTextConfig, CLIPTextModel

    config = CLIPTextConfig(
        vocab_size=len(tokenizer),
        max_position_embeddings=tokenizer.model_max_length,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **{**TEXT_CONFIG, **overrides},
    )
    return CLIPTextModel(config)


#: Captions are at most 7 words (+ start/end tokens); a short context keeps the model cheap.
MAX_TOKENS = 16


def build_tokenizer(directory, world_version: str = "v1"):
    from zeroshot.tokenizer import word_tokenizer

    return word_tokenizer(WORLDS[world_version].vocabulary, directory, max_length=MAX_TOKENS)


def alphas_cumprod():
    from diffusers import DDPMScheduler

    return DDPMScheduler(**SCHEDULE).alphas_cumprod


# ----------------------------------------------------------------------------- losses


def vae_loss(vae, images, generator, *, kl_weight: float):
    """MSE + L1 of the decoded posterior sample plus `kl_weight` x KL per latent element.

    images: (b, 3, H, W) in [-1, 1].
    """
    import torch.nn.functional as F

    posterior = vae.encode(images).latent_dist
    recon = vae.decode(posterior.sample(generator=generator)).sample
    kl = posterior.kl().mean() / posterior.mean[0].numel()
    return F.mse_loss(recon, images) + F.l1_loss(recon, images) + kl_weight * kl


def unet_loss(
    unet,
    text_encoder,
    latents,
    input_ids,
    timesteps,
    noise,
    alphas_cumprod,
    *,
    min_snr_gamma: float,
):
    """Min-SNR-weighted epsilon-prediction loss.

    latents/noise: (b, 4, h, w) scaled latents and their noise; timesteps (b,) long;
    input_ids (b, n) token ids (empty captions for the unconditional part).
    """
    ac = alphas_cumprod.to(latents.device)[timesteps].view(-1, 1, 1, 1)
    noisy = ac.sqrt() * latents + (1 - ac).sqrt() * noise
    states = text_encoder(input_ids)[0]
    pred = unet(noisy, timesteps, encoder_hidden_states=states).sample
    snr = (ac / (1 - ac)).view(-1)
    weight = snr.clamp(max=min_snr_gamma) / snr
    return (weight * ((pred - noise) ** 2).mean(dim=(1, 2, 3))).mean()


# ----------------------------------------------------------------------------- data


def step_generators(seed: int, stage: int, step: int, device):
    """(numpy Generator, torch Generator) for one training step, independent of resuming."""
    import torch

    rng = np.random.default_rng([seed, stage, step])
    gen = torch.Generator(device=device).manual_seed(int(rng.integers(2**62)))
    return rng, gen


def image_batch(rng, n: int, device, *, size: int = 64, world_version: str = "v1"):
    """(images (n, 3, size, size) in [-1, 1], captions) from the training captions."""
    import torch

    w = WORLDS[world_version]
    images, captions = w.sample_batch(rng, n, size=size, exclude=w.held_out)
    return torch.from_numpy(images).to(device) * 2 - 1, captions


def random_crops(images, size: int, rng):
    """One random (size x size) window of each image of (b, c, H, W)."""
    import torch

    b, _, h, w = images.shape
    ys, xs = rng.integers(0, h - size + 1, b), rng.integers(0, w - size + 1, b)
    return torch.stack(
        [im[:, y : y + size, x : x + size] for im, y, x in zip(images, ys, xs)]
    )


def lr_factor(step: int, total: int, warmup: int) -> float:
    """Linear warm-up, then cosine decay to 10%."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


# ----------------------------------------------------------------------------- checkpoints


def _save(obj, path: Path) -> None:
    import torch

    tmp = path.with_suffix(".tmp")
    torch.save(obj, tmp)
    tmp.replace(path)


def _load(path: Path):
    import torch

    return (
        torch.load(path, map_location="cpu", weights_only=False)
        if path.exists()
        else None
    )


# ----------------------------------------------------------------------------- stages


def train_vae(cfg: TrainConfig, ckpt_dir: Path, device, *, deadline: float):
    """Stage 1; returns the trained VAE (eval mode, `scaling_factor` set) or None if stopped."""
    import torch
    from tqdm import tqdm

    path = ckpt_dir / "vae.pt"
    state = _load(path)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        vae = build_vae(cfg.world).to(device)
    opt = torch.optim.AdamW(vae.parameters(), lr=cfg.vae_lr, weight_decay=0.0)
    start = 0
    if state is not None:
        vae.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        start = state["step"]
        if state.get("scaling_factor") is not None:
            vae.register_to_config(scaling_factor=state["scaling_factor"])
            return vae.eval()
    vae.train()
    bar = tqdm(
        range(start, cfg.vae_steps),
        desc="vae",
        initial=start,
        total=cfg.vae_steps,
        mininterval=5,
    )
    smooth = None
    for step in bar:
        rng, gen = step_generators(cfg.seed, 1, step, device)
        images, _ = image_batch(rng, cfg.batch_size, device, world_version=cfg.world)
        images = random_crops(images, cfg.vae_crop, rng)
        for group in opt.param_groups:
            group["lr"] = cfg.vae_lr * lr_factor(step, cfg.vae_steps, cfg.warmup)
        loss = vae_loss(vae, images, gen, kl_weight=cfg.kl_weight)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        smooth = loss.item() if smooth is None else 0.98 * smooth + 0.02 * loss.item()
        bar.set_postfix(loss=f"{smooth:.5f}", refresh=False)
        if (step + 1) % 100 == 0:
            log.info("vae step %d loss %.5f", step + 1, smooth)
        last = step + 1 == cfg.vae_steps
        if (step + 1) % cfg.checkpoint_every == 0 or last or time.time() > deadline:
            _save(
                {
                    "model": vae.state_dict(),
                    "opt": opt.state_dict(),
                    "step": step + 1,
                    "scaling_factor": None,
                },
                path,
            )
            if time.time() > deadline and not last:
                log.info(
                    "time limit reached at vae step %d; resume to continue", step + 1
                )
                return None
    vae.eval()
    scaling = latent_scaling_factor(vae, cfg.seed, device, world_version=cfg.world)
    vae.register_to_config(scaling_factor=scaling)
    _save(
        {
            "model": vae.state_dict(),
            "opt": opt.state_dict(),
            "step": cfg.vae_steps,
            "scaling_factor": scaling,
        },
        path,
    )
    log.info("vae done; latent scaling factor %.4f", scaling)
    return vae


def train_decoder(cfg: TrainConfig, vae, ckpt_dir: Path, device, *, deadline: float):
    """Stage 1b: fine-tune the decoder on full 64-px images with the encoder frozen.

    The latent space (and so the UNet stage) is unchanged; returns the VAE, or None if stopped.
    """
    import torch
    import torch.nn.functional as F
    from tqdm import tqdm

    path = ckpt_dir / "decoder.pt"
    state = _load(path)
    decoder = list(vae.decoder.parameters()) + list(vae.post_quant_conv.parameters())
    opt = torch.optim.AdamW(decoder, lr=cfg.decoder_lr, weight_decay=0.0)
    start = 0
    if state is not None:
        vae.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        start = state["step"]
    if start >= cfg.decoder_steps:
        return vae.eval()
    vae.encoder.requires_grad_(False)
    vae.quant_conv.requires_grad_(False)
    vae.decoder.train()
    bar = tqdm(
        range(start, cfg.decoder_steps),
        desc="decoder",
        initial=start,
        total=cfg.decoder_steps,
        mininterval=5,
    )
    smooth = None
    for step in bar:
        rng, gen = step_generators(cfg.seed, 4, step, device)
        images, _ = image_batch(rng, cfg.decoder_batch_size, device, world_version=cfg.world)
        for group in opt.param_groups:
            group["lr"] = cfg.decoder_lr * lr_factor(
                step, cfg.decoder_steps, cfg.warmup
            )
        with torch.no_grad():
            z = vae.encode(images).latent_dist.sample(generator=gen)
        recon = vae.decode(z).sample
        loss = F.mse_loss(recon, images) + F.l1_loss(recon, images)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(decoder, 1.0)
        opt.step()
        smooth = loss.item() if smooth is None else 0.98 * smooth + 0.02 * loss.item()
        bar.set_postfix(loss=f"{smooth:.5f}", refresh=False)
        if (step + 1) % 100 == 0:
            log.info("decoder step %d loss %.5f", step + 1, smooth)
        last = step + 1 == cfg.decoder_steps
        if (step + 1) % cfg.checkpoint_every == 0 or last or time.time() > deadline:
            _save(
                {"model": vae.state_dict(), "opt": opt.state_dict(), "step": step + 1},
                path,
            )
            if time.time() > deadline and not last:
                log.info(
                    "time limit reached at decoder step %d; resume to continue",
                    step + 1,
                )
                return None
    return vae.eval()


def load_decoder(vae, ckpt_dir: Path):
    """The VAE with the last decoder checkpoint's weights (if any)."""
    state = _load(Path(ckpt_dir) / "decoder.pt")
    if state is not None:
        vae.load_state_dict(state["model"])
        log.info("decoder weights of step %d", state["step"])
    return vae


def latent_scaling_factor(vae, seed: int, device, n: int = 512, *, world_version: str = "v1") -> float:
    """1 / std of posterior samples of `n` training images (as SD's 0.18215)."""
    import torch

    rng, gen = step_generators(seed, 3, 0, device)
    with torch.no_grad():
        images, _ = image_batch(rng, n, device, world_version=world_version)
        z = torch.cat(
            [
                vae.encode(chunk).latent_dist.sample(generator=gen)
                for chunk in images.split(128)
            ]
        )
    return float(1.0 / z.std())


def _ema_update(ema, model, decay: float) -> None:
    import torch

    with torch.no_grad():
        for e, p in zip(ema.parameters(), model.parameters()):
            e.lerp_(p, 1 - decay)


def train_unet(
    cfg: TrainConfig, vae, tokenizer, ckpt_dir: Path, device, *, deadline: float
):
    """Stage 2; returns (ema_unet, ema_text_encoder) when finished, None if stopped early."""
    import torch
    from tqdm import tqdm

    path = ckpt_dir / "unet.pt"
    state = _load(path)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed + 1)
        unet = build_unet(cfg.world).to(device)
        text = build_text_encoder(tokenizer).to(device)
    ema_unet, ema_text = copy.deepcopy(unet).eval(), copy.deepcopy(text).eval()
    params = list(unet.parameters()) + list(text.parameters())
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.01)
    start = 0
    if state is not None:
        for module, key in (
            (unet, "unet"),
            (text, "text"),
            (ema_unet, "ema_unet"),
            (ema_text, "ema_text"),
        ):
            module.load_state_dict(state[key])
        opt.load_state_dict(state["opt"])
        start = state["step"]
    if start >= cfg.unet_steps:
        return ema_unet, ema_text
    vae.requires_grad_(False)
    ac = alphas_cumprod()
    ids = _caption_ids(tokenizer, device, cfg.world)
    unet.train()
    text.train()
    bar = tqdm(
        range(start, cfg.unet_steps),
        desc="unet",
        initial=start,
        total=cfg.unet_steps,
        mininterval=5,
    )
    smooth = None
    for step in bar:
        rng, gen = step_generators(cfg.seed, 2, step, device)
        images, captions = image_batch(rng, cfg.batch_size, device, world_version=cfg.world)
        drop = rng.random(cfg.batch_size) < cfg.drop_caption
        input_ids = torch.stack([ids["" if d else c] for c, d in zip(captions, drop)])
        with torch.no_grad():
            latents = (
                vae.encode(images).latent_dist.sample(generator=gen)
                * vae.config.scaling_factor
            )
        timesteps = torch.randint(
            0, len(ac), (cfg.batch_size,), generator=gen, device=device
        )
        noise = torch.randn(latents.shape, generator=gen, device=device)
        for group in opt.param_groups:
            group["lr"] = cfg.lr * lr_factor(step, cfg.unet_steps, cfg.warmup)
        loss = unet_loss(
            unet,
            text,
            latents,
            input_ids,
            timesteps,
            noise,
            ac,
            min_snr_gamma=cfg.min_snr_gamma,
        )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        decay = min(cfg.ema_decay, (1 + step) / (10 + step))
        _ema_update(ema_unet, unet, decay)
        _ema_update(ema_text, text, decay)
        smooth = loss.item() if smooth is None else 0.98 * smooth + 0.02 * loss.item()
        bar.set_postfix(loss=f"{smooth:.4f}", refresh=False)
        if (step + 1) % 100 == 0:
            log.info("unet step %d loss %.4f", step + 1, smooth)
        last = step + 1 == cfg.unet_steps
        if (step + 1) % cfg.checkpoint_every == 0 or last or time.time() > deadline:
            _save(
                {
                    "unet": unet.state_dict(),
                    "text": text.state_dict(),
                    "ema_unet": ema_unet.state_dict(),
                    "ema_text": ema_text.state_dict(),
                    "opt": opt.state_dict(),
                    "step": step + 1,
                },
                path,
            )
            if time.time() > deadline and not last:
                log.info(
                    "time limit reached at unet step %d; resume to continue", step + 1
                )
                return None
    return ema_unet, ema_text


def _caption_ids(tokenizer, device, world_version: str = "v1") -> dict:
    """Token ids (padded to model_max_length) of every training caption and the empty one."""
    captions = sorted(set(WORLDS[world_version].captions()))
    captions.append("")
    enc = tokenizer(
        captions,
        padding="max_length",
        max_length=tokenizer.model_max_length,
        truncation=True,
        return_tensors="pt",
    )
    return {c: enc.input_ids[i].to(device) for i, c in enumerate(captions)}


def load_ema(ckpt_dir: Path, tokenizer, world_version: str = "v1"):
    """(ema_unet, ema_text_encoder) of the last UNet checkpoint."""
    state = _load(Path(ckpt_dir) / "unet.pt")
    if state is None:
        raise FileNotFoundError(f"no UNet checkpoint in {ckpt_dir}")
    unet, text = build_unet(world_version), build_text_encoder(tokenizer)
    unet.load_state_dict(state["ema_unet"])
    text.load_state_dict(state["ema_text"])
    log.info("EMA weights of UNet step %d", state["step"])
    return unet.eval(), text.eval()


# ----------------------------------------------------------------------------- export


def export(
    out_dir: Path, vae, unet, text_encoder, tokenizer_dir: Path, *, defaults=None, world_version: str = "v1"
) -> Path:
    """Write a diffusers Stable Diffusion folder (safetensors) plus zeroshot.json."""
    import shutil

    from diffusers import DDIMScheduler, StableDiffusionPipeline
    from transformers import CLIPTokenizer

    scheduler = DDIMScheduler(
        **{k: v for k, v in SCHEDULE.items()},
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )
    pipe = StableDiffusionPipeline(
        vae=vae.to("cpu"),
        text_encoder=text_encoder.to("cpu"),
        tokenizer=CLIPTokenizer.from_pretrained(str(tokenizer_dir)),
        unet=unet.to("cpu"),
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    out_dir = Path(out_dir)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    pipe.save_pretrained(str(out_dir), safe_serialization=True)
    write_zeroshot_json(out_dir, defaults or DEFAULTS, WORLDS[world_version].vocabulary)
    return out_dir


def write_zeroshot_json(model_dir: Path, defaults: dict, vocabulary=world.VOCABULARY) -> None:
    record = {"defaults": defaults, "vocabulary": list(vocabulary)}
    (Path(model_dir) / "zeroshot.json").write_text(json.dumps(record, indent=1) + "\n")


# ----------------------------------------------------------------------------- CLI


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m zeroshot.shapes.train", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "--ckpt", type=Path, required=True, help="checkpoint folder (outside the repo)"
    )
    parser.add_argument(
        "--out", type=Path, default=None, help="write the final model folder here"
    )
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument(
        "--max-minutes",
        type=float,
        default=None,
        help="stop (resumably) after this long",
    )
    parser.add_argument(
        "--stages",
        choices=("vae", "decoder", "unet", "all"),
        default="all",
        help="vae: stage 1 only; decoder: stages 1 and 1b; unet: stages 1 and 2; all: 1, 1b, 2",
    )
    parser.add_argument(
        "--export-now",
        action="store_true",
        help="export the EMA weights of the last checkpoint",
    )
    for f, v in asdict(TrainConfig()).items():
        parser.add_argument("--" + f.replace("_", "-"), type=type(v), default=v)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    import torch

    cfg = TrainConfig(**{f: getattr(args, f) for f in asdict(TrainConfig())})
    args.ckpt.mkdir(parents=True, exist_ok=True)
    (args.ckpt / "config.json").write_text(json.dumps(asdict(cfg), indent=1))
    deadline = time.time() + 60 * args.max_minutes if args.max_minutes else math.inf
    device = torch.device(args.device)
    log.info("training with %s on %s", cfg, device)
    tokenizer = build_tokenizer(args.ckpt / "tokenizer", cfg.world)
    vae = train_vae(cfg, args.ckpt, device, deadline=deadline)
    if vae is None or args.stages == "vae":
        return 0
    if args.stages in ("decoder", "all") and not args.export_now:
        decoded = train_decoder(cfg, vae, args.ckpt, device, deadline=deadline)
        if decoded is None or args.stages == "decoder":
            return 0
    if args.stages == "decoder":
        return 0
    if args.export_now:
        result = load_ema(args.ckpt, tokenizer, cfg.world)
    else:
        result = train_unet(cfg, vae, tokenizer, args.ckpt, device, deadline=deadline)
    if result is None:
        return 0
    if args.out is not None:
        vae = load_decoder(vae, args.ckpt)
        export(args.out, vae, result[0], result[1], args.ckpt / "tokenizer", world_version=cfg.world)
        log.info("model written to %s", args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
