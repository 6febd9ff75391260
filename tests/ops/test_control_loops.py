"""While, Do, CreateScope/HasScope, and sub-nets under async_scheduling (no deadlock)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from asyncnet.errors import ArgumentError, BlobNotFoundError, OperatorError
from asyncnet.opinfo import OpInfo
from asyncnet.proto import caffe2_pb2 as pb
from asyncnet.registry import default_registry, register_op
from asyncnet.schema import Arg, TensorInfo
from asyncnet.serde import make_argument
from asyncnet.workspace import Workspace


def register_exec_test_ops() -> None:
    """Test ops of this file (own names: the executor tests' helpers keep module state of their own)."""
    if default_registry().has("CtlTestSleep"):
        return

    def infer(op: OpInfo, ins: list[TensorInfo]) -> list[TensorInfo]:
        return [ins[0] if ins else TensorInfo()] * len(op.outputs)

    @register_op(
        "CtlTestSleep",
        inputs=(0, -1),
        outputs=(0, -1),
        infer=infer,
        args=(Arg("ms", 0.0, "sleep"),),
        doc="Test only: sleeps `ms` (holding its thread), passes input 0 to every output.",
    )
    def sleep_factory(op: OpInfo) -> Callable[..., Any]:
        delay = float(op.arg("ms", 0.0)) / 1000.0

        def run(*xs: Any) -> tuple[Any, ...]:
            time.sleep(delay)
            return (xs[0] if xs else np.zeros(1),) * len(op.outputs)

        return run

    @register_op(
        "CtlTestFail",
        inputs=(0, -1),
        outputs=(0, -1),
        infer=infer,
        args=(Arg("message", "boom", "error text"),),
        doc="Test only: raises ValueError(message).",
    )
    def fail_factory(op: OpInfo) -> Callable[..., Any]:
        message = str(op.arg("message", "boom"))

        def run(*xs: Any) -> tuple[Any, ...]:
            raise ValueError(message)

        return run


def op(op_type: str, inputs: list[str], outputs: list[str], **args: Any) -> pb.OperatorDef:
    o = pb.OperatorDef(type=op_type, input=inputs, output=outputs, name=args.pop("name", ""))
    for k, v in args.items():
        if isinstance(v, pb.NetDef):
            o.arg.append(pb.Argument(name=k, n=v))
        else:
            o.arg.append(make_argument(k, v))
    return o


def net(name: str, *ops: pb.OperatorDef, type: str = "") -> pb.NetDef:
    n = pb.NetDef(name=name, type=type)
    n.op.extend(ops)
    return n


def counting_loop(i: str, n: str, body: list[pb.OperatorDef], tag: str) -> pb.OperatorDef:
    """while i < n: body; i += 1 (the condition computed by cond_net)."""
    cond = net(f"{tag}_cond", op("LT", [i, n], [f"{tag}_c"]))
    loop = net(f"{tag}_body", *body, op("Add", [i, "one"], [i]))
    return op("While", [f"{tag}_c", i, n], [i], loop_net=loop, cond_net=cond)


def scalars(ws: Workspace, **values: float) -> None:
    for k, v in values.items():
        ws.feed(k, np.array(v, np.float32))


def test_while_counts_and_accumulates() -> None:
    with Workspace() as ws:
        scalars(ws, i=0, n=5, one=1, acc=0, x=2.5)
        ws.feed("L_c", np.array(False))
        ws.run_operator_once(counting_loop("i", "n", [op("Add", ["acc", "x"], ["acc"])], "L"))
        assert float(ws.fetch("i")) == 5.0
        assert float(ws.fetch("acc")) == pytest.approx(12.5)
        assert bool(ws.fetch("L_c")) is False


def test_while_without_cond_net_reads_the_condition_blob_each_time() -> None:
    # The body itself updates the condition (input 0): loop while i < 3.
    body = net("body", op("Add", ["i", "one"], ["i"]), op("LT", ["i", "three"], ["c"]))
    with Workspace() as ws:
        scalars(ws, i=0, one=1, three=3)
        ws.feed("c", np.array(True))
        ws.run_operator_once(op("While", ["c", "i"], ["i"], loop_net=body))
        assert float(ws.fetch("i")) == 3.0
        ws.feed("c", np.array(False))  # a false condition runs the body zero times
        ws.run_operator_once(op("While", ["c", "i"], ["i"], loop_net=body))
        assert float(ws.fetch("i")) == 3.0


def test_while_max_trip_count_bounds_an_endless_loop() -> None:
    body = net("body", op("Add", ["i", "one"], ["i"]))
    with Workspace() as ws:
        scalars(ws, i=0, one=1)
        ws.feed("c", np.array(True))  # never becomes false
        ws.run_operator_once(op("While", ["c", "i"], ["i"], loop_net=body, max_trip_count=7))
        assert float(ws.fetch("i")) == 7.0
        ws.run_operator_once(op("While", ["c", "i"], ["i"], loop_net=body, max_trip_count=0))
        assert float(ws.fetch("i")) == 7.0


def test_nested_while_loops() -> None:
    inner = counting_loop("j", "m", [op("Add", ["acc", "one"], ["acc"])], "in")
    reset = op("ConstantFill", [], ["j"], shape=[], value=0.0)
    outer = counting_loop("i", "n", [reset, inner], "out")
    with Workspace() as ws:
        scalars(ws, i=0, n=3, m=4, j=0, one=1, acc=0)
        ws.feed("in_c", np.array(False))
        ws.feed("out_c", np.array(False))
        main = net("main", outer)
        ws.run_net_once(main)
        assert float(ws.fetch("acc")) == 12.0
        ws.feed("i", np.array(0, np.float32))
        ws.feed("acc", np.array(0, np.float32))
        ws.run_net_once(main, executor="async_scheduling")
        assert float(ws.fetch("acc")) == 12.0


def test_failure_inside_a_nested_loop_body_names_inner_and_outer_ops() -> None:
    bad = op("FC", ["a", "w", "b"], ["y"], name="bad_fc")
    inner = counting_loop("j", "m", [bad], "in")
    inner.name = "inner_while"
    outer = counting_loop("i", "n", [inner], "out")
    outer.name = "outer_while"
    with Workspace() as ws:
        scalars(ws, i=0, n=2, m=2, j=0, one=1)
        ws.feed("in_c", np.array(False))
        ws.feed("out_c", np.array(False))
        ws.feed("a", np.ones((2, 3), np.float32))
        ws.feed("w", np.ones((4, 5), np.float32))
        ws.feed("b", np.ones(4, np.float32))
        with pytest.raises(OperatorError) as info:
            ws.run_net_once(net("main", outer))
    text = str(info.value)
    assert "While 'outer_while' in net 'main'" in text
    assert "While 'inner_while' in net" in text
    assert "FC 'bad_fc' in net 'in_body'" in text


def test_while_needs_loop_net_and_a_scalar_condition() -> None:
    with Workspace() as ws:
        ws.feed("c", np.array([True, True]))
        with pytest.raises(ArgumentError, match="loop_net"):
            ws.run_operator_once(op("While", ["c"], []))
        with pytest.raises(OperatorError, match="condition must be a scalar"):
            ws.run_operator_once(op("While", ["c"], [], loop_net=net("b")))


def do_op(ins: list[str], outs: list[str], inner: list[str], idx: list[int], body: pb.NetDef, **kw: Any) -> Any:
    return op("Do", [*ins, "scope"], [*outs, "scope"], net=body, inner_blobs=inner, outer_blobs_idx=idx, **kw)


def test_do_runs_in_a_child_workspace_with_bound_blobs() -> None:
    body = net("do_body", op("Relu", ["in_x"], ["tmp"]), op("Add", ["tmp", "in_x"], ["in_y"]))
    with Workspace() as ws:
        ws.feed("x", np.array([-1.0, 2.0], np.float32))
        ws.run_operator_once(op("CreateScope", [], ["scope"]))
        ws.run_operator_once(op("HasScope", ["scope"], ["has"]))
        assert bool(ws.fetch("has")) is False
        ws.run_operator_once(do_op(["x"], ["y"], ["in_x", "in_y"], [0, 1], body))
        np.testing.assert_array_equal(ws.fetch("y"), [-1.0, 4.0])
        assert not ws.has("tmp") and not ws.has("in_y")  # inner blobs stay inside
        ws.run_operator_once(op("HasScope", ["scope"], ["has"]))
        assert bool(ws.fetch("has")) is True
        assert len(ws.fetch("scope")) == 1
        ws.run_operator_once(do_op(["x"], ["y"], ["in_x", "in_y"], [0, 1], body, reuse_workspace=True))
        assert len(ws.fetch("scope")) == 1
        ws.run_operator_once(do_op(["x"], ["y"], ["in_x", "in_y"], [0, 1], body))
        assert len(ws.fetch("scope")) == 2


def test_do_child_sees_only_bound_blobs_and_checks_its_arguments() -> None:
    body = net("do_body", op("Relu", ["x"], ["in_y"]))
    with Workspace() as ws:
        ws.feed("x", np.ones(2, np.float32))
        ws.run_operator_once(op("CreateScope", [], ["scope"]))
        with pytest.raises(OperatorError, match="Do.*Relu.*'x'"):
            ws.run_operator_once(do_op(["x"], ["y"], ["in_y"], [1], body))
        with pytest.raises(ArgumentError, match="out of range"):
            ws.run_operator_once(do_op(["x"], ["y"], ["in_y"], [5], body))
        with pytest.raises(ArgumentError, match="inner_blobs has 2"):
            ws.run_operator_once(do_op(["x"], ["y"], ["a", "b"], [0], body))
        with pytest.raises(ArgumentError, match="same scope blob"):
            ws.run_operator_once(op("Do", ["x", "scope"], ["y", "other"], net=body))
        ws.feed("notscope", np.zeros(1))
        with pytest.raises(OperatorError, match="expected a scope"):
            ws.run_operator_once(op("Do", ["notscope"], ["notscope"], net=body))
    with Workspace() as ws, pytest.raises(BlobNotFoundError):
        ws.run_net_once(net("m", do_op([], [], [], [], net("empty"))))


@pytest.mark.timeout(60)
@pytest.mark.parametrize("inner_type", ["simple", "async_scheduling"])
def test_more_nested_subnets_than_workers_finish(no_thread_leak: None, inner_type: str) -> None:
    """Six parallel While ops (each running async sub-nets that nest a Do and an If) on a
    2-worker pool: every worker is held by a parent op while its sub-nets need the pool."""
    register_exec_test_ops()
    width = 6
    main = net("main", type="async_scheduling")
    main.arg.append(make_argument("num_workers", 2))
    for k in range(width):
        then = net(f"then{k}", op("CtlTestSleep", [f"v{k}"], [f"w{k}"], ms=2.0), type=inner_type)
        do_body = net(
            f"dobody{k}",
            op("If", ["t"], [f"in{k}"], then_net=net(f"if{k}", op("Add", [f"in{k}", "one"], [f"in{k}"]))),
            type=inner_type,
        )
        body = [
            op("CtlTestSleep", ["x"], [f"v{k}"], ms=2.0),
            op("If", ["t", f"v{k}"], [f"w{k}"], then_net=then),
            op(
                "Do",
                [f"acc{k}", "t", "one", f"scope{k}"],
                [f"acc{k}", f"scope{k}"],
                net=do_body,
                inner_blobs=[f"in{k}", "t", "one"],
                outer_blobs_idx=[0, 1, 2],
            ),
        ]
        loop = counting_loop(f"i{k}", "n", body, f"L{k}")
        loop.input.extend([f"acc{k}", f"scope{k}"])
        loop.output.extend([f"acc{k}"])
        loop.arg[0].n.type = inner_type  # loop_net
        main.op.append(op("CreateScope", [], [f"scope{k}"]))
        main.op.append(loop)
    with Workspace() as ws:
        scalars(ws, n=3, one=1, x=1)
        ws.feed("t", np.array(True))
        for k in range(width):
            scalars(ws, **{f"i{k}": 0, f"acc{k}": 10 * k})
            ws.feed(f"L{k}_c", np.array(False))
        with ws.create_net(main) as m:
            m.run(timeout=30)
        for k in range(width):
            assert float(ws.fetch(f"acc{k}")) == 10 * k + 3
            assert float(ws.fetch(f"i{k}")) == 3


@pytest.mark.timeout(60)
def test_failure_in_a_subnet_under_async_scheduling_stops_the_run(no_thread_leak: None) -> None:
    register_exec_test_ops()
    main = net("main", type="async_scheduling")
    main.arg.append(make_argument("num_workers", 2))
    for k in range(4):
        body = net(f"b{k}", op("CtlTestSleep", ["x"], [f"y{k}"], ms=1.0), type="async_scheduling")
        if k == 2:
            body.op.append(op("CtlTestFail", [], [f"z{k}"], message="inner boom", name="failing"))
        main.op.append(op("If", ["t"], [f"y{k}"], then_net=body, name=f"if{k}"))
    with Workspace() as ws:
        ws.feed("t", np.array(True))
        ws.feed("x", np.ones(2, np.float32))
        with ws.create_net(main) as m, pytest.raises(OperatorError) as info:
            m.run(timeout=30)
    assert "If 'if2'" in str(info.value) and "CtlTestFail 'failing' in net 'b2'" in str(info.value)
