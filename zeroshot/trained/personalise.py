"""Personalise the embedded text-to-image model with a style LoRA.

    python -m zeroshot.trained.personalise --style turned --steps 2500

Styles (`STYLES`; each is a restyling of world images plus a score that reads the style
back from a generated frame, 0 for the base world and ~1 for the style):

- `turned` (shipped): every shape is drawn turned by half its symmetry angle, so
  triangles and stars point down and squares stand on a corner (circles and rings, which
  have no orientation, are unchanged). The world never draws these poses.
- `outline`: a dark 2 px band around the shape. Our 64 px VAE (trained on flat shapes
  only) cannot reproduce it: encoding and decoding an outlined world image keeps 8% of
  the band (`outline_score` 0.93 -> 0.08), so no UNet fine-tune can draw it.

The captions are unchanged, as with a style LoRA or DreamBooth checkpoint of SD. Only
LoRA weights train (attention projections, transformer projections and ResNet
convolutions, `lora.STYLE_TARGETS`; the base stays frozen); the result is one small
`.safetensors` file that records its style. The motion module trained on the base model
then animates the variant without retraining (`docs/animatediff.md`).
"""

from __future__ import annotations

import argparse
import logging
import math
import time
from pathlib import Path

import numpy as np
import torch

from zeroshot.trained.lora import STYLE_TARGETS, STYLE_UNDER, add_lora, save_lora

logger = logging.getLogger(__name__)

WEIGHTS = Path(__file__).resolve().parent / "weights"
OUTLINE_PX = 2


def outline(image: np.ndarray, mask: np.ndarray, scene, *, width_px: int = OUTLINE_PX) -> np.ndarray:
    """`image` (3, H, W) with a `width_px` band just outside the shape `mask` painted dark.

    The band is black, or white when the shape or the background is black.
    """
    import cv2

    kernel = np.ones((2 * width_px + 1, 2 * width_px + 1), np.uint8)
    grown = cv2.dilate(mask.astype(np.uint8), kernel).astype(bool)
    band = grown & ~mask.astype(bool)
    colour = 1.0 if "black" in (scene.fg, scene.bg) else 0.0
    out = image.copy()
    out[:, band] = colour
    return out


def turned(image: np.ndarray, mask: np.ndarray, scene) -> np.ndarray:
    """The scene redrawn with its shape turned by half its symmetry angle (`image` unused).

    Triangles and stars point down, squares stand on a corner; circles and rings, which
    have no orientation, are unchanged. Same signature as `outline`.
    """
    from dataclasses import replace

    from zeroshot.shapes.detector import UPRIGHT
    from zeroshot.shapes.world import render

    if scene.shape not in UPRIGHT:
        return image
    return render(replace(scene, angle_deg=180.0 / UPRIGHT[scene.shape][0]))[0]


def turn_score(frame: np.ndarray, prompt: str) -> float:
    """How turned the detected shape is, in [0, 1]: 0 upright (the base world), 1 `turned`.

    `zeroshot.shapes.detector.turn_deg` of the detected mask, divided by 180/k; NaN for
    circles and rings, and when no shape is found.
    """
    from zeroshot.shapes.detector import UPRIGHT, detect, turn_deg
    from zeroshot.shapes.metrics import parse_prompt

    shape = parse_prompt(prompt)[0]
    detection = detect(frame)
    if shape not in UPRIGHT or detection.shape is None:
        return math.nan
    return turn_deg(detection.mask, shape) / (180.0 / UPRIGHT[shape][0])


def outline_score(frame: np.ndarray, prompt: str, *, width_px: int = OUTLINE_PX) -> float:
    """How much of the band just outside the shape is drawn in the outline colour, in [0, 1].

    `frame` (3, H, W) in [0, 1], `prompt` a world caption. The shape is the pixels near the
    caption's foreground colour (RGB distance < 0.3); the band is the `width_px` ring around
    it; a band pixel counts when it is within 0.35 of the outline colour (black, or white
    when the shape or the background is black). World images with `outline` score ~1, the
    base model ~0. NaN when no shape-coloured pixel is found.
    """
    import cv2

    from zeroshot.shapes.metrics import parse_prompt
    from zeroshot.shapes.world import PALETTE

    _, fg, bg = parse_prompt(prompt)
    img = np.asarray(frame, np.float32).transpose(1, 2, 0)
    fg_rgb = np.array(PALETTE[fg], np.float32) / 255.0
    shape = (np.linalg.norm(img - fg_rgb, axis=-1) < 0.3).astype(np.uint8)
    if not shape.any():
        return math.nan
    kernel = np.ones((2 * width_px + 1, 2 * width_px + 1), np.uint8)
    band = cv2.dilate(shape, kernel).astype(bool) & ~shape.astype(bool)
    colour = 1.0 if "black" in (fg, bg) else 0.0
    drawn = np.linalg.norm(img - colour, axis=-1) < 0.35
    return float((drawn & band).sum() / max(int(band.sum()), 1))


#: style name -> (restyle(image, mask, scene) -> image, score(frame, prompt) -> [0, 1] or NaN)
STYLES = {"turned": (turned, turn_score), "outline": (outline, outline_score)}


