"""Distributed benchmarks: Allreduce op bandwidth, 1 -> 2 process step scaling, overlap in a trace.

Run:  PYTHONPATH=. .venv/bin/python bench/bench_distributed.py [--quick]

1. Bandwidth: two processes all-reduce float32 tensors; each size is timed through the
   ``Allreduce`` operator (a one-op net, including its descriptor check) and through
   ``torch.distributed.all_reduce`` on the default process group, alternating, in the same
   processes. Reported: median seconds, algorithm bandwidth (bytes / time) and direct / op time
   (the op's bandwidth as a fraction of torch's), with the default shape check and with check=0.
2. Scaling: the same global batch of LeNet steps in one process (async_scheduling, 2 threads
   and 1 thread) and in two data-parallel processes (1 thread each). Reported as step time
   and throughput ratio; on a 2-core machine shared with other work, read it as indicative.
3. Overlap: a profiled data-parallel run; the share of Allreduce spans that overlap a
   gradient op, and the share of all-reduce time hidden under gradient computation.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def _load() -> str:
    try:
        return f"load {os.getloadavg()[0]:.2f}"
    except OSError:
        return ""


# -- workers -------------------------------------------------------------------------------------


def worker_bandwidth(out: Path, quick: bool) -> None:
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    import torch
    import torch.distributed as dist

    from asyncnet.distributed.comm import CommonWorld
    from asyncnet.distributed.launch import world_from_env
    from asyncnet.proto import caffe2_pb2 as pb
    from asyncnet.workspace import Workspace

    env = world_from_env()
    assert env is not None
    handler = env.store_handler()
    dist.init_process_group(
        "gloo", store=dist.PrefixStore("direct/", handler.open(env.rank, env.size)), rank=env.rank, world_size=env.size
    )
    world = CommonWorld(handler, env.rank, env.size, "bench", 60)
    sizes = [1 << 16, 1 << 20, 1 << 22] if quick else [1 << 16, 1 << 20, 1 << 22, 1 << 24]
    reps = 5 if quick else 10
    results = []
    with Workspace("bench") as ws:
        ws.feed("cw", world)
        checked = pb.NetDef(name="allreduce")
        checked.op.add(type="Allreduce", input=["cw", "x"], output=["x"], engine="GLOO")
        unchecked = pb.NetDef()
        unchecked.CopyFrom(checked)
        unchecked.name = "allreduce_nocheck"
        unchecked.op[0].arg.add(name="check", i=0)
        for n in sizes:
            ws.feed("x", np.ones(n, np.float32))
            nets = [ws.create_net(checked), ws.create_net(unchecked)]
            t = torch.ones(n)
            for _ in range(2):
                for net in nets:
                    net.run()
                dist.all_reduce(t)
            times: dict[str, list[float]] = {"op": [], "op_nocheck": [], "direct": []}
            for _ in range(reps):
                for key, net in zip(("op", "op_nocheck"), nets):
                    s = time.perf_counter()
                    net.run()
                    times[key].append(time.perf_counter() - s)
                s = time.perf_counter()
                dist.all_reduce(t)
                times["direct"].append(time.perf_counter() - s)
            results.append({"bytes": 4 * n, **{k: statistics.median(v) for k, v in times.items()}})
    if env.rank == 0:
        (out / "bandwidth.json").write_text(json.dumps(results))
    dist.destroy_process_group()
    world.destroy()


def _cfg(steps: int, threads: int, batch: int) -> Any:
    from asyncnet.training import DigitsConfig

    return DigitsConfig(
        model="lenet", epochs=100, max_steps=steps, batch_size=batch, hidden=256, threads=threads, progress=False
    )


def worker_train(out: Path, steps: int, batch: int, trace: bool) -> None:
    from asyncnet.distributed.digits import train_digits_data_parallel
    from asyncnet.distributed.launch import world_from_env

    env = world_from_env()
    assert env is not None
    path = str(out / "trace.json") if trace and env.rank == 0 else None
    result = train_digits_data_parallel(_cfg(steps, 1, batch), env.rendezvous(prefix="train"), trace=path)
    if env.rank == 0:
        (out / f"train{'_trace' if trace else ''}.json").write_text(
            json.dumps({"seconds": result.seconds, "steps": result.steps})
        )


# -- driver --------------------------------------------------------------------------------------


def _launch(args: list[str], n: int) -> None:
    from asyncnet.distributed.launch import launch

    env = {"PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    result = launch([sys.executable, __file__, *args], n, extra_env=env, timeout_ms=60_000)
    if not result.ok:
        raise SystemExit(f"workers failed: {result}")


def _overlap(trace_path: Path) -> tuple[float, float]:
    events = [e for e in json.loads(trace_path.read_text())["traceEvents"] if e.get("ph") == "X"]
    reduces = [(e["ts"], e["ts"] + e["dur"]) for e in events if "Allreduce" in e["name"]]
    grads = sorted((e["ts"], e["ts"] + e["dur"]) for e in events if "Gradient" in e["name"])
    overlapping, hidden, total = 0, 0.0, 0.0
    for a0, a1 in reduces:
        total += a1 - a0
        covered = [(max(a0, g0), min(a1, g1)) for g0, g1 in grads if g0 < a1 and a0 < g1]
        if covered:
            overlapping += 1
            # Union of the covered intervals (gradient ops may run on two threads at once).
            end = a0
            for c0, c1 in sorted(covered):
                if c1 > end:
                    hidden += c1 - max(c0, end)
                    end = c1
    return overlapping / max(len(reduces), 1), hidden / max(total, 1e-12)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        kind, out = args.worker[0], Path(args.worker[1])
        if kind == "bandwidth":
            worker_bandwidth(out, args.quick)
        else:
            worker_train(out, int(args.worker[2]), int(args.worker[3]), kind == "trace")
        from asyncnet.distributed.comm import exit_process

        exit_process(0)
    quick = ["--quick"] if args.quick else []
    steps, batch = (15, 128) if args.quick else (40, 256)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        print(f"# Allreduce op vs torch.distributed.all_reduce, 2 processes, loopback ({_load()})")
        _launch([*quick, "--worker", "bandwidth", str(out)], 2)
        for r in json.loads((out / "bandwidth.json").read_text()):
            mb = r["bytes"] / 1e6
            print(
                f"  {mb:6.2f} MB  op {r['op'] * 1e3:7.2f} ms ({mb / 1e3 / r['op']:.2f} GB/s, {r['direct'] / r['op']:.2f}x)"
                f"  op check=0 {r['op_nocheck'] * 1e3:7.2f} ms ({r['direct'] / r['op_nocheck']:.2f}x)"
                f"  direct {r['direct'] * 1e3:7.2f} ms ({mb / 1e3 / r['direct']:.2f} GB/s)"
            )

        from asyncnet.training import train_digits

        print(f"# LeNet (hidden 256) step, global batch {batch}, {steps} steps ({_load()})")
        single = {}
        for threads in (2, 1):
            res, _, _ = train_digits(_cfg(steps, threads, batch))
            single[threads] = res.seconds / res.steps
            print(f"  1 process, {threads} thread(s): {single[threads] * 1e3:8.2f} ms/step")
        _launch(["--worker", "train", str(out), str(steps), str(batch)], 2)
        dp = json.loads((out / "train.json").read_text())
        per = dp["seconds"] / dp["steps"]
        print(f"  2 processes x 1 thread:  {per * 1e3:8.2f} ms/step")
        print(
            f"  scaling (throughput) vs 1 process 1 thread: {single[1] / per:.2f}x; vs 1 process 2 threads: {single[2] / per:.2f}x"
        )

        _launch(["--worker", "trace", str(out), str(min(steps, 10)), str(batch)], 2)
        share, hidden = _overlap(out / "trace.json")
        print(f"# overlap in rank 0's trace ({_load()})")
        print(
            f"  Allreduce spans overlapping a gradient op: {share:.0%}; all-reduce time under gradient ops: {hidden:.0%}"
        )


if __name__ == "__main__":
    main()
