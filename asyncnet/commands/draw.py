"""``asyncnet draw NET -o net.svg``: draw a net's operators and blobs."""

from __future__ import annotations

import argparse
import sys

from asyncnet.draw import COLOR_MODES, draw
from asyncnet.serde import read_net


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "draw",
        help="draw a net as .svg, .png or .dot",
        description="Operators (boxes) and blobs (ellipses) as a graph. .dot is written directly; .svg uses "
        "graphviz's dot when installed, else a built-in layout; .png needs graphviz.",
    )
    p.add_argument("net", help="NetDef (.pb or .pbtxt)")
    p.add_argument("-o", "--output", required=True, help="output file: .svg, .png or .dot")
    p.add_argument("--collapse-blobs", action="store_true", help="op-to-op edges only")
    p.add_argument("--color-by", choices=COLOR_MODES, help="color ops by device or by executor pool")
    p.add_argument("--mark-chains", action="store_true", help="box the async executor's op chains")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    net = read_net(args.net)
    how = draw(
        net, args.output, collapse_blobs=args.collapse_blobs, color_by=args.color_by, mark_chains=args.mark_chains
    )
    sys.stdout.write(f"wrote {args.output} ({len(net.op)} ops, {how})\n")
    return 0
