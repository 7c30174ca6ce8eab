"""Motion fields, attention masks and background smoothing, measured on the shapes model.

    OMP_NUM_THREADS=1 python bench/motion_check.py [--model PATH] [--prompts 6] [--seeds 2] [--set KEY=VALUE]

For each shapes caption and seed it renders Text2Video-Zero videos and reads them with
the project's detector (`zeroshot.shapes.metrics.shapes_metrics`):

1. motion: translation and zoom cases; the error between the detected centroid steps
   and the requested ones (px/frame), and the robust speed along the request. Each case
   is measured twice: on the first `prompts x seeds` videos ("all"), and on the first
   as many videos of a larger pool (`--pool-prompts x --pool-seeds`) whose frame-0 shape
   stays inside the frame when moved by the requested motion ("in view"). The shapes
   model never saw a shape leave the frame, so it stops a shape at the border instead
   of letting it leave; a request that pushes the shape out cannot be followed. Frame 0
   does not depend on the motion (cross-frame attention reads frame 0 from itself), so
   this choice of videos is a choice of start positions, made before the motion acts;
2. masks: the subject tokens' cross-attention of the final pass, thresholded with Otsu
   (no dilation), against the detector's shape mask of the decoded frame (IoU, on the
   latent grid and at image resolution), with and without the self-attention
   refinement, overall and for rings (whose hole is about one latent cell wide) apart;
3. smoothing: per-pixel background change between consecutive frames with background
   smoothing off and at each `--strength` (same seeds), the motion error, and the paired
   per-video change of the background change against "off" (mean, standard error, and
   the share of videos where it went down).

`--parts` picks which of the three run (default: all).

Prints a table and, with --json, writes the numbers.
"""

from __future__ import annotations

import argparse
import json
import math
import sys

import numpy as np
import torch
import torch.nn.functional as F

from zeroshot.generate import generate
from zeroshot.metrics import mean_and_sem
from zeroshot.methods.smoothing import (
    capture_cross_attention,
    foreground_masks,
    subject_token_indices,
)
from zeroshot.models import load
from zeroshot.motion import field_from_recipe
from zeroshot.recipe import apply_override, get_method, resolve
from zeroshot.shapes.detector import detect
from zeroshot.shapes.metrics import shapes_metrics

CASES = {
    "translate (2, 0) nearest": {"motion.translate": [2.0, 0.0], "motion.mode": "nearest"},
    "translate (2, 0) bilinear": {"motion.translate": [2.0, 0.0], "motion.mode": "bilinear"},
    "translate (2, 0) var-pres": {"motion.translate": [2.0, 0.0], "motion.mode": "variance-preserving"},
    "translate (4, 0) nearest": {"motion.translate": [4.0, 0.0], "motion.mode": "nearest"},
    "translate (4, 0) bilinear": {"motion.translate": [4.0, 0.0], "motion.mode": "bilinear"},
    "translate (-2, 2) bilinear": {"motion.translate": [-2.0, 2.0], "motion.mode": "bilinear"},
    "zoom 1.05 nearest": {"motion.translate": [0.0, 0.0], "motion.zoom": 1.05, "motion.mode": "nearest"},
    "zoom 1.05 bilinear": {"motion.translate": [0.0, 0.0], "motion.zoom": 1.05, "motion.mode": "bilinear"},
    "pan 2 + zoom 1.03 bilinear": {"motion.translate": [2.0, 0.0], "motion.zoom": 1.03, "motion.mode": "bilinear"},
}


def captions(n: int) -> list[str]:
    from zeroshot.shapes import world

    combos = sorted(world.HELD_OUT) or [("circle", "red", "blue")]
    return [world.caption(*combos[(7 * i) % len(combos)]) for i in range(n)]


def recipe_for(model, args, overrides: dict):
    recipe = apply_override(get_method("t2v-zero"), "num_frames", args.frames)
    extra = {
        "num_inference_steps": args.steps,
        "height": args.size,
        "width": args.size,
        "motion.t0": args.t0,
        "motion.t1": args.t1,
    }
    settings = dict(item.split("=", 1) for item in args.set)
    for key, value in [*((k, v) for k, v in extra.items() if v is not None), *settings.items(), *overrides.items()]:
        recipe = apply_override(recipe, key, value)
    return resolve(recipe, model.defaults)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else float("nan")


def mask_ious(frames: torch.Tensor, attn_masks: torch.Tensor) -> tuple[list[float], list[float]]:
    """IoU of attention masks `(f, h, w)` with the detector's masks of `frames (f, 3, H, W)`,
    on the latent grid (detector mask area-averaged, > 0.5) and at image size (nearest)."""
    f, _, H, W = frames.shape
    h, w = attn_masks.shape[-2:]
    grid, full = [], []
    for k in range(f):
        det = detect(frames[k])
        if det.shape is None:
            continue
        truth = torch.from_numpy(det.mask.astype(np.float32))[None, None]
        truth_grid = F.adaptive_avg_pool2d(truth, (h, w))[0, 0].numpy() > 0.5
        up = F.interpolate(attn_masks[k][None, None].float(), size=(H, W), mode="nearest")[0, 0].numpy() > 0.5
        grid.append(iou(attn_masks[k].numpy(), truth_grid))
        full.append(iou(up, det.mask))
    return grid, full


