"""``asyncnet predict``: run a served model (``--server``) or a model folder on inputs from .npz."""

from __future__ import annotations

import argparse
import sys

from asyncnet.commands._common import describe_array, load_npz, save_npz
from asyncnet.errors import ArgumentError


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "predict",
        help="predict with a model served by `asyncnet serve` (--server) or a local model folder",
        description="Send IN.npz (arrays keyed by input name) to a prediction server, or run a model folder "
        "locally with the same checks the server applies; print and optionally save the outputs. "
        "Any error (a gRPC status included) is one line on stderr and exit status 1.",
    )
    p.add_argument("model_dir", nargs="?", metavar="MODEL_DIR", help="run this model folder locally")
    p.add_argument("--server", metavar="HOST:PORT", help="address of an `asyncnet serve` server")
    p.add_argument("--model", metavar="NAME", help="model name on the server (optional when it serves one)")
    p.add_argument("--inputs", required=True, metavar="IN.npz", help="inputs keyed by input name")
    p.add_argument("--outputs", metavar="OUT.npz", help="write the outputs here")
    p.add_argument("--timeout", type=float, default=60.0, metavar="S", help="deadline in seconds (default 60)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if (args.server is None) == (args.model_dir is None):
        raise ArgumentError("give either MODEL_DIR (run locally) or --server HOST:PORT, not both or neither")
    inputs = load_npz(args.inputs)
    if args.server is not None:
        from asyncnet.serving.client import Client

        with Client(args.server, timeout=args.timeout) as client:
            outputs = client.predict(inputs, model=args.model or "")
        where = f"server {args.server}"
    else:
        from asyncnet.serving import Predictor

        with Predictor.from_dir(args.model_dir, max_concurrency=1) as predictor:
            result = predictor.predict(inputs, timeout=args.timeout)
        outputs = dict(result) if isinstance(result, dict) else {}
        where = f"model folder {args.model_dir}"
    if args.outputs:
        save_npz(args.outputs, outputs)
    lines = [f"predicted with {where}", "outputs:"]
    lines.extend(describe_array(n, v) for n, v in outputs.items())
    if args.outputs:
        lines.append(f"wrote {len(outputs)} array(s) to {args.outputs}")
    sys.stdout.write("\n".join(lines) + "\n")
    return 0
