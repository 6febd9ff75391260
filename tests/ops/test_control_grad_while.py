"""Gradient of While: loop-carried state, weights summed over iterations, blobs the body overwrites."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pytest

from asyncnet.compat import control_ops_util, core
from asyncnet.compat.gradients import add_backward_pass
from asyncnet.compat.net_builder import NetBuilder, ops
from asyncnet.errors import AsyncNetError, GradientError
from asyncnet.proto import caffe2_pb2 as pb
from asyncnet.subnet import WorkspaceStack
from asyncnet.training.gradients import add_gradient_ops
from asyncnet.workspace import Workspace
from tests.ops.test_control_grad import analytic, assert_fd, run

RNG = np.random.default_rng(11)
FEEDS = {
    "i": np.array(0.0),
    "one": np.array(1.0),
    "h": RNG.normal(size=3),
    "w": RNG.normal(size=3),
    "x": RNG.normal(size=3),
    "z": RNG.normal(size=3),
}
SCOPE = ["i", "n", "one", "h", "w", "x", "z"]


def _body(net: core.Net) -> None:
    net.Mul(["h", "w"], "t")  # t, u: local to each iteration's workspace
    net.Add(["t", "x"], "u")
    net.Tanh("u", "h")  # h: loop-carried; w, x: read every iteration
    net.Mul(["h", "h"], "z")  # z: overwritten, never read by the body


def _loop_net(executor: str = "") -> pb.NetDef:
    cond = core.Net("cond")
    cond.LT(["i", "n"], "go")
    body = core.Net("body")
    _body(body)
    body.Add(["i", "one"], "i")
    main = core.Net("main")
    control_ops_util.add_while_op(main, "go", SCOPE, body, cond)
    main.Mul(["h", "z"], "hz")
    main.SumElements("hz", "loss")
    proto = main.Proto()
    proto.type = executor
    return proto


def _unrolled(n: int) -> pb.NetDef:
    """The same loop without control flow, every version of h under its own name."""
    flat = core.Net("flat")
    h = "h"
    for k in range(n):
        flat.Mul([h, "w"], f"t{k}")
        flat.Add([f"t{k}", "x"], f"u{k}")
        flat.Tanh(f"u{k}", f"h{k}")
        h = f"h{k}"
    flat.Mul([h, h], "z_last")
    flat.Mul([h, "z_last"], "hz")
    flat.SumElements("hz", "loss")
    return flat.Proto()


def _feeds(n: int) -> dict[str, np.ndarray]:
    return {**FEEDS, "n": np.array(float(n))}


@pytest.mark.parametrize("n", [0, 1, 3])
def test_while_gradient_matches_finite_differences_and_the_unrolled_loop(n: int) -> None:
    got = assert_fd(_loop_net(), _feeds(n), ["h", "w", "x", "z"])
    flat = _unrolled(n)
    if n:
        want = analytic(flat, FEEDS, ["h", "w", "x"])
        for k in ("h", "w", "x"):
            np.testing.assert_allclose(got[k], want[k], rtol=1e-10, atol=1e-14, err_msg=k)
        np.testing.assert_array_equal(got["z"], np.zeros(3))  # overwritten before it was read
    else:
        np.testing.assert_array_equal(got["w"], np.zeros(3))
        np.testing.assert_array_equal(got["z"], FEEDS["h"])  # no iteration: loss = sum(h * z)


@pytest.mark.timeout(60)
def test_while_gradient_under_async_scheduling_reruns_and_empties_the_stacks(no_thread_leak: None) -> None:
    net = _loop_net("async_scheduling")
    grads = add_gradient_ops(net, ["loss"])
    want = analytic(_loop_net(), _feeds(3), ["w"])["w"]
    with Workspace() as ws:
        for k, v in _feeds(3).items():
            ws.feed(k, v)
        ws.create_net(net)
        for _ in range(3):
            for k in ("i", "h", "z"):
                ws.feed(k, FEEDS[k])
            ws.run_net(net.name)
            np.testing.assert_allclose(ws.fetch(grads["w"]), want, rtol=1e-12)
            stacks = {n: len(v) for n in ws.blobs() if isinstance(v := ws.fetch(n), WorkspaceStack)}
            body = [n for n in stacks if n.endswith("workspace_loop_body")]
            assert body and all(stacks[n] == 0 for n in body), stacks


def test_while_net_from_net_builder_with_an_if_inside_differentiates() -> None:
    with NetBuilder(initial_scope=["i", "n", "one", "h", "w", "half"], _use_control_ops=True) as nb:
        with ops.WhileNet():
            with ops.Condition():
                ops.LT(["i", "n"])
            with ops.IfNet(ops.LT(["i", "half"])):
                ops.Mul(["h", "w"], "h2")
                ops.Tanh("h2", "h")
            with ops.Else():
                ops.Sigmoid("h", "h3")
                ops.Mul(["h3", "w"], "h")
            ops.Add(["i", "one"], "i")
    (net,) = nb.get()
    assert isinstance(net, core.Net)
    net.SumElements("h", "loss")
    feeds: Mapping[str, np.ndarray] = {**_feeds(4), "half": np.array(2.0)}
    got = assert_fd(net.Proto(), feeds, ["h", "w"])
    h, w = FEEDS["h"].copy(), FEEDS["w"]
    # Reference by hand: 2 tanh steps then 2 sigmoid steps, chain rule backwards.
    hs = [h]
    for k in range(4):
        hs.append(np.tanh(hs[-1] * w) if k < 2 else w / (1 + np.exp(-hs[-1])))
    g, gw = np.ones(3), np.zeros(3)
    for k in reversed(range(4)):
        prev = hs[k]
        if k < 2:
            d = 1 - np.tanh(prev * w) ** 2
            gw += g * d * prev
            g = g * d * w
        else:
            s = 1 / (1 + np.exp(-prev))
            gw += g * s
            g = g * w * s * (1 - s)
    np.testing.assert_allclose(got["h"], g, rtol=1e-10)
    np.testing.assert_allclose(got["w"], gw, rtol=1e-10)


def test_errors_name_the_while_and_the_inner_op() -> None:
    plain = pb.NetDef(name="main")
    body = pb.NetDef(name="plain_body")
    body.op.add(type="Tanh", input=["h"], output=["h"])
    loop = pb.OperatorDef(type="While", input=["go", "h"], output=["h"], name="spin")
    loop.arg.add(name="loop_net").n.CopyFrom(body)
    plain.op.append(loop)
    plain.op.add(type="SumElements", input=["h"], output=["loss"])
    with pytest.raises(GradientError, match=r"While 'spin'.*single Do op"):
        add_gradient_ops(plain, ["loss"])

    cond = core.Net("c")
    cond.LT(["i", "n"], "go")
    bad_body = core.Net("b")
    bad_body.Floor("h", "h")
    bad_body.Add(["i", "one"], "i")
    main = core.Net("m")
    control_ops_util.add_while_op(main, "go", ["i", "n", "one", "h"], bad_body, cond)
    main.SumElements("h", "loss")
    with pytest.raises(GradientError, match=r"While.*Do.*Floor"):
        add_gradient_ops(main.Proto(), ["loss"])

    touchy = core.Net("t")
    touchy.Add(["h", "one"], "h")
    touchy.LT(["h", "n"], "go")
    body2 = core.Net("b2")
    body2.Tanh("h", "h")
    main2 = core.Net("m2")
    control_ops_util.add_while_op(main2, "go", ["n", "one", "h"], body2, touchy)
    main2.SumElements("h", "loss")
    with pytest.raises(GradientError, match=r"cond_net writes \['h'\]"):
        add_gradient_ops(main2.Proto(), ["loss"])


def test_while_run_time_failure_in_gradient_names_inner_and_outer_op() -> None:
    net = _loop_net()
    del net.op[-2:]
    add_backward_pass(net, {"h": "h_seed"})
    feeds = {**_feeds(2), "h_seed": np.ones(5)}  # the wrong shape: TanhGradient fails in iteration 2
    with pytest.raises(AsyncNetError) as e:
        run(net, feeds)
    text = str(e.value)
    cause = e.value.__cause__
    while cause is not None:
        text += " | " + str(cause)
        cause = cause.__cause__
    for part in ("While", "Do", "TanhGradient"):
        assert part in text, (part, text)


def test_asyncnet_check_finds_no_error_in_the_gradient_nets() -> None:
    from asyncnet.checker import check_net
    from asyncnet.schema import TensorInfo
    from tests.ops.test_control_grad import _if_net

    for net, names in ((_loop_net(), ["h", "i", "n", "one", "w", "x", "z"]), (_if_net(), ["c", "w", "x"])):
        add_gradient_ops(net, ["loss"])
        report = check_net(net, inputs={n: TensorInfo() for n in names})
        assert report.ok, report.errors


def test_nested_while_nets_differentiate_like_the_unrolled_chain() -> None:
    scope = ["i", "j", "n", "m", "one", "zero", "h", "w"]
    with NetBuilder(initial_scope=scope, _use_control_ops=True) as nb:
        with ops.WhileNet():
            with ops.Condition():
                ops.LT(["i", "n"])
            ops.Copy("zero", "j")
            with ops.WhileNet():
                with ops.Condition():
                    ops.LT(["j", "m"])
                ops.Mul(["h", "w"], "t")
                ops.Tanh("t", "h")
                ops.Add(["j", "one"], "j")
            ops.Add(["i", "one"], "i")
    (net,) = nb.get()
    assert isinstance(net, core.Net)
    net.SumElements("h", "loss")
    feeds = {**_feeds(2), "j": np.array(0.0), "m": np.array(3.0), "zero": np.array(0.0)}
    got = assert_fd(net.Proto(), feeds, ["h", "w"])
    w = FEEDS["w"]
    hs = [FEEDS["h"]]
    for _ in range(6):  # 2 outer x 3 inner iterations
        hs.append(np.tanh(hs[-1] * w))
    g, gw = np.ones(3), np.zeros(3)
    for k in reversed(range(6)):
        d = 1 - np.tanh(hs[k] * w) ** 2
        gw += g * d * hs[k]
        g = g * d * w
    np.testing.assert_allclose(got["h"], g, rtol=1e-10)
    np.testing.assert_allclose(got["w"], gw, rtol=1e-10)
