"""`zeroshot generate PROMPT [flags]` and `zeroshot methods`.

Every generate flag maps onto a `Recipe` field (the same ones presets and `--set a.b=v`
reach); the inputs are checked against the model's JSON files before any weights load.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from zeroshot.cli.common import CliError, add_model_flags, float_arg, int_arg, model_spec, pair_arg


def add_generate_parser(subparsers) -> argparse.ArgumentParser:
    """Register `zeroshot generate` on an argparse subparsers object."""
    p = subparsers.add_parser("generate", help="generate a video from a prompt")
    p.add_argument("prompt")
    p.add_argument("--method", default=None,
                   help="a method from `zeroshot methods` (default: the model's natural one, t2v-zero for image models)")
    add_model_flags(p)
    p.add_argument("--image", metavar="PATH", help="input image: frame 0 of image-to-video models (svd), or on "
                   "sd/sdxl/animatediff frame 0 of t2v-zero's motion, or held as frame 0 for motion modules (a flow "
                   "adapter) or cross-frame attention (resized to the output size)")
    p.add_argument("--frames", type=int_arg, dest="num_frames")
    p.add_argument("--steps", type=int_arg, dest="num_inference_steps")
    p.add_argument("--guidance", type=float_arg, dest="guidance_scale")
    p.add_argument("--height", type=int_arg)
    p.add_argument("--width", type=int_arg)
    p.add_argument("--negative-prompt", default=None)
    p.add_argument("--eta", type=float_arg)
    p.add_argument("--scheduler", default=None)
    p.add_argument("--seed", type=int_arg, default=0)
    p.add_argument("--num-videos", type=int_arg, default=1)
    p.add_argument("--motion", type=pair_arg, metavar="DX,DY", help="translation in output px/frame (+x right, +y down)")
    p.add_argument("--zoom", type=float_arg, help="scale factor per frame")
    p.add_argument("--rotate", type=float_arg, help="degrees per frame")
    p.add_argument("--path", dest="motion_path", help="keyframed camera path (TOML)")
    p.add_argument("--trajectory", action="append", default=[], metavar="'X,Y X,Y[@FRAME] ... [r=R] [mask=IMG]'",
                   help="a polyline over the frames in output px (points spread evenly, or pinned with @FRAME), "
                        "optionally dragging a disk (r=) or mask region; 'X0,Y0->X1,Y1' is a drag (repeatable)")
    p.add_argument("--still", dest="motion_still", metavar="MASK|rest",
                   help="with --trajectory: pixels that stay still (white in a mask image), or 'rest' (all but the dragged regions)")
    p.add_argument("--motion-from", help="transfer the motion of a reference video")
    p.add_argument("--smooth-bg", nargs="?", const=0.6, type=float_arg, metavar="STRENGTH",
                   help="Text2Video-Zero background smoothing (default strength 0.6)")
    p.add_argument("--noise", help="noise prior: iid, mixed, progressive, videofusion, freenoise, flow-warped "
                   "(follows the motion request; with --set motion.dynamics=off instead of T2V-Zero's warp)")
    p.add_argument("--prompt-at", action="append", default=[], metavar="FRAME:PROMPT",
                   help="prompt travel: a prompt pinned to a frame (repeatable); text interpolated between")
    p.add_argument("--chunk", type=int_arg, metavar="N", help="frames per UNet call (memory flat in length)")
    p.add_argument("--step-cache", type=int_arg, metavar="N",
                   help="DeepCache-style step caching: the whole UNet runs every N steps, the steps between "
                        "reuse its deep features (UNet models; 1 = off; docs/speed.md)")
    p.add_argument("--token-merge", type=float_arg, metavar="R",
                   help="token merging (ToMe for SD): spatial self-attention on R fewer tokens, 0 <= R < 1 "
                        "(0 = off; docs/speed.md)")
    p.add_argument("--noise-alpha", type=float_arg)
    p.add_argument("--degradation", type=float_arg, metavar="D",
                   help="--noise flow-warped: share of fresh noise blended in, 0..1 (default 0)")
    p.add_argument("--freeinit", type=int_arg, metavar="N", help="FreeInit iterations")
    p.add_argument("--motion-adapter", help="AnimateDiff MotionAdapter folder or file")
    p.add_argument("--flow-adapter", metavar="PATH",
                   help="a trained flow adapter (.safetensors) for AnimateDiff: follows the motion flags "
                        "(python -m zeroshot.trained.train_flow); a name not found here is looked up in the "
                        "model's folder (shapes-v2 ships flow_adapter.safetensors)")
    add_control_flags(p)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override any recipe field")
    p.add_argument("--out", default=None, help="output .mp4/.gif/.png (folder of frames); default out/<stem>.mp4")
    p.add_argument("--fps", type=float_arg, default=8.0)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run_generate)
    return p


def add_control_flags(p: argparse.ArgumentParser) -> None:
    """--controlnet, --control, --control-resize, --canny-thresholds (recipe.controlnet)."""
    p.add_argument("--controlnet", action="append", default=[], metavar="PATH[:SCALE]",
                   help="a ControlNet folder or .safetensors file and its conditioning scale (repeatable)")
    p.add_argument("--control", action="append", default=[], metavar="KIND:VIDEO",
                   help="the control video of each --controlnet, in order: canny:clip.mp4 (edges computed), "
                        "depth:/pose:/map:maps.mp4 (ready-made maps) (repeatable)")
    p.add_argument("--control-resize", action="store_true",
                   help="resample control videos whose frame count or size differs from the request")
    p.add_argument("--canny-thresholds", type=pair_arg, metavar="LOW,HIGH", help="Canny thresholds (default 100,200)")


def control_overrides(args: argparse.Namespace) -> dict:
    """Recipe key -> value of the ControlNet flags (None where not given)."""
    from zeroshot.techniques.controlnet import parse_controlnet_arg

    nets = [parse_controlnet_arg(text) for text in args.controlnet]
    scales = [1.0 if s is None else s for _, s in nets] if any(s is not None for _, s in nets) else None
    low, high = args.canny_thresholds or (None, None)
    return {
        "controlnet.models": [path for path, _ in nets] or None,
        "controlnet.scales": scales,
        "controlnet.signals": args.control or None,
        "controlnet.resize": True if args.control_resize else None,
        "controlnet.low_threshold": low,
        "controlnet.high_threshold": high,
    }


def add_methods_parser(subparsers) -> argparse.ArgumentParser:
    """Register `zeroshot methods` on an argparse subparsers object."""
    p = subparsers.add_parser("methods", help="list the registered methods")
    p.set_defaults(func=run_methods)
    return p


def _flag_overrides(args: argparse.Namespace) -> dict:
    """Recipe key -> value of every generate flag (None where the flag was not given)."""
    return {
        "image": args.image,
        "num_frames": args.num_frames,
        "num_inference_steps": args.num_inference_steps,
        "guidance_scale": args.guidance_scale,
        "height": args.height,
        "width": args.width,
        "negative_prompt": args.negative_prompt,
        "eta": args.eta,
        "scheduler": args.scheduler,
        "noise.prior": args.noise,
        "prompt_at": args.prompt_at or None,
        "chunks.size": args.chunk,
        "step_cache.interval": args.step_cache,
        "token_merge.ratio": args.token_merge,
        "noise.alpha": args.noise_alpha,
        "freeinit.iterations": args.freeinit,
        "smoothing.strength": args.smooth_bg,
        "animatediff.adapter": args.motion_adapter,
        "animatediff.flow_adapter": args.flow_adapter,
        "motion.translate": list(args.motion) if args.motion else None,
        "motion.zoom": args.zoom,
        "motion.rotate": args.rotate,
        "motion.path": args.motion_path,
        "motion.trajectories": args.trajectory or None,
        "motion.still": args.motion_still,
        "noise.degradation": args.degradation,
        "motion.from_video": args.motion_from,
        **control_overrides(args),
    }


def build_recipe(args: argparse.Namespace, family=None):
    """The recipe that the generate flags describe (method, then flags, then --set).

    Without --method, the model family's natural method (`recipe.natural_method`); for image
    models with --controlnet or --control (the model's own ControlNet), `controlnet`."""
    from zeroshot.families import SD
    from zeroshot.recipe import apply_override, get_method, natural_method, parse_override

    method = args.method or natural_method(family or SD)
    if (args.controlnet or args.control) and args.method is None and method == "t2v-zero":
        method = "controlnet"  # Text2Video-Zero's recipe for conditioned video: no warp, one shared latent
    recipe = get_method(method)
    for key, value in _flag_overrides(args).items():
        if value is not None:
            recipe = apply_override(recipe, key, value)
    if recipe.motion is not None and (args.motion_path or args.trajectory or args.motion_from) and not args.motion:
        recipe = apply_override(recipe, "motion.translate", [0.0, 0.0])
    for text in args.set:
        key, value = parse_override(text)
        recipe = apply_override(recipe, key, value)
    return recipe


def check_speed_flags(args: argparse.Namespace) -> None:
    """One line for a bad --step-cache or --token-merge (before any model work)."""
    if args.step_cache is not None and args.step_cache < 1:
        raise CliError(f"--step-cache must be an interval of >= 1 steps (1 = off), got {args.step_cache}")
    if args.token_merge is not None and not 0.0 <= args.token_merge < 1.0:
        raise CliError(f"--token-merge must be a ratio in [0, 1) (0 = off), got {args.token_merge:g}")


def run_generate(args: argparse.Namespace) -> int:
    """Run `zeroshot generate`: check every input, then load the model, generate and save."""
    from zeroshot import io, models
    from zeroshot.generate import decode_chunks, generate, prepare_recipe

    spec = model_spec(args)
    spec.check()
    card = models.peek(args.model)
    recipe = build_recipe(args, card.family_class)
    if args.out is not None:
        io.check_output_path(args.out)
    if args.num_videos < 1:
        raise CliError(f"--num-videos must be >= 1, got {args.num_videos}")
    check_speed_flags(args)
    # Check the recipe against the model's defaults and family before loading weights.
    resolved = prepare_recipe(card, recipe, args.prompt)
    out = Path(args.out) if args.out else Path("out") / f"{io.output_stem(args.prompt, args.seed, resolved)}.mp4"
    io.check_output_path(out)

    model = spec.load()
    # frames are decoded as they are written: the decoded video is never held whole
    result = generate(model, args.prompt, recipe, seed=args.seed, num_videos=args.num_videos,
                      progress=not args.quiet, decode=False)
    for path in io.save_result(result, out, fps=args.fps, chunks=decode_chunks(model, result.latents, result.recipe)):
        print(path)
    return 0


def run_methods(args: argparse.Namespace) -> int:
    """Run `zeroshot methods`: one line per registered method."""
    from zeroshot.recipe import DESCRIPTIONS, METHODS

    for name in METHODS:
        print(f"{name:20s} {DESCRIPTIONS[name]}")
    return 0


__all__ = [
    "add_control_flags",
    "add_generate_parser",
    "add_methods_parser",
    "build_recipe",
    "check_speed_flags",
    "control_overrides",
    "run_generate",
    "run_methods",
]