def zoom_estimate(frames: torch.Tensor) -> float:
    """Per-frame scale of the detected shape: exp(median_k log(area_k / area_0) / (2 k))."""
    areas = [detect(frame).area for frame in frames]
    if not areas[0]:
        return float("nan")
    rates = [math.log(a / areas[0]) / (2 * k) for k, a in enumerate(areas) if k and a]
    return math.exp(float(np.median(rates))) if rates else float("nan")


def stays_in_view(mask: np.ndarray, motion, num_frames: int) -> bool:
    """Whether every pixel of a frame-0 shape `mask (H, W)` stays inside the frame in every
    frame when moved by the requested motion (a resolved recipe `Motion`)."""
    H, W = mask.shape
    ys, xs = np.nonzero(mask)
    if not len(xs):
        return False
    points = torch.tensor(np.stack([xs, ys], 1), dtype=torch.float64)
    track = field_from_recipe(motion, num_frames, H, W).forward(points, num_frames, H, W)
    track = torch.as_tensor(track)
    return bool((track >= 0).all() and (track[..., 0] <= W - 1).all() and (track[..., 1] <= H - 1).all())


def mean(values) -> float:
    values = [v for v in values if v is not None and math.isfinite(v)]
    return float(np.mean(values)) if values else float("nan")


