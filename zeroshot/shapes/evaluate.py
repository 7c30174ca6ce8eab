"""Measure the embedded model with the detector: `python -m zeroshot.shapes.evaluate`.

Two numbers, both on captions the model never saw in training (`world.HELD_OUT`, or
`world.HELD_OUT_V2` with `--world v2`, which adds the background pattern to the fields and
reports plain and patterned captions apart):

- text-to-image accuracy: for each prompt and seed, one 64x64 image (DDIM, 25 steps by
  default, the model's guidance); the detector's shape / foreground / background colour
  are compared with the prompt's;
- VAE agreement: held-out world images are encoded and decoded (posterior mode); the
  detector must read the same shape and colours on the reconstruction as on the original.

It also writes a contact sheet of samples labelled with their prompts.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np

from zeroshot.shapes import MODEL_DIR, world
from zeroshot.shapes.detector import detect

log = logging.getLogger(__name__)

FIELDS = ("shape", "fg", "bg")
FIELDS_V2 = FIELDS + ("pattern",)


def load_pipeline(path=MODEL_DIR):
    """The model folder as a diffusers StableDiffusionPipeline (offline, CPU, float32)."""
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(
        str(path),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
        local_files_only=True,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def eval_prompts(
    num_prompts: int = 64, seeds_per_prompt: int = 2, world_version: str = "v1"
) -> list[tuple[str, int]]:
    """(prompt, seed) pairs over the held-out combinations, in a fixed order.

    v2: patterned and plain combinations (shuffled with a fixed seed) interleaved, so any
    prefix has both."""
    if world_version == "v1":
        combos = sorted(world.HELD_OUT)
    else:
        order = np.random.default_rng(0)  # a fixed shuffle, so a prefix mixes shapes and colours
        plain = [sorted(c for c in world.HELD_OUT_V2 if c[3] == "plain")[i] for i in order.permutation(64)]
        patterned = sorted(c for c in world.HELD_OUT_V2 if c[3] != "plain")
        patterned = [patterned[i] for i in order.permutation(len(patterned))]
        combos = [c for i in range(len(patterned)) for c in (patterned[i], *plain[i : i + 1])]
    pairs = []
    for i in range(num_prompts):
        combo = combos[i % len(combos)]
        for j in range(seeds_per_prompt):
            pairs.append((world.caption(*combo), 1000 * j + i))
    return pairs


def sample(
    pipe,
    prompts,
    seeds,
    *,
    guidance_scale: float,
    num_inference_steps: int = 25,
    batch_size: int = 32,
):
    """One image per (prompt, seed): float32 (n, 3, H, W) in [0, 1]."""
    import torch

    out = []
    for k in range(0, len(prompts), batch_size):
        gens = [torch.Generator().manual_seed(s) for s in seeds[k : k + batch_size]]
        with torch.no_grad():
            images = pipe(
                list(prompts[k : k + batch_size]),
                height=64,
                width=64,
                num_inference_steps=num_inference_steps,
                guidance_scale=guidance_scale,
                generator=gens,
                output_type="pt",
            ).images
        out.append(images.float().cpu())
    return torch.cat(out).numpy()


def score(images, prompts, fields=FIELDS) -> dict:
    """Fraction of images whose detected fields (shape / fg / bg, and the v2 pattern) match
    the prompt, and all of them."""
    hits = {f: 0 for f in fields + ("all",)}
    for image, prompt in zip(images, prompts):
        d = detect(image)
        truth = dict(zip(FIELDS_V2, world.parse_caption_v2(prompt)))
        ok = [getattr(d, f) == truth[f] for f in fields]
        for f, o in zip(fields, ok):
            hits[f] += o
        hits["all"] += all(ok)
    return {f: hits[f] / len(prompts) for f in hits}


def score_v2(images, prompts) -> dict:
    """`score` with the pattern, over all prompts and over plain and patterned ones apart."""
    plain = [i for i, p in enumerate(prompts) if world.parse_caption_v2(p)[3] == "plain"]
    patterned = [i for i in range(len(prompts)) if i not in set(plain)]
    out = {"all_prompts": score(images, prompts, FIELDS_V2)}
    for name, idx in (("plain", plain), ("patterned", patterned)):
        if idx:
            out[name] = score(images[idx], [prompts[i] for i in idx], FIELDS_V2)
    return out


def vae_agreement(vae, num_images: int = 256, seed: int = 0) -> dict:
    """Fraction of held-out images whose reconstruction the detector reads the same."""
    import torch

    rng = np.random.default_rng(seed)
    combos = sorted(world.HELD_OUT)
    scenes = []
    for i in range(num_images):
        shape, fg, bg = combos[i % len(combos)]
        scenes.append(world.sample_scene(rng, shape=shape, fg=fg, bg=bg))
    images = torch.from_numpy(np.stack([world.render_image(s) for s in scenes]))
    with torch.no_grad():
        recon = torch.cat(
            [
                vae.decode(vae.encode(x * 2 - 1).latent_dist.mode()).sample
                for x in images.split(64)
            ]
        )
    recon = ((recon + 1) / 2).clamp(0, 1).numpy()
    hits = {f: 0 for f in FIELDS + ("all",)}
    for orig, rec in zip(images.numpy(), recon):
        a, b = detect(orig), detect(rec)
        ok = [getattr(a, f) == getattr(b, f) for f in FIELDS]
        for f, o in zip(FIELDS, ok):
            hits[f] += o
        hits["all"] += all(ok)
    result = {f: hits[f] / num_images for f in hits}
    result["mse"] = float(((recon - images.numpy()) ** 2).mean())
    return result


#: Period bins (px at 64 px) of `pattern_fidelity`.
PERIOD_BINS = ((8.0, 11.0), (11.0, 13.5), (13.5, 16.0))


def pattern_fidelity(vae, num_images: int = 192, seed: int = 0) -> dict:
    """How well a VAE keeps v2 background patterns: per held-out patterned scene, the
    Pearson correlation of the background's luminance (object and a 2-px ring around it
    excluded) with its reconstruction's (posterior mode); mean per period bin and overall.

    Scenes come from `world.HELD_OUT_V2`'s patterned combinations (kinds in turn)."""
    import cv2
    import torch

    rng = np.random.default_rng(seed)
    combos = sorted(c for c in world.HELD_OUT_V2 if c[3] != "plain")
    scenes = []
    for i in range(num_images):
        shape, fg, bg, pattern = combos[i % len(combos)]
        scenes.append(world.sample_scene_v2(rng, shape=shape, fg=fg, bg=bg, pattern=pattern))
    images = torch.from_numpy(np.stack([world.render_image(s) for s in scenes]))
    with torch.no_grad():
        recon = torch.cat([vae.decode(vae.encode(x * 2 - 1).latent_dist.mode()).sample for x in images.split(64)])
    recon = ((recon + 1) / 2).clamp(0, 1).numpy()
    weights = np.array([0.299, 0.587, 0.114], np.float32)[:, None, None]
    corrs: dict[str, list[float]] = {f"{lo:g}-{hi:g}": [] for lo, hi in PERIOD_BINS}
    every = []
    for scene, orig, rec in zip(scenes, images.numpy(), recon):
        mask = world.render(scene)[1].astype(np.uint8)
        keep = cv2.dilate(mask, np.ones((5, 5), np.uint8)) == 0
        a, b = (orig * weights).sum(0)[keep], (rec * weights).sum(0)[keep]
        r = float(np.corrcoef(a, b)[0, 1]) if a.std() > 0 and b.std() > 0 else 0.0
        every.append(r)
        for lo, hi in PERIOD_BINS:
            if lo <= scene.pattern_period < hi or (hi == PERIOD_BINS[-1][1] and scene.pattern_period == hi):
                corrs[f"{lo:g}-{hi:g}"].append(r)
    out = {k: float(np.mean(v)) for k, v in corrs.items() if v}
    out["all"] = float(np.mean(every))
    out["min"] = float(np.min(every))
    return out


