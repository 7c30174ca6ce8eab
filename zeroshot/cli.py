"""Command line: `zeroshot generate | methods | show | render | eval`.

Flags map onto the same `Recipe` fields as presets and `--set a.b=v`; the CLI adds no
behaviour of its own. Bad input is one line on stderr and exit code 2, checked before
any model work starts.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from zeroshot.models import ModelSpec

EXIT_USAGE = 2


class CliError(ValueError):
    """A user error found by the CLI itself."""


def _float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None


def _pair(text: str) -> tuple[float, float]:
    parts = text.split(",")
    if len(parts) != 2:
        raise argparse.ArgumentTypeError(f"expected DX,DY (two numbers), got {text!r}")
    return _float(parts[0]), _float(parts[1])


class _Parser(argparse.ArgumentParser):
    """argparse that reports errors as one line and exit code 2."""

    def error(self, message: str):  # noqa: D401 - argparse API
        self.exit(EXIT_USAGE, f"zeroshot: error: {message}\n")


def _add_generate(sub) -> None:
    p = sub.add_parser("generate", help="generate a video from a prompt")
    p.add_argument("prompt")
    p.add_argument("--method", default=None,
                   help="a method from `zeroshot methods` (default: the model's natural one, t2v-zero for image models)")
    add_model_flags(p)
    p.add_argument("--frames", type=_int, dest="num_frames")
    p.add_argument("--steps", type=_int, dest="num_inference_steps")
    p.add_argument("--guidance", type=_float, dest="guidance_scale")
    p.add_argument("--height", type=_int)
    p.add_argument("--width", type=_int)
    p.add_argument("--negative-prompt", default=None)
    p.add_argument("--eta", type=_float)
    p.add_argument("--scheduler", default=None)
    p.add_argument("--seed", type=_int, default=0)
    p.add_argument("--num-videos", type=_int, default=1)
    p.add_argument("--motion", type=_pair, metavar="DX,DY", help="translation in output px/frame (+x right, +y down)")
    p.add_argument("--zoom", type=_float, help="scale factor per frame")
    p.add_argument("--rotate", type=_float, help="degrees per frame")
    p.add_argument("--path", dest="motion_path", help="keyframed camera path (TOML)")
    p.add_argument("--trajectory", action="append", default=[], metavar="X0,Y0->X1,Y1", help="sparse drag (repeatable)")
    p.add_argument("--motion-from", help="transfer the motion of a reference video")
    p.add_argument("--smooth-bg", nargs="?", const=0.6, type=_float, metavar="STRENGTH",
                   help="Text2Video-Zero background smoothing (default strength 0.6)")
    p.add_argument("--noise", help="noise prior: iid, mixed, progressive, videofusion, freenoise")
    p.add_argument("--noise-alpha", type=_float)
    p.add_argument("--freeinit", type=_int, metavar="N", help="FreeInit iterations")
    p.add_argument("--motion-adapter", help="AnimateDiff MotionAdapter folder or file")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override any recipe field")
    p.add_argument("--out", default=None, help="output .mp4/.gif/.png (folder of frames); default out/<stem>.mp4")
    p.add_argument("--fps", type=_float, default=8.0)
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def build_recipe(args, family=None):
    """The recipe that the generate flags describe (method, then flags, then --set).

    Without --method, the model family's natural method (`recipe.natural_method`)."""
    from zeroshot.families import SD
    from zeroshot.recipe import apply_override, get_method, natural_method, parse_override

    recipe = get_method(args.method or natural_method(family or SD))
    flags = {
        "num_frames": args.num_frames,
        "num_inference_steps": args.num_inference_steps,
        "guidance_scale": args.guidance_scale,
        "height": args.height,
        "width": args.width,
        "negative_prompt": args.negative_prompt,
        "eta": args.eta,
        "scheduler": args.scheduler,
        "noise.prior": args.noise,
        "noise.alpha": args.noise_alpha,
        "freeinit.iterations": args.freeinit,
        "smoothing.strength": args.smooth_bg,
        "animatediff.adapter": args.motion_adapter,
        "motion.translate": list(args.motion) if args.motion else None,
        "motion.zoom": args.zoom,
        "motion.rotate": args.rotate,
        "motion.path": args.motion_path,
        "motion.trajectories": args.trajectory or None,
        "motion.from_video": args.motion_from,
    }
    for key, value in flags.items():
        if value is not None:
            recipe = apply_override(recipe, key, value)
    if recipe.motion is not None and (args.motion_path or args.trajectory or args.motion_from) and not args.motion:
        recipe = apply_override(recipe, "motion.translate", [0.0, 0.0])
    for text in args.set:
        key, value = parse_override(text)
        recipe = apply_override(recipe, key, value)
    return recipe


