"""``asyncnet to-onnx NET --init INIT -o model.onnx``: export a Caffe2 net to ONNX."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from asyncnet.commands._common import add_io_policy_args, io_policy_from_args, refuse_file_accesses
from asyncnet.commands._shapes import add_shape_arguments, check_names, resolve_shapes, settle_placeholders
from asyncnet.serde import atomic_write_bytes, read_net


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("to-onnx", help="export a NetDef (+ init net) to an ONNX model")
    p.add_argument("net", help="predict NetDef (.pb or .pbtxt)")
    p.add_argument("--init", metavar="INIT_NET", help="init net holding the parameters")
    p.add_argument("-o", "--output", required=True, metavar="MODEL.onnx", help="where to write the model")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset (11 to 21, default 17)")
    add_shape_arguments(p, params=False)
    add_io_policy_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from asyncnet.onnx import export_onnx

    predict = read_net(args.net)
    init = read_net(args.init) if args.init else None
    shapes = resolve_shapes(args.net, input_specs=args.input_shape, value_info=args.value_info)
    check_names(predict, args.net, shapes)
    init = settle_placeholders(init, predict, {n: f"shape {list(t.shape or ())}" for n, t in shapes.data.items()})
    policy = io_policy_from_args(args, args.net, args.init)
    refuse_file_accesses(policy, nets=(init,), what="the init net")
    model = export_onnx(predict, init, input_infos=shapes.data, opset=args.opset, io_policy=policy)
    atomic_write_bytes(Path(args.output), model.SerializeToString())
    sys.stdout.write(
        f"wrote {args.output}: opset {args.opset}, {len(model.graph.node)} nodes, "
        f"{len(model.graph.initializer)} initializers, inputs {[i.name for i in model.graph.input]}, "
        f"outputs {[o.name for o in model.graph.output]}\n"
    )
    return 0
