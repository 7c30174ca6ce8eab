"""What every `zeroshot` subcommand shares: the parser class, flag types, model flags, errors.

Bad input is one line on stderr, `zeroshot: error: ...`, and exit code `EXIT_USAGE` (2).
"""

from __future__ import annotations

import argparse
import math
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from zeroshot.models import ModelSpec

EXIT_USAGE = 2


class CliError(ValueError):
    """A user error found by the CLI itself."""


class Parser(argparse.ArgumentParser):
    """argparse that reports errors as one line and exit code 2."""

    def error(self, message: str):  # noqa: D401 - argparse API
        self.exit(EXIT_USAGE, f"zeroshot: error: {message}\n")


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message ('' when it has none)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else ""


def error_line(exc: BaseException) -> str:
    """The first line of an exception's message, or its type's name when it has none."""
    return first_line(exc) or type(exc).__name__


def print_error(message: str, prefix: str = "zeroshot") -> int:
    """Print `<prefix>: error: <message>` on stderr; returns `EXIT_USAGE`."""
    print(f"{prefix}: error: {message}", file=sys.stderr)
    return EXIT_USAGE


def float_arg(text: str) -> float:
    """A finite number."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def int_arg(text: str) -> int:
    """An integer."""
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None


def pair_arg(text: str) -> tuple[float, float]:
    """`DX,DY`: two finite numbers."""
    parts = text.split(",")
    if len(parts) != 2:
        raise argparse.ArgumentTypeError(f"expected DX,DY (two numbers), got {text!r}")
    return float_arg(parts[0]), float_arg(parts[1])


def add_model_flags(p: argparse.ArgumentParser) -> None:
    """--model, --model-config, --allow-pickle, --lora, --device, --dtype, --offload, --vae-tiling, --vae."""
    p.add_argument("--model", default=None, help="diffusers folder (sd, sdxl, animatediff, unet3d, svd, cogvideox, wan), embedded name (shapes, shapes-v2), "
                   ".safetensors file or hub id (default: shapes-v2)")
    p.add_argument("--model-config", default=None, help="local diffusers folder with configs for a single file")
    p.add_argument("--allow-pickle", action="store_true", help="allow .ckpt/.bin pickle checkpoints")
    p.add_argument("--lora", action="append", default=[], metavar="FILE[:SCALE]",
                   help="merge a LoRA .safetensors (diffusers/PEFT, kohya or zeroshot layout) (repeatable)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1, mps (default: cuda if available)")
    p.add_argument("--dtype", choices=("float32", "float16", "bfloat16"), default=None)
    p.add_argument("--offload", action="store_true",
                   help="model CPU offload: components wait in CPU memory and move to the GPU while they run")
    p.add_argument("--vae-tiling", action="store_true", help="decode in overlapping tiles (VAE memory flat in frame size)")
    p.add_argument("--vae", default=None, metavar="FOLDER",
                   help="decode with this VAE instead: a diffusers AutoencoderKL or AutoencoderTiny (TAESD) folder, or a "
                        "name in the model's folder (shapes-v2: vae_tiny)")


def model_spec(args: argparse.Namespace) -> ModelSpec:
    """The `ModelSpec` of the model flags shared by `generate` and `render`."""
    from zeroshot.models import ModelSpec
    from zeroshot.trained.lora import parse_lora_arg

    loras = tuple((str(path), scale) for path, scale in map(parse_lora_arg, args.lora))
    return ModelSpec(args.model, allow_pickle=args.allow_pickle, config=args.model_config, dtype=args.dtype,
                     device=args.device, loras=loras, offload=args.offload, vae_tiling=args.vae_tiling,
                     vae=args.vae)


__all__ = [
    "EXIT_USAGE",
    "CliError",
    "Parser",
    "add_model_flags",
    "error_line",
    "first_line",
    "float_arg",
    "int_arg",
    "model_spec",
    "pair_arg",
    "print_error",
]
