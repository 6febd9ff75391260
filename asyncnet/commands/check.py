"""``asyncnet check NET``: static checks, inferred shapes and a device summary, without running."""

from __future__ import annotations

import argparse
import sys

import numpy as np

from asyncnet.checker import check_net
from asyncnet.commands._common import parse_shape_specs
from asyncnet.schema import TensorInfo
from asyncnet.serde import read_net


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "check",
        help="check a net statically: schemas, undefined blobs, unused outputs, shapes, devices",
        description="Exit status 1 when the net has errors, 0 when it has only warnings (listed).",
    )
    p.add_argument("net", help="NetDef file (.pb or .pbtxt)")
    p.add_argument("--init", metavar="INIT_NET", help="parameter net run before NET (its outputs count as inputs)")
    p.add_argument(
        "--input-shape",
        action="append",
        default=[],
        type=_shape_spec,
        metavar="NAME=D0,D1,...",
        help="shape of an input blob (float32); repeatable",
    )
    p.add_argument("--value-info", metavar="JSON", help="model-zoo value_info.json giving input dtypes and shapes")
    p.set_defaults(func=run)


def _shape_spec(text: str) -> tuple[str, tuple[int, ...]]:
    # Parsed by argparse so that a malformed spec is a usage error (exit 2), not a traceback.
    ((name, shape),) = parse_shape_specs([text]).items()
    return name, shape


def run(args: argparse.Namespace) -> int:
    net = read_net(args.net)
    init = read_net(args.init) if args.init else None
    inputs: dict[str, TensorInfo] = {}
    if args.value_info:
        from asyncnet.shapes import read_value_info

        inputs.update(read_value_info(args.value_info))
    for name, shape in args.input_shape:
        inputs[name] = TensorInfo(shape, np.dtype(np.float32))
    report = check_net(net, inputs=inputs, init_net=init)
    if not report.net_name:
        report.net_name = args.net
    sys.stdout.write("\n".join(report.lines()) + "\n")
    return 0 if report.ok else 1
