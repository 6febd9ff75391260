"""The ``asyncnet`` command. Each subcommand lives in a module of asyncnet.commands.

A subcommand module defines ``register(subparsers)``, which adds its parser and
sets ``func`` (taking the parsed namespace, returning an exit status).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import pkgutil
import sys
import traceback
from collections.abc import Sequence

import asyncnet.commands
from asyncnet.errors import AsyncNetError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="asyncnet",
        description="Run, inspect, check and convert Caffe2-style nets.",
    )
    parser.add_argument("--debug", action="store_true", help="show Python tracebacks on errors")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for mod in sorted(m.name for m in pkgutil.iter_modules(asyncnet.commands.__path__)):
        if not mod.startswith("_"):
            importlib.import_module(f"asyncnet.commands.{mod}").register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status (0 ok, 1 error, 2 usage)."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(args_list)
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    try:
        status = args.func(args)
    except KeyboardInterrupt:
        sys.stderr.write("asyncnet: interrupted\n")
        return 130
    except (AsyncNetError, OSError) as e:
        if args.debug:
            traceback.print_exc()
        sys.stderr.write(f"asyncnet {args.command}: error: {_describe(e)}\n")
        return 1
    return int(status or 0)


def _describe(e: BaseException) -> str:
    if isinstance(e, OSError) and not isinstance(e, AsyncNetError):
        name = f"{e.filename}: " if e.filename else ""
        return f"{name}{e.strerror or e}"
    return str(e)


if __name__ == "__main__":
    raise SystemExit(main())
