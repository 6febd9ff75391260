"""``asyncnet convert IN OUT``: NetDef/PlanDef/TensorProtos between .pb, .pbtxt and .json;
init nets to and from .npz with ``--merge``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from asyncnet.commands._common import load_npz, save_npz
from asyncnet.convert import (
    FORMATS,
    MESSAGE_TYPES,
    arrays_to_init_net,
    extension_of,
    init_net_to_arrays,
    read_any,
    write_as,
)
from asyncnet.errors import NetDefinitionError, ParseError, UnsupportedError
from asyncnet.proto import caffe2_pb2 as pb


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "convert",
        help="convert nets/plans/tensors between .pb, .pbtxt and .json (and init nets <-> .npz)",
        description="Convert between binary (.pb), text (.pbtxt) and JSON (.json) protobuf; the message type "
        "(NetDef, PlanDef, TensorProtos) is detected unless --type says. With --init/--predict both nets go to "
        "OUT (a folder). With --merge an init net's GivenTensor*Fill ops fold into one .npz, or an .npz "
        "becomes an init net (dtype-preserving).",
    )
    p.add_argument("paths", nargs="*", metavar="PATH", help="IN OUT, or just OUTDIR with --init/--predict")
    p.add_argument("--type", choices=sorted(MESSAGE_TYPES), help="force the message type")
    p.add_argument("--format", choices=FORMATS, help="output format (default: from OUT's extension)")
    p.add_argument("--init", metavar="INIT_NET", help="init net to convert (with --predict; OUT is a folder)")
    p.add_argument("--predict", metavar="PREDICT_NET", help="predict net to convert (with --init)")
    p.add_argument("--merge", action="store_true", help="init net <-> .npz of its weights")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    lines: list[str] = []
    if args.init or args.predict:
        if len(args.paths) != 1:
            raise NetDefinitionError("with --init/--predict give exactly one output folder, e.g. OUTDIR")
        if not args.format:
            raise NetDefinitionError("with --init/--predict give --format pb|pbtxt|json for the output files")
        out_dir = Path(args.paths[0])
        if out_dir.exists() and not out_dir.is_dir():
            raise NetDefinitionError(f"{out_dir}: exists and is not a folder")
        for src in (args.init, args.predict):
            if src:
                msg = read_any(src, args.type or "net")
                dest = out_dir / (_stem(Path(src)) + extension_of(args.format))
                write_as(msg, dest, args.format)
                lines.append(f"wrote {dest} ({type(msg).__name__}, {args.format})")
    else:
        if len(args.paths) != 2:
            raise NetDefinitionError(f"convert needs IN and OUT, got {len(args.paths)} path(s)")
        src, dest = (Path(p) for p in args.paths)
        if args.merge:
            lines.append(_merge(src, dest, args))
        else:
            if dest.suffix.lower() == ".npz" or src.suffix.lower() == ".npz":
                raise UnsupportedError(f"{src} -> {dest}: .npz conversion needs --merge")
            msg = read_any(src, args.type)
            fmt = write_as(msg, dest, args.format)
            lines.append(f"wrote {dest} ({type(msg).__name__}, {fmt})")
    sys.stdout.write("\n".join(lines) + "\n")
    return 0


def _stem(p: Path) -> str:
    name = p.name
    for ext in (".pb.txt", ".pbtxt", ".prototxt", ".json", ".pb"):
        if name.lower().endswith(ext):
            return name[: -len(ext)]
    return p.stem


def _merge(src: Path, dest: Path, args: argparse.Namespace) -> str:
    if src.suffix.lower() == ".npz":
        arrays = load_npz(src)
        net = arrays_to_init_net(arrays, name=_stem(dest))
        fmt = write_as(net, dest, args.format)
        return f"wrote {dest}: init net with {len(net.op)} fill op(s) ({fmt})"
    if dest.suffix.lower() != ".npz":
        raise UnsupportedError(f"--merge converts an init net to .npz or back; neither {src} nor {dest} is .npz")
    msg = read_any(src, "net")
    if not isinstance(msg, pb.NetDef):
        raise ParseError(f"{src}: expected an init NetDef")
    arrays = init_net_to_arrays(msg)
    save_npz(dest, arrays)
    return f"wrote {dest}: {len(arrays)} array(s) from init net '{msg.name}'"
