"""Image-to-video with motion on the embedded shapes model: a rendered world image is frame 0
(`--image`, method t2v-zero) and the others follow a requested translation. Prints the
detector's centroid error against the requested path (frames 1.., px, mean ± SE over the
videos) and the shift of frame k vs frame 0 found by cross-correlation.

    OMP_NUM_THREADS=1 python bench/image_motion.py --videos 8 --motion 2,1
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


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--videos", type=int, default=8)
    p.add_argument("--motion", default="2,1", help="px per frame: dx,dy")
    p.add_argument("--frames", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    from PIL import Image

    from zeroshot import models
    from zeroshot.generate import generate
    from zeroshot.recipe import Motion, get_method
    from zeroshot.shapes.detector import detect
    from zeroshot.shapes.world import render_image, sample_scene

    dx, dy = (float(v) for v in args.motion.split(","))
    model = models.load("shapes")
    rng = np.random.default_rng(args.seed)
    base = replace(get_method("t2v-zero"), num_frames=args.frames, motion=Motion(translate=(dx, dy)))
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
    print(f"{len(e)} videos, {args.frames} frames, motion ({dx:g}, {dy:g}) px/frame, {time.perf_counter() - start:.0f} s")
    print(f"detector centroid error vs path (frames 1..): {e.mean():.2f} ± {se(e):.2f} px")
    print(f"cross-correlation shift error (frames 1..):  {s.mean():.2f} ± {se(s):.2f} px")
    print(f"frame 0 vs input image, mean |diff|: {np.mean(frame0):.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
