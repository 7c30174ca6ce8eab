"""ControlNet edge following and video-to-video edits, measured on world v2 (docs/control.md).

    OMP_NUM_THREADS=1 python bench/control.py --videos 16 --frames 8

Source clips are ground-truth world-v2 videos of held-out captions (`world.HELD_OUT_V2`,
never trained on), each with a random object motion and (patterned ones) half of the time a
camera pan, written losslessly as PNG folders: `--videos` on plain backgrounds and as many on
patterned ones, in separate tables. A pattern's Canny edges are dense (a stripe edge every
4-8 px), so within 1 px of them lies much of the frame and any drawing of the same pattern
kind scores high: the row without the ControlNet is the chance level there; on plain
backgrounds the edges are the object's outline alone. For each clip:

- ControlNet (`--control canny:CLIP` with the model's own edge ControlNet): the paper's
  conditioned recipe (method `controlnet`: one shared latent, cross-frame attention on UNet
  and ControlNet), the same without cross-frame attention and with i.i.d. noise (ControlNet
  per frame), and the recipe without the ControlNet (what the edges are without control).
  edge_f: F-score between Canny edges of the generated frames and the control edges, 1 px
  tolerance (`zeroshot.metrics.edge_f_score`); obj_err: distance between the generated
  object's centroid and the source's (px), per frame; the world's detector for alignment and
  consistency, and the background's own columns (the camera motion being the source's pan).
- Edits (`zeroshot edit CLIP "<new caption>" --strength S`): the object's and the
  background's colours changed, the pattern kind kept; strengths 0.4/0.6/0.8, and 0.8 with the
  ControlNet on the input's edges. Structure kept: edge F-score against the input's edges and
  obj_err against the input's object; the edit made: share of frames whose detected object
  and background colours are the new caption's (fg_new, bg_new), pattern kind kept.

Means over clips with standard errors; the table goes between the `control:begin`/`control:end`
markers of docs/control.md, frames into docs/control_sheet.png.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
for path in (ROOT, ROOT / "bench"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from quality import _cell, contact_sheet, write_block  # noqa: E402

log = logging.getLogger("bench.control")
BEGIN, END = "<!-- control:begin -->", "<!-- control:end -->"

COLUMNS = (
    ("edge_f", "edge_f", "{:.3f}"),
    ("edge_precision", "edge_P", "{:.3f}"),
    ("edge_recall", "edge_R", "{:.3f}"),
    ("object_error_px", "obj_err", "{:.2f}"),
    ("alignment", "align", "{:.2f}"),
    ("consistency", "consist", "{:.2f}"),
    ("fg_new", "fg_new", "{:.2f}"),
    ("bg_new", "bg_new", "{:.2f}"),
    ("pattern_accuracy", "pattern", "{:.2f}"),
    ("background_correlation", "bg_corr", "{:.2f}"),
    ("warp_error", "warp_err", "{:.4f}"),
    ("seconds", "s/video", "{:.1f}"),
)


def source_clips(count: int, num_frames: int, seed: int, size: int = 64, *, patterned: bool = True) -> list:
    """`count` ground-truth world-v2 videos of held-out captions on patterned (or plain)
    backgrounds (object motion; a camera pan half of the time where there is a pattern)."""
    from zeroshot.shapes import world

    combos = sorted(c for c in world.HELD_OUT_V2 if (c[3] != "plain") == patterned)
    rng = np.random.default_rng(seed)
    picks = rng.choice(len(combos), size=count, replace=count > len(combos))
    clips = []
    for i in picks:
        shape, fg, bg, pattern = combos[i]
        scene = world.sample_scene_v2(rng, size=size, pattern=pattern, shape=shape, fg=fg, bg=bg)
        motion = world.sample_motion_v2(rng, size=size)
        pan = world.sample_background_motion(rng, None if patterned else "still", size=size)
        clips.append(world.render_video(scene, motion, num_frames, pan))
    return clips


def edit_caption(clip, rng: np.random.Generator) -> str:
    """A caption of the same shape and pattern kind with other object and background colours
    (a pair the world draws: distinct, and the object not too close to the pattern's shade)."""
    from zeroshot.shapes import world

    scene = clip.scenes[0]
    pairs = [
        (f, b) for f in world.COLORS for b in world.COLORS
        if f != b and f != scene.fg and b != scene.bg and (f, b) not in world.PATTERN_EXCLUDED
    ]
    fg, bg = pairs[rng.integers(len(pairs))]
    return world.caption(scene.shape, fg, bg, scene.pattern)


def measure(frames: np.ndarray, prompt: str, clip, control_edges, camera) -> dict[str, float]:
    """The metrics of one generated video against its source clip."""
    import torch

    from zeroshot.control import canny
    from zeroshot.metrics import edge_f_score, video_metrics
    from zeroshot.shapes.detector import detect_v2
    from zeroshot.shapes.metrics import background_metrics, shapes_metrics, soft_centroid
    from zeroshot.shapes.world import parse_caption_v2

    row = dict(edge_f_score(canny(torch.from_numpy(frames)), control_edges))
    row.update(shapes_metrics(frames, prompt))
    row.update(background_metrics(frames, prompt, camera))
    row["warp_error"] = video_metrics(frames)["warp_error"]
    _, fg, bg, _ = parse_caption_v2(prompt)
    found = [detect_v2(f) for f in frames]
    row["fg_new"] = float(np.mean([d.fg == fg and d.area > 0 for d in found]))
    row["bg_new"] = float(np.mean([d.bg == bg for d in found]))
    errors = []
    for image, d, target in zip(frames, found, clip.centroids):
        if d.shape is not None and d.area > 0:
            errors.append(float(np.hypot(*(np.asarray(soft_centroid(image.transpose(1, 2, 0), d.mask)) - target))))
    row["object_error_px"] = float(np.mean(errors)) if errors else float("nan")
    return row


def variants(controlnet: str, num_frames: int, scales: tuple[float, ...] = (1.0,)) -> dict[str, tuple]:
    """name -> (recipe, kind): kind "control" takes the clip's edges, "edit" edits the clip;
    the ControlNet rows once per conditioning scale."""
    from zeroshot.recipe import METHODS, ControlNet, Edit, Recipe

    conditioned = METHODS["controlnet"]
    out = {}
    for scale in scales:
        cn = ControlNet(models=(controlnet,), scales=(scale,))
        out[f"controlnet x{scale:g} (paper: shared latent, cross-frame)"] = (replace(conditioned, controlnet=cn), "control")
        out[f"controlnet x{scale:g} per frame (i.i.d. noise, no cross-frame)"] = (Recipe(method="t2i", controlnet=cn), "control")
    out["no controlnet (shared latent, cross-frame)"] = (replace(conditioned, controlnet=None), "control")
    for strength in (0.4, 0.6, 0.8):
        out[f"edit strength {strength}"] = (replace(METHODS["edit"], edit=Edit(strength=strength)), "edit")
    for scale in scales:
        out[f"edit strength 0.8 + controlnet x{scale:g} on input edges"] = (
            replace(METHODS["edit"], edit=Edit(strength=0.8), controlnet=ControlNet(models=(controlnet,), scales=(scale,))),
            "edit")
    return {name: (replace(recipe, num_frames=num_frames), kind) for name, (recipe, kind) in out.items()}


def run(model, clips, paths, controlnet: str, num_frames: int, seed: int, scales=(1.0,)) -> tuple[dict, dict]:
    """Rows per variant and the first clips' frames (for the sheet)."""
    import torch

    from zeroshot.control import canny
    from zeroshot.generate import generate

    rng = np.random.default_rng(seed)
    edits = [edit_caption(clip, rng) for clip in clips]
    rows: dict[str, list[dict]] = {}
    shown: dict[str, list[np.ndarray]] = {}
    for name, (recipe, kind) in variants(controlnet, num_frames, scales).items():
        log.info("%s ...", name)
        rows[name], shown[name] = [], []
        for i, (clip, path) in enumerate(zip(clips, paths)):
            edges = canny(torch.from_numpy(clip.frames))
            if kind == "control":
                prompt = clip.caption
                r = recipe if recipe.controlnet is None else replace(
                    recipe, controlnet=replace(recipe.controlnet, signals=(f"canny:{path}",)))
                camera = clip.background.velocity
            else:
                prompt = edits[i]
                r = replace(recipe, video=str(path))
                if r.controlnet is not None:
                    r = replace(r, controlnet=replace(r.controlnet, signals=(f"canny:{path}",)))
                camera = clip.background.velocity
            start = time.perf_counter()
            frames = generate(model, prompt, r, seed=i, progress=False).frames[0].numpy()
            row = measure(frames, prompt, clip, edges, camera)
            row["seconds"] = time.perf_counter() - start
            rows[name].append(row)
            if i < 2:
                shown[name].append(frames)
        f = np.nanmean([row["edge_f"] for row in rows[name]])
        log.info("  edge F %.3f  consistency %.2f", f, np.nanmean([row["consistency"] for row in rows[name]]))
    return rows, shown, edits


def table(rows: dict[str, list[dict]]) -> str:
    from zeroshot.metrics import mean_and_sem

    lines = ["| variant | videos | " + " | ".join(h for _, h, _ in COLUMNS) + " |",
             "|---|---:|" + "---:|" * len(COLUMNS)]
    for name, values in rows.items():
        cells = []
        for key, _, fmt in COLUMNS:
            mean, sem = mean_and_sem([row.get(key, np.nan) for row in values])
            cells.append(_cell(mean, fmt) + ("" if not np.isfinite(sem) or key == "seconds" else " ± " + _cell(sem, fmt)))
        lines.append(f"| {name} | {len(values)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--videos", type=int, default=16, help="source clips (default 16)")
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model", default="shapes-v2")
    parser.add_argument("--controlnet", default=None,
                        help="edge ControlNet (default: the model's own, zeroshot.json controlnet.models)")
    parser.add_argument("--scales", default="1", help="ControlNet conditioning scales, comma-separated (default 1)")
    parser.add_argument("--backgrounds", choices=("both", "plain", "patterned"), default="both",
                        help="which tables to make (default both)")
    parser.add_argument("--out", default=str(ROOT / "docs"), help="folder of control.md and control_sheet.png")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    import torch

    from zeroshot.io import write_video
    from zeroshot.models import load

    torch.set_num_threads(1)
    model = load(args.model)
    controlnet = args.controlnet
    if controlnet is None:
        names = model.defaults.get("controlnet.models")
        if not names:
            raise SystemExit(f"model {model.model_id} names no ControlNet of its own; pass --controlnet PATH")
        controlnet = str(Path(model.path) / names[0])
    scales = tuple(float(v) for v in args.scales.split(","))
    started = time.perf_counter()
    results = {}
    kinds = (("plain backgrounds", False), ("patterned backgrounds", True))
    for label, patterned in (k for k in kinds if args.backgrounds in ("both", k[0].split()[0])):
        clips = source_clips(args.videos, args.frames, args.seed, patterned=patterned)
        with tempfile.TemporaryDirectory() as tmp:
            paths = [write_video(clip.frames, Path(tmp) / f"clip{i:02d}.png") for i, clip in enumerate(clips)]
            results[label] = (clips, *run(model, clips, paths, controlnet, args.frames, args.seed, scales))
    total = time.perf_counter() - started

    out = Path(args.out)
    from zeroshot.control import canny

    sheet = []
    for clips, _, shown, edits in results.values():
        sheet.append((f"source: {clips[0].caption}", clips[0].frames))
        sheet.append(("its canny edges (the control)", canny(torch.from_numpy(clips[0].frames)).numpy()))
        for name, videos in shown.items():
            label = f"{name}" + (f": {edits[0]}" if name.startswith("edit") else "")
            sheet.append((label, videos[0]))
    contact_sheet(sheet, out / "control_sheet.png")

    command = "OMP_NUM_THREADS=1 python bench/control.py " + " ".join(argv if argv is not None else sys.argv[1:])
    lines = [
        f"Produced by `{command.strip()}` on model `{model.model_id}` with the ControlNet "
        f"`{Path(controlnet).name}` (torch {torch.__version__}, 1 CPU thread, {total / 60:.1f} min in all): "
        f"{args.videos} held-out world-v2 clips of {args.frames} frames per table, 64 px, the model's steps and "
        "guidance. Mean ± standard error over clips.",
        "",
    ]
    for label, (_, rows, _, _) in results.items():
        lines += [f"On {label}:", "", table(rows), ""]
    lines += [
        "edge_f/P/R: Canny edges of the result against the control edges (ControlNet rows) or the input's "
        "edges (edit rows), 1 px tolerance; obj_err: px between the result's object centroid and the "
        "source's, per frame; align/consist: the world's detector against the prompt, and frames 1.. "
        "against frame 0; fg_new/bg_new: share of frames whose object / background colour is the prompt's "
        "(for edits, the new colours); pattern: the caption's pattern kind read; bg_corr: background kept "
        "across frames after the source's camera pan (`background_metrics`); warp_err: DIS-flow warping "
        "error between consecutive frames.",
        "",
        "![source, control, ControlNet and edit rows](control_sheet.png)",
    ]
    write_block(out / "control.md", "\n".join(lines), BEGIN, END)
    log.info("wrote %s", out / "control.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
