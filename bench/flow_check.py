"""Flow-conditioned generation, training-free, measured on the shapes model (docs/flow.md).

    OMP_NUM_THREADS=1 python bench/flow_check.py [--videos 16] [--variants a,b] [--set KEY=VALUE] [--pan DX,DY] [--json out.json]

A keyframed path (frames 0, 4, 7 at (0, 0), (8, -6), (14, 0) px: up-right, then down-right;
`--pan` requests a constant pan instead) is requested from every variant; each video is read with the shapes detector
(`zeroshot.shapes.metrics.shapes_metrics`): "error" is the mean norm of (detected centroid
step - requested step), px/frame, "along" the robust speed along the request. "ObjMC" is the
trajectory papers' error (`zeroshot.tracking`): frame 0's detected centroid is tracked with
OpenCV's pyramidal Lucas-Kanade and compared with where the request takes it (mean px over
frames 1..f-1; "lost": share of frame-points the tracker dropped, left out of the mean);
"ObjMC det." is the same distance for the detector's centroids (absolute positions, not steps). As in
`bench/motion_check.py`, each variant is measured on the first `--videos` videos of a fixed
caption x seed list ("all") and on the first `--videos` videos of that list whose frame-0
shape stays inside the frame along the request ("in view": the model stops shapes at the
border). Frame 0 does not depend on the motion where it attends only to itself (t2v-zero,
cross-frame attention); with AnimateDiff's temporal layers it does, so there "in view" also
selects on the outcome. Means with their standard errors over videos.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

from zeroshot.generate import generate
from zeroshot.metrics import mean_and_sem
from zeroshot.models import load
from zeroshot.recipe import apply_override, get_method, resolve
from zeroshot.shapes.detector import detect, to_hwc
from zeroshot.shapes.metrics import requested_track, shapes_metrics, soft_centroid
from zeroshot.tracking import objmc, track_points

_spec = importlib.util.spec_from_file_location("motion_check", Path(__file__).with_name("motion_check.py"))
motion_check = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(motion_check)

ARC = "[[key]]\nframe = 0\n[[key]]\nframe = 4\ntranslate = [8, -6]\n[[key]]\nframe = 7\ntranslate = [14, 0]\n"

#: variant -> (method, overrides); `"motion": "off"` generates without the request (iid noise)
#: and measures the result against it (what the method does unasked)
VARIANTS = {
    "t2v-zero (warp at T')": ("t2v-zero", {}),
    "t2i + cross-frame + flow-warped": (
        "t2i", {"cross_frame": "on", "noise.prior": "flow-warped", "motion.dynamics": "off"}
    ),
    "t2v-zero + flow-warped": ("t2v-zero", {"noise.prior": "flow-warped"}),
    "animatediff + flow-warped": ("animatediff", {"noise.prior": "flow-warped", "motion.dynamics": "off"}),
    "t2i + flow-warped": ("t2i", {"noise.prior": "flow-warped", "motion.dynamics": "off"}),
    "animatediff (no request)": ("animatediff", {"motion": "off"}),
    "t2v-zero (no request)": ("t2v-zero", {"motion": "off"}),
    "animatediff + t2v-zero warp": ("animatediff", {}),
    # needs --flow-adapter (a trained zeroshot.trained.flow_adapter file)
    "animatediff + flow adapter": ("animatediff", {"animatediff.flow_adapter": "FLOW_ADAPTER", "motion.dynamics": "off"}),
    "animatediff + t2v-zero warp + flow adapter": ("animatediff", {"animatediff.flow_adapter": "FLOW_ADAPTER"}),
}
KEYS = ("motion_error", "along_px", "requested_speed_px", "consistency", "alignment", "objmc", "objmc_lost",
        "objmc_detector")


def trajectory_errors(video, motion, first) -> dict:
    """ObjMC of frame 0's detected centroid along the request: tracked by OpenCV LK
    (`objmc`, `objmc_lost`: share of frame-points lost) and by the detector (`objmc_detector`)."""
    import numpy as np

    nan = float("nan")
    if first.shape is None or first.area <= 0:
        return {"objmc": nan, "objmc_lost": nan, "objmc_detector": nan}
    f, _, height, width = video.shape
    start = soft_centroid(to_hwc(video[0]), first.mask)
    requested = requested_track(motion, start, f, height, width)[:, None]  # (f, 1, 2)
    lk = objmc(requested, track_points(video, np.array([start])))
    centroids = []
    for frame in video:
        found = detect(frame)
        ok = found.shape is not None and found.area > 0
        centroids.append(soft_centroid(to_hwc(frame), found.mask) if ok else (nan, nan))
    detector = objmc(requested, np.array(centroids)[:, None])
    return {"objmc": lk["objmc"], "objmc_lost": lk["lost"] / lk["pairs"], "objmc_detector": detector["objmc"]}


def recipe_for(model, method: str, overrides: dict, path: str | None, settings: list[str], pan: str | None = None):
    recipe = get_method(method)
    request = [("motion.translate", pan)] if pan else [("motion.path", path), ("motion.translate", "0,0")]
    for key, value in [*request, *overrides.items()]:
        recipe = apply_override(recipe, key, value)
    for item in settings:
        key, _, value = item.partition("=")
        recipe = apply_override(recipe, key, value)
    return resolve(recipe, model.defaults)


def chosen_variants(args, parser, variants: dict = VARIANTS) -> list[tuple[str, str, dict]]:
    """(name, method, overrides) of `--variants` (default: every one, the flow-adapter rows
    only with `--flow-adapter`), the adapter's path filled in; a parser error for an unknown
    name or an adapter row without `--flow-adapter`."""
    names = args.variants.split(",") if args.variants else [
        v for v in variants if args.flow_adapter or "flow adapter" not in v]
    out = []
    for name in names:
        if name not in variants:
            parser.error(f"unknown variant {name!r}; valid: {', '.join(variants)}")
        method, overrides = variants[name]
        if "animatediff.flow_adapter" in overrides:
            if not args.flow_adapter:
                parser.error(f"variant {name!r} needs --flow-adapter PATH")
            overrides = {**overrides, "animatediff.flow_adapter": args.flow_adapter}
        out.append((name, method, overrides))
    return out


def summary(rows: list[dict]) -> dict:
    out = {}
    for key in KEYS:
        m, s = mean_and_sem([r[key] for r in rows])
        out[key], out[f"{key}_sem"] = m, s
    out["videos"] = len(rows)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="shapes", help="model folder or embedded name (default: shapes, the v1 model its docs measured)")
    parser.add_argument("--videos", type=int, default=16, help="videos per column and variant")
    parser.add_argument("--prompts", type=int, default=16, help="captions of the list (x --seeds)")
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--variants", default=None,
                        help="comma-separated subset of the variants (default: all; the flow adapter's with --flow-adapter)")
    parser.add_argument("--flow-adapter", metavar="PATH", help="a trained flow adapter for its variant")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override for every variant")
    parser.add_argument("--pan", metavar="DX,DY", help="request a constant pan (px/frame) instead of the arc")
    parser.add_argument("--json", help="write the numbers here")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    model = load(args.model)
    jobs = [(p, s) for s in range(args.seeds) for p in motion_check.captions(args.prompts)]
    results: dict = {"model": model.model_id, "videos": args.videos, "request": args.pan or "arc", "variants": {}}
    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "arc.toml")
        Path(path).write_text(ARC)
        print(f"{'variant':<34} | {'all: error':>16} {'along':>5} {'ObjMC':>13} | {'in view: error':>16} {'along':>5} "
              f"{'ObjMC':>13} {'lost':>4} {'det.':>5} {'n / list':>9} | {'consist.':>8} {'align.':>6} {'s':>5}")
        for name, method, overrides in chosen_variants(args, parser):
            unasked = overrides.get("motion") == "off"
            request = {k: v for k, v in overrides.items() if k != "motion"}
            recipe = recipe_for(model, method, request, path, args.set, args.pan)
            run_recipe = replace(recipe, motion=None) if unasked else recipe
            start = time.perf_counter()
            everything, in_view, looked = [], [], 0
            for prompt, seed in jobs:
                if len(everything) >= args.videos and len(in_view) >= args.videos:
                    break
                looked += 1
                video = generate(model, prompt, run_recipe, seed=seed, progress=False).frames[0]
                row = shapes_metrics(video, prompt, recipe.motion)
                first = detect(video[0])
                row.update(trajectory_errors(video, recipe.motion, first))
                if len(everything) < args.videos:
                    everything.append(row)
                if len(in_view) < args.videos and motion_check.stays_in_view(
                    first.mask, recipe.motion, recipe.num_frames
                ):
                    in_view.append(row)
            a, v = summary(everything), summary(in_view)
            v["list_examined"] = looked
            results["variants"][name] = {"all": a, "in_view": v, "overrides": overrides, "method": method}
            print(
                f"{name:<34} | {a['motion_error']:7.2f} ± {a['motion_error_sem']:.2f} {a['along_px']:5.2f} "
                f"{a['objmc']:6.2f} ± {a['objmc_sem']:.2f} | "
                f"{v['motion_error']:7.2f} ± {v['motion_error_sem']:.2f} {v['along_px']:5.2f} "
                f"{v['objmc']:6.2f} ± {v['objmc_sem']:.2f} {v['objmc_lost']:4.2f} {v['objmc_detector']:5.2f} "
                f"{len(in_view):>4} / {looked:<3} | {v['consistency']:8.2f} {v['alignment']:6.2f} "
                f"{time.perf_counter() - start:5.0f}",
                flush=True,
            )
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
