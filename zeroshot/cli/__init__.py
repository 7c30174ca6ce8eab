"""Command line: `zeroshot generate | edit | methods | show | render | eval`.

Flags map onto the same `Recipe` fields as presets and `--set a.b=v`; the CLI adds no
behaviour of its own. Bad input is one line on stderr and exit code 2, checked before
any model work starts. Each subcommand lives in its own module (`generate`, `edit`, `render`,
`evaluate`) and registers itself with `set_defaults(func=...)`; `common` holds what they
share. The library modules never import this package.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from zeroshot.cli import edit, evaluate, generate, render
from zeroshot.cli.common import EXIT_USAGE, CliError, Parser, error_line, first_line, print_error

# Subcommands whose library advisories and loading bars stay quiet without -v.
QUIET_COMMANDS = ("generate", "edit", "render")


def build_parser() -> argparse.ArgumentParser:
    """The `zeroshot` parser with every subcommand."""
    from zeroshot import __version__

    parser = Parser(prog="zeroshot", description="Training-free video generation from text-to-image models.")
    parser.add_argument("--version", action="version", version=f"zeroshot {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    generate.add_generate_parser(sub)
    edit.add_parser(sub)
    generate.add_methods_parser(sub)
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
    """Run the command line; returns the exit code (argparse errors exit with code 2)."""
    args = build_parser().parse_args(argv)
    if not args.verbose and args.command in QUIET_COMMANDS:
        _quiet_libraries()
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING, format="%(message)s")
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("zeroshot: interrupted", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError, NotADirectoryError, PermissionError) as exc:
        return print_error(error_line(exc))
    except Exception as exc:  # noqa: BLE001 - the CLI prints one line, never a traceback
        if args.verbose:
            raise
        print(f"zeroshot: failed: {type(exc).__name__}: {first_line(exc)} (run with -v for details)", file=sys.stderr)
        return 1


__all__ = ["EXIT_USAGE", "CliError", "build_parser", "main"]
