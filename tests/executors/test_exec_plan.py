"""Plan execution (asyncnet.plan, Workspace.run_plan, asyncnet run-plan)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from asyncnet.cli import main
from asyncnet.errors import NetDefinitionError, OperatorError, UnsupportedError
from asyncnet.plan import PlanRunner, run_plan
from asyncnet.proto import caffe2_pb2 as pb
from asyncnet.serde import write_message
from asyncnet.workspace import Workspace
from executors import helpers
from executors.helpers import net, op


def _counter_ws() -> Workspace:
    ws = Workspace()
    ws.feed("counter", np.zeros(1, np.int64))
    ws.feed("one", np.ones(1, np.int64))
    ws.feed("three", np.full(1, 3, np.int64))
    return ws


def _plan(*nets: pb.NetDef) -> pb.PlanDef:
    p = pb.PlanDef(name="p")
    p.network.extend(nets)
    return p


INC = net([op("Add", ["counter", "one"], ["counter"]), op("GE", ["counter", "three"], ["stop"])], name="inc")


def test_num_iter_and_default_single_iteration() -> None:
    p = _plan(INC)
    p.execution_step.add(name="five", network=["inc"], num_iter=5)
    p.execution_step.add(name="once", network=["inc"])
    with _counter_ws() as ws:
        runner = run_plan(ws, p)
        assert int(ws.fetch("counter")[0]) == 6
        assert runner.iterations == {"five": 5, "once": 1}
        assert "inc" in ws.nets()


def test_should_stop_blob_and_only_once() -> None:
    p = _plan(INC)
    p.execution_step.add(name="until", network=["inc"], should_stop_blob="stop")
    with _counter_ws() as ws:
        ws.run_plan(p)
        assert int(ws.fetch("counter")[0]) == 3
    p2 = _plan(INC)
    p2.execution_step.add(name="one", network=["inc"], should_stop_blob="stop", only_once=True)
    with _counter_ws() as ws:
        ws.run_plan(p2)
        assert int(ws.fetch("counter")[0]) == 1


def test_nested_substeps_iterate_and_stop() -> None:
    p = _plan(INC, net([op("Scale", ["counter"], ["scaled"], scale=2.0)], name="dbl"))
    outer = p.execution_step.add(name="outer", num_iter=2)
    outer.substep.add(name="a", network=["inc"], num_iter=2)
    outer.substep.add(name="b", network=["dbl"])
    with _counter_ws() as ws:
        run_plan(ws, p)
        assert int(ws.fetch("counter")[0]) == 4
        assert int(ws.fetch("scaled")[0]) == 8
    p2 = _plan(INC)
    loop = p2.execution_step.add(name="loop", should_stop_blob="stop")
    loop.substep.add(name="inner", network=["inc"])
    with _counter_ws() as ws:
        run_plan(ws, p2)
        assert int(ws.fetch("counter")[0]) == 3


@pytest.mark.timeout(30)
def test_concurrent_substeps_run_at_once(no_thread_leak: None) -> None:
    nets = [net([op("ExecTestSleep", ["x"], [f"y{i}"], ms=250.0)], name=f"s{i}") for i in range(4)]
    p = _plan(*nets)
    step = p.execution_step.add(name="par", concurrent_substeps=True)
    for i in range(4):
        step.substep.add(name=f"sub{i}", network=[f"s{i}"])
    with Workspace() as ws:
        ws.feed("x", np.ones(2))
        t0 = time.monotonic()
        run_plan(ws, p)
        elapsed = time.monotonic() - t0
        assert elapsed < 0.7, elapsed  # 1 s in sequence
        assert all(ws.has(f"y{i}") for i in range(4))


@pytest.mark.timeout(30)
def test_concurrent_substep_failure_stops_the_others(no_thread_leak: None) -> None:
    long = net(
        [op("ExecTestSleep", ["x"], ["s0"], ms=20.0)]
        + [op("ExecTestSleep", [f"s{i}"], [f"s{i + 1}"], ms=20.0) for i in range(100)],
        name="long",
    )
    bad = net([op("ExecTestFail", ["x"], ["z"], ms=50.0, message="substep broke")], name="bad")
    p = _plan(long, bad)
    step = p.execution_step.add(name="par", concurrent_substeps=True, num_iter=3)
    step.substep.add(name="long", network=["long"])
    step.substep.add(name="bad", network=["bad"])
    with Workspace() as ws:
        ws.feed("x", np.ones(2))
        t0 = time.monotonic()
        with pytest.raises(OperatorError, match="substep broke"):
            run_plan(ws, p)
        assert time.monotonic() - t0 < 1.0  # the long substep (2 s) was cancelled
        assert not ws.has("s100")


@pytest.mark.timeout(30)
def test_report_net_and_run_every_ms(no_thread_leak: None) -> None:
    helpers.EVENTS.clear()
    work = net([op("ExecTestSleep", ["x"], ["w"], ms=200.0, tag="work")], name="work")
    report = net([op("ExecTestSleep", ["x"], ["r"], tag="report")], name="report")
    tick = net([op("ExecTestSleep", ["x"], ["t"], tag="tick")], name="tick")
    p = _plan(work, report, tick)
    step = p.execution_step.add(name="main", report_net="report", report_interval=1)
    step.substep.add(name="work", network=["work"])
    step.substep.add(name="tick", network=["tick"], run_every_ms=40)
    with Workspace() as ws:
        ws.feed("x", np.ones(1))
        run_plan(ws, p)
    tags = [e[0] for e in helpers.EVENTS]
    assert tags.count("work") == 1
    assert tags.count("report") == 1  # the step ended before the 1 s interval: only the final report
    assert 3 <= tags.count("tick") <= 7, tags


def test_plan_errors() -> None:
    with Workspace() as ws:
        p = _plan(INC, INC)
        with pytest.raises(NetDefinitionError, match="two networks named 'inc'"):
            PlanRunner(ws, p)
        p = _plan(INC)
        p.execution_step.add(name="s", network=["nope"])
        with pytest.raises(NetDefinitionError, match="step 's' uses undefined net 'nope'; plan networks: inc"):
            run_plan(ws, p)
        p = _plan(INC)
        bad = p.execution_step.add(name="both", network=["inc"])
        bad.substep.add(name="x", network=["inc"])
        with pytest.raises(NetDefinitionError, match="either substeps or networks"):
            run_plan(ws, p)
        p = _plan(INC)
        p.execution_step.add(name="s", network=["inc"], num_iter=2, should_stop_blob="stop")
        with pytest.raises(NetDefinitionError, match="num_iter must not be set"):
            run_plan(ws, p)
        p = _plan(INC)
        p.execution_step.add(name="s", network=["inc"], create_workspace=True)
        with pytest.raises(UnsupportedError, match="create_workspace"):
            run_plan(ws, p)


def test_should_stop_blob_must_be_bool() -> None:
    p = _plan(INC)
    p.execution_step.add(name="until", network=["inc"], should_stop_blob="counter")
    with _counter_ws() as ws:
        with pytest.raises(Exception, match="should_stop_blob 'counter' must hold a scalar bool, found int64"):
            run_plan(ws, p)


def test_run_plan_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    init = net([op("ConstantFill", [], ["counter"], shape=[1], value=0.0), op("ConstantFill", [], ["one"], shape=[1], value=1.0),
                op("ConstantFill", [], ["three"], shape=[1], value=3.0)], name="init")  # fmt: skip
    p = _plan(init, INC)
    p.execution_step.add(name="init", network=["init"])
    p.execution_step.add(name="loop", network=["inc"], should_stop_blob="stop")
    path = tmp_path / "plan.pbtxt"
    write_message(p, path)
    out_npz = tmp_path / "out.npz"
    assert main(["run-plan", str(path), "--outputs", str(out_npz), "--fetch", "counter"]) == 0
    out = capsys.readouterr().out
    assert "ran plan 'p' (2 nets, 2 steps)" in out and "step 'loop': 3 iteration(s)" in out
    assert float(np.load(out_npz)["counter"][0]) == 3.0
    p.execution_step.add(name="bad", network=["missing"])
    write_message(p, path)
    assert main(["run-plan", str(path)]) == 1
    assert "uses undefined net 'missing'" in capsys.readouterr().err


@pytest.mark.timeout(30)
def test_plan_cancel_from_another_thread(no_thread_leak: None) -> None:
    from asyncnet.errors import RunCancelledError
    from executors.helpers import run_in_thread

    spins = [net([op("ExecTestSleep", ["x"], [f"y{i}"], ms=10.0)], name=f"spin{i}") for i in range(2)]
    p = _plan(*spins)
    loop = p.execution_step.add(name="forever", should_stop_blob="never_set")
    loop.substep.add(name="a", network=["spin0"])
    loop.substep.add(name="b", network=["spin1"])
    loop.concurrent_substeps = True
    with Workspace() as ws:
        ws.feed("x", np.ones(1))
        runner = PlanRunner(ws, p)
        t, errors = run_in_thread(runner.run)
        time.sleep(0.15)
        t0 = time.monotonic()
        runner.cancel()
        t.join(5)
        assert not t.is_alive() and time.monotonic() - t0 < 1.0
        assert len(errors) == 1 and isinstance(errors[0], RunCancelledError)
        assert runner.iterations["forever"] >= 2


@pytest.mark.timeout(30)
def test_hostile_concurrency_is_refused_before_starting_threads(no_thread_leak: None) -> None:
    plan = pb.PlanDef(name="hostile")
    net = plan.network.add(name="n")
    net.op.add(type="ConstantFill", output=["x"])
    step = plan.execution_step.add(name="top", concurrent_substeps=True, num_concurrent_instances=10**6)
    step.substep.add(name="a", network=["n"])
    step.substep.add(name="b", network=["n"])
    with pytest.raises(NetDefinitionError, match=r"step 'top'.*would start 2000000 threads"):
        Workspace().run_plan(plan)
