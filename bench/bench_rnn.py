"""Threaded vs sequential timesteps: a 2-layer LSTM (hidden 512, batch 32, 50 steps) as RecurrentNetwork.

Run:  PYTHONPATH=. .venv/bin/python bench/bench_rnn.py [--hidden 512] [--batch 32] [--steps 50]
          [--repeats 5] [--backward]

All contenders are the same net (built by asyncnet.recurrent.build.lstm) in one process; only
``enable_rnn_executor`` differs. Sequential runs at the default BLAS threads (a lone op may use
every core); the threaded executor limits BLAS to one thread per op while it runs. "default" is
enable_rnn_executor as users get it: the measured policy (asyncnet/executors/mode_choice.py) times
threaded against sequential timesteps and keeps the faster; "threaded" pins the threaded executor. The two are
measured in alternation (so load noise hits both) and the ratio of medians is printed with the
load average. A third contender, sequential with BLAS limited to one thread, separates the gain of
running timesteps concurrently from the gain of not oversubscribing BLAS. Outputs are checked
bitwise equal first.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import os
import statistics
import threading
import time

import numpy as np

from asyncnet.executors.mode_choice import SAMPLES
from asyncnet.executors.pools import blas_limit
from asyncnet.proto import caffe2_pb2 as pb
from asyncnet.recurrent.build import lstm
from asyncnet.recurrent.runtime import RecurrentRunner
from asyncnet.training.gradients import add_gradient_ops
from asyncnet.workspace import Workspace


def build(threaded: bool, hidden: int, batch: int, steps: int, backward: bool) -> tuple[Workspace, pb.NetDef, str]:
    d_in = hidden
    layer = lstm("x", None, [("h0", "c0"), ("h1", "c1")], d_in, [hidden, hidden], "lstm", threaded=threaded)
    net = pb.NetDef(name="lstm_threaded" if threaded else "lstm_sequential")
    net.op.extend(layer.ops)
    out = layer.outputs["hidden_all"]
    if backward:
        net.op.append(pb.OperatorDef(type="Mul", input=[out, "w"], output=["weighted"]))
        net.op.append(pb.OperatorDef(type="SumElements", input=["weighted"], output=["loss"]))
        add_gradient_ops(net, ["loss"])
    rng = np.random.default_rng(0)
    ws = Workspace()
    ws.feed("x", rng.standard_normal((steps, batch, d_in)).astype(np.float32))
    ws.feed("w", rng.standard_normal((steps, batch, hidden)).astype(np.float32))
    for s in layer.initial_states:
        ws.feed(s, np.zeros((1, batch, hidden), np.float32))
    for p, shape in layer.params.items():
        ws.feed(p, (rng.standard_normal(shape) / np.sqrt(shape[-1])).astype(np.float32))
    return ws, net, out


class _Pinned:
    """Stands in for a runner's ModeChooser: always the threaded executor (the bench's contender)."""

    def pick(self) -> str:
        return "threaded"

    def record(self, mode: str, seconds: float) -> None:
        pass


def _runners(ws: Workspace) -> list[RecurrentRunner]:
    return [o for o in gc.get_objects() if isinstance(o, RecurrentRunner) and o.ws is ws]


def pin_threaded(ws: Workspace) -> None:
    """Turn the measured policy off for the recurrent ops of ``ws``: timesteps always threaded."""
    runners = _runners(ws)
    if not runners:
        raise SystemExit("bench_rnn: found no RecurrentRunner to pin")
    for r in runners:
        r.chooser = _Pinned()  # type: ignore[assignment]


def choices(ws: Workspace) -> str:
    return ", ".join(f"{r.label}: {r.chooser.chosen if r.chooser else None}" for r in _runners(ws))


def raw_ceiling(hidden: int, batch: int, calls: int = 100) -> float:
    """Speedup of the same-sized matmuls split over two Python threads (1 BLAS thread each) vs one:
    the parallelism the machine's free cores allow right now."""
    rng = np.random.default_rng(1)
    a = rng.standard_normal((batch, hidden)).astype(np.float32)
    w = rng.standard_normal((hidden, 4 * hidden)).astype(np.float32)

    def work(n: int) -> None:
        for _ in range(n):
            a @ w

    with blas_limit(1):
        t0 = time.perf_counter()
        work(calls)
        one = time.perf_counter() - t0
        threads = [threading.Thread(target=work, args=(calls // 2,)) for _ in range(2)]
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        two = time.perf_counter() - t0
    return one / two


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--hidden", type=int, default=512)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--backward", action="store_true", help="time forward + backward")
    a = ap.parse_args()
    contenders = {}
    for label, threaded in (("sequential", False), ("default", True), ("threaded", True)):
        ws, net, out = build(threaded, a.hidden, a.batch, a.steps, a.backward)
        n = ws.create_net(net)
        n.run()  # warm-up: prepares the step workspaces
        if label == "threaded":
            pin_threaded(ws)
        contenders[label] = (ws, n, out)
    ref = contenders["sequential"][0].fetch(contenders["sequential"][2])
    for label in ("default", "threaded"):
        got = contenders[label][0].fetch(contenders[label][2])
        print(f"outputs of {label} bitwise equal to sequential: {np.array_equal(ref, got)}")
    # Let the measured policy time both modes and choose before timing (what a training loop sees
    # after its first few steps).
    _ws, n, _out = contenders["default"]
    for _ in range(2 * (SAMPLES + 1) + 2):
        n.run()
    print(f"measured policy chose: {choices(contenders['default'][0])}")
    names = ["sequential", "sequential-blas1", "default", "threaded"]
    times: dict[str, list[float]] = {k: [] for k in names}
    for _ in range(a.repeats):
        for name in names:
            _ws, n, _out = contenders[name.split("-")[0]]
            limit = blas_limit(1) if name.endswith("blas1") else contextlib.nullcontext()
            with limit:
                t0 = time.perf_counter()
                n.run()
                times[name].append(time.perf_counter() - t0)
    load = os.getloadavg()[0]
    what = "forward+backward" if a.backward else "forward"
    for name, ts in times.items():
        print(f"{name:16s} {what}: median {statistics.median(ts) * 1e3:8.1f} ms  best {min(ts) * 1e3:8.1f} ms")
    seq = statistics.median(times["sequential"])
    for name, label in (("default", "enable_rnn_executor (measured policy, default)"), ("threaded", "threaded pinned")):
        ratio = seq / statistics.median(times[name])
        best = min(times["sequential"]) / min(times[name])
        print(f"speedup {label} / sequential: {ratio:.2f}x (median), {best:.2f}x (best); load average {load:.1f}")
    same_blas = statistics.median(times["sequential-blas1"]) / statistics.median(times["threaded"])
    print(
        f"speedup threaded pinned / sequential with 1 BLAS thread each (concurrency alone): {same_blas:.2f}x (median)"
    )
    print(f"raw 2-thread ceiling of these matmuls right now: {raw_ceiling(a.hidden, a.batch):.2f}x")
    for _ws, n, _out in contenders.values():
        n.close()


if __name__ == "__main__":
    main()
