"""Speed at equal quality: wall time against measured quality on the embedded shapes model.

The reference is diffusers' `TextToVideoZeroPipeline` at its default 50 DDIM steps on the
same weights (same process). Every zeroshot configuration is T2V-Zero with the model's own
motion request (warp steps `motion.t0`/`t1` mapped to each step count by
`recipe.scaled_warp_steps`), with fewer steps (DPM-Solver++, UniPC), step caching
(`recipe.step_cache`, also of the later steps only), token merging (`recipe.token_merge`)
and guidance on the first steps only (`recipe.guidance_interval`). Videos are the shapes
world's held-out captions, one seed each; the configurations run round-robin per video, so
changes in machine load hit all alike. Quality: alignment, consistency and motion error
against the requested motion (`zeroshot.shapes.metrics`), mean ± standard error over the
videos. "Equal quality", two readings: each of the three no worse than the reference's mean
by more than the reference's standard error ("ref SE"), or by more than the standard error
of the difference of the two means, sqrt(SE_ref² + SE_config²) ("joint SE"). `--json` keeps
every video's metrics and time.

    OMP_NUM_THREADS=1 python bench/speed_quality.py [--videos 8] [--frames 8] [--configs NAME ...]
    OMP_NUM_THREADS=1 python bench/speed_quality.py --world v2 --videos 24

`--world v2`: the v2 model on patterned-background captions, and the background kept
across frames (`background_metrics`' bg_corr, after the motion field's pan) as a fourth
quality column that "equal quality" must hold too.
    OMP_NUM_THREADS=1 python bench/speed_quality.py --unet-only [--px 256 512]

`--unet-only`: one UNet call of the SD-topology `mid` model at larger sizes (where token
counts are SD-like): plain, with token merging, and a cached step-cache call.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
for _path in (ROOT, ROOT / "bench"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from zeroshot.metrics import mean_and_sem  # noqa: E402
from zeroshot.recipe import GuidanceInterval, StepCache, TokenMerge, get_method  # noqa: E402

REFERENCE = "diffusers ddim-50"
#: (key, header, higher is better) of the quality columns that decide "equal quality".
QUALITY = (("alignment", "align", True), ("consistency", "consist", True), ("motion_error", "motion_err", False))
QUALITY_V2 = QUALITY + (("background_correlation", "bg_corr", True),)


def configs() -> dict:
    """Name -> zeroshot recipe (None: the diffusers reference)."""
    t2v = get_method("t2v-zero")
    ddim = replace(t2v, scheduler="ddim")
    dpm = replace(t2v, scheduler="dpm++")
    unipc = replace(t2v, scheduler="unipc")
    out = {
        REFERENCE: None,
        "zeroshot ddim-50": replace(ddim, num_inference_steps=50),
        "zeroshot ddim-25": replace(ddim, num_inference_steps=25),
        "dpm++ 20": replace(dpm, num_inference_steps=20),
        "dpm++ 10": replace(dpm, num_inference_steps=10),
        "dpm++ 20 +cache3": replace(dpm, num_inference_steps=20, step_cache=StepCache(interval=3)),
        "dpm++ 10 +cache2": replace(dpm, num_inference_steps=10, step_cache=StepCache(interval=2)),
        "dpm++ 10 +cache3": replace(dpm, num_inference_steps=10, step_cache=StepCache(interval=3)),
        "dpm++ 10 +tome0.5": replace(dpm, num_inference_steps=10, token_merge=TokenMerge(ratio=0.5)),
        "dpm++ 10 +cache2 +tome0.5": replace(dpm, num_inference_steps=10, step_cache=StepCache(interval=2),
                                             token_merge=TokenMerge(ratio=0.5)),
        "dpm++ 8": replace(dpm, num_inference_steps=8),
        "unipc 10": replace(unipc, num_inference_steps=10),
        "unipc 8": replace(unipc, num_inference_steps=8),
        "unipc 6": replace(unipc, num_inference_steps=6),
        # caching only the later steps: the first half decides the layout and runs whole
        "dpm++ 10 +cache2 late": replace(dpm, num_inference_steps=10, step_cache=StepCache(interval=2, start=0.5)),
        "dpm++ 20 +cache3 late": replace(dpm, num_inference_steps=20, step_cache=StepCache(interval=3, start=0.3)),
        "unipc 8 +cache2 late": replace(unipc, num_inference_steps=8, step_cache=StepCache(interval=2, start=0.5)),
        # guidance on the first steps only: the later steps run the conditional half of the batch
        "dpm++ 10 +cfg0.5": replace(dpm, num_inference_steps=10, guidance_interval=GuidanceInterval(0.0, 0.5)),
        "dpm++ 10 +cfg0.3": replace(dpm, num_inference_steps=10, guidance_interval=GuidanceInterval(0.0, 0.3)),
        "dpm++ 12 +cfg0.4": replace(dpm, num_inference_steps=12, guidance_interval=GuidanceInterval(0.0, 0.4)),
        "dpm++ 10 +cfg0.5 +cache2 late": replace(dpm, num_inference_steps=10, guidance_interval=GuidanceInterval(0.0, 0.5),
                                                 step_cache=StepCache(interval=2, start=0.5)),
        "dpm++ 10 +cfg0.5 +cache2": replace(dpm, num_inference_steps=10, guidance_interval=GuidanceInterval(0.0, 0.5),
                                            step_cache=StepCache(interval=2)),
        "dpm++ 10 +cfg0.5 +cache3 late": replace(dpm, num_inference_steps=10, guidance_interval=GuidanceInterval(0.0, 0.5),
                                                 step_cache=StepCache(interval=3, start=0.3)),
        "dpm++ 8 +cfg0.5": replace(dpm, num_inference_steps=8, guidance_interval=GuidanceInterval(0.0, 0.5)),
        # caching on top of the fewest-step configuration: the unguided half only (all of it, or every other
        # step), everything (reused or forecast from the last two full steps, TaylorSeer's first order)
        "dpm++ 8 +cfg0.5 +cache2 late": replace(dpm, num_inference_steps=8, guidance_interval=GuidanceInterval(0.0, 0.5),
                                                step_cache=StepCache(interval=2, start=0.5)),
        "dpm++ 8 +cfg0.5 +cache-all late": replace(dpm, num_inference_steps=8, guidance_interval=GuidanceInterval(0.0, 0.5),
                                                   step_cache=StepCache(interval=10**6, start=0.5)),
        "dpm++ 8 +cfg0.5 +cache2": replace(dpm, num_inference_steps=8, guidance_interval=GuidanceInterval(0.0, 0.5),
                                           step_cache=StepCache(interval=2)),
        "dpm++ 8 +cfg0.5 +cache2 forecast": replace(dpm, num_inference_steps=8,
                                                    guidance_interval=GuidanceInterval(0.0, 0.5),
                                                    step_cache=StepCache(interval=2, order=1)),
        "dpm++ 20 +cache3 forecast": replace(dpm, num_inference_steps=20, step_cache=StepCache(interval=3, order=1)),
        "dpm++ 20 +cache4 forecast": replace(dpm, num_inference_steps=20, step_cache=StepCache(interval=4, order=1)),
        "dpm++ 20 +cache4": replace(dpm, num_inference_steps=20, step_cache=StepCache(interval=4)),
    }
    # the same with the tiny VAE (`--vae`, default the model folder's vae_tiny) decoding
    for name in ("dpm++ 8 +cfg0.5", "dpm++ 8 +cfg0.5 +cache2 late", "dpm++ 10 +cfg0.5", "dpm++ 10"):
        out[f"{name} +tinyvae"] = out[name]
    return out


def diffusers_call(model, recipe):
    """`fn(prompt, seed) -> frames (f, 3, H, W)` of diffusers' T2V-Zero at 50 DDIM steps with the
    model's motion request (its warp steps scaled to 50 steps; its warp is diffusers' own:
    nearest, reflection padding)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from diffusers import DDIMScheduler, TextToVideoZeroPipeline

    from zeroshot.recipe import scaled_warp_steps

    pipe = TextToVideoZeroPipeline(
        unet=model.unet, vae=model.vae, text_encoder=model.text_encoder, tokenizer=model.tokenizer,
        scheduler=DDIMScheduler.from_config(model.scheduler.config), safety_checker=None, feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    m = recipe.motion
    t0, t1 = scaled_warp_steps(50, m.t0, m.t1, recipe.num_inference_steps)
    # diffusers' field: delta in units of a 512-px frame, positive moves content up-left
    dx, dy = (-v * 512 / recipe.width for v in m.translate)

    def call(prompt: str, seed: int) -> torch.Tensor:
        frames = pipe(prompt, video_length=recipe.num_frames, height=recipe.height, width=recipe.width,
                      num_inference_steps=50, guidance_scale=recipe.guidance_scale,
                      negative_prompt=recipe.negative_prompt or None,
                      generator=torch.Generator("cpu").manual_seed(seed), motion_field_strength_x=dx,
                      motion_field_strength_y=dy, t0=t0, t1=t1, output_type="np").images
        return torch.from_numpy(np.asarray(frames)).permute(0, 3, 1, 2).float()  # f 3 H W

    return call


def measure(frames: torch.Tensor, prompt: str, motion, camera=None) -> dict:
    """The shapes metrics against the requested motion; with `camera` (px/frame, world v2)
    the background's too."""
    from zeroshot.shapes.metrics import background_metrics, shapes_metrics

    out = shapes_metrics(frames, prompt, motion=motion)
    if camera is not None:
        out.update(background_metrics(frames, prompt, camera))
    return out


def run(args) -> None:
    from zeroshot.generate import generate, prepare_recipe
    from zeroshot.models import load
    from zeroshot.shapes.world import distinct_captions

    from quality import camera_step

    v2 = args.world == "v2"
    quality = QUALITY_V2 if v2 else QUALITY
    model = load(args.model or ("shapes-v2" if v2 else "shapes"))
    chosen = configs()
    if args.configs:
        unknown = [c for c in args.configs if c not in chosen]
        if unknown:
            raise SystemExit(f"--configs: unknown {unknown}; valid: {', '.join(chosen)}")
        chosen = {name: chosen[name] for name in [REFERENCE, *args.configs] if name in chosen}
    chosen = {n: r if r is None else replace(r, num_frames=args.frames) for n, r in chosen.items()}
    base = prepare_recipe(model, replace(get_method("t2v-zero"), num_frames=args.frames))
    reference = diffusers_call(model, base)
    model_of = {name: model for name in chosen}
    if any(name.endswith(" +tinyvae") for name in chosen):  # the same weights, another VAE decoding
        import dataclasses

        from zeroshot.models import check_vae, swap_vae

        tiny = swap_vae(dataclasses.replace(model), check_vae(args.vae, model.path))
        model_of.update({name: tiny for name in chosen if name.endswith(" +tinyvae")})
    prompts = distinct_captions(args.videos, args.prompt_seed, world=args.world)
    camera = camera_step(base, base.height, base.width) if v2 else None
    rows: dict[str, list[dict]] = {name: [] for name in chosen}
    seconds = {name: 0.0 for name in chosen}
    for name, recipe in chosen.items():  # warm-up: first calls pay one-time set-up
        if recipe is None:
            reference(prompts[0], 0)
        else:
            generate(model_of[name], prompts[0], recipe, seed=0, progress=False)
    for i, prompt in enumerate(prompts):
        for name, recipe in chosen.items():
            start = time.perf_counter()
            if recipe is None:
                frames = reference(prompt, i)
            else:
                frames = generate(model_of[name], prompt, recipe, seed=i, progress=False).frames[0]
            seconds[name] += time.perf_counter() - start
            rows[name].append(measure(frames, prompt, base.motion, camera))
        print(f"video {i + 1}/{len(prompts)} done", file=sys.stderr, flush=True)
    if args.json:
        import json

        Path(args.json).write_text(json.dumps({"prompts": prompts, "rows": rows, "seconds": seconds}, indent=1,
                                              default=float))

    summary = {}
    for name in chosen:
        summary[name] = {key: mean_and_sem([r.get(key, math.nan) for r in rows[name]]) for key, _, _ in quality}
        summary[name]["along_px"] = mean_and_sem([r.get("along_px", math.nan) for r in rows[name]])
        summary[name]["seconds"] = seconds[name] / len(prompts)
    ref = summary[REFERENCE]

    def se(mean_sem):
        return 0.0 if math.isnan(mean_sem[1]) else mean_sem[1]

    def equal_to_ref(s, joint: bool) -> bool:
        def tol(key):
            return math.hypot(se(ref[key]), se(s[key])) if joint else se(ref[key])

        return all(
            (s[key][0] >= ref[key][0] - tol(key)) if higher else (s[key][0] <= ref[key][0] + tol(key))
            for key, _, higher in quality
        )

    print(f"{model.model_id}, {args.videos} videos x {args.frames} frames at {base.height}x{base.width}, "
          f"guidance {base.guidance_scale}, motion {tuple(base.motion.translate)} px/frame, "
          f"torch threads {torch.get_num_threads()}")
    print("| config | s/video | × reference time | speed-up | " + " | ".join(h for _, h, _ in quality)
          + " | along_px | equal (ref SE) | equal (joint SE) |")
    print("| --- | --- | --- | --- | " + " | ".join("---" for _ in quality) + " | --- | --- | --- |")
    equal, joint = {}, {}
    for name, s in summary.items():
        equal[name], joint[name] = equal_to_ref(s, False), equal_to_ref(s, True)
        ratio = s["seconds"] / ref["seconds"]
        cells = " | ".join(f"{s[key][0]:.3f} ± {s[key][1]:.3f}" for key, _, _ in quality)
        print(f"| {name} | {s['seconds']:.2f} | {ratio:.3f} | {1 / ratio:.1f}× | {cells} | {s['along_px'][0]:.2f} ± {s['along_px'][1]:.2f} | "
              f"{'yes' if equal[name] else 'no'} | {'yes' if joint[name] else 'no'} |")
    print()
    for label, verdict in (("ref SE", equal), ("joint SE", joint)):
        fastest = min((n for n in summary if verdict[n]), key=lambda n: summary[n]["seconds"])
        print(f"fastest at equal quality ({label}): {fastest}: {summary[fastest]['seconds'] / ref['seconds']:.3f} "
              f"of the reference's time")
    plain = {}
    for n in summary:
        prefixes = [b for b in summary if b != n and n.startswith(b + " +")]
        if prefixes:
            plain[n] = max(prefixes, key=len)
    for name, base_name in plain.items():
        if base_name in summary:
            gain = summary[base_name]["seconds"] / summary[name]["seconds"]
            print(f"{name}: {gain:.2f}× faster than {base_name} (equal quality to the reference, ref SE / joint SE: "
                  f"{'yes' if equal[name] else 'no'} / {'yes' if joint[name] else 'no'})")


def breakdown(args) -> None:
    """Where a render of one configuration spends its time, and the most that step caching and
    token merging could take off it: the same renders with every cacheable step cached (interval
    beyond the schedule: each call runs whole once, then reuses) and with 90 % of the tokens
    merged. No quality is measured: these are bounds, whatever they cost."""
    from collections import defaultdict

    from diffusers.models.attention_processor import Attention

    from zeroshot.generate import generate
    from zeroshot.models import load
    from zeroshot.shapes.world import distinct_captions

    v2 = args.world == "v2"
    if args.model == "mid":  # the random SD-topology model (time only)
        import tempfile

        from zeroshot.testing import build_sd_folder

        model = load(str(build_sd_folder(tempfile.mkdtemp(), "mid", seed=0)))
    else:
        model = load(args.model or ("shapes-v2" if v2 else "shapes"))
    known = configs()
    if args.breakdown not in known or known[args.breakdown] is None:
        raise SystemExit(f"--breakdown: unknown zeroshot configuration {args.breakdown!r}; valid: "
                         f"{', '.join(n for n, r in known.items() if r is not None)}")
    base = replace(known[args.breakdown], num_frames=args.frames)
    if args.size:
        base = replace(base, height=args.size, width=args.size)
    prompts = distinct_captions(args.videos, args.prompt_seed, world=args.world)
    never = 10**6  # an interval no schedule reaches
    guided_until = base.guidance_interval.end if base.guidance_interval is not None else 0.0
    late = f"after the first {guided_until:.0%}"
    bounds = {
        args.breakdown: base,
        "+ every step cached (bound)": replace(base, step_cache=StepCache(interval=never)),
        f"+ every step {late} cached (bound)": replace(base, step_cache=StepCache(interval=never, start=guided_until)),
        "+ token merge 0.9 (bound)": replace(base, token_merge=TokenMerge(ratio=0.9)),
        "+ every step cached + token merge 0.9 (bound)": replace(base, step_cache=StepCache(interval=never),
                                                                  token_merge=TokenMerge(ratio=0.9)),
        f"+ cache interval 2 {late}": replace(base, step_cache=StepCache(interval=2, start=guided_until)),
        "+ token merge 0.5": replace(base, token_merge=TokenMerge(ratio=0.5)),
        f"+ token merge 0.5 + cache interval 2 {late}": replace(
            base, token_merge=TokenMerge(ratio=0.5), step_cache=StepCache(interval=2, start=guided_until)),
    }

    # 1. the parts of the plain render, timed by hooks (a pass of its own: hooks cost time)
    parts: dict[str, float] = defaultdict(float)
    started: dict[int, float] = {}

    def begin(module, *_):
        started[id(module)] = time.perf_counter()

    def timed(label):
        def end(module, args_, kwargs, out):
            sample = args_[0] if args_ else next(iter(kwargs.values()))
            parts[label(sample)] += time.perf_counter() - started.pop(id(module))
        return end

    unet = model.unet
    handles = [unet.register_forward_pre_hook(begin, with_kwargs=True),
               unet.register_forward_hook(timed(lambda x: f"UNet calls of {x.shape[0]} sample(s)"), with_kwargs=True)]
    for module in unet.modules():
        if isinstance(module, Attention):
            handles += [module.register_forward_pre_hook(begin, with_kwargs=True),
                        module.register_forward_hook(timed(lambda x: "  of which attention layers"), with_kwargs=True)]
    handles += [model.text_encoder.register_forward_pre_hook(begin, with_kwargs=True),
                model.text_encoder.register_forward_hook(timed(lambda x: "text encoder"), with_kwargs=True)]
    decode = model.vae.decode

    def timed_decode(*a, **k):
        start = time.perf_counter()
        out = decode(*a, **k)
        parts["VAE decode"] += time.perf_counter() - start
        return out

    model.vae.decode = timed_decode
    total = 0.0
    try:
        generate(model, prompts[0], base, seed=0, progress=False)
        parts.clear()
        for i, prompt in enumerate(prompts):
            start = time.perf_counter()
            generate(model, prompt, base, seed=i, progress=False)
            total += time.perf_counter() - start
    finally:
        for handle in handles:
            handle.remove()
        del model.vae.decode
    unet_total = sum(v for k, v in parts.items() if k.startswith("UNet"))
    print(f"{model.model_id}, {args.breakdown}, {args.videos} videos x {args.frames} frames at {args.size or 'its size'}, "
          f"torch threads {torch.get_num_threads()}")
    print("| part | s/video | share of the render |")
    print("| --- | ---: | ---: |")
    rows = sorted(parts.items(), key=lambda kv: (not kv[0].startswith("UNet"), kv[0]))
    for label, sec in [*rows, ("everything else (scheduler, warp, hooks, latents)",
                                total - unet_total - parts["VAE decode"] - parts["text encoder"]), ("render", total)]:
        print(f"| {label} | {sec / len(prompts):.3f} | {sec / total:.2f} |")

    # 2. the bounds: renders with the most caching and merging (round-robin, no hooks)
    seconds = {name: 0.0 for name in bounds}
    for recipe in bounds.values():
        generate(model, prompts[0], recipe, seed=0, progress=False)
    for i, prompt in enumerate(prompts):
        for name, recipe in bounds.items():
            start = time.perf_counter()
            generate(model, prompt, recipe, seed=i, progress=False)
            seconds[name] += time.perf_counter() - start
    print()
    print(f"| caching and merging on top of {args.breakdown} | s/video | speed-up |")
    print("| --- | ---: | ---: |")
    for name, sec in seconds.items():
        print(f"| {name} | {sec / len(prompts):.3f} | {seconds[args.breakdown] / sec:.2f}× |")


def unet_only(args) -> None:
    """One UNet call (batch 2, CFG-sized) of the `mid` SD-topology model per size: plain, with
    token merging (ratio 0.5), and a cached step-cache call (branch 0)."""
    import tempfile

    from zeroshot import models
    from zeroshot.hooks import wrapped_processors
    from zeroshot.techniques.step_cache import step_cache
    from zeroshot.techniques.token_merge import TokenMergeProcessor
    from zeroshot.testing import build_sd_folder

    model = models.load(str(build_sd_folder(tempfile.mkdtemp(), "mid", seed=0)))
    unet = model.unet
    print("| px | latent tokens (level 0) | plain s | token merge 0.5 s | × plain | cached step s | × plain |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for px in args.px:
        h = px // model.vae_scale_factor
        x = torch.randn(2, 4, h, h, generator=torch.Generator().manual_seed(0))
        e = torch.randn(2, 77, unet.config.cross_attention_dim, generator=torch.Generator().manual_seed(1))

        def best(fn, repeats=args.repeats):
            fn()
            times = []
            for _ in range(repeats):
                t = time.perf_counter()
                fn()
                times.append(time.perf_counter() - t)
            return min(times)

        with torch.no_grad():
            plain = best(lambda: unet(x, 500, encoder_hidden_states=e))
            names = set(model.attention_layers("spatial_self"))

            def wrap(name, p):
                return TokenMergeProcessor(p, ratio=0.5, stride=2, max_downsample=1, latent_hw=(h, h))

            with wrapped_processors(unet, names.__contains__, wrap):
                merged = best(lambda: unet(x, 500, encoder_hidden_states=e))
            with step_cache(unet, interval=1000) as state:
                state.begin_step(0)
                unet(x, 500, encoder_hidden_states=e)  # the full step that keeps the feature

                def cached_call():
                    state.begin_step(1)
                    unet(x, 500, encoder_hidden_states=e)

                cached = best(cached_call)
        print(f"| {px} | {h * h} | {plain:.3f} | {merged:.3f} | {plain / merged:.2f}× | {cached:.3f} | "
              f"{plain / cached:.2f}× |", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--videos", type=int, default=8)
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--model", default=None,
                    help="model folder or embedded name (default: shapes, the v1 model docs/speed.md measured; shapes-v2 with --world v2); "
                         "with --breakdown also 'mid', the random SD-topology model (times only)")
    ap.add_argument("--world", choices=("v1", "v2"), default="v1", help="v2: patterned captions, background kept as a quality column")
    ap.add_argument("--configs", nargs="+", default=None, help="a subset of the configurations (the reference always runs)")
    ap.add_argument("--prompt-seed", type=int, default=1234)
    ap.add_argument("--vae", default="vae_tiny", help="the VAE of the '+tinyvae' configurations (a folder, or a name in the model's)")
    ap.add_argument("--json", default=None, help="write every video's metrics and the times here")
    ap.add_argument("--unet-only", action="store_true", help="time single UNet calls of the mid model instead")
    ap.add_argument("--breakdown", default=None, metavar="CONFIG",
                    help="time the parts of this configuration's render and the most caching and merging could save")
    ap.add_argument("--size", type=int, default=None, help="--breakdown: render at this many pixels a side")
    ap.add_argument("--px", type=int, nargs="+", default=[256, 512])
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(1)
    if args.unet_only:
        unet_only(args)
    elif args.breakdown:
        breakdown(args)
    else:
        run(args)


if __name__ == "__main__":
    main()