def video_scores(model, pairs, *, overrides=None, num_frames: int = 8) -> dict:
    """T2V-Zero on the shapes model, measured per frame with the detector.

    pairs: (prompt, seed); overrides: dotted recipe keys (e.g. {"motion.t0": 16}).
    Returns the fraction of frames with the prompt's shape and colours, of videos right
    in every frame, and the mean measured shift (x, y) of the shape per frame in px.
    """
    from zeroshot.generate import generate
    from zeroshot.recipe import apply_override, get_method

    recipe = get_method("t2v-zero")
    recipe = apply_override(recipe, "num_frames", num_frames)
    for key, value in (overrides or {}).items():
        recipe = apply_override(recipe, key, value)
    frames_ok = videos_ok = 0
    shifts = []
    for prompt, seed in pairs:
        video = generate(model, prompt, recipe, seed=seed, progress=False).frames[0]
        truth = world.parse_caption(prompt)
        dets = [detect(frame) for frame in video]
        ok = [(d.shape, d.fg, d.bg) == truth for d in dets]
        frames_ok += sum(ok)
        videos_ok += all(ok)
        if all(ok):
            c = np.array([d.centroid for d in dets])
            shifts.append((c[-1] - c[0]) / (len(c) - 1))
    n = len(pairs)
    return {
        "frames_right": frames_ok / (n * num_frames),
        "videos_right": videos_ok / n,
        "shift_px_per_frame": np.mean(shifts, axis=0).round(2).tolist()
        if shifts
        else None,
    }


