"""``asyncnet ops [NAME]``: the operator catalogue."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from asyncnet.opdocs import describe_op, list_ops, operators_markdown
from asyncnet.registry import default_registry
from asyncnet.serde import atomic_write_bytes


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("ops", help="list registered operators, or show one operator's schema")
    p.add_argument("name", nargs="?", help="an operator type to describe (e.g. Conv)")
    p.add_argument("--markdown", action="store_true", help="print the full Markdown catalogue (docs/operators.md)")
    p.add_argument("-o", "--output", help="write the output to this file instead of stdout")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    reg = default_registry()
    if args.markdown:
        if args.name:
            sys.stderr.write("asyncnet ops: error: --markdown takes no operator name\n")
            return 2
        text = operators_markdown(reg)
    elif args.name:
        text = "\n".join(describe_op(args.name, reg)) + "\n"
    else:
        lines = list_ops(reg)
        text = "\n".join(lines) + f"\n{len(lines)} operator types\n"
    if args.output:
        atomic_write_bytes(Path(args.output), text.encode("utf-8"))
    else:
        sys.stdout.write(text)
    return 0
