"""Measure the AnimateDiff path on the shapes world (base model and personalised variant).

    python -m zeroshot.trained.evaluate --prompts 8 --seeds 2 --sheet docs/animatediff_sheet.png

For held-out captions it renders videos with: the world itself (what the motion module
was trained on), per-frame text-to-image (no motion module), AnimateDiff with the
embedded motion module and, with `--lora`, both again on the LoRA-personalised model
(the same motion module, not retrained). Every video goes through
`zeroshot.shapes.metrics.shapes_metrics`; the table gives the means (± standard errors
over videos): detected centroid speed (px/frame), heading steadiness (mean cosine between
consecutive steps: 1 = straight), identity consistency, prompt alignment,
relative size change and, with `--lora`, the score of the LoRA's style (`personalise.STYLES`, read from the file's
metadata: ~0 for the base model, ~1 for the style) on every row.
"""

from __future__ import annotations

import argparse
import json
import logging
from dataclasses import replace
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

COLUMNS = ("speed_px", "heading", "consistency", "alignment", "size_change", "fg_accuracy", "shape_accuracy")


#: World v2's background columns (`shapes.metrics.background_metrics`, a still background asked).
BACKGROUND_COLUMNS = ("background_correlation", "background_identity")


def world_videos(prompts: list[str], num_frames: int, seeds: int, *, size: int = 64, style=None) -> list[tuple[str, np.ndarray]]:
    """Ground-truth moving videos of the world for `prompts` (optionally restyled); v2
    captions (a patterned background) get v2's object motions over a still background."""
    from zeroshot.shapes.world import (
        parse_caption_v2,
        render,
        render_video,
        sample_motion,
        sample_motion_v2,
        sample_scene,
        sample_scene_v2,
    )

    out = []
    for i, prompt in enumerate(prompts):
        shape, fg, bg, pattern = parse_caption_v2(prompt.strip().rstrip("."))
        for s in range(seeds):
            rng = np.random.default_rng([99, i, s])
            if pattern == "plain":
                scene, motion = sample_scene(rng, size=size, shape=shape, fg=fg, bg=bg), sample_motion(rng, size=size)
            else:
                scene = sample_scene_v2(rng, size=size, pattern=pattern, shape=shape, fg=fg, bg=bg)
                motion = sample_motion_v2(rng, size=size)
            video = render_video(scene, motion, num_frames)
            frames = video.frames
            if style is not None:
                frames = np.stack([style(f, render(sc)[1], sc) for f, sc in zip(frames, video.scenes)])
            out.append((prompt, frames))
    return out


def generated_videos(model, prompts: list[str], recipe, seeds: int) -> list[tuple[str, np.ndarray]]:
    from tqdm.auto import tqdm

    from zeroshot.generate import generate

    out = []
    for prompt in tqdm(prompts, desc=recipe.method, leave=False):
        for s in range(seeds):
            video = generate(model, prompt, recipe, seed=s, progress=False)
            out.append((prompt, video.frames[0].numpy()))
    return out


def summarise(videos: list[tuple[str, np.ndarray]], style: str | None = None, *, background: bool = False
              ) -> dict[str, float]:
    """Mean `shapes_metrics` over videos (and `<column>_sem`, the standard error of each mean
    over videos); with `style`, also its score (`personalise.STYLES`); with `background`
    (world v2 captions), `BACKGROUND_COLUMNS` too, a still background being what is asked."""
    import warnings

    from zeroshot.metrics import mean_and_sem
    from zeroshot.shapes.metrics import shapes_metrics
    from zeroshot.trained.personalise import STYLES

    rows = []
    for prompt, frames in videos:
        row = shapes_metrics(frames, prompt)
        if style is not None:
            with warnings.catch_warnings():  # all-NaN for circles and rings under `turned`
                warnings.simplefilter("ignore", RuntimeWarning)
                row[style] = float(np.nanmean([STYLES[style][1](f, prompt) for f in frames]))
        if background:
            from zeroshot.shapes.metrics import background_metrics

            row.update(background_metrics(frames, prompt))
        rows.append(row)
    columns = COLUMNS + ((style,) if style else ()) + (BACKGROUND_COLUMNS if background else ())
    out = {}
    for k in columns:
        out[k], out[f"{k}_sem"] = mean_and_sem([r[k] for r in rows])
    return out


def contact_sheet(rows: list[tuple[str, np.ndarray]], path: str | Path, *, scale: int = 2) -> Path:
    """One strip of frames per row, labelled; written as PNG."""
    import cv2

    strips = []
    for _, frames in rows:
        strip = np.concatenate(list(np.clip(frames, 0, 1).transpose(0, 2, 3, 1)), axis=1)  # H (f W) 3
        strips.append(cv2.resize((strip * 255).astype(np.uint8), None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST))
    width = max(max(s.shape[1] for s in strips), max(7 * len(label) for label, _ in rows))
    blocks = []
    for (label, _), strip in zip(rows, strips):
        bar = np.full((18, width, 3), 255, np.uint8)
        cv2.putText(bar, label, (4, 13), cv2.FONT_HERSHEY_SIMPLEX, 0.42, (0, 0, 0), 1, cv2.LINE_AA)
        blocks += [bar, np.pad(strip, ((0, 0), (0, width - strip.shape[1]), (0, 0)), constant_values=255)]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), cv2.cvtColor(np.concatenate(blocks), cv2.COLOR_RGB2BGR))
    return path


