"""Control ops: If (sub-nets in the op's workspace) and IsEmpty."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from asyncnet.errors import ArgumentError, OperatorError
from asyncnet.proto import caffe2_pb2 as pb
from asyncnet.serde import make_argument
from asyncnet.workspace import Workspace


def op(op_type: str, inputs: list[str], outputs: list[str], **args: Any) -> pb.OperatorDef:
    o = pb.OperatorDef(type=op_type, input=inputs, output=outputs)
    for k, v in args.items():
        o.arg.append(make_argument(k, v))
    return o


def subnet(name: str, *ops: pb.OperatorDef) -> pb.NetDef:
    n = pb.NetDef(name=name)
    n.op.extend(ops)
    return n


def if_op(
    inputs: list[str], outputs: list[str], then_net: pb.NetDef | None, else_net: pb.NetDef | None
) -> pb.OperatorDef:
    o = op("If", inputs, outputs)
    if then_net is not None:
        o.arg.append(pb.Argument(name="then_net", n=then_net))
    if else_net is not None:
        o.arg.append(pb.Argument(name="else_net", n=else_net))
    return o


@pytest.mark.parametrize(
    ("value", "empty"),
    [(np.zeros((0, 4)), True), (np.zeros((2, 0, 3)), True), (np.ones(3), False), (np.float32(1), False)],
)
def test_is_empty(value: Any, empty: bool) -> None:
    with Workspace() as ws:
        ws.feed("x", np.asarray(value))
        ws.run_operator_once(op("IsEmpty", ["x"], ["e"]))
        e = ws.fetch("e")
    assert e.shape == () and e.dtype == np.bool_ and bool(e) is empty


def make_net() -> pb.NetDef:
    then_net = subnet("then", op("Relu", ["x"], ["y"]), op("ConstantFill", [], ["which"], shape=[1], value=1.0))
    else_net = subnet("else", op("Sigmoid", ["x"], ["y"]), op("ConstantFill", [], ["which"], shape=[1], value=2.0))
    main = subnet("main", op("IsEmpty", ["maybe"], ["empty"]), if_op(["empty", "x"], ["y"], then_net, else_net))
    main.op.append(op("Copy", ["y"], ["out"]))
    return main


@pytest.mark.parametrize("empty", [True, False])
def test_if_runs_the_chosen_branch_in_the_same_workspace(empty: bool) -> None:
    x = np.array([-1.0, 0.5, 2.0], np.float32)
    with Workspace() as ws:
        ws.feed("x", x)
        ws.feed("maybe", np.zeros(0 if empty else 2, np.float32))
        net = ws.create_net(make_net())
        net.run()
        out = ws.fetch("out")
        which = ws.fetch("which")
        # Running again reuses the prepared branches and follows the new condition.
        ws.feed("maybe", np.zeros(2 if empty else 0, np.float32))
        net.run()
        out2 = ws.fetch("out")
    relu, sig = np.maximum(x, 0), 1 / (1 + np.exp(-x))
    np.testing.assert_allclose(out, relu if empty else sig, rtol=1e-6)
    np.testing.assert_allclose(out2, sig if empty else relu, rtol=1e-6)
    assert which[0] == (1.0 if empty else 2.0)


def test_if_without_else_does_nothing_when_false() -> None:
    with Workspace() as ws:
        ws.feed("c", np.array(False))
        ws.feed("x", np.ones(2, np.float32))
        ws.run_operator_once(if_op(["c"], [], subnet("then", op("Copy", ["x"], ["z"])), None))
        assert not ws.has("z")
        ws.feed("c", np.array([True]))
        ws.run_operator_once(if_op(["c"], [], subnet("then", op("Copy", ["x"], ["z"])), None))
        np.testing.assert_array_equal(ws.fetch("z"), [1, 1])


def test_if_condition_must_be_scalar() -> None:
    with Workspace() as ws:
        ws.feed("c", np.array([True, False]))
        with pytest.raises(OperatorError, match=r"If.*condition must be a scalar.*\(2,\)"):
            ws.run_operator_once(if_op(["c"], [], subnet("then"), None))


def test_if_needs_then_net_and_reports_branch_errors_at_preparation() -> None:
    with Workspace() as ws:
        ws.feed("c", np.array(True))
        with pytest.raises(ArgumentError, match="then_net"):
            ws.run_operator_once(if_op(["c"], [], None, subnet("else")))
        with pytest.raises(Exception, match="NoSuchOp"):
            ws.run_operator_once(if_op(["c"], [], subnet("then", op("NoSuchOp", [], ["q"])), None))


def test_if_branch_failure_names_the_inner_op() -> None:
    with Workspace() as ws:
        ws.feed("c", np.array(True))
        ws.feed("a", np.ones((2, 3), np.float32))
        ws.feed("w", np.ones((4, 5), np.float32))
        ws.feed("b", np.ones(4, np.float32))
        bad = subnet("then", op("FC", ["a", "w", "b"], ["y"]))
        with pytest.raises(OperatorError, match=r"If.*op #0 FC in net 'then'.*K=3"):
            ws.run_operator_once(if_op(["c"], ["y"], bad, None))
