"""``asyncnet run NET``: run a net (after its init net) and save its outputs."""

from __future__ import annotations

import argparse
import sys
import time

from asyncnet.commands._common import (
    add_input_arguments,
    add_io_policy_args,
    describe_array,
    io_policy_from_args,
    refuse_file_accesses,
    save_npz,
    setup_from_args,
)
from asyncnet.commands._inference import add_inference_arguments, prepare_for_inference
from asyncnet.errors import NetDefinitionError
from asyncnet.executors import ExecutorOptions, executor_names
from asyncnet.profiling import profile_report
from asyncnet.workspace import Workspace


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("run", help="run a net and write its outputs to .npz")
    p.add_argument("net", help="NetDef to run (.pb or .pbtxt)")
    add_input_arguments(p)
    p.add_argument("--outputs", metavar="OUT.npz", help="write the fetched blobs here")
    p.add_argument("--fetch", nargs="+", metavar="BLOB", help="blobs to fetch (default: external outputs)")
    p.add_argument("--executor", metavar="NAME", help=f"override NetDef.type ({', '.join(executor_names())})")
    p.add_argument("--threads", type=int, metavar="N", help="worker threads per device pool")
    p.add_argument("--repeat", type=int, default=1, metavar="N", help="run NET N times (default 1)")
    p.add_argument("--profile", action="store_true", help="print per-op timings (count, total, mean, share of run)")
    p.add_argument("--trace", metavar="FILE", help="write a Chrome trace-event JSON of the runs (Perfetto)")
    add_io_policy_args(p)
    add_inference_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.repeat < 1:
        raise NetDefinitionError(f"--repeat must be at least 1, got {args.repeat}")
    setup = setup_from_args(args)
    net_def = setup.net_def
    options = ExecutorOptions(threads=args.threads)
    policy = io_policy_from_args(args, args.net, args.init)
    refuse_file_accesses(policy, nets=(setup.init_def, net_def))
    with Workspace(io_policy=policy) as ws:
        setup.fill(ws, random_init=args.random_init, seed=args.seed, options=options)
        prepared = prepare_for_inference(args, setup, ws, keep=args.fetch or ())
        net_def = prepared.net_def
        profiling = args.profile or bool(args.trace)
        net_options = ExecutorOptions(threads=args.threads, profile=profiling)
        net = ws.create_net(net_def, executor=args.executor, options=net_options)
        t0 = time.perf_counter()
        for _ in range(args.repeat):
            net.run()
        elapsed = time.perf_counter() - t0
        names = args.fetch or list(net_def.external_output)
        if not names:
            names = [o for o in net_def.op[-1].output] if net_def.op else []
        fetched = {n: ws.fetch(n) for n in names}
    if args.outputs:
        save_npz(args.outputs, fetched)
    lines = [f"ran net '{net.name}' ({len(net.ops)} ops, executor {net.executor.name}) {args.repeat} time(s)"]
    lines.append(f"  time: {elapsed * 1000:.3f} ms total, {elapsed * 1000 / args.repeat:.3f} ms per run")
    # Which rewrites ran: counts always, one line per rewrite with --profile.
    lines.extend(prepared.details if args.profile else prepared.summary)
    lines.append("outputs:")
    lines.extend(describe_array(n, v) for n, v in fetched.items())
    if args.outputs:
        lines.append(f"wrote {len(fetched)} array(s) to {args.outputs}")
    if profiling:
        lines.extend(profile_report(net, profile=args.profile, trace=args.trace))
    sys.stdout.write("\n".join(lines) + "\n")
    return 0
