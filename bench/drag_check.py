"""Drag one object while the background stays still, on world v2 (docs/flow.md).

    OMP_NUM_THREADS=1 python bench/drag_check.py [--videos 16] [--speed 2] [--flow-adapter FILE]

For every held-out patterned caption x seed, each variant first renders a preview with a
zero motion request, reads where frame 0's object is (the world's detector), then requests
a drag of that object — a trajectory from its centroid towards the frame's centre at
`--speed` px/frame, its region a disk 1.3 x the object's radius, every other pixel held
still (`--still rest`) — and renders again with the same seed. Frame 0 does not depend on the
request for methods whose frame 0 attends only to itself (T2V-Zero, cross-frame attention);
with a motion module it may move a little, and the errors below are measured from the
final video's own frame 0.

Columns (mean ± standard error over videos):
- obj ObjMC: mean px distance between the requested track of frame 0's object centroid and
  the detected centroid in frames 1..f-1 (the trajectory papers' ObjMC, detector-tracked);
- obj step err: mean norm of (detected centroid step - requested step), px/frame;
- bg px: measured background displacement per frame (`background_metrics`, asked: none);
- bg corr: the background kept across frames (correlation with frame 0's, 1 = unchanged);
- consist / align: the world's detector, frames 1.. against frame 0 and against the prompt;
  "still": the same for the variant's preview (the same method with a zero request), the
  issue's "no worse than the same method without motion".
Targets (issue #16): object <= 1.0 px, background <= 0.3 px/frame.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from zeroshot.generate import generate
from zeroshot.metrics import mean_and_sem
from zeroshot.models import load
from zeroshot.recipe import apply_override, get_method, resolve
from zeroshot.shapes.detector import detect, to_hwc
from zeroshot.shapes.metrics import background_metrics, requested_track, shapes_metrics, soft_centroid
from zeroshot.tracking import objmc

_spec = importlib.util.spec_from_file_location("flow_check", Path(__file__).with_name("flow_check.py"))
flow_check = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(flow_check)

#: the flow-check variants that take a drag (a request of their own; no "no request" rows)
VARIANTS = {name: v for name, v in flow_check.VARIANTS.items() if v[1].get("motion") != "off"}
KEYS = ("objmc_detector", "motion_error", "background_speed_px", "background_correlation", "consistency", "alignment")


def captions(n: int) -> list[str]:
    """Held-out patterned v2 captions, spread over the sorted list."""
    from zeroshot.shapes import world

    combos = sorted(c for c in world.HELD_OUT_V2 if c[3] != "plain")
    return [world.caption(*combos[(7 * i) % len(combos)]) for i in range(n)]


def drag_request(found, speed: float, num_frames: int, size: int) -> tuple[str, tuple[float, float]] | None:
    """A straight drag of the detected object towards the frame's centre (None without one)."""
    if found.shape is None or found.area <= 0:
        return None
    cx, cy = found.centroid
    direction = np.array([size / 2 - cx, size / 2 - cy])
    norm = float(np.linalg.norm(direction))
    direction = np.array([1.0, 0.0]) if norm < 1.0 else direction / norm
    end = np.array([cx, cy]) + direction * speed * (num_frames - 1)
    radius = 1.3 * float(np.sqrt(found.area / np.pi))
    return f"{cx:.2f},{cy:.2f} {end[0]:.2f},{end[1]:.2f}@{num_frames - 1} r={radius:.2f}", tuple(direction * speed)


def recipe_for(model, method: str, overrides: dict, motion: dict, settings: list[str]):
    recipe = get_method(method)
    for key, value in [*motion.items(), *overrides.items()]:
        recipe = apply_override(recipe, key, value)
    for item in settings:
        key, _, value = item.partition("=")
        recipe = apply_override(recipe, key, value)
    return resolve(recipe, model.defaults)


