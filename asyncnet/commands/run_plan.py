"""``asyncnet run-plan PLAN``: run a PlanDef (execution steps of nets) and save blobs."""

from __future__ import annotations

import argparse
import sys
import time

from asyncnet.commands._common import (
    add_io_policy_args,
    describe_array,
    io_policy_from_args,
    load_npz,
    refuse_file_accesses,
    save_npz,
)
from asyncnet.executors import ExecutorOptions, executor_names
from asyncnet.plan import PlanRunner
from asyncnet.serde import read_plan
from asyncnet.workspace import Workspace


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("run-plan", help="run a PlanDef (steps of nets, iterations, concurrent substeps)")
    p.add_argument("plan", help="PlanDef file (.pb or .pbtxt)")
    p.add_argument("--inputs", metavar="IN.npz", help="arrays to feed before the plan, keyed by blob name")
    p.add_argument("--outputs", metavar="OUT.npz", help="write the fetched blobs here")
    p.add_argument("--fetch", nargs="+", metavar="BLOB", help="blobs to fetch (default: every blob)")
    p.add_argument("--executor", metavar="NAME", help=f"override every net's type ({', '.join(executor_names())})")
    p.add_argument("--threads", type=int, metavar="N", help="worker threads per device pool")
    add_io_policy_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    plan = read_plan(args.plan)
    feeds = load_npz(args.inputs) if args.inputs else {}
    policy = io_policy_from_args(args, args.plan)
    refuse_file_accesses(policy, plan=plan, what=f"plan '{plan.name}'")
    with Workspace(io_policy=policy) as ws:
        for name, value in feeds.items():
            ws.feed(name, value)
        runner = PlanRunner(ws, plan, executor=args.executor, options=ExecutorOptions(threads=args.threads))
        t0 = time.perf_counter()
        runner.run()
        elapsed = time.perf_counter() - t0
        names = args.fetch or ws.blobs()
        fetched = {n: ws.fetch(n) for n in names}
    if args.outputs:
        save_npz(args.outputs, fetched)
    lines = [
        f"ran plan '{plan.name}' ({len(plan.network)} nets, {len(plan.execution_step)} steps) in {elapsed * 1000:.3f} ms"
    ]
    for step, n in runner.iterations.items():
        lines.append(f"  step '{step}': {n} iteration(s)")
    lines.append("blobs:")
    lines.extend(describe_array(n, v) for n, v in fetched.items())
    if args.outputs:
        lines.append(f"wrote {len(fetched)} array(s) to {args.outputs}")
    sys.stdout.write("\n".join(lines) + "\n")
    return 0
