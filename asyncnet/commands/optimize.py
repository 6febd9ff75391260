"""``asyncnet optimize NET --init INIT -o OUT``: rewrite a net for inference and write it (and its init net)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from asyncnet.errors import ArgumentError
from asyncnet.serde import read_net, write_message
from asyncnet.transforms import REWRITES, optimize_for_inference


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "optimize",
        help="rewrite a net for inference (fold BN into Conv/FC, fuse Relu, drop identities) and write it",
        description="Run the init net to learn the constant parameters, rewrite the predict net for inference "
        "and write it to OUT; with --init-out also write the matching init net (the folded parameters added, "
        "parameters nothing reads any more removed). External input and output names stay the same.",
    )
    p.add_argument("net", help="predict NetDef (.pb or .pbtxt)")
    p.add_argument("--init", required=True, metavar="INIT_NET", help="init net making the parameters")
    p.add_argument("-o", "--output", required=True, metavar="OUT", help="rewritten predict net (.pb or .pbtxt)")
    p.add_argument("--init-out", metavar="INIT_OUT", help="rewritten init net (default: OUT's name with _init)")
    p.add_argument(
        "--rewrite",
        action="append",
        choices=list(REWRITES),
        metavar="NAME",
        help=f"run only these rewrite families (repeatable; default all: {', '.join(REWRITES)})",
    )
    p.add_argument(
        "--data",
        action="append",
        default=[],
        metavar="BLOB",
        help="a data input the init net also makes (a placeholder): never treated as a constant (repeatable)",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="list every rewrite")
    p.set_defaults(func=run)


def _default_init_out(out: Path) -> Path:
    for ext in (".pbtxt", ".pb"):
        if out.name.endswith(ext):
            return out.with_name(out.name[: -len(ext)] + "_init" + ext)
    return out.with_name(out.name + "_init")


def run(args: argparse.Namespace) -> int:
    out = Path(args.output)
    init_out = Path(args.init_out) if args.init_out else _default_init_out(out)
    if out.resolve() == init_out.resolve():
        raise ArgumentError(f"-o and --init-out name the same file {out}; give two files")
    predict, init = read_net(args.net), read_net(args.init)
    res = optimize_for_inference(predict, init, data_inputs=args.data, rewrites=args.rewrite)
    if res.init_net is None:  # pragma: no cover - an init net was given
        raise ArgumentError("no init net to write")
    write_message(res.predict_net, out)
    write_message(res.init_net, init_out)
    lines = res.summary_lines()
    if not args.verbose:
        lines = lines[:1]
    lines.append(f"wrote {out} ({len(res.predict_net.op)} ops) and {init_out} ({len(res.init_net.op)} ops)")
    sys.stdout.write("\n".join(lines) + "\n")
    return 0
