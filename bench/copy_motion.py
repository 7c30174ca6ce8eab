"""Motion copied from a reference video (`--motion-from`), measured on the shapes world (docs/flow.md).

    OMP_NUM_THREADS=1 python bench/copy_motion.py [--videos 16] [--variants a,b] [--flow-adapter FILE] [--json out.json]

For every held-out caption x seed, each variant first renders a preview with a zero request
and reads frame 0's object (the shapes detector). A reference video of the world is then
rendered with the same object (caption, detected centre, radius fitted to the detected
area) moving by a world motion — a straight translation or a curve at `--speed` px/frame,
heading towards the frame's centre so it stays in view — and written as a folder of PNGs.
The variant generates again with the same seed and `motion.from_video` = that folder (the
flow OpenCV's DIS measures in it, `zeroshot.motion.VideoFlow`; the object's exact motion is
never given to the generator). Scores, mean ± standard error over videos:

- **ObjMC** (px): the generated object's detected centroids against frame 0's centroid moved
  by the reference object's exact displacement (the world's ground truth), frames 1..f-1;
- **step error** (px/frame): per-frame displacement against the reference's;
- **flow ObjMC** (px): the same distance for where the DIS flow itself takes frame 0's
  centroid (`requested_track`) — what the request asks, before any generator;
- consistency and alignment of the generated video (`shapes_metrics`), and of the preview
  (the same method and seed with nothing requested), for "no worse than without motion".
"""

from __future__ import annotations

import importlib.util
import json
import math
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from zeroshot.generate import generate
from zeroshot.metrics import mean_and_sem
from zeroshot.models import load
from zeroshot.shapes import world
from zeroshot.shapes.detector import detect, to_hwc
from zeroshot.shapes.metrics import requested_track, shapes_metrics, soft_centroid
from zeroshot.tracking import objmc

_spec = importlib.util.spec_from_file_location("flow_check", Path(__file__).with_name("flow_check.py"))
flow_check = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(flow_check)
_spec = importlib.util.spec_from_file_location("drag_check", Path(__file__).with_name("drag_check.py"))
drag_check = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(drag_check)

VARIANTS = drag_check.VARIANTS  # the flow-check variants that follow a request
KEYS = ("objmc", "step_error", "flow_objmc", "consistency", "alignment", "still_consistency", "still_alignment")


def reference_scene(prompt: str, found, size: int) -> world.Scene:
    """The world scene of `prompt` whose object sits where `found` (a detection) is, its
    radius fitted so the rendered mask has the detected area."""
    shape, fg, bg = world.parse_caption(prompt)
    scene = world.Scene(shape=shape, fg=fg, bg=bg, center=tuple(map(float, found.centroid)),
                        radius=max(3.0, math.sqrt(found.area / math.pi)), size=size)
    for _ in range(3):  # area grows with radius squared
        area = float(world.render(scene)[1].sum())
        if area <= 0:
            break
        scene = replace(scene, radius=float(scene.radius * math.sqrt(found.area / area)))
    return scene


def reference_motion(rng: np.random.Generator, scene: world.Scene, speed: float) -> world.ShapeMotion:
    """A translation or a curve at `speed` px/frame, heading within 30 degrees of the centre."""
    cx, cy = scene.center
    heading = math.atan2(scene.size / 2 - cy, scene.size / 2 - cx) + math.radians(rng.uniform(-30, 30))
    if math.hypot(scene.size / 2 - cx, scene.size / 2 - cy) < 2:
        heading = rng.uniform(0, 2 * math.pi)
    velocity = (speed * math.cos(heading), speed * math.sin(heading))
    if rng.random() < 0.5:
        return world.ShapeMotion(kind="translate", velocity=velocity)
    return world.ShapeMotion(kind="curve", velocity=velocity, turn_deg=float(rng.choice([-1, 1]) * rng.uniform(8, 15)))


