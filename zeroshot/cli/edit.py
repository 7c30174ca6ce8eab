"""`zeroshot edit VIDEO PROMPT [flags]`: video-to-video.

The input video is encoded, re-noised to `--strength` and denoised with cross-frame
attention (method `edit`, `zeroshot.techniques.edit`), optionally with ControlNets; with
`--controlnet` and no `--control`, the ControlNet follows the Canny edges of the input. An
instruct-pix2pix model (`--method pix2pix`, its default) follows the prompt as an instruction,
every frame conditioned on its input frame (`zeroshot.families.pix2pix`). The output has the
input's frame count and size. Flags map onto `Recipe` fields as `generate`'s do.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from zeroshot.cli.common import add_model_flags, float_arg, int_arg, model_spec
from zeroshot.cli.generate import add_control_flags, control_overrides


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register `zeroshot edit` on an argparse subparsers object."""
    p = subparsers.add_parser("edit", help="edit a video with a prompt (video-to-video)")
    p.add_argument("video", help="the input video (.mp4, .gif or a folder of numbered PNGs)")
    p.add_argument("prompt")
    p.add_argument("--method", default=None,
                   help="edit (re-noise to --strength; the default) or pix2pix (an instruct-pix2pix model's edit; "
                        "the default for such models)")
    add_model_flags(p)
    p.add_argument("--strength", type=float_arg, help="how much of the schedule re-draws the input, 0..1 (default 0.6)")
    p.add_argument("--steps", type=int_arg, dest="num_inference_steps")
    p.add_argument("--guidance", type=float_arg, dest="guidance_scale")
    p.add_argument("--image-guidance", type=float_arg, dest="image_guidance_scale",
                   help="pix2pix: how closely the edit keeps the input frames (default 1.5)")
    p.add_argument("--negative-prompt", default=None)
    p.add_argument("--scheduler", default=None)
    p.add_argument("--noise", help="noise prior of the re-noising (default: one noise shared by all frames; iid: per frame)")
    p.add_argument("--seed", type=int_arg, default=0)
    add_control_flags(p)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override any recipe field")
    p.add_argument("--out", default=None, help="output .mp4/.gif/.png (folder of frames); default out/<stem>.mp4")
    p.add_argument("--fps", type=float_arg, default=8.0)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run_edit)
    return p


def edit_method(family) -> str:
    """The method of `zeroshot edit` without --method: a video-conditioned model's own
    (pix2pix), else the SDEdit `edit`."""
    from zeroshot.families.base import takes_video
    from zeroshot.recipe import natural_method

    return natural_method(family) if family is not None and takes_video(family) else "edit"


def build_recipe(args: argparse.Namespace, frames, family=None):
    """The recipe of an edit: the method (`edit_method(family)` unless given), the input's frame
    count and size, then flags, then --set."""
    from zeroshot.recipe import apply_override, get_method, parse_override

    f, _, h, w = frames.shape
    recipe = get_method(args.method or edit_method(family))
    control = control_overrides(args)
    if args.controlnet and not args.control:
        control["controlnet.signals"] = [f"canny:{args.video}"] * len(args.controlnet)
    flags = {
        "video": args.video,
        "num_frames": f,
        "height": h,
        "width": w,
        "edit.strength": args.strength,
        "pix2pix.image_guidance_scale": args.image_guidance_scale,
        "num_inference_steps": args.num_inference_steps,
        "guidance_scale": args.guidance_scale,
        "negative_prompt": args.negative_prompt,
        "scheduler": args.scheduler,
        "noise.prior": args.noise,
        **control,
    }
    for key, value in flags.items():
        if value is not None:
            recipe = apply_override(recipe, key, value)
    for text in args.set:
        recipe = apply_override(recipe, *parse_override(text))
    return recipe


def run_edit(args: argparse.Namespace) -> int:
    """Run `zeroshot edit`: check every input, then load the model, edit and save."""
    from zeroshot import io, models
    from zeroshot.control import read_input_video
    from zeroshot.generate import decode_chunks, generate, prepare_recipe

    frames = read_input_video(args.video, "video")
    spec = model_spec(args)
    spec.check()
    card = models.peek(args.model)
    recipe = build_recipe(args, frames, card.family_class)
    if args.out is not None:
        io.check_output_path(args.out)
    resolved = prepare_recipe(card, recipe, args.prompt)
    out = Path(args.out) if args.out else Path("out") / f"{io.output_stem(args.prompt, args.seed, resolved)}.mp4"
    io.check_output_path(out)

    model = spec.load()
    # frames are decoded as they are written, as generate's are
    result = generate(model, args.prompt, recipe, seed=args.seed, progress=not args.quiet, decode=False)
    for path in io.save_result(result, out, fps=args.fps, chunks=decode_chunks(model, result.latents, result.recipe)):
        print(path)
    return 0


__all__ = ["add_parser", "build_recipe", "edit_method", "run_edit"]
