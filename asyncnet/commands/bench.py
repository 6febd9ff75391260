"""``asyncnet bench NET``: time a net (Caffe2 speed_benchmark style), per op type, optionally against onnxruntime."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from asyncnet.benchmark import (
    BenchReport,
    NetTiming,
    bench_net,
    bench_onnxruntime,
    describe_inputs,
    profile_net,
    progress_bar,
)
from asyncnet.commands._common import (
    add_input_arguments,
    add_io_policy_args,
    io_policy_from_args,
    refuse_file_accesses,
    setup_from_args,
)
from asyncnet.commands._inference import add_inference_arguments, prepare_for_inference
from asyncnet.errors import ArgumentError
from asyncnet.executors import ExecutorOptions, executor_names
from asyncnet.serde import atomic_write_bytes
from asyncnet.workspace import Workspace


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "bench",
        help="benchmark a net: time per iteration, per-op-type table, optional onnxruntime comparison",
        description="Time NET after its init net: WARMUP untimed then ITERS timed runs (profiling off), then a "
        "separate profiled pass for the per-op-type table. Inputs come as in 'asyncnet run'.",
    )
    p.add_argument("net", help="NetDef to benchmark (.pb or .pbtxt)")
    add_input_arguments(p)
    p.add_argument(
        "--executor",
        action="append",
        metavar="NAME",
        help=f"executor, default NetDef.type; repeat to compare several in one process ({', '.join(executor_names())})",
    )
    p.add_argument("--threads", type=int, metavar="N", help="worker threads per device pool")
    p.add_argument(
        "--blas-threads",
        type=int,
        metavar="N",
        help="limit BLAS to N threads per op while the net runs (needs threadpoolctl; not applied to onnxruntime)",
    )
    p.add_argument(
        "--warmup",
        type=int,
        default=2,
        metavar="N",
        help="untimed iterations first (default 2), after the runs the measured BLAS policy of "
        "async_scheduling takes to choose (see README)",
    )
    p.add_argument("--iters", type=int, default=10, metavar="N", help="timed iterations (default 10)")
    p.add_argument(
        "--profile-iters",
        type=int,
        metavar="N",
        help="iterations of the profiled pass for the per-op-type table (default: --iters; 0: no table)",
    )
    p.add_argument(
        "--compare-onnxruntime",
        action="store_true",
        help="also export the net to ONNX and time it in onnxruntime (CPU, default session options)",
    )
    add_inference_arguments(p)
    p.add_argument("--json", metavar="FILE", help="write the numbers as JSON here")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    add_io_policy_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.iters < 1:
        raise ArgumentError(f"--iters must be at least 1, got {args.iters}")
    if args.warmup < 0:
        raise ArgumentError(f"--warmup must be 0 or more, got {args.warmup}")
    if args.threads is not None and args.threads < 1:
        raise ArgumentError(f"--threads must be at least 1, got {args.threads}")
    profile_iters = args.iters if args.profile_iters is None else args.profile_iters
    if profile_iters < 0:
        raise ArgumentError(f"--profile-iters must be 0 or more, got {profile_iters}")
    setup = setup_from_args(args)
    original = net_def = setup.net_def
    executors: list[str | None] = list(args.executor) if args.executor else [None]
    options = ExecutorOptions(threads=args.threads, blas_threads=args.blas_threads)
    show = not args.quiet
    per_pass = args.warmup + args.iters
    policy = io_policy_from_args(args, args.net, args.init)
    refuse_file_accesses(policy, nets=(setup.init_def, net_def))
    with Workspace(io_policy=policy) as ws:
        setup.fill(ws, random_init=args.random_init, seed=args.seed, options=options)
        prepared = prepare_for_inference(args, setup, ws)
        net_def = prepared.net_def
        runs: list[NetTiming] = []
        for name in executors:
            with progress_bar(f"asyncnet {name or net_def.type or 'simple'}", per_pass, enabled=show) as tick:
                runs.append(
                    bench_net(
                        ws, net_def, executor=name, options=options, warmup=args.warmup, iters=args.iters, progress=tick
                    )
                )
        report = BenchReport(
            net=original.name or Path(args.net).name,
            ops=len(net_def.op),
            inputs=describe_inputs(ws, setup.data_inputs),
            warmup=args.warmup,
            iters=args.iters,
            runs=runs,
            transforms=prepared.summary,
        )
        if args.compare_onnxruntime:
            with progress_bar("onnxruntime", per_pass, enabled=show) as tick:
                # The baseline is onnxruntime's default session on the original net.
                report.ort = bench_onnxruntime(
                    ws, original, setup.data_inputs, warmup=args.warmup, iters=args.iters, progress=tick
                )
        if profile_iters:
            with progress_bar("profiled pass", args.warmup + profile_iters, enabled=show) as tick:
                report.profile = profile_net(
                    ws,
                    net_def,
                    executor=executors[0],
                    options=options,
                    warmup=args.warmup,
                    iters=profile_iters,
                    progress=tick,
                )
    if args.json:
        data = {**report.as_dict(), "transform_details": prepared.details}
        atomic_write_bytes(Path(args.json), json.dumps(data, indent=1).encode())
    lines = report.lines()
    if args.json:
        lines.append(f"wrote {args.json}")
    sys.stdout.write("\n".join(lines) + "\n")
    return 0