def model_spec(args) -> ModelSpec:
    """The `ModelSpec` of the model flags shared by `generate` and `render`."""
    from zeroshot.models import ModelSpec
    from zeroshot.trained.lora import parse_lora_arg

    loras = tuple((str(path), scale) for path, scale in map(parse_lora_arg, args.lora))
    return ModelSpec(args.model, allow_pickle=args.allow_pickle, config=args.model_config, dtype=args.dtype,
                     device=args.device, loras=loras)


def add_model_flags(p: argparse.ArgumentParser) -> None:
    """--model, --model-config, --allow-pickle, --lora, --device, --dtype."""
    p.add_argument("--model", default=None, help="diffusers folder, .safetensors file or hub id (default: embedded)")
    p.add_argument("--model-config", default=None, help="local diffusers folder with configs for a single file")
    p.add_argument("--allow-pickle", action="store_true", help="allow .ckpt/.bin pickle checkpoints")
    p.add_argument("--lora", action="append", default=[], metavar="FILE[:SCALE]",
                   help="merge a zeroshot LoRA (.safetensors) into a copy of the UNet (repeatable)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1, mps (default: cuda if available)")
    p.add_argument("--dtype", choices=("float32", "float16", "bfloat16"), default=None)


def cmd_generate(args) -> int:
    from zeroshot import io, models
    from zeroshot.generate import generate, prepare_recipe

    spec = model_spec(args)
    spec.check()
    card = models.peek(args.model)
    recipe = build_recipe(args, card.family_class)
    if args.out is not None:
        io.check_output_path(args.out)
    if args.num_videos < 1:
        raise CliError(f"--num-videos must be >= 1, got {args.num_videos}")
    # Check the recipe against the model's defaults and family before loading weights.
    resolved = prepare_recipe(card, recipe, args.prompt)
    out = Path(args.out) if args.out else Path("out") / f"{io.output_stem(args.prompt, args.seed, resolved)}.mp4"
    io.check_output_path(out)

    model = spec.load()
    result = generate(model, args.prompt, recipe, seed=args.seed, num_videos=args.num_videos,
                      progress=not args.quiet)
    for path in io.save_result(result, out, fps=args.fps):
        print(path)
    return 0


def cmd_methods(args) -> int:
    from zeroshot.recipe import METHODS

    from zeroshot.recipe import DESCRIPTIONS

    for name in METHODS:
        print(f"{name:20s} {DESCRIPTIONS[name]}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from zeroshot import __version__

    parser = _Parser(prog="zeroshot", description="Training-free video generation from text-to-image models.")
    parser.add_argument("--version", action="version", version=f"zeroshot {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    _add_generate(sub)
    sub.add_parser("methods", help="list the registered methods")
    from zeroshot import evaluate, render

    render.add_show_parser(sub)
    render.add_render_parser(sub)
    evaluate.add_parser(sub)
    return parser


def _quiet_libraries() -> None:
    """Keep third-party advisories and loading bars off a CLI user's terminal (-v shows them)."""
    for key in ("TRANSFORMERS_VERBOSITY", "DIFFUSERS_VERBOSITY"):
        os.environ.setdefault(key, "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    from diffusers.utils import logging as diffusers_logging

    diffusers_logging.disable_progress_bar()


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.verbose and args.command in ("generate", "render"):
        _quiet_libraries()
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING, format="%(message)s")
    from zeroshot import evaluate, render

    commands = {
        "generate": cmd_generate,
        "methods": cmd_methods,
        "show": render.run_show,
        "render": render.run_render,
        "eval": evaluate.run,
    }
    try:
        return commands[args.command](args)
    except KeyboardInterrupt:
        print("zeroshot: interrupted", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError, NotADirectoryError, PermissionError) as exc:
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(f"zeroshot: error: {msg}", file=sys.stderr)
        return EXIT_USAGE
    except Exception as exc:  # noqa: BLE001 - the CLI prints one line, never a traceback
        if args.verbose:
            raise
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        print(f"zeroshot: failed: {type(exc).__name__}: {first} (run with -v for details)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
