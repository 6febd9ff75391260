"""Failure semantics, cancellation, timeouts, busy nets (both executors where it applies)."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from asyncnet.errors import ExecutorError, NetBusyError, OperatorError, RunCancelledError, RunTimeoutError
from asyncnet.executors import ExecutorOptions
from asyncnet.workspace import Workspace
from executors.helpers import net, op, run_in_thread, wait_running

EXECUTORS = ["simple", "async_scheduling"]


def _ws() -> Workspace:
    ws = Workspace()
    ws.feed("x", np.arange(4.0))
    return ws


def _chain(fail_at: int, n: int = 5) -> list:  # type: ignore[type-arg]
    ops = []
    for i in range(n):
        src = "x" if i == 0 else f"c{i - 1}"
        if i == fail_at:
            ops.append(op("ExecTestFail", [src], [f"c{i}"], name=f"bad{i}", message=f"chain op {i} broke"))
        else:
            ops.append(op("Relu", [src], [f"c{i}"], name=f"ok{i}"))
    return ops


@pytest.mark.timeout(30)
@pytest.mark.parametrize("executor", EXECUTORS)
@pytest.mark.parametrize("fail_at", [0, 2, 4])
def test_failure_in_chain_names_op_and_keeps_finished_blobs(executor: str, fail_at: int, no_thread_leak: None) -> None:
    d = net(_chain(fail_at), name="chainy")
    d.op[fail_at].debug_info = "model.py:42"
    with _ws() as ws:
        n = ws.create_net(d, executor=executor)
        with pytest.raises(OperatorError) as ei:
            n.run()
        e = ei.value
        assert (e.index, e.op_type, e.name) == (fail_at, "ExecTestFail", f"bad{fail_at}")
        text = str(e)
        assert f"op #{fail_at} ExecTestFail 'bad{fail_at}'" in text and "net 'chainy'" in text
        assert "cpu:0" in text and "model.py:42" in text and f"chain op {fail_at} broke" in text
        assert isinstance(e.__cause__, ValueError)
        assert [ws.has(f"c{i}") for i in range(5)] == [i < fail_at for i in range(5)]
        # the executor is usable again once the input problem is gone
        with pytest.raises(OperatorError):
            n.run()


@pytest.mark.timeout(30)
@pytest.mark.parametrize("where", ["first", "middle", "last"])
def test_failure_in_branch_stops_scheduling_but_running_branches_finish(where: str, no_thread_leak: None) -> None:
    # branch A: sleep 150 ms then more ops; branch B fails at `where`; join after both
    pos = {"first": 0, "middle": 1, "last": 2}[where]
    b_ops = []
    for i in range(3):
        src = "x" if i == 0 else f"b{i - 1}"
        t = "ExecTestFail" if i == pos else "Relu"
        b_ops.append(op(t, [src], [f"b{i}"], name=f"B{i}"))
    ops = [
        op("ExecTestSleep", ["x"], ["a0"], name="A0", ms=150.0),
        op("Relu", ["a0"], ["a1"], name="A1"),
        *b_ops,
        op("Sum", ["a1", "b2"], ["joined"], name="join"),
    ]
    with _ws() as ws:
        n = ws.create_net(net(ops), options=ExecutorOptions(threads=2))
        t0 = time.monotonic()
        with pytest.raises(OperatorError) as ei:
            n.run(timeout=20)
        assert ei.value.name == f"B{pos}"
        # the sleeping op was running and finished (its blob is there), its child was not started
        assert time.monotonic() - t0 >= 0.1
        assert ws.has("a0") and not ws.has("a1") and not ws.has("joined")
        assert [ws.has(f"b{i}") for i in range(3)] == [i < pos for i in range(3)]


@pytest.mark.timeout(30)
def test_several_failures_are_all_reported(no_thread_leak: None) -> None:
    ops = [op("ExecTestFail", ["x"], [f"f{i}"], name=f"f{i}", ms=60.0, message=f"fail {i}") for i in range(3)]
    ops.append(op("Sum", ["f0", "f1", "f2"], ["s"]))
    with _ws() as ws:
        n = ws.create_net(net(ops), options=ExecutorOptions(threads=3, shared_pools=False))
        with pytest.raises(OperatorError) as ei:
            n.run(timeout=10)
        e = ei.value
        names = {e.name, *(o.name for o in e.others)}
        assert names == {"f0", "f1", "f2"}, names  # all three were already running when the first failed
        assert "more failure(s)" in str(e)
        assert all(isinstance(o.__cause__, ValueError) for o in e.others)
        n.close()


@pytest.mark.timeout(30)
def test_async_op_failure(no_thread_leak: None) -> None:
    ops = [
        op("ExecTestAsyncFail", ["x"], ["y"], name="afail", ms=20.0, message="disk on fire"),
        op("Relu", ["y"], ["z"]),
        op("AsyncWait", ["x"], ["w"], ms=1.0),
    ]
    with _ws() as ws:
        n = ws.create_net(net(ops))
        with pytest.raises(OperatorError) as ei:
            n.run(timeout=10)
        assert ei.value.name == "afail" and "disk on fire" in str(ei.value)
        assert not ws.has("z") and ws.has("w")
        ws.feed("x", np.ones(2))
        with pytest.raises(OperatorError):
            n.run(timeout=10)


def _long_net() -> list:  # type: ignore[type-arg]
    return [
        op("ExecTestSleep", ["x"], ["s0"], ms=30.0),
        *[op("ExecTestSleep", [f"s{i}"], [f"s{i + 1}"], ms=30.0) for i in range(60)],
        op("AsyncWait", ["x"], ["w"], ms=5000.0),
        op("Relu", ["w"], ["after_wait"]),
    ]


@pytest.mark.timeout(30)
@pytest.mark.parametrize("executor", EXECUTORS)
def test_cancel_from_another_thread_stops_promptly(executor: str, no_thread_leak: None) -> None:
    with _ws() as ws:
        n = ws.create_net(net(_long_net()), executor=executor)
        t, errors = run_in_thread(n.run)
        wait_running(n)
        time.sleep(0.1)
        t0 = time.monotonic()
        n.cancel()
        t.join(5)
        assert not t.is_alive()
        assert time.monotonic() - t0 < 1.0
        assert len(errors) == 1 and isinstance(errors[0], RunCancelledError)
        assert not isinstance(errors[0], RunTimeoutError)
        assert not ws.has("s60") and not ws.has("after_wait")
        # a cancel between runs does not poison the next run
        ws.feed("x", np.ones(1))
        short = ws.create_net(net([op("Relu", ["x"], ["ok"])], name="short"), executor=executor)
        short.cancel()
        short.run()
        assert ws.has("ok")


@pytest.mark.timeout(30)
@pytest.mark.parametrize("executor", EXECUTORS)
def test_timeout(executor: str, no_thread_leak: None) -> None:
    with _ws() as ws:
        n = ws.create_net(net(_long_net()), executor=executor)
        t0 = time.monotonic()
        with pytest.raises(RunTimeoutError, match="timeout of 0.2 s"):
            n.run(timeout=0.2)
        assert time.monotonic() - t0 < 1.0
        assert not ws.has("after_wait")


@pytest.mark.timeout(30)
@pytest.mark.parametrize("executor", EXECUTORS)
def test_timeout_cancels_pending_async_op_without_waiting_for_it(executor: str, no_thread_leak: None) -> None:
    with _ws() as ws:
        n = ws.create_net(net([op("AsyncWait", ["x"], ["w"], ms=10000.0), op("Relu", ["w"], ["r"])]), executor=executor)
        t0 = time.monotonic()
        with pytest.raises(RunTimeoutError):
            n.run(timeout=0.1)
        assert time.monotonic() - t0 < 1.0
        assert not ws.has("w")
        # and the next run works
        n2 = ws.create_net(net([op("AsyncWait", ["x"], ["w"], ms=1.0), op("Relu", ["w"], ["r"])], name="t2"))
        n2.run(timeout=5)
        assert ws.has("r")


@pytest.mark.timeout(30)
@pytest.mark.parametrize("executor", EXECUTORS)
def test_running_net_refuses_second_run_but_other_nets_run(executor: str, no_thread_leak: None) -> None:
    with _ws() as ws:
        slow = ws.create_net(net([op("ExecTestSleep", ["x"], ["s"], ms=300.0)], name="slow"), executor=executor)
        other = ws.create_net(net([op("Relu", ["x"], ["r"])], name="other"), executor=executor)
        t, errors = run_in_thread(slow.run)
        wait_running(slow)
        with pytest.raises(NetBusyError, match="'slow' is already running"):
            slow.run()
        other.run()
        assert ws.has("r")
        t.join(5)
        assert not errors and ws.has("s")


@pytest.mark.timeout(60)
def test_different_nets_concurrently_from_many_threads(no_thread_leak: None) -> None:
    with _ws() as ws:
        nets = []
        for k in range(4):
            ops = [op("Scale", ["x"], [f"y{k}_0"], scale=float(k + 1))]
            ops += [op("Add", [f"y{k}_{i}", "x"], [f"y{k}_{i + 1}"]) for i in range(30)]
            nets.append(ws.create_net(net(ops, name=f"n{k}")))
        barrier = threading.Barrier(4)

        def body(n: object) -> None:
            barrier.wait()
            for _ in range(20):
                n.run(timeout=10)  # type: ignore[attr-defined]

        threads = [run_in_thread(lambda n=n: body(n)) for n in nets]
        for t, errs in threads:
            t.join(30)
            assert not errs
        for k in range(4):
            np.testing.assert_array_equal(ws.fetch(f"y{k}_30"), np.arange(4.0) * (k + 1) + 30 * np.arange(4.0))


@pytest.mark.timeout(30)
def test_closed_executor_refuses_to_run(no_thread_leak: None) -> None:
    with _ws() as ws:
        n = ws.create_net(net([op("Relu", ["x"], ["r"])]), options=ExecutorOptions(shared_pools=False))
        n.close()
        with pytest.raises(ExecutorError, match="closed"):
            n.run()
