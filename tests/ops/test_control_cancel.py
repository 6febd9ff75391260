"""Cancelling / timing out an outer net stops the While, Do and If subnets it is running."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from asyncnet.errors import RunCancelledError, RunTimeoutError
from asyncnet.proto import caffe2_pb2 as pb
from asyncnet.serde import make_argument
from asyncnet.workspace import Workspace

from .test_control_loops import counting_loop, net, op, register_exec_test_ops, scalars

EXECUTORS = ["simple", "async_scheduling"]


def endless_while(name: str, body_type: str = "", ms: float = 1.0) -> pb.OperatorDef:
    """while True: i += 1 (sleeping ``ms`` per iteration); no max_trip_count."""
    body = net(
        f"{name}_body", op("CtlTestSleep", ["i"], [f"{name}_s"], ms=ms), op("Add", ["i", "one"], ["i"]), type=body_type
    )
    return op("While", ["c", "i"], ["i"], loop_net=body, name=name)


def main_net(executor: str, *ops: pb.OperatorDef) -> pb.NetDef:
    main = net("main", *ops, type=executor)
    if executor == "async_scheduling":
        main.arg.append(make_argument("num_workers", 2))
    return main


def feed(ws: Workspace) -> None:
    scalars(ws, i=0, one=1)
    ws.feed("c", np.array(True))  # never becomes false


def cancel_soon(m: object, after: float = 0.2) -> threading.Timer:
    t = threading.Timer(after, m.cancel)  # type: ignore[attr-defined]
    t.start()
    return t


@pytest.mark.timeout(30)
@pytest.mark.parametrize("executor", EXECUTORS)
@pytest.mark.parametrize("body_type", ["", "async_scheduling"])
def test_cancel_stops_an_endless_while(no_thread_leak: None, executor: str, body_type: str) -> None:
    register_exec_test_ops()
    with Workspace() as ws:
        feed(ws)
        with ws.create_net(main_net(executor, endless_while("spin", body_type))) as m:
            timer = cancel_soon(m)
            t0 = time.monotonic()
            with pytest.raises(RunCancelledError) as info:
                m.run()
            timer.join()
            assert time.monotonic() - t0 < 5.0
            assert not isinstance(info.value, RunTimeoutError)
            assert "net 'main'" in str(info.value) and "While 'spin'" in str(info.value)
            spun = float(ws.fetch("i"))
            assert spun > 0
            time.sleep(0.1)
            assert float(ws.fetch("i")) == spun  # nothing keeps running afterwards
            # The same net runs again correctly (a bounded loop this time).
            ws.feed("i", np.array(0, np.float32))
            ws.feed("c", np.array(False))
            m.run(timeout=10)
            assert float(ws.fetch("i")) == 0.0


@pytest.mark.timeout(30)
@pytest.mark.parametrize("executor", EXECUTORS)
def test_run_timeout_stops_an_endless_while(no_thread_leak: None, executor: str) -> None:
    register_exec_test_ops()
    with Workspace() as ws:
        feed(ws)
        with ws.create_net(main_net(executor, endless_while("spin"))) as m:
            t0 = time.monotonic()
            with pytest.raises(RunTimeoutError) as info:
                m.run(timeout=0.3)
            assert time.monotonic() - t0 < 5.0
            assert "net 'main'" in str(info.value) and "timeout of 0.3 s" in str(info.value)
            assert "While 'spin'" in str(info.value)
            # A later run without a stop runs to its end.
            ws.feed("i", np.array(0, np.float32))
            ws.feed("c", np.array(True))
            ws.feed("n", np.array(3, np.float32))
            ws.feed("L_c", np.array(False))
    with Workspace() as ws:
        scalars(ws, i=0, n=3, one=1)
        ws.feed("L_c", np.array(False))
        with ws.create_net(main_net(executor, counting_loop("i", "n", [], "L"))) as m:
            m.run(timeout=10)
            assert float(ws.fetch("i")) == 3.0


@pytest.mark.timeout(30)
@pytest.mark.parametrize("executor", EXECUTORS)
def test_cancel_reaches_an_endless_loop_nested_in_a_loop(no_thread_leak: None, executor: str) -> None:
    register_exec_test_ops()
    inner = endless_while("inner_spin", body_type=executor)
    outer = counting_loop("k", "n", [inner], "out")
    outer.name = "outer_loop"
    outer.arg[0].n.type = executor  # the outer loop's body runs under the same executor
    with Workspace() as ws:
        feed(ws)
        scalars(ws, k=0, n=5)
        ws.feed("out_c", np.array(False))
        with ws.create_net(main_net(executor, outer)) as m:
            timer = cancel_soon(m)
            with pytest.raises(RunCancelledError) as info:
                m.run(timeout=20)
            timer.join()
            assert not isinstance(info.value, RunTimeoutError)
            assert "While 'outer_loop'" in str(info.value)
            # Stopped inside the first outer iteration (under async_scheduling the body's `k += 1`
            # does not depend on the inner loop and may already have run).
            assert float(ws.fetch("k")) <= 1.0
            with pytest.raises(RunTimeoutError, match="While 'outer_loop'"):
                m.run(timeout=0.3)


@pytest.mark.timeout(30)
@pytest.mark.parametrize("executor", EXECUTORS)
def test_cancel_stops_do_and_if_subnets_at_the_next_op(no_thread_leak: None, executor: str) -> None:
    register_exec_test_ops()
    sleeps = [op("CtlTestSleep", ["x"], [f"s{k}"], ms=50.0) for k in range(40)]  # 2 s if not stopped
    if_op = op("If", ["t"], ["x"], then_net=net("slow_then", *sleeps, type=executor), name="slow_if")
    do_body = net("slow_do_body", *[op("CtlTestSleep", ["y"], [f"d{k}"], ms=50.0) for k in range(40)], type=executor)
    do = op("Do", ["x", "scope"], ["x", "scope"], net=do_body, inner_blobs=["y"], outer_blobs_idx=[0], name="slow_do")
    for first in (if_op, do):
        with Workspace() as ws:
            ws.feed("t", np.array(True))
            ws.feed("x", np.ones(2, np.float32))
            with ws.create_net(main_net(executor, op("CreateScope", [], ["scope"]), first)) as m:
                timer = cancel_soon(m, 0.15)
                t0 = time.monotonic()
                with pytest.raises(RunCancelledError, match=first.name):
                    m.run()
                timer.join()
                assert time.monotonic() - t0 < 1.5  # well before the 2 s the subnet takes


@pytest.mark.timeout(30)
def test_a_failure_in_a_loop_body_is_still_an_operator_error(no_thread_leak: None) -> None:
    """A subnet's own timeout is its own error, not a stop of the outer run."""
    register_exec_test_ops()
    body = net("body", op("CtlTestFail", [], ["z"], message="inner boom", name="failing"))
    with Workspace() as ws:
        feed(ws)
        from asyncnet.errors import OperatorError

        with ws.create_net(main_net("async_scheduling", op("While", ["c"], [], loop_net=body, name="w"))) as m:
            with pytest.raises(OperatorError) as info:
                m.run(timeout=10)
    assert "While 'w'" in str(info.value) and "CtlTestFail 'failing'" in str(info.value)


