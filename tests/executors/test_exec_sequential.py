"""async_scheduling's sequential path: nets whose chains all measured cheap run as a plain loop."""

from __future__ import annotations

import numpy as np
import pytest

from asyncnet.errors import OperatorError, RunCancelledError, RunTimeoutError
from asyncnet.executors import ExecutorOptions, async_scheduling
from asyncnet.executors.async_scheduling import SEQUENTIAL_RUNS
from asyncnet.workspace import Workspace
from executors.helpers import assert_same_blobs, blobs_of, net, op, run_in_thread


def _tiny_wide() -> list:  # type: ignore[type-arg]
    ops = []
    for b in range(4):
        src = "x"
        for d in range(3):
            ops.append(op("MatMul", [src, "w"], [f"m{b}{d}"]))
            ops.append(op("Relu", [f"m{b}{d}"], [f"r{b}{d}"]))
            src = f"r{b}{d}"
    ops.append(op("Sum", [f"r{b}2" for b in range(4)], ["out"]))
    return ops


def _ws(x: np.ndarray) -> Workspace:
    ws = Workspace()
    ws.feed("x", x)
    ws.feed("w", np.linspace(-1, 1, 9, dtype=np.float32).reshape(3, 3))
    return ws


X = np.arange(6, dtype=np.float32).reshape(2, 3)


@pytest.mark.timeout(60)
def test_cheap_nets_go_sequential_give_simples_blobs_and_are_measured_again(
    no_thread_leak: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    # every chain counts as cheap however loaded the machine is
    monkeypatch.setattr(async_scheduling, "MAX_INLINE_SECONDS", 10.0)
    with _ws(X) as ws:
        ws.create_net(net(_tiny_wide(), name="ref"), executor="simple").run()
        want = blobs_of(ws)
    with _ws(X) as ws:
        n = ws.create_net(net(_tiny_wide()), options=ExecutorOptions(threads=2, shared_pools=False))
        ex = n.executor
        ex.inline_seconds = 10.0
        ex._inline_limit = 10.0  # type: ignore[attr-defined]
        n.run(timeout=20)  # scheduled: measures the chains
        assert ex._sequential_runs == SEQUENTIAL_RUNS  # type: ignore[attr-defined]
        for r in range(SEQUENTIAL_RUNS):
            ws.feed("out", np.zeros(1))
            n.run(timeout=20)
            assert_same_blobs(want, blobs_of(ws), f"sequential run {r}")
        assert ex._sequential_runs == 0  # type: ignore[attr-defined]
        n.run()  # scheduled again, and back on the sequential path after it
        assert ex._sequential_runs == SEQUENTIAL_RUNS  # type: ignore[attr-defined]
        assert_same_blobs(want, blobs_of(ws), "scheduled run")
        n.close()


@pytest.mark.timeout(60)
def test_expensive_chains_keep_the_scheduler(no_thread_leak: None) -> None:
    ops = [op("ExecTestSleep", ["x"], [f"s{b}"], ms=5.0) for b in range(2)]
    with _ws(X) as ws:
        n = ws.create_net(net(ops), options=ExecutorOptions(threads=2, shared_pools=False))
        n.executor._inline_limit = 1e-3  # type: ignore[attr-defined]
        n.executor.inline_seconds = 1e-3  # type: ignore[attr-defined]
        for _ in range(3):
            n.run(timeout=20)
            assert n.executor._sequential_runs == 0  # type: ignore[attr-defined]
        n.close()


@pytest.mark.timeout(60)
def test_failure_on_the_sequential_path_names_the_op(no_thread_leak: None) -> None:
    with _ws(X) as ws:
        d = net(_tiny_wide(), name="seqfail")
        n = ws.create_net(d, options=ExecutorOptions(threads=2, shared_pools=False))
        n.run()
        n.executor._sequential_runs = 5  # type: ignore[attr-defined]
        ws.feed("x", np.ones((2, 4), np.float32))  # MatMul's inner dimensions no longer match
        with pytest.raises(OperatorError) as ei:
            n.run()
        assert (ei.value.index, ei.value.op_type) == (0, "MatMul") and "net 'seqfail'" in str(ei.value)
        ws.feed("x", X)
        n.run()  # the net still runs afterwards
        n.close()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("how", ["cancel", "timeout"])
def test_cancel_and_timeout_on_the_sequential_path(how: str, no_thread_leak: None) -> None:
    ops = [op("ExecTestSleep", ["x" if i == 0 else f"s{i - 1}"], [f"s{i}"], ms=10.0) for i in range(100)]
    with _ws(X) as ws:
        n = ws.create_net(net(ops), options=ExecutorOptions(threads=2, shared_pools=False))
        ex = n.executor
        ex._sequential_runs = 5  # type: ignore[attr-defined]
        if how == "timeout":
            with pytest.raises(RunTimeoutError, match="timeout of 0.1 s"):
                n.run(timeout=0.1)
        else:
            t, errors = run_in_thread(n.run)
            deadline = 200
            while ex._sequential is None and deadline:  # type: ignore[attr-defined]
                deadline -= 1
                t.join(0.005)
            n.cancel()
            t.join(20)
            assert len(errors) == 1 and isinstance(errors[0], RunCancelledError), errors
        assert not ws.has("s99")
        n.close()