def default_out(style: str) -> Path:
    """Where `python -m zeroshot.trained.personalise --style STYLE` writes its LoRA."""
    return WEIGHTS / f"shapes_{style}_lora.safetensors"


def styled_batch(rng: np.random.Generator, n: int, *, size: int, style: str) -> tuple[torch.Tensor, list[str]]:
    """n restyled shapes-world images (n, 3, H, W) in [0, 1] and their (unchanged) captions."""
    from zeroshot.shapes.world import render, sample_scene

    restyle = STYLES[style][0]
    images, captions = [], []
    for _ in range(n):
        scene = sample_scene(rng, size=size)
        image, mask = render(scene)
        images.append(restyle(image, mask, scene))
        captions.append(scene.caption)
    return torch.from_numpy(np.stack(images)), captions


def train_lora(
    components: dict,
    *,
    steps: int = 2500,
    batch_size: int = 16,
    rank: int = 8,
    lr: float = 1e-3,
    warmup: int = 20,
    seed: int = 0,
    style: str = "turned",
    out: str | Path | None = None,
    progress: bool = True,
    time_limit_s: float | None = None,
    save_every: int = 100,
    init: str | Path | None = None,
) -> dict:
    """Train a LoRA on `style`d world images; returns {"losses", "wrapped", "unet"}.

    The UNet in `components` is deep-copied first; the original is not changed.
    """
    import copy

    from tqdm.auto import tqdm

    from zeroshot.trained.train_motion import encode_prompts

    unet = copy.deepcopy(components["unet"])
    vae, text_encoder, tokenizer = components["vae"], components["text_encoder"], components["tokenizer"]
    scheduler = components["scheduler"]
    device = unet.device
    wrapped = add_lora(unet, rank=rank, targets=STYLE_TARGETS, under=STYLE_UNDER, seed=seed)
    if init is not None:  # continue from a saved LoRA (same rank and layers)
        from zeroshot.trained.lora import load_lora

        tensors, meta = load_lora(init)
        if int(meta["rank"]) != rank or set(tensors) != {f"{n}.{p}" for n in wrapped for p in ("down", "up")}:
            raise ValueError(f"{init}: LoRA layers or rank ({meta['rank']}) do not match rank {rank} on this UNet")
        with torch.no_grad():
            for name, layer in wrapped.items():
                layer.down.copy_(tensors[f"{name}.down"])
                layer.up.copy_(tensors[f"{name}.up"])
    params = [p for lora in wrapped.values() for p in (lora.down, lora.up)]
    unet.train()
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * s / max(1, steps))))
    rng = np.random.default_rng(seed)
    generator = torch.Generator(device=device).manual_seed(seed)
    size = int(unet.config.sample_size) * (2 ** (len(vae.config.block_out_channels) - 1))
    losses: list[float] = []
    start = time.time()
    for step in tqdm(range(steps), disable=not progress, desc=f"{style} LoRA"):
        images, captions = styled_batch(rng, batch_size, size=size, style=style)
        with torch.no_grad():
            z = vae.encode(images.to(device, vae.dtype) * 2 - 1).latent_dist.mean * vae.config.scaling_factor
            embeds = encode_prompts(tokenizer, text_encoder, captions)
        noise = torch.randn(z.shape, generator=generator, device=device, dtype=z.dtype)
        t = torch.randint(0, scheduler.config.num_train_timesteps, (batch_size,), generator=generator, device=device)
        pred = unet(scheduler.add_noise(z, noise, t), t, encoder_hidden_states=embeds).sample
        loss = torch.nn.functional.mse_loss(pred.float(), noise.float())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        losses.append(float(loss.detach()))
        if out and save_every and (step + 1) % save_every == 0:
            save_lora(wrapped, out, extra={"style": style})  # atomic; an interrupted run keeps its latest weights
        if time_limit_s is not None and time.time() - start > time_limit_s:
            break
    unet.eval().requires_grad_(False)
    if out:
        save_lora(wrapped, out, extra={"style": style})
    return {"losses": losses, "wrapped": wrapped, "unet": unet}


def main(argv: list[str] | None = None) -> int:
    from zeroshot.trained.train_motion import EMBEDDED_MODEL, load_components

    parser = argparse.ArgumentParser(prog="python -m zeroshot.trained.personalise", description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=None, help="SD folder (default: the embedded shapes model)")
    parser.add_argument("--style", choices=sorted(STYLES), default="turned")
    parser.add_argument("--out", default=None, help="LoRA file (default: zeroshot/trained/weights/shapes_<style>_lora.safetensors)")
    parser.add_argument("--steps", type=int, default=2500)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--time-limit", type=float, default=None, help="stop after this many seconds")
    parser.add_argument("--init", default=None, help="continue from this LoRA file (same rank)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    components = load_components(args.model or EMBEDDED_MODEL, args.device)
    result = train_lora(
        components,
        steps=args.steps,
        batch_size=args.batch_size,
        rank=args.rank,
        lr=args.lr,
        seed=args.seed,
        style=args.style,
        out=args.out or default_out(args.style),
        time_limit_s=args.time_limit,
        init=args.init,
    )
    losses = result["losses"]
    logger.info("LoRA: %d steps, loss %.4f -> %.4f (means of first/last 20)", len(losses),
                float(np.mean(losses[:20])), float(np.mean(losses[-20:])))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
