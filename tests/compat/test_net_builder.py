"""compat.net_builder: Caffe2's NetBuilder scenarios (net_builder_test.py) run as plans, and IfNet gradients."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from asyncnet.compat import core, workspace
from asyncnet.compat.net_builder import NetBuilder, ops, to_execution_step
from asyncnet.errors import NetDefinitionError, UnsupportedError


def _run(nb: NetBuilder, name: str) -> None:
    plan = core.Plan(name)
    plan.AddStep(to_execution_step(nb))
    workspace.RunPlan(plan)


def _fetch(b: Any) -> Any:
    return workspace.FetchBlob(str(b))


def _test_loop() -> Any:
    x = ops.Const(5)
    y = ops.Const(0)
    with ops.loop():
        ops.stop_if(ops.EQ([x, ops.Const(0)]))
        ops.Add([x, ops.Const(-1)], [x])
        ops.Add([y, ops.Const(1)], [y])
    return y


def _test_outer() -> tuple[Any, ...]:
    x = ops.Const(10)
    with ops.stop_guard() as g1:
        ops.stop_if(ops.LT([x, ops.Const(5)]))
    y = ops.Const(3)
    with ops.stop_guard() as g2:
        ops.stop_if(ops.LT([y, ops.Const(5)]))
    with ops.stop_guard() as g4:
        ops.Const(0)
    with ops.stop_guard() as g3:
        pass
    return g1.has_stopped(), g2.has_stopped(), g3.has_stopped(), g4.has_stopped()


def _test_if(x: Any) -> Any:
    y = ops.Const(1)
    with ops.If(ops.GT([x, ops.Const(50)])):
        ops.Const(2, blob_out=y)
    with ops.If(ops.LT([x, ops.Const(50)])):
        ops.Const(3, blob_out=y)
        ops.stop()
        ops.Const(4, blob_out=y)
    return y


def test_loops_stop_guards_and_step_ifs() -> None:
    with NetBuilder() as nb:
        y = _test_loop()
        z, w, a, b = _test_outer()
        p = _test_if(ops.Const(75))
        q = _test_if(ops.Const(25))
    _run(nb, "ops")
    for blob, want in [(y, 5), (z, False), (w, True), (a, False), (b, False), (p, 2), (q, 3)]:
        assert _fetch(blob) == want, blob


def test_nested_counted_loops_with_elif_else() -> None:
    with NetBuilder() as nb:
        total, large, small, tiny = (ops.Const(0) for _ in range(4))
        with ops.loop(10) as loop:
            outer = ops.Mul([loop.iter(), ops.Const(10)])
            with ops.loop(loop.iter()) as inner:
                val = ops.Add([outer, inner.iter()])
                with ops.If(ops.GE([val, ops.Const(80)])) as c:
                    ops.Add([large, val], [large])
                with c.Elif(ops.GE([val, ops.Const(50)])) as c:
                    ops.Add([small, val], [small])
                with c.Else():
                    ops.Add([tiny, val], [tiny])
                ops.Add([total, val], total)
    _run(nb, "loops")
    want = [0, 0, 0, 0]
    for i in range(10):
        for j in range(i):
            v = i * 10 + j
            want[1 if v >= 80 else 2 if v >= 50 else 3] += v
            want[0] += v
    assert [int(_fetch(t)) for t in (total, large, small, tiny)] == want


def test_if_net_else_nested_and_local_blobs() -> None:
    with NetBuilder() as nb:
        x0, x1, x2 = ops.Const(0), ops.Const(1), ops.Const(2)
        y0, y1, y2 = ops.Const(0), ops.Const(1), ops.Const(2)
        first = ops.Const(0)
        with ops.IfNet(ops.Const(True)):
            ops.Const(1, blob_out=first)
        with ops.Else():
            ops.Const(2, blob_out=first)
        second = ops.Const(0)
        with ops.IfNet(ops.Const(False)):
            ops.Const(1, blob_out=second)
        with ops.Else():
            ops.Const(2, blob_out=second)
        with ops.IfNet(ops.LT([x0, x1])):
            local_blob = ops.Const(900)
            ops.Add([ops.Const(100), local_blob], [y0])
            with ops.IfNet(ops.GT([x1, x2])):
                pass
            with ops.Else():
                ops.Add([y1, local_blob], [local_blob])
                ops.Add([ops.Const(100), y1], [y1])
            with ops.IfNet(ops.EQ([local_blob, ops.Const(901)])):
                ops.Const(7, blob_out=y2)
                ops.Add([y1, y2], [y2])
        with ops.Else():
            pass
    _run(nb, "if_net")
    assert (_fetch(first), _fetch(second)) == (1, 2)
    assert (_fetch(y0), _fetch(y1), _fetch(y2)) == (1000, 101, 108)
    assert not workspace.HasBlob(str(local_blob))


def test_while_net_with_condition() -> None:
    with NetBuilder() as nb:
        x = ops.Const(0)
        y = ops.Const(0)
        with ops.WhileNet():
            with ops.Condition():
                ops.Add([x, ops.Const(1)], [x])
                ops.LT([x, ops.Const(7)])
            ops.Add([x, y], [y])
    _run(nb, "while_net")
    assert (_fetch(x), _fetch(y)) == (7, 21)


def test_if_net_block_differentiates_like_the_branch_it_took() -> None:
    workspace.FeedBlob("x", np.array([0.5, -1.5, 2.0]))
    workspace.FeedBlob("w", np.array([1.5, 0.25, -0.5]))
    for flag in (True, False):
        workspace.FeedBlob("flag", np.array(flag))
        with NetBuilder(initial_scope=["x", "w", "flag", "y"], _use_control_ops=True) as nb:
            with ops.IfNet("flag"):
                t = ops.Mul(["x", "w"])
                ops.Tanh(t, "y")
            with ops.Else():
                ops.Sigmoid("x", "y")
        (net,) = nb.get()
        assert isinstance(net, core.Net)
        net.SumElements("y", "loss")
        grads = net.AddGradientOperators(["loss"])
        workspace.RunNetOnce(net)
        x, w = workspace.FetchBlob("x"), workspace.FetchBlob("w")
        if flag:
            want = w * (1 - np.tanh(x * w) ** 2)
        else:
            s = 1 / (1 + np.exp(-x))
            want = s * (1 - s)
        np.testing.assert_allclose(workspace.FetchBlob(str(grads["x"])), want, rtol=1e-12)


def test_misuse_is_reported() -> None:
    with pytest.raises(NetDefinitionError, match="stop condition"):
        with NetBuilder():
            with ops.loop():
                ops.Const(1)
    with pytest.raises(NetDefinitionError, match="right after an ops.IfNet"):
        with NetBuilder():
            ops.Const(1)
            with ops.Else():
                pass
    with pytest.raises(NetDefinitionError, match="outside of ops.WhileNet"):
        with NetBuilder():
            ops.Condition()
    with pytest.raises(UnsupportedError, match="task_init"):
        with NetBuilder():
            ops.task_init()
    with pytest.raises(AttributeError, match="no active NetBuilder"):
        ops.Add  # noqa: B018
    with NetBuilder() as nb:
        ops.Const(1)
    with pytest.raises(NetDefinitionError, match="built already"):
        nb.current_net()