@pytest.mark.timeout(30)
@pytest.mark.parametrize("stop", ["cancel", "timeout"])
def test_async_scheduling_sequential_path_stops_an_endless_while(no_thread_leak: None, stop: str) -> None:
    """A net whose chains measured cheap runs on async_scheduling's sequential path: it stops loops too."""
    register_exec_test_ops()
    with Workspace() as ws:
        scalars(ws, i=0, one=1)
        ws.feed("c", np.array(False))  # the loop body never runs: a cheap chain
        with ws.create_net(main_net("async_scheduling", endless_while("spin"))) as m:
            for _ in range(3):
                m.run()
            assert m.executor._sequential_runs > 0  # white-box: the next run takes the sequential path
            ws.feed("c", np.array(True))
            expected = RunTimeoutError if stop == "timeout" else RunCancelledError
            timer = cancel_soon(m) if stop == "cancel" else None
            with pytest.raises(expected, match="While 'spin'") as info:
                m.run(timeout=0.3 if stop == "timeout" else None)
            if timer is not None:
                timer.join()
                assert not isinstance(info.value, RunTimeoutError)
            assert float(ws.fetch("i")) > 0


@pytest.mark.timeout(30)
def test_plan_cancel_reaches_an_endless_while_in_its_net(no_thread_leak: None) -> None:
    from asyncnet.plan import PlanRunner

    register_exec_test_ops()
    plan = pb.PlanDef(name="p")
    plan.network.append(main_net("async_scheduling", endless_while("spin")))
    plan.execution_step.add(name="once", network=["main"])
    with Workspace() as ws:
        feed(ws)
        runner = PlanRunner(ws, plan)
        errors: list[BaseException] = []

        def target() -> None:
            try:
                runner.run()
            except BaseException as e:  # noqa: BLE001 - handed to the test thread
                errors.append(e)

        t = threading.Thread(target=target)
        t.start()
        time.sleep(0.2)
        runner.cancel()
        t.join(5)
        assert not t.is_alive()
        assert len(errors) == 1 and isinstance(errors[0], RunCancelledError), errors
