"""Image-to-video with motion on the embedded shapes model: a rendered world image is frame 0
(`--image`) and the others follow a requested translation. Prints, per variant, the
detector's centroid error against the requested path (frames 1.., px, mean ± SE over the
videos) and the shift of frame k vs frame 0 found by cross-correlation.

Variants: T2V-Zero's warp from the image (method t2v-zero, and on AnimateDiff's motion
modules), and frame 0 held to the image without the warp (`techniques.image_anchor`) with
flow-warped noise on cross-frame attention or motion modules, or a trained flow adapter.

    OMP_NUM_THREADS=1 python bench/image_motion.py --videos 8 --motion 2,1
    OMP_NUM_THREADS=1 python bench/image_motion.py --model shapes-v2 --flow-adapter FILE --variants all
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np


def xcorr_shift(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """The integer (dx, dy) that best moves image `a` (3, H, W) onto `b` (circular cross-correlation)."""
    a = a - a.mean(axis=(1, 2), keepdims=True)
    b = b - b.mean(axis=(1, 2), keepdims=True)
    corr = np.fft.ifft2(np.conj(np.fft.fft2(a)) * np.fft.fft2(b)).real.sum(axis=0)
    dy, dx = np.unravel_index(np.argmax(corr), corr.shape)
    h, w = corr.shape
    return float(dx - w if dx > w // 2 else dx), float(dy - h if dy > h // 2 else dy)


#: variant -> (method, recipe overrides); FLOW_ADAPTER is `--flow-adapter`
VARIANTS = {
    "t2v-zero": ("t2v-zero", {}),
    "animatediff + t2v-zero warp": ("animatediff", {}),
    "t2i + cross-frame + flow-warped (held)": (
        "t2i", {"cross_frame": "on", "noise.prior": "flow-warped", "motion.dynamics": "off"}),
    "animatediff + flow-warped (held)": ("animatediff", {"noise.prior": "flow-warped", "motion.dynamics": "off"}),
    "animatediff + flow adapter (held)": (
        "animatediff", {"animatediff.flow_adapter": "FLOW_ADAPTER", "motion.dynamics": "off"}),
    "animatediff + t2v-zero warp + flow adapter": ("animatediff", {"animatediff.flow_adapter": "FLOW_ADAPTER"}),
}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--videos", type=int, default=8)
    p.add_argument("--motion", default="2,1", help="px per frame: dx,dy")
    p.add_argument("--frames", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--model", default="shapes", help="model folder or embedded name (default: shapes, the v1 model)")
    p.add_argument("--variants", default="t2v-zero", help="comma-separated of: " + ", ".join(VARIANTS) + "; or all")
    p.add_argument("--flow-adapter", metavar="PATH", help="a trained flow adapter (its variant)")
    args = p.parse_args(argv)
    names = [v for v in VARIANTS if args.flow_adapter or "flow adapter" not in v] if args.variants == "all" else (
        args.variants.split(","))
    for name in names:
        if name not in VARIANTS:
            p.error(f"unknown variant {name!r}; valid: {', '.join(VARIANTS)}")
        if "flow adapter" in name and not args.flow_adapter:
            p.error(f"variant {name!r} needs --flow-adapter PATH")
    for name in names:
        run_variant(args, name)
    return 0


def run_variant(args, name: str) -> None:

    from PIL import Image

    from zeroshot import models
    from zeroshot.generate import generate
    from zeroshot.recipe import apply_override, get_method, resolve
    from zeroshot.shapes.detector import detect
    from zeroshot.shapes.world import render_image, sample_scene

    dx, dy = (float(v) for v in args.motion.split(","))
    model = models.load(args.model)
    rng = np.random.default_rng(args.seed)
    method, overrides = VARIANTS[name]
    base = replace(get_method(method), num_frames=args.frames)
    for key, value in [("motion.translate", f"{dx},{dy}"), *overrides.items()]:
        base = apply_override(base, key, args.flow_adapter if value == "FLOW_ADAPTER" else value)
    base = resolve(base, model.defaults)
    errors, shift_errors, frame0 = [], [], []
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        while len(errors) < args.videos:
            scene = sample_scene(rng)
            (cx, cy), r, n = scene.center, scene.radius, args.frames - 1
            ex, ey = cx + n * dx, cy + n * dy
            if not (r + 1 <= ex <= scene.size - 2 - r and r + 1 <= ey <= scene.size - 2 - r):
                continue  # the object would leave the view
            image = render_image(scene)
            path = Path(tmp) / f"{len(errors)}.png"
            Image.fromarray((image.transpose(1, 2, 0) * 255).round().astype(np.uint8)).save(path)
            recipe = replace(base, image=str(path))
            video = generate(model, scene.caption, recipe, seed=len(errors), progress=False).frames[0].numpy()
            frame0.append(float(np.abs(video[0] - image).mean()))
            c0 = np.array(detect(image).centroid)
            per_frame, per_shift = [], []
            for k in range(1, args.frames):
                want = c0 + k * np.array([dx, dy])
                per_frame.append(float(np.linalg.norm(np.array(detect(video[k]).centroid) - want)))
                sx, sy = xcorr_shift(video[0], video[k])
                per_shift.append(float(np.hypot(sx - k * dx, sy - k * dy)))
            errors.append(np.nanmean(per_frame))
            shift_errors.append(np.mean(per_shift))
    e, s = np.array(errors), np.array(shift_errors)
    se = lambda x: x.std(ddof=1) / np.sqrt(len(x)) if len(x) > 1 else float("nan")  # noqa: E731
    print(f"{name}: {model.model_id}, {len(e)} videos, {args.frames} frames, motion ({dx:g}, {dy:g}) px/frame, "
          f"{time.perf_counter() - start:.0f} s")
    print(f"detector centroid error vs path (frames 1..): {e.mean():.2f} ± {se(e):.2f} px")
    print(f"cross-correlation shift error (frames 1..):  {s.mean():.2f} ± {se(s):.2f} px")
    print(f"frame 0 vs input image, mean |diff|: {np.mean(frame0):.3f}")


if __name__ == "__main__":
    raise SystemExit(main())
