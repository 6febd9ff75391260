"""Executor stress (bounded): thousands of async_scheduling runs with failures, async ops, barriers, cancels."""

from __future__ import annotations

import gc
import importlib.util
import sys
import time
import weakref
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from asyncnet.errors import OperatorError
from asyncnet.net import Net
from asyncnet.proto import caffe2_pb2 as pb
from asyncnet.workspace import Workspace

BENCH = Path(__file__).resolve().parents[2] / "bench" / "stress_executor.py"


def _bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("asyncnet_bench_stress_executor", BENCH)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.timeout(150)
def test_two_thousand_runs_without_hang_leak_or_lost_failure(no_thread_leak: None) -> None:
    bench = _bench()
    # Every run has a hard timeout (a run that hits it is reported as a violation); a run that
    # ignored it would trip the pytest timeout.
    report = bench.stress(2000, seed=0, hard_timeout=30.0)
    assert not report.violations, report.violations[:10]
    assert report.runs == 2000
    assert report.failures_injected == report.failures_reported
    assert report.failures_injected > 200
    assert report.ok_runs > 500
    assert report.cancelled_runs > 10
    assert report.late_cancels > 10  # cancels between runs happened and did not leak into the next run
    # Shared pools grow lazily at first; after that the live thread count must not creep up,
    # including after nets with private pools are closed.
    quarter = len(report.threads) // 4
    assert max(report.threads[quarter:]) <= max(report.threads[:quarter]), report.threads
    # Other tests in the same process may already hold shared pools, so bound the growth, not the total.
    assert max(report.threads[:quarter]) - report.threads[0] <= 16, report.threads
    # Memory: the first runs warm lazily built state (pools, BLAS discovery, kernel buffers), so a
    # leak is growth after the first quarter. The bound allows one step of a few MiB (glibc gives a
    # thread of a new private pool its own malloc arena, seen once in a full-suite run: +5.7 MiB) and
    # still catches a leak of ~11 KB a run (16 MiB over 1,500 runs).
    rss_quarter = len(report.rss) // 4
    assert report.rss[-1] - report.rss[rss_quarter] < 16 * 2**20, [r / 2**20 for r in report.rss]


def _failing_net() -> tuple[Net, Workspace]:
    ws = Workspace()
    ws.feed("x", np.ones((2, 3), np.float32))
    ws.feed("w", np.ones((4, 5), np.float32))
    ws.feed("b", np.ones(4, np.float32))
    net_def = pb.NetDef(name="fails", type="async_scheduling")
    net_def.op.add(type="FC", input=["x", "w", "b"], output=["y"])
    net_def.op.add(type="Relu", input=["x"], output=["z"])
    return Net(net_def, ws, executor="async_scheduling"), ws


@pytest.mark.timeout(60)
def test_finished_runs_with_a_timeout_release_their_state() -> None:
    net, _ = _failing_net()
    refs = []
    with net:
        for _ in range(50):
            try:
                net.run(timeout=600)
            except OperatorError as e:
                refs.append(weakref.ref(e))
    # Workers drop their last task just after the run returns: allow them a moment.
    deadline = time.monotonic() + 5.0
    while True:
        gc.collect()
        alive = sum(r() is not None for r in refs)
        if alive == 0 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert alive == 0, f"{alive} of {len(refs)} run errors are still referenced after the runs ended"
