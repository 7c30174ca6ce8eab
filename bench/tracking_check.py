"""How exact the trajectory error's trackers are: ObjMC against the exact shape centres of
rendered shapes-world clips (docs/flow.md, "Measuring").

    OMP_NUM_THREADS=1 python bench/tracking_check.py [--videos 40] [--frames 8]

For every kind of motion (v1: translate, bounce, zoom; v2: curve) on plain backgrounds, and
for v2's patterned backgrounds (still or panning), `--videos` clips are rendered and the
frame-0 centre is tracked by OpenCV's Lucas-Kanade (`zeroshot.tracking.track_points`) and
read by the shapes detector (soft centroid of `detect`'s mask). Printed per group: ObjMC
(mean px over frames 1..f-1) mean ± SE over clips, its worst clip, the largest single-frame
error and the share of frame-points LK lost.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from zeroshot.metrics import mean_and_sem
from zeroshot.shapes import world
from zeroshot.shapes.detector import detect
from zeroshot.shapes.metrics import soft_centroid
from zeroshot.tracking import objmc, track_points

GROUPS = {
    "plain, translate": ("v1", "translate", None),
    "plain, bounce": ("v1", "bounce", None),
    "plain, zoom": ("v1", "zoom", None),
    "plain, curve": ("v2-plain", "curve", None),
    "patterned, background still": ("v2", None, "still"),
    "patterned, background pans": ("v2", None, "pan"),
}


def clip(group: tuple, seed: int, frames: int) -> world.Video:
    kind_of_world, kind, background = group
    rng = np.random.default_rng([41, seed])
    if kind_of_world == "v1":
        return world.sample_video(rng, frames, kind=kind)
    if kind_of_world == "v2-plain":
        return world.render_video(world.sample_scene(rng), world.sample_motion_v2(rng, kind), frames)
    scene = world.sample_scene_v2(rng, pattern=("striped", "checkered", "dotted")[seed % 3])
    return world.render_video(scene, world.sample_motion_v2(rng), frames, world.sample_background_motion(rng, background))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--videos", type=int, default=40)
    parser.add_argument("--frames", type=int, default=8)
    args = parser.parse_args(argv)
    print(f"{'clips':<30} | {'OpenCV LK ObjMC':>15} {'worst':>6} {'max':>6} {'lost':>5} | {'detector ObjMC':>15} {'worst':>6}")
    for name, group in GROUPS.items():
        lk, det, worst_frame, lost = [], [], 0.0, []
        for seed in range(args.videos):
            video = clip(group, seed, args.frames)
            truth = np.array([s.center for s in video.scenes])[:, None]  # (f, 1, 2)
            tracked = track_points(video.frames, truth[0])
            result = objmc(truth, tracked)
            lk.append(result["objmc"])
            lost.append(result["lost"] / result["pairs"])
            errors = np.linalg.norm(tracked - truth, axis=-1)
            worst_frame = max(worst_frame, float(np.nanmax(errors)) if np.isfinite(errors).any() else 0.0)
            images = video.frames.transpose(0, 2, 3, 1)
            centres = [soft_centroid(im, detect(f).mask) for im, f in zip(images, video.frames)]
            det.append(objmc(truth, np.array(centres)[:, None])["objmc"])
        (m, s), (dm, ds) = mean_and_sem(lk), mean_and_sem(det)
        print(f"{name:<30} | {m:8.3f} ± {s:.3f} {np.nanmax(lk):6.2f} {worst_frame:6.2f} {np.mean(lost):5.2f} | "
              f"{dm:8.3f} ± {ds:.3f} {np.nanmax(det):6.2f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
