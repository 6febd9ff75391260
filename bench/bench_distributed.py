"""Distributed benchmarks: Allreduce op bandwidth, 1 -> 2 process step scaling, buckets, overlap.

Run:  PYTHONPATH=. .venv/bin/python bench/bench_distributed.py [--quick]     (--quick: < 2 min)

Everything is reported as a ratio measured in the same run (medians of interleaved repeats),
with the machine's load average, since the 2-core machine is shared.

1. Bandwidth: two processes all-reduce float32 tensors; each size is timed through the
   ``Allreduce`` operator (a one-op net) with the default check (descriptors exchanged once,
   then only when the collective changes), with ``check=2`` (before every collective: the old
   default) and ``check=0`` (never, Caffe2), and through ``torch.distributed.all_reduce`` on the
   default process group, in the same processes: blocks of back-to-back calls of one kind,
   blocks interleaved, median per-call time. Reported: op bandwidth as a fraction of torch's
   (direct time / op time; target >= 0.8x).
2. Training steps (median step time, LeNet on the digits):
   * one process, measured by rank 0 while rank 1 waits (so both layouts run in the same launch,
     interleaved): executor 1 thread + 1 BLAS thread (what each data-parallel rank uses), executor
     2 threads + 1 BLAS thread (train-digits' default), executor 1 thread + default BLAS threads;
   * two processes x (1 executor thread, 1 BLAS thread) on the same global batch: one Allreduce per
     gradient (Caffe2's layout), all gradients in one bucket, and the default buckets (DDP's:
   the latency-bound model's 160 KB are one bucket, the compute-bound model's 2.4 MB two);
   * two independent processes on half the batch each, no communication: the machine's own
     ceiling for two processes (cores, memory bandwidth, other load).
   Two models: latency-bound (hidden 256, global batch 128) and compute-bound (hidden 2048,
   global batch 1024). Each layout runs three times, interleaved; reported: the median over those
   of each run's median step time. Scaling = one-process step time / two-process step time.
3. Overlap: a profiled data-parallel run of the compute-bound model at default buckets (two: the
   fully connected layers' bucket all-reduces while the convolutions' backward runs);
   the share of all-reduce spans overlapping a gradient op and of all-reduce time hidden.
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
MODELS = {  # name -> (hidden, global batch, steps, steps with --quick)
    "latency-bound LeNet h256 b128": (256, 128, 60, 40),
    "compute-bound LeNet h2048 b1024": (2048, 1024, 12, 8),
}


def _load() -> str:
    try:
        return f"load {os.getloadavg()[0]:.2f}"
    except OSError:
        return "load ?"


# -- bandwidth worker ------------------------------------------------------------------------------


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
    sizes = [1 << 16, 1 << 18, 1 << 20, 1 << 22] if quick else [1 << 16, 1 << 18, 1 << 20, 1 << 22, 1 << 24]
    reps = 11 if quick else 21
    results = []
    with Workspace("bench") as ws:
        ws.feed("cw", world)
        nets: dict[str, Any] = {}
        for key, check in (("op", None), ("op_check2", 2), ("op_check0", 0)):
            net = pb.NetDef(name=f"allreduce_{key}")
            op = net.op.add(type="Allreduce", input=["cw", "x"], output=["x"], engine="GLOO")
            if check is not None:
                op.arg.add(name="check", i=check)
            nets[key] = net
        for n in sizes:
            ws.feed("x", np.ones(n, np.float32))
            runs = {k: ws.create_net(v).run for k, v in nets.items()}
            t = torch.ones(n)
            runs["direct"] = lambda t=t: dist.all_reduce(t)
            for fn in runs.values():
                fn()
                fn()
            # Blocks of back-to-back calls per kind (blocks interleaved): a call's time measured alone
            # would include the peer's lag from the previous, different call.
            block = max(2, min(20, (1 << 22) // n))
            times: dict[str, list[float]] = {k: [] for k in runs}
            for _ in range(reps):
                for key, fn in runs.items():
                    s = time.perf_counter()
                    for _ in range(block):
                        fn()
                    times[key].append((time.perf_counter() - s) / block)
            results.append({"bytes": 4 * n, **{k: statistics.median(v) for k, v in times.items()}})
    if env.rank == 0:
        (out / "bandwidth.json").write_text(json.dumps(results))
    dist.destroy_process_group()
    world.destroy()


# -- training worker -------------------------------------------------------------------------------


def _cfg(hidden: int, batch: int, steps: int, threads: int) -> Any:
    from asyncnet.training import DigitsConfig

    return DigitsConfig(
        model="lenet", epochs=10_000, max_steps=steps, batch_size=batch, hidden=hidden, threads=threads, progress=False
    )


def _median_step(stamps: list[float]) -> float:
    steps = [b - a for a, b in zip(stamps, stamps[1:], strict=False)]
    return statistics.median(steps[1:])  # the first steps include one-off preparation and checks


def single_process_step(hidden: int, batch: int, steps: int, threads: int, blas_one: bool) -> float:
    """Median step time of one process training on the whole global batch."""
    import contextlib

    from asyncnet.executors import ExecutorOptions
    from asyncnet.training import build_nets, load_digits_split
    from asyncnet.training.digits import one_blas_thread
    from asyncnet.workspace import Workspace

    cfg = _cfg(hidden, batch, steps, threads)
    x, y, _, _ = load_digits_split(cfg.seed)
    init, train, _, _ = build_nets(cfg)
    order = np.random.default_rng(0).permutation(len(y))
    stamps = []
    with one_blas_thread() if blas_one else contextlib.nullcontext(), Workspace("single") as ws:
        ws.run_net_once(init)
        ws.feed("data", x[:batch])
        ws.feed("label", y[:batch])
        net = ws.create_net(train, options=ExecutorOptions(threads=threads))
        stamps.append(time.perf_counter())
        for k in range(steps):
            idx = np.roll(order, k * batch)[:batch]
            ws.feed("data", x[idx])
            ws.feed("label", y[idx])
            net.run()
            stamps.append(time.perf_counter())
    return _median_step(stamps)


def data_parallel_step(
    env: Any, name: str, hidden: int, batch: int, steps: int, trace: str | None, **caps: int
) -> float:
    from asyncnet.distributed.digits import train_digits_data_parallel

    stamps = [time.perf_counter()]
    train_digits_data_parallel(
        _cfg(hidden, batch, steps, 1),
        env.rendezvous(prefix=name, num_worlds=2),
        on_step=lambda *_: stamps.append(time.perf_counter()),
        trace=trace,
        **caps,
    )
    return _median_step(stamps)


def worker_train(out: Path, quick: bool) -> None:
    from asyncnet.distributed.comm import CommonWorld
    from asyncnet.distributed.launch import world_from_env

    env = world_from_env()
    assert env is not None
    gate = CommonWorld(env.store_handler(), env.rank, env.size, "gate", 300)
    results: dict[str, Any] = {}
    for name, (hidden, batch, steps, quick_steps) in MODELS.items():
        n = quick_steps if quick else steps
        row: dict[str, Any] = {"load": []}
        for rep in range(3):  # one-process and two-process runs interleaved, three times
            row["load"].append(os.getloadavg()[0])
            if env.rank == 0:  # rank 1 waits at the gate meanwhile
                for key, threads, blas_one in (("1p_1t", 1, True), ("1p_2t", 2, True), ("1p_1t_blas", 1, False)):
                    row.setdefault(key, []).append(single_process_step(hidden, batch, n, threads, blas_one))
            gate.barrier("one process done").result(timeout=300)
            # Both ranks at once on half the batch, without communicating: the ceiling.
            row.setdefault("2p_independent", []).append(single_process_step(hidden, batch // 2, n, 1, True))
            gate.barrier("independent done").result(timeout=300)
            tag = f"{name.split()[0]}{rep}"
            for key, caps in (
                ("2p_per_param", {"bucket_bytes": 0}),
                ("2p_one_bucket", {"first_bucket_bytes": 1 << 40, "bucket_bytes": 1 << 40}),
                ("2p_bucketed", {}),
            ):
                row.setdefault(key, []).append(data_parallel_step(env, f"{key}{tag}", hidden, batch, n, None, **caps))
        results[name] = {k: statistics.median(v) for k, v in row.items()}
    trace = str(out / "trace.json") if env.rank == 0 else None
    hidden, batch, _, _ = MODELS["compute-bound LeNet h2048 b1024"]
    data_parallel_step(env, "trace", hidden, batch, 5, trace)
    if env.rank == 0:
        (out / "train.json").write_text(json.dumps(results))
    gate.destroy()


# -- driver --------------------------------------------------------------------------------------


def _launch(args: list[str], n: int) -> None:
    from asyncnet.distributed.launch import launch

    env = {"PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    result = launch([sys.executable, __file__, *args], n, extra_env=env, timeout_ms=120_000)
    if not result.ok:
        raise SystemExit(f"workers failed: {result}")


def _overlap(trace_path: Path) -> tuple[int, float, float]:
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
    return len(reduces), overlapping / max(len(reduces), 1), hidden / max(total, 1e-12)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer sizes and steps (< 2 minutes)")
    ap.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        kind, out = args.worker[0], Path(args.worker[1])
        if kind == "bandwidth":
            worker_bandwidth(out, args.quick)
        else:
            worker_train(out, args.quick)
        from asyncnet.distributed.comm import exit_process

        exit_process(0)
    quick = ["--quick"] if args.quick else []
    start = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        print(f"# Allreduce op vs torch.distributed.all_reduce, 2 processes, loopback ({_load()} before)")
        _launch([*quick, "--worker", "bandwidth", str(out)], 2)
        print("  size MB | direct ms  GB/s | op (check=1, default) | op check=2 (every call) | op check=0 (Caffe2)")
        for r in json.loads((out / "bandwidth.json").read_text()):
            mb = r["bytes"] / 1e6
            cells = [f"{r[k] * 1e3:7.2f} ms {r['direct'] / r[k]:5.2f}x" for k in ("op", "op_check2", "op_check0")]
            print(f"  {mb:7.2f} | {r['direct'] * 1e3:7.2f} {mb / 1e3 / r['direct']:5.2f} | " + " | ".join(cells))

        print(f"# data-parallel training steps, 2 processes vs 1 ({_load()} before)")
        _launch([*quick, "--worker", "train", str(out)], 2)
        columns = {
            "1p_1t": "1 process, 1 thread + 1 BLAS thread",
            "1p_2t": "1 process, 2 threads + 1 BLAS thread (train-digits default)",
            "1p_1t_blas": "1 process, 1 thread + default BLAS threads",
            "2p_independent": "2 processes, half batch each, no communication (ceiling)",
            "2p_per_param": "2 processes, one Allreduce per gradient (Caffe2 layout)",
            "2p_one_bucket": "2 processes, all gradients in one bucket",
            "2p_bucketed": "2 processes, default buckets (DDP's: first 1 MB, then 25 MB)",
        }
        for name, r in json.loads((out / "train.json").read_text()).items():
            print(f"  {name} (load during: {r['load']:.2f}); median step, and 1-process time / this:")
            for key, label in columns.items():
                print(f"    {label:62s} {r[key] * 1e3:8.2f} ms   {r['1p_1t'] / r[key]:5.2f}x")
            print(
                f"    scaling 1 -> 2 processes (default buckets): {r['1p_1t'] / r['2p_bucketed']:.2f}x vs 1 thread, "
                f"{r['1p_2t'] / r['2p_bucketed']:.2f}x vs 2 threads, {r['1p_1t_blas'] / r['2p_bucketed']:.2f}x vs "
                f"default BLAS; the machine's ceiling {r['1p_1t'] / r['2p_independent']:.2f}x; buckets vs one "
                f"Allreduce per gradient {r['2p_per_param'] / r['2p_bucketed']:.2f}x"
            )
            print(
                "    share of the ceiling reached (independent / data-parallel step; 1.00 = communication free): "
                f"default buckets {r['2p_independent'] / r['2p_bucketed']:.2f}, one bucket "
                f"{r['2p_independent'] / r['2p_one_bucket']:.2f}, per gradient {r['2p_independent'] / r['2p_per_param']:.2f}"
            )
        n, share, hidden = _overlap(out / "trace.json")
        print(f"# overlap in rank 0's trace (compute-bound model, default buckets; {_load()})")
        print(
            f"  {n} all-reduce spans; overlapping a gradient op: {share:.0%}; all-reduce time under gradient ops: {hidden:.0%}"
        )
    print(f"# total {time.monotonic() - start:.0f} s")


if __name__ == "__main__":
    main()
