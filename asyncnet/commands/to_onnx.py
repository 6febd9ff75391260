"""``asyncnet to-onnx NET --init INIT -o model.onnx``: export a Caffe2 net to ONNX."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from asyncnet.commands._common import parse_shape_specs
from asyncnet.schema import TensorInfo
from asyncnet.serde import atomic_write_bytes, read_net


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("to-onnx", help="export a NetDef (+ init net) to an ONNX model")
    p.add_argument("net", help="predict NetDef (.pb or .pbtxt)")
    p.add_argument("--init", metavar="INIT_NET", help="init net holding the parameters")
    p.add_argument("-o", "--output", required=True, metavar="MODEL.onnx", help="where to write the model")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset (11 to 21, default 17)")
    p.add_argument(
        "--input-shape",
        action="append",
        default=[],
        metavar="NAME=D0,D1,...",
        help="shape of a data input (repeatable); needed where Caffe2 padding depends on sizes",
    )
    p.add_argument("--value-info", metavar="JSON", help="Caffe2 model-zoo value_info.json giving input shapes")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from asyncnet.onnx import export_onnx
    from asyncnet.shapes import read_value_info

    predict = read_net(args.net)
    init = read_net(args.init) if args.init else None
    infos: dict[str, TensorInfo] = read_value_info(args.value_info) if args.value_info else {}
    import numpy as np

    for name, shape in parse_shape_specs(args.input_shape).items():
        infos[name] = TensorInfo(shape, np.dtype(np.float32))
    model = export_onnx(predict, init, input_infos=infos, opset=args.opset)
    atomic_write_bytes(Path(args.output), model.SerializeToString())
    sys.stdout.write(
        f"wrote {args.output}: opset {args.opset}, {len(model.graph.node)} nodes, "
        f"{len(model.graph.initializer)} initializers, inputs {[i.name for i in model.graph.input]}, "
        f"outputs {[o.name for o in model.graph.output]}\n"
    )
    return 0
