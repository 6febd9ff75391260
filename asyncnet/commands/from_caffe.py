"""``asyncnet from-caffe deploy.prototxt [weights.caffemodel]``: translate a BVLC Caffe net."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from asyncnet.caffe import read_caffemodel, read_prototxt, translate
from asyncnet.caffe.translate import value_info
from asyncnet.commands._common import parse_shape_specs
from asyncnet.commands._shapes import VALUE_INFO
from asyncnet.errors import NetDefinitionError
from asyncnet.serde import atomic_write_bytes, write_message


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "from-caffe",
        help="translate a Caffe prototxt (+ caffemodel) into Caffe2 predict and init nets",
        description="Translate a BVLC Caffe net (V2 'layer' or legacy V1 'layers') for inference (TEST phase). "
        "Data layers become external inputs; Loss/Accuracy layers are dropped unless --include-loss; "
        "BatchNorm+Scale fuse into SpatialBN. Without a caffemodel the init net creates seeded random weights.",
    )
    p.add_argument("prototxt", help="Caffe net definition (deploy.prototxt)")
    p.add_argument("caffemodel", nargs="?", help="trained weights (.caffemodel); random weights when absent")
    p.add_argument("-o", "--output", "--predict", dest="predict", default="predict_net.pb", help="predict net file")
    p.add_argument("--init", default="init_net.pb", help="init net file (default init_net.pb)")
    p.add_argument("--input-shape", action="append", default=[], metavar="NAME=D0,D1,...", help="input shape")
    p.add_argument("--phase", choices=("TEST", "TRAIN"), default="TEST", help="Caffe phase (default TEST)")
    p.add_argument("--stage", action="append", default=[], help="Caffe NetState stage (repeatable)")
    p.add_argument("--include-loss", action="store_true", help="keep SoftmaxWithLoss/Accuracy layers")
    p.add_argument("--no-fuse-bn", action="store_true", help="do not fuse BatchNorm+Scale into SpatialBN")
    p.add_argument(
        "--remove-legacy-pad", action="store_true", help="explicit pads instead of legacy_pad for ceil pooling"
    )
    p.add_argument("--seed", type=int, default=0, help="first seed of generated weights (default 0)")
    p.add_argument(
        "--value-info",
        metavar="JSON",
        help="where to write the input shapes as model-zoo value_info.json (default: value_info.json beside the "
        "predict net, where run/check/bench/draw/to-onnx find it)",
    )
    p.add_argument("--no-value-info", action="store_true", help="do not write value_info.json")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        shapes = parse_shape_specs(args.input_shape)
    except argparse.ArgumentTypeError as e:
        raise NetDefinitionError(str(e)) from None
    cnet = read_prototxt(args.prototxt)
    weights = read_caffemodel(args.caffemodel) if args.caffemodel else None
    t = translate(
        cnet,
        weights,
        input_shapes=shapes,
        phase=args.phase,
        stages=args.stage,
        include_loss=args.include_loss,
        fuse_batchnorm=not args.no_fuse_bn,
        remove_legacy_pad=args.remove_legacy_pad,
        seed=args.seed,
    )
    write_message(t.predict, args.predict)
    write_message(t.init, args.init)
    lines = [
        f"translated {len(cnet.net.layer)} Caffe layer(s) from {args.prototxt} into {len(t.predict.op)} op(s)",
        f"wrote {args.predict} (net '{t.predict.name}') and {args.init} ({len(t.params)} parameter(s), "
        + ("from " + args.caffemodel if args.caffemodel else "random, seeded")
        + ")",
        "inputs: " + ", ".join(f"{k} {list(v)}" for k, v in t.input_shapes.items()),
        "outputs: " + ", ".join(t.predict.external_output),
    ]
    lines.extend(f"note: {n}" for n in t.notes)
    info = value_info(t)
    if not args.no_value_info and info:
        where = Path(args.value_info) if args.value_info else Path(args.predict).parent / VALUE_INFO
        atomic_write_bytes(where, (json.dumps(info) + "\n").encode("utf-8"))
        lines.append(f"wrote {where} (input shapes; commands read it from beside the predict net)")
    sys.stdout.write("\n".join(lines) + "\n")
    return 0