def main(argv: list[str] | None = None) -> int:
    from zeroshot.models import load
    from zeroshot.recipe import METHODS, AnimateDiff

    parser = argparse.ArgumentParser(prog="python -m zeroshot.trained.evaluate", description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="shapes", help="SD folder or embedded name (default: shapes, the v1 model of docs/animatediff.md)")
    parser.add_argument("--adapter", default=None, help="motion adapter (default: the model's)")
    parser.add_argument("--lora", default=None, help="also evaluate this personalisation LoRA")
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--steps", type=int, default=None, help="sampling steps (default: the model's)")
    parser.add_argument("--size", type=int, default=None, help="height and width in px (default: the model's)")
    parser.add_argument("--mixed-noise", action="store_true", help="also AnimateDiff with PYoCo mixed noise")
    parser.add_argument("--freeinit", type=int, default=0, metavar="N", help="also AnimateDiff with N FreeInit iterations")
    parser.add_argument("--no-base", action="store_true", help="only the LoRA rows (with --lora)")
    parser.add_argument("--sheet", default=None, help="write a contact sheet PNG here")
    parser.add_argument("--json", default=None, help="write the table as JSON here")
    parser.add_argument("--device", default=None, help="torch device (default: cpu)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    model = load(args.model, device=args.device)
    from zeroshot.recipe import FreeInit, Noise
    from zeroshot.shapes.world import distinct_captions

    prompts = distinct_captions(args.prompts, 12345)  # a seed the training stream does not use
    base = {"num_frames": args.frames, "num_inference_steps": args.steps, "height": args.size, "width": args.size}
    t2i = replace(METHODS["t2i"], **base)
    animatediff = replace(METHODS["animatediff"], animatediff=AnimateDiff(adapter=args.adapter), **base)
    extras = {}
    if args.mixed_noise:
        extras["mixed noise"] = replace(animatediff, noise=Noise(prior="mixed"))
    if args.freeinit:
        extras[f"FreeInit x{args.freeinit}"] = replace(animatediff, freeinit=FreeInit(iterations=args.freeinit))
    size = int(args.size or model.defaults.get("height", 64))
    runs: dict[str, list[tuple[str, np.ndarray]]] = {}
    if not args.no_base:
        runs["world videos (training data)"] = world_videos(prompts, args.frames, args.seeds, size=size)
        runs["t2i per frame"] = generated_videos(model, prompts, t2i, args.seeds)
        runs["animatediff"] = generated_videos(model, prompts, animatediff, args.seeds)
        for name, recipe in extras.items():
            runs[f"animatediff + {name}"] = generated_videos(model, prompts, recipe, args.seeds)
    style = None
    if args.lora:
        from zeroshot.trained.lora import load_lora, personalised_model
        from zeroshot.trained.personalise import STYLES

        style = load_lora(args.lora)[1].get("style")
        if style not in STYLES:
            raise SystemExit(f"{args.lora}: no known style in its metadata (got {style!r}; known: {sorted(STYLES)})")
        variant = personalised_model(model, args.lora)
        runs[f"world videos, {style}"] = world_videos(prompts, args.frames, args.seeds, size=size, style=STYLES[style][0])
        runs["t2i per frame + LoRA"] = generated_videos(variant, prompts, t2i, args.seeds)
        runs["animatediff + LoRA (same module)"] = generated_videos(variant, prompts, animatediff, args.seeds)
        for name, recipe in extras.items():
            runs[f"animatediff + LoRA + {name}"] = generated_videos(variant, prompts, recipe, args.seeds)
    table = {name: summarise(videos, style) for name, videos in runs.items()}
    columns = COLUMNS + ((style,) if style else ())
    header = "| run | " + " | ".join(columns) + " |"
    lines = [header, "|" + "---|" * (len(columns) + 1)]
    lines += [
        f"| {name} | " + " | ".join(f"{row[k]:.3f} ± {row[k + '_sem']:.3f}" for k in columns) + " |"
        for name, row in table.items()
    ]
    logger.info("\n%s", "\n".join(lines))
    if args.json:
        Path(args.json).write_text(json.dumps({"prompts": prompts, "seeds": args.seeds, "table": table}, indent=1))
    if args.sheet:
        rows = []
        for k in range(min(3, len(prompts))):
            for name, videos in runs.items():
                rows.append((f"{name}: {videos[k * args.seeds][0]}", videos[k * args.seeds][1]))
        contact_sheet(rows, args.sheet)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