def write_frames(frames: np.ndarray, folder: Path) -> Path:
    """(f, 3, H, W) float frames in [0, 1] as a folder of lossless PNGs."""
    import cv2

    folder.mkdir(parents=True, exist_ok=True)
    for k, frame in enumerate(frames):
        rgb = (np.clip(frame.transpose(1, 2, 0), 0, 1) * 255 + 0.5).astype(np.uint8)
        cv2.imwrite(str(folder / f"{k:04d}.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    return folder


def detected_centroids(video: torch.Tensor) -> np.ndarray:
    out = []
    for frame in video:
        found = detect(frame)
        ok = found.shape is not None and found.area > 0
        out.append(soft_centroid(to_hwc(frame), found.mask) if ok else (math.nan, math.nan))
    return np.array(out, dtype=np.float64)


def measure(video: torch.Tensor, prompt: str, reference: world.Video, recipe) -> dict:
    """Scores of one generated video against the reference's exact object motion."""
    row = shapes_metrics(video, prompt)
    centroids = detected_centroids(video)
    nan = math.nan
    if not np.isfinite(centroids[0]).all():
        return {**row, "objmc": nan, "step_error": nan, "flow_objmc": nan}
    wanted = centroids[0] + (reference.centroids - reference.centroids[0])  # (f, 2)
    row["objmc"] = objmc(wanted[:, None], centroids[:, None])["objmc"]
    steps = np.diff(centroids, axis=0) - np.diff(reference.centroids, axis=0)
    ok = np.isfinite(steps).all(axis=1)
    row["step_error"] = float(np.linalg.norm(steps[ok], axis=1).mean()) if ok.any() else nan
    f, _, height, width = video.shape
    asked = requested_track(recipe.motion, tuple(centroids[0]), f, height, width)
    row["flow_objmc"] = objmc(wanted[:, None], asked[:, None])["objmc"]
    return row


def main(argv=None) -> int:
    parser = drag_check.request_parser(__doc__.split("\n\n")[0], "shapes", "reference object speed, px/frame")
    args = parser.parse_args(argv)
    chosen = flow_check.chosen_variants(args, parser, VARIANTS)
    torch.set_num_threads(1)
    model = load(args.model)
    captions = flow_check.motion_check.captions(max(1, -(-args.videos // args.seeds)))
    jobs = [(p, s) for s in range(args.seeds) for p in captions][: args.videos]
    results: dict = {"model": model.model_id, "videos": len(jobs), "speed": args.speed, "variants": {}}
    print(f"{model.model_id}, {len(jobs)} videos, motion copied from a world video ({args.speed} px/frame)")
    print("| variant | ObjMC (px) | step error (px/frame) | DIS flow ObjMC (px) | consist | align | "
          "consist, no motion | align, no motion | s/video |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    with tempfile.TemporaryDirectory() as tmp:
        for name, method, overrides in chosen:
            preview_recipe = drag_check.recipe_for(
                model, method, overrides,
                {"motion.translate": "0,0"}, args.set)
            rows, start = [], time.perf_counter()
            for j, (prompt, seed) in enumerate(jobs):
                preview = generate(model, prompt, preview_recipe, seed=seed, progress=False).frames[0]
                found = detect(preview[0])
                if found.shape is None or found.area <= 0:
                    continue
                scene = reference_scene(prompt, found, preview.shape[-1])
                motion = reference_motion(np.random.default_rng([7, j, seed]), scene, args.speed)
                reference = world.render_video(scene, motion, preview_recipe.num_frames)
                folder = write_frames(reference.frames, Path(tmp) / f"{name}_{j}")
                recipe = drag_check.recipe_for(model, method, overrides,
                                               {"motion.from_video": str(folder), "motion.translate": "0,0"}, args.set)
                video = generate(model, prompt, recipe, seed=seed, progress=False).frames[0]
                row = measure(video, prompt, reference, recipe)
                still = shapes_metrics(preview, prompt)  # the same method and seed, nothing requested
                row.update(still_consistency=still["consistency"], still_alignment=still["alignment"])
                rows.append(row)
            stats = {key: mean_and_sem([r.get(key, math.nan) for r in rows]) for key in KEYS}
            seconds = (time.perf_counter() - start) / max(1, len(jobs)) / 2
            results["variants"][name] = {"rows": rows, "videos": len(rows), "seconds": seconds, "summary": stats}

            def cell(key):
                m, s = stats[key]
                return f"{m:.2f} ± {s:.2f}"

            print(f"| {name} | {cell('objmc')} | {cell('step_error')} | {cell('flow_objmc')} | {cell('consistency')} | "
                  f"{cell('alignment')} | {cell('still_consistency')} | {cell('still_alignment')} | {seconds:.1f} |", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1, default=float))
    return 0

if __name__ == "__main__":
    sys.exit(main())
