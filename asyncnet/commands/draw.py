"""``asyncnet draw NET -o net.svg``: draw a net's operators and blobs (with shapes when known)."""

from __future__ import annotations

import argparse
import sys

from asyncnet.commands._shapes import (
    add_shape_arguments,
    check_names,
    param_infos,
    resolve_shapes,
    settle_placeholders,
)
from asyncnet.draw import COLOR_MODES, draw
from asyncnet.errors import AsyncNetError
from asyncnet.serde import read_net


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "draw",
        help="draw a net as .svg, .png or .dot",
        description="Operators (boxes) and blobs (ellipses) as a graph. .dot is written directly; .svg uses "
        "graphviz's dot when installed, else a built-in layout; .png needs graphviz. Blobs show their shapes "
        "when the input shapes are known (--input-shape, --value-info, value_info.json beside NET, --init).",
    )
    p.add_argument("net", help="NetDef (.pb or .pbtxt)")
    p.add_argument("-o", "--output", required=True, help="output file: .svg, .png or .dot")
    p.add_argument("--collapse-blobs", action="store_true", help="op-to-op edges only")
    p.add_argument("--color-by", choices=COLOR_MODES, help="color ops by device or by executor pool")
    p.add_argument("--mark-chains", action="store_true", help="box the async executor's op chains")
    p.add_argument("--init", metavar="INIT_NET", help="init net (its blobs' shapes label the parameters)")
    add_shape_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from asyncnet.shapes import infer_shapes

    net = read_net(args.net)
    init = read_net(args.init) if args.init else None
    given = resolve_shapes(
        args.net,
        input_specs=args.input_shape,
        value_info=args.value_info,
        param_specs=args.param_shape,
        param_file=args.param_shapes,
    )
    check_names(net, args.net, given)
    init = settle_placeholders(init, net, {n: f"shape {list(t.shape or ())}" for n, t in given.data.items()})
    shapes = None
    if given.data or given.params or init is not None:
        known = infer_shapes(init, {}).blobs if init is not None else {}
        try:
            shapes = infer_shapes(net, {**known, **param_infos(given.params), **given.data})
        except AsyncNetError as e:
            # A drawing is still useful without shapes; say why they are missing.
            sys.stderr.write(f"note: drawing without shapes: {e}\n")
    how = draw(
        net,
        args.output,
        collapse_blobs=args.collapse_blobs,
        color_by=args.color_by,
        mark_chains=args.mark_chains,
        shapes=shapes,
    )
    sys.stdout.write(f"wrote {args.output} ({len(net.op)} ops, {how}{', with shapes' if shapes else ''})\n")
    return 0