def measure(video: torch.Tensor, prompt: str, motion) -> dict:
    row = shapes_metrics(video, prompt, motion)
    row.update(background_metrics(video, prompt, (0.0, 0.0)))
    first = detect(video[0])
    nan = float("nan")
    if first.shape is None or first.area <= 0:
        row["objmc_detector"] = nan
        return row
    f, _, height, width = video.shape
    start = soft_centroid(to_hwc(video[0]), first.mask)
    requested = requested_track(motion, start, f, height, width)[:, None]
    centroids = []
    for frame in video:
        found = detect(frame)
        ok = found.shape is not None and found.area > 0
        centroids.append(soft_centroid(to_hwc(frame), found.mask) if ok else (nan, nan))
    row["objmc_detector"] = objmc(requested, np.array(centroids)[:, None])["objmc"]
    return row


def request_parser(description: str, model: str, speed_help: str) -> argparse.ArgumentParser:
    """The arguments of the benches that ask each variant for one request per video."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--model", default=model, help=f"model folder or embedded name (default: {model})")
    parser.add_argument("--videos", type=int, default=16)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--speed", type=float, default=2.0, help=speed_help)
    parser.add_argument("--variants", default=None, help="comma-separated subset of " + ", ".join(VARIANTS))
    parser.add_argument("--flow-adapter", metavar="PATH", help="a trained flow adapter for its variant")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override for every variant")
    parser.add_argument("--json", help="write the numbers here")
    return parser


def main(argv=None) -> int:
    parser = request_parser(__doc__.split("\n\n")[0], "shapes-v2", "drag speed, px/frame")
    args = parser.parse_args(argv)
    chosen = flow_check.chosen_variants(args, parser, VARIANTS)
    torch.set_num_threads(1)
    model = load(args.model)
    jobs = [(p, s) for s in range(args.seeds) for p in captions(max(1, -(-args.videos // args.seeds)))][: args.videos]
    results: dict = {"model": model.model_id, "videos": len(jobs), "speed": args.speed, "variants": {}}
    print(f"{model.model_id}, {len(jobs)} videos, drag {args.speed} px/frame towards the centre, the rest still")
    print("| variant | obj ObjMC (px) | obj step err (px/frame) | bg px/frame | bg corr | consist | align "
          "| consist still | align still | s/video |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, method, overrides in chosen:
        preview_recipe = recipe_for(model, method, overrides,
                                    {"motion.translate": "0,0"}, args.set)
        rows, stills, start = [], [], time.perf_counter()
        for prompt, seed in jobs:
            preview = generate(model, prompt, preview_recipe, seed=seed, progress=False).frames[0]
            size = preview.shape[-1]
            request = drag_request(detect(preview[0]), args.speed, preview_recipe.num_frames, size)
            if request is None:
                continue
            trajectory, _ = request
            recipe = recipe_for(model, method, overrides, {"motion.trajectories": trajectory, "motion.still": "rest",
                                                           "motion.translate": "0,0"}, args.set)
            video = generate(model, prompt, recipe, seed=seed, progress=False).frames[0]
            rows.append(measure(video, prompt, recipe.motion))
            stills.append(shapes_metrics(preview, prompt))
        stats = {key: mean_and_sem([r.get(key, float("nan")) for r in rows]) for key in KEYS}
        stats.update({f"{key}_still": mean_and_sem([r[key] for r in stills]) for key in ("consistency", "alignment")})
        seconds = (time.perf_counter() - start) / max(1, len(jobs)) / 2
        results["variants"][name] = {"rows": rows, "still_rows": stills, "videos": len(rows), "seconds": seconds}

        def cell(key, fmt="{:.2f}"):
            m, s = stats[key]
            return f"{fmt.format(m)} ± {fmt.format(s)}"

        print(f"| {name} | {cell('objmc_detector')} | {cell('motion_error')} | {cell('background_speed_px')} | "
              f"{cell('background_correlation')} | {cell('consistency')} | {cell('alignment')} | "
              f"{cell('consistency_still')} | {cell('alignment_still')} | {seconds:.1f} |",
              flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