def sem(values) -> float:
    """Standard error of the mean of the finite values."""
    return mean_and_sem(values)[1]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="shapes", help="model folder or embedded name (default: shapes, the v1 model its docs measured)")
    parser.add_argument("--prompts", type=int, default=6)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--strength", type=float, nargs="+", default=[0.6], help="smoothing strength(s)")
    parser.add_argument(
        "--parts", default="motion,masks,smoothing", type=lambda t: set(t.split(",")),
        help="comma-separated subset of motion,masks,smoothing",
    )
    parser.add_argument("--steps", type=int, help="num_inference_steps (default: the model's)")
    parser.add_argument("--size", type=int, help="height and width in px (default: the model's)")
    parser.add_argument("--t0", type=int, help="motion.t0 (default: the model's)")
    parser.add_argument("--t1", type=int, help="motion.t1 (default: the model's)")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE",
        help="recipe override for every run, e.g. motion.padding=reflection (a case's own keys win)",
    )
    parser.add_argument("--pool-prompts", type=int, default=16, help="captions to draw in-view videos from")
    parser.add_argument("--pool-seeds", type=int, default=4, help="seeds to draw in-view videos from")
    parser.add_argument("--json", help="write the numbers here")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    model = load(args.model)
    jobs = [(p, s) for p in captions(args.prompts) for s in range(args.seeds)]
    pool = jobs + [
        (p, s)
        for p in captions(max(args.pool_prompts, args.prompts))
        for s in range(max(args.pool_seeds, args.seeds))
        if (p, s) not in jobs
    ]
    results: dict = {"model": model.model_id, "videos_per_case": len(jobs), "motion": {}, "masks": {}, "smoothing": {}}

    print(
        f"model {model.model_id}; {len(jobs)} videos per case, {args.frames} frames, "
        f"t0/t1 {args.t0}/{args.t1} (None: the model's), set {args.set}"
    )
    print(
        f"\n{'motion case':<28} {'requested':>9} | {'all: error':>10} {'along':>6} {'zoom':>6} | "
        f"{'in view: error':>14} {'along':>6} {'zoom':>6} {'n / pool':>9}"
    )
    keys = ("motion_error", "along_px", "requested_speed_px", "detected_fraction", "zoom")
    first_masks: dict = {}  # (prompt, seed) -> frame-0 shape mask (frame 0 ignores the motion)
    for name, overrides in (CASES.items() if "motion" in args.parts else ()):
        recipe = recipe_for(model, args, overrides)
        rendered: dict = {}

        def measure(prompt, seed):
            if (prompt, seed) not in rendered:
                video = generate(model, prompt, recipe, seed=seed, progress=False)
                row = shapes_metrics(video.frames[0], prompt, recipe.motion)
                row["zoom"] = zoom_estimate(video.frames[0])
                rendered[(prompt, seed)] = row
                first_masks.setdefault((prompt, seed), detect(video.frames[0][0]).mask)
            return rendered[(prompt, seed)]

        everything = [measure(p, s) for p, s in jobs]
        in_view, looked_at = [], 0
        for prompt, seed in pool:
            if len(in_view) == len(jobs):
                break
            looked_at += 1
            if (prompt, seed) not in first_masks:
                measure(prompt, seed)
            if stays_in_view(first_masks[(prompt, seed)], recipe.motion, recipe.num_frames):
                in_view.append(measure(prompt, seed))
        row = {k: mean(r[k] for r in everything) for k in keys}
        row["in_view"] = {k: mean(r[k] for r in in_view) for k in keys}
        row["in_view"].update(videos=len(in_view), pool_examined=looked_at)
        results["motion"][name] = row
        iv = row["in_view"]
        print(
            f"{name:<28} {row['requested_speed_px']:9.2f} | {row['motion_error']:10.2f} {row['along_px']:6.2f} "
            f"{row['zoom']:6.3f} | {iv['motion_error']:14.2f} {iv['along_px']:6.2f} {iv['zoom']:6.3f} "
            f"{len(in_view):>4} / {looked_at:<3}"
        )

    recipe = recipe_for(model, args, {"motion.translate": [2.0, 0.0]})
    ious: dict = {"refined": {"grid": [], "image": [], "ring": []}, "unrefined": {"grid": [], "image": [], "ring": []}}
    h, w = recipe.height // model.vae_scale_factor, recipe.width // model.vae_scale_factor
    for prompt, seed in jobs if "masks" in args.parts else ():
        tokens = subject_token_indices(model.tokenizer, prompt)
        with (
            capture_cross_attention(model.unet, tokens, args.frames, grid=(h, w)) as refined,
            capture_cross_attention(model.unet, tokens, args.frames, grid=(h, w), refine=0) as unrefined,
        ):
            video = generate(model, prompt, recipe, seed=seed, progress=False)
        ring = "ring" in prompt.split()
        for label, store in (("refined", refined), ("unrefined", unrefined)):
            g, fl = mask_ious(video.frames[0], foreground_masks(store.maps(), dilate=0)[0])
            ious[label]["grid"] += g
            ious[label]["image"] += fl
            ious[label]["ring"] += [ring] * len(g)
    for label, v in ious.items() if "masks" in args.parts else ():
        grid, is_ring = np.array(v["grid"]), np.array(v["ring"], dtype=bool)
        results["masks"][label] = {
            "iou_latent_grid": mean(grid),
            "iou_image": mean(v["image"]),
            "frames": len(grid),
            "fraction_iou_ge_0.7_latent": mean(grid >= 0.7),
            "iou_latent_grid_rings": mean(grid[is_ring]),
            "iou_latent_grid_other_shapes": mean(grid[~is_ring]),
            "fraction_iou_ge_0.7_other_shapes": mean(grid[~is_ring] >= 0.7),
            "ring_frames": int(is_ring.sum()),
            "iou_latent_grid_sem": sem(grid),
            "iou_image_sem": sem(v["image"]),
        }
    if results["masks"]:
        print(f"\n{'attention masks':<30} {'frames':>6} {'IoU grid':>9} {'IoU 64px':>9} {'(± sem)':>16} {'>= 0.7':>7} "
              f"{'IoU rings':>10} {'IoU others':>11} {'others >= 0.7':>14}")
    for label, m in results["masks"].items():
        text = "self-attention refined" if label == "refined" else "cross-attention only"
        print(
            f"{text:<30} {m['frames']:6d} {m['iou_latent_grid']:9.3f} {m['iou_image']:9.3f} "
            f"(± {m['iou_latent_grid_sem']:.3f}, {m['iou_image_sem']:.3f}) "
            f"{m['fraction_iou_ge_0.7_latent']:7.2f} {m['iou_latent_grid_rings']:10.3f} "
            f"{m['iou_latent_grid_other_shapes']:11.3f} {m['fraction_iou_ge_0.7_other_shapes']:14.2f}"
        )

    if "smoothing" in args.parts:
        print(
            f"\n{'smoothing':<12} {'bg change':>10} {'motion err':>11} {'consistency':>12} {'alignment':>10} "
            f"{'paired change vs off':>22} {'videos lower':>13}"
        )
    baseline = None
    for strength in ([None, *args.strength] if "smoothing" in args.parts else []):
        label = "off" if strength is None else f"on {strength}"
        r = recipe if strength is None else apply_override(recipe, "smoothing.strength", strength)
        rows = []
        for prompt, seed in jobs:
            video = generate(model, prompt, r, seed=seed, progress=False)
            rows.append(shapes_metrics(video.frames[0], prompt, r.motion))
        row = {k: mean(x[k] for x in rows) for k in ("background_change", "motion_error", "consistency", "alignment")}
        change = np.array([x["background_change"] for x in rows])
        if baseline is None:
            baseline, paired = change, ""
        else:
            both = np.isfinite(change) & np.isfinite(baseline)
            diff = (change - baseline)[both] / baseline[both].mean()  # relative to the mean without smoothing
            row.update(paired_change=float(diff.mean()), paired_change_sem=sem(diff), videos_lower=mean(diff < 0))
            paired = f"{100 * row['paired_change']:+14.1f} % ± {100 * row['paired_change_sem']:.1f} {row['videos_lower']:13.2f}"
        results["smoothing"][label] = row
        print(
            f"{label:<12} {row['background_change']:10.4f} {row['motion_error']:11.2f} "
            f"{row['consistency']:12.2f} {row['alignment']:10.2f} {paired}"
        )
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
