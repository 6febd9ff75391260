"""RunScope: how a stop travels from an outer run to the subnets it runs."""

from __future__ import annotations

import numpy as np
import pytest

from asyncnet.cancellation import RunScope, check_stopped, current_scope, enter_scope, has_subnets
from asyncnet.errors import RunCancelledError, RunTimeoutError
from asyncnet.proto import caffe2_pb2 as pb
from asyncnet.subnet import run_subnet
from asyncnet.workspace import Workspace


def add_net(name: str) -> pb.NetDef:
    n = pb.NetDef(name=name)
    n.op.append(pb.OperatorDef(type="Add", input=["x", "x"], output=["y"]))
    return n


def test_plain_nets_get_no_scope_and_control_ops_do() -> None:
    with Workspace() as ws:
        ws.feed("x", np.ones(2, np.float32))
        ws.feed("t", np.array(True))
        plain = ws.create_net(add_net("plain"))
        if_def = pb.NetDef(name="with_if")
        o = if_def.op.add(type="If", input=["t"], output=["y"])
        o.arg.append(pb.Argument(name="then_net", n=add_net("then")))
        with plain, ws.create_net(if_def) as with_if:
            assert not has_subnets(plain)
            assert has_subnets(with_if)


def test_a_stop_before_the_subnet_registers_is_not_lost() -> None:
    outer = RunScope("outer", None)
    inner = RunScope("inner", outer)
    outer.stop("timeout")
    assert inner.stopped() == "timeout" and inner.reason == ""
    with Workspace() as ws:
        ws.feed("x", np.ones(2, np.float32))
        with ws.create_net(add_net("sub")) as sub:
            prev = enter_scope(inner)
            try:
                with pytest.raises(RunTimeoutError, match="net 'inner' timed out before subnet 'sub'"):
                    run_subnet(sub)
                with pytest.raises(RunTimeoutError):
                    check_stopped("in a loop")
            finally:
                enter_scope(prev)
            assert not ws.has("y")  # the subnet never ran
            assert inner._children == []  # and is not left registered
    assert current_scope() is prev


def test_stop_cancels_registered_subnets_once() -> None:
    calls: list[str] = []

    class FakeNet:
        name = "fake"

        def cancel(self) -> None:
            calls.append("cancel")

    scope = RunScope("outer", None)
    scope.add(FakeNet())  # type: ignore[arg-type]
    scope.stop("cancel")
    scope.stop("timeout")  # the first reason wins; no second cancel
    assert calls == ["cancel"] and scope.reason == "cancel"
    err = scope.error("in op #0 While")
    assert type(err) is RunCancelledError and "net 'outer' was cancelled in op #0 While" in str(err)