def contact_sheet(images, prompts, path, *, columns: int = 8, scale: int = 2) -> Path:
    """A PNG grid of images (n, 3, H, W) in [0, 1], each labelled with its prompt."""
    import cv2

    n, _, h, w = images.shape
    cell_w, label_h = w * scale, 22
    rows = -(-n // columns)
    sheet = np.full((rows * (h * scale + label_h), columns * cell_w, 3), 255, np.uint8)
    for i, (image, prompt) in enumerate(zip(images, prompts)):
        r, c = divmod(i, columns)
        y, x = r * (h * scale + label_h), c * cell_w
        tile = (np.transpose(image, (1, 2, 0)) * 255).round().astype(np.uint8)
        sheet[y : y + h * scale, x : x + cell_w] = cv2.resize(
            tile, (cell_w, h * scale), interpolation=cv2.INTER_NEAREST
        )
        shape, fg, bg = world.parse_caption(prompt)
        for line, text in enumerate((f"{fg} {shape}", f"on {bg}")):
            cv2.putText(
                sheet,
                text,
                (x + 2, y + h * scale + 9 + 10 * line),
                cv2.FONT_HERSHEY_SIMPLEX,
                0.3,
                (0, 0, 0),
                1,
                cv2.LINE_AA,
            )
    path = Path(path)
    cv2.imwrite(str(path), cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR))
    return path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m zeroshot.shapes.evaluate", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--model", type=Path, default=MODEL_DIR)
    parser.add_argument("--world", choices=("v1", "v2"), default="v1", help="held-out captions of this world")
    parser.add_argument(
        "--prompts", type=int, default=64, help="held-out prompts (>= 64)"
    )
    parser.add_argument("--seeds", type=int, default=2, help="seeds per prompt")
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument(
        "--guidance", type=float, nargs="+", default=None, help="default: the model's"
    )
    parser.add_argument(
        "--sheet", type=Path, default=None, help="write a contact sheet PNG here"
    )
    parser.add_argument(
        "--json", type=Path, default=None, help="write the results here"
    )
    parser.add_argument(
        "--write-default",
        action="store_true",
        help="store the best guidance in zeroshot.json",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    pipe = load_pipeline(args.model)
    record_path = args.model / "zeroshot.json"
    record = json.loads(record_path.read_text())
    guidances = args.guidance or [record["defaults"]["guidance_scale"]]
    pairs = eval_prompts(args.prompts, args.seeds, args.world)
    prompts, seeds = [p for p, _ in pairs], [s for _, s in pairs]
    results = {
        "vae": vae_agreement(pipe.vae) if args.world == "v1" else pattern_fidelity(pipe.vae),
        "prompts": len(set(prompts)),
        "images": len(prompts),
        "t2i": {},
    }
    log.info("VAE agreement on held-out images: %s", results["vae"])
    best, best_images, best_score = None, None, -1.0
    for g in guidances:
        images = sample(
            pipe, prompts, seeds, guidance_scale=g, num_inference_steps=args.steps
        )
        results["t2i"][str(g)] = acc = score(images, prompts) if args.world == "v1" else score_v2(images, prompts)
        log.info("guidance %.2f: %s", g, acc)
        overall = acc["all"] if args.world == "v1" else acc["all_prompts"]["all"]
        if best is None or overall > best_score:
            best_score = overall
            best, best_images = g, images
    results["best_guidance"] = best
    if args.sheet is not None:
        first_seed = slice(None, None, args.seeds)  # one image per prompt
        contact_sheet(
            best_images[first_seed][:64], prompts[first_seed][:64], args.sheet
        )
    if args.write_default:
        record["defaults"]["guidance_scale"] = best
        record_path.write_text(json.dumps(record, indent=1) + "\n")
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
