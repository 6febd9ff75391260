"""``asyncnet from-onnx model.onnx -o predict.pb --init init.pb``: import an ONNX model."""

from __future__ import annotations

import argparse
import sys

from asyncnet.serde import write_message


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("from-onnx", help="import an ONNX model as Caffe2 predict + init nets")
    p.add_argument("model", help="ONNX model file")
    p.add_argument("-o", "--output", required=True, metavar="PREDICT_NET", help="predict net (.pb or .pbtxt)")
    p.add_argument("--init", required=True, metavar="INIT_NET", help="init net with the weights (.pb or .pbtxt)")
    p.add_argument("--name", default="", help="name of the nets (default: the ONNX graph's name)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from asyncnet.onnx import import_onnx, load_onnx

    init, predict = import_onnx(load_onnx(args.model), name=args.name)
    write_message(predict, args.output)
    write_message(init, args.init)
    sys.stdout.write(
        f"wrote {args.output} ({len(predict.op)} ops, inputs {list(predict.external_input)[:4]}"
        f"{' ...' if len(predict.external_input) > 4 else ''}, outputs {list(predict.external_output)}) "
        f"and {args.init} ({len(init.op)} parameter fills)\n"
    )
    return 0
