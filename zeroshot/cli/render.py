"""`zeroshot render PRESET...` (batch renders, resumable) and `zeroshot show METHOD`.

The work is `zeroshot.render`; this module turns flags into its jobs and arguments and
its errors into one line on stderr.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from zeroshot import io
from zeroshot.cli.common import add_model_flags, error_line, model_spec, print_error
from zeroshot.recipe import METHODS, RecipeError
from zeroshot.render import EXECUTORS, Job, apply_overrides, check_jobs, load_preset, preset_recipe, render, show_method


def add_render_parser(subparsers) -> argparse.ArgumentParser:
    """`zeroshot render PRESET... [--out DIR] [--model PATH] [--set k=v]... [...]`."""
    p = subparsers.add_parser(
        "render",
        help="render batches of videos from preset files (resumable)",
        description="Render every job of the given presets. Finished jobs (video and record "
        "present and valid) are skipped, so the same command resumes an interrupted run.",
    )
    p.add_argument("presets", nargs="+", metavar="PRESET", help="preset TOML files")
    p.add_argument("--out", default="out/renders", metavar="DIR", help="output folder (default: out/renders)")
    add_model_flags(p)
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a recipe field in every job, e.g. --set num_inference_steps=20")
    p.add_argument("--prompt", dest="prompts", action="append", default=[], metavar="TEXT",
                   help="render these prompts with each preset's recipe instead of its [[jobs]]")
    p.add_argument("--seeds", default="0", metavar="LIST", help="seeds for --prompt, e.g. 0,1,2 (default: 0)")
    p.add_argument("--workers", type=int, default=1, metavar="N", help="model-holding workers (default: 1)")
    p.add_argument("--executor", choices=EXECUTORS, default="local", help="local processes or a Ray cluster")
    p.add_argument("--retries", type=int, default=0, metavar="K", help="retry a failing job K times (default: 0)")
    p.add_argument("--address", default=None, metavar="ADDR",
                   help="Ray cluster address (e.g. auto or HOST:6379; default: start a local instance)")
    p.add_argument("--format", dest="fmt", choices=io.VIDEO_FORMATS, default="mp4", help="video format")
    p.add_argument("--fps", type=float, default=8, help="frames per second (default: 8)")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    p.set_defaults(func=run_render)
    return p


def add_show_parser(subparsers) -> argparse.ArgumentParser:
    """`zeroshot show METHOD [--out FILE]`: a method's recipe as preset TOML."""
    p = subparsers.add_parser(
        "show", help="print a method's recipe as a preset (TOML)",
        description="Print a method's recipe as preset TOML, to start a preset from.",
    )
    p.add_argument("method", choices=sorted(METHODS), metavar="METHOD", help=f"one of {', '.join(sorted(METHODS))}")
    p.add_argument("--out", default=None, metavar="FILE", help="write to FILE instead of printing")
    p.set_defaults(func=run_show)
    return p


def parse_seeds(text: str) -> list[int]:
    """The seeds of `--seeds 0,1,2`; RecipeError (one line) for anything else."""
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise RecipeError(f"--seeds {text!r}: expected integers separated by commas, e.g. 0,1,2") from None
    if not seeds:
        raise RecipeError("--seeds: give at least one seed")
    return seeds


def jobs_from_args(args: argparse.Namespace) -> list[Job]:
    """The jobs a `render` command line asks for (presets, --prompt/--seeds, --set)."""
    jobs: list[Job] = []
    for preset in args.presets:
        if args.prompts:
            recipe = preset_recipe(preset)
            jobs.extend(Job(p, s, recipe) for p in args.prompts for s in parse_seeds(args.seeds))
        else:
            found = load_preset(preset)
            if not found:
                raise RecipeError(f"{preset}: no [[jobs]]; add some or pass --prompt TEXT")
            jobs.extend(found)
    return apply_overrides(jobs, args.overrides)


def run_render(args: argparse.Namespace) -> int:
    """Run `zeroshot render`; 0 when every job is done, 1 when some failed, 2 on bad input."""
    try:
        if args.workers < 1:
            raise ValueError(f"--workers must be >= 1, got {args.workers}")
        if args.retries < 0:
            raise ValueError(f"--retries must be >= 0, got {args.retries}")
        jobs = jobs_from_args(args)
        spec = model_spec(args)
        spec.check()
        io.check_output_path(Path(args.out) / f"probe.{args.fmt}")
        check_jobs(jobs, args.model)
        report = render(
            jobs, args.out, model=spec, workers=args.workers, executor=args.executor,
            retries=args.retries, address=args.address, progress=args.progress, fps=args.fps, fmt=args.fmt,
        )
    except ValueError as exc:  # RecipeError and ModelError are ValueErrors
        return print_error(error_line(exc))
    print(report.summary())
    return 0 if report.ok else 1


def run_show(args: argparse.Namespace) -> int:
    """Run `zeroshot show`: the recipe on stdout, or written to --out."""
    text = show_method(args.method)
    if args.out is None:
        sys.stdout.write(text)
        return 0
    try:
        io.write_bytes_atomic(args.out, text.encode())
    except OSError as exc:
        return print_error(f"cannot write {args.out}: {exc.strerror}")
    return 0


__all__ = ["add_render_parser", "add_show_parser", "jobs_from_args", "parse_seeds", "run_render",
           "run_show"]
