"""Gradients of If and Do (Caffe2's control_ops_grad): finite differences and control-flow-free twins."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np
import pytest

from asyncnet.compat import control_ops_util, core
from asyncnet.errors import AsyncNetError, GradientError
from asyncnet.proto import caffe2_pb2 as pb
from asyncnet.serde import make_argument
from asyncnet.subnet import WorkspaceStack
from asyncnet.training.gradcheck import check_gradient
from asyncnet.training.gradients import add_gradient_ops
from asyncnet.workspace import Workspace

RNG = np.random.default_rng(7)
X = RNG.normal(size=(2, 3))
W = RNG.normal(size=(2, 3))


def op(op_type: str, inputs: list[str], outputs: list[str], **args: object) -> pb.OperatorDef:
    o = pb.OperatorDef(type=op_type, input=inputs, output=outputs, name=str(args.pop("name", "")))
    for k, v in args.items():
        o.arg.append(make_argument(k, v))
    return o


def netdef(name: str, *ops: pb.OperatorDef) -> pb.NetDef:
    n = pb.NetDef(name=name)
    n.op.extend(ops)
    return n


def run(net: pb.NetDef, feeds: Mapping[str, np.ndarray]) -> Workspace:
    ws = Workspace()
    for k, v in feeds.items():
        ws.feed(k, np.array(v, copy=True))
    ws.run_net_once(net)
    return ws


def analytic(fwd: pb.NetDef, feeds: Mapping[str, np.ndarray], wrt: list[str]) -> dict[str, np.ndarray]:
    net = pb.NetDef()
    net.CopyFrom(fwd)
    grads = add_gradient_ops(net, ["loss"])
    ws = run(net, feeds)
    return {name: np.asarray(ws.fetch(grads[name])) for name in wrt}


def numeric(
    fwd: pb.NetDef, feeds: Mapping[str, np.ndarray], wrt: list[str], eps: float = 1e-6
) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for name in wrt:
        base = np.asarray(feeds[name], np.float64)
        g = np.zeros_like(base)
        for j in range(base.size):
            vals = []
            for sign in (1.0, -1.0):
                shifted = base.copy().reshape(-1)
                shifted[j] += sign * eps
                f = dict(feeds)
                f[name] = shifted.reshape(base.shape)
                vals.append(float(run(fwd, f).fetch("loss")))
            g.reshape(-1)[j] = (vals[0] - vals[1]) / (2 * eps)
        out[name] = g
    return out


def assert_fd(fwd: pb.NetDef, feeds: Mapping[str, np.ndarray], wrt: list[str]) -> dict[str, np.ndarray]:
    got = analytic(fwd, feeds, wrt)
    want = numeric(fwd, feeds, wrt)
    for name in wrt:
        np.testing.assert_allclose(got[name], want[name], rtol=1e-6, atol=1e-8, err_msg=name)
    return got


# -- nets built with Caffe2's control_ops_util (Do-wrapped branches) ------------------------------


def _branches() -> tuple[core.Net, core.Net]:
    then_net = core.Net("then")
    then_net.Mul(["x", "w"], "t")  # t is local to the branch's workspace
    then_net.Tanh("t", "y")
    else_net = core.Net("else")
    else_net.Sigmoid("x", "s")
    else_net.Mul(["s", "x"], "y")
    return then_net, else_net


def _if_net(with_else: bool = True) -> pb.NetDef:
    then_net, else_net = _branches()
    main = core.Net("main")
    control_ops_util.add_if_op(main, "c", ["c", "x", "w", "y"], then_net, else_net if with_else else None)
    main.Mul(["y", "x"], "z")  # x is read again outside: its gradient is a sum (autosplit)
    main.SumElements("z", "loss")
    return main.Proto()


def _flat_net(flag: bool) -> pb.NetDef:
    then_net, else_net = _branches()
    flat = core.Net("flat")
    flat.Proto().op.extend((then_net if flag else else_net).Proto().op)
    flat.Mul(["y", "x"], "z")
    flat.SumElements("z", "loss")
    return flat.Proto()


@pytest.mark.parametrize("flag", [True, False])
def test_if_with_do_branches_matches_finite_differences_and_the_flat_net(flag: bool) -> None:
    feeds = {"c": np.array(flag), "x": X, "w": W}
    got = assert_fd(_if_net(), feeds, ["x", "w"])
    flat = analytic(_flat_net(flag), {"x": X, "w": W}, ["x"] + (["w"] if flag else []))
    np.testing.assert_allclose(got["x"], flat["x"], rtol=1e-12)
    if flag:
        np.testing.assert_allclose(got["w"], flat["w"], rtol=1e-12)
    else:
        np.testing.assert_array_equal(got["w"], np.zeros_like(W))  # the else branch never read w


def test_if_without_else_zero_fills_the_gradients_of_the_untaken_branch() -> None:
    feeds = {"c": np.array(False), "x": X, "w": W, "y": np.ones_like(X)}
    got = assert_fd(_if_net(with_else=False), feeds, ["x", "w"])
    np.testing.assert_array_equal(got["w"], np.zeros_like(W))


def test_forward_and_backward_leave_the_scope_stacks_empty_and_rerun() -> None:
    net = _if_net()
    grads = add_gradient_ops(net, ["loss"])
    ws = Workspace()
    for k, v in {"c": np.array(True), "x": X, "w": W}.items():
        ws.feed(k, v)
    ws.create_net(net)
    for _ in range(3):
        ws.run_net(net.name)
        first = np.asarray(ws.fetch(grads["x"])).copy()
        for name in ws.blobs():
            value = ws.fetch(name)
            if isinstance(value, WorkspaceStack):
                assert len(value) == 0, name
    ws.run_net(net.name)
    np.testing.assert_array_equal(ws.fetch(grads["x"]), first)
    assert not ws.has("t") and not ws.has("s")  # branch-local blobs stayed in the child workspaces


def test_the_gradient_ops_are_caffe2s() -> None:
    net = _if_net()
    start = len(net.op)
    add_gradient_ops(net, ["loss"])
    grad_if = next(o for o in net.op[start:] if o.type == "If")
    assert grad_if.is_gradient_op and grad_if.input[0] == "c"
    then = next(a.n for a in grad_if.arg if a.name == "then_net")
    grad_do = then.op[0]
    assert grad_do.type == "Do" and grad_do.is_gradient_op
    args = {a.name: a for a in grad_do.arg}
    inner = [s.decode() for s in args["inner_blobs"].strings]
    assert "y/_DO_OPERATOR_INNER_GRAD_" in inner and "x/_DO_OPERATOR_INNER_GRAD_COPY_" in inner
    assert not args["saved_fwd_blobs"].strings  # TanhGradient reads y (bound), MulGradient x and w
    assert grad_do.input[-1] == grad_do.output[-1]
    assert grad_do.input[-1].endswith("/workspace_if_then")


# -- plain If (branches in the op's own workspace) -----------------------------------------------


def _plain_if() -> pb.OperatorDef:
    then = netdef("then", op("Mul", ["x", "w"], ["t"]), op("Tanh", ["t"], ["y"]))
    other = netdef("else", op("Sigmoid", ["x"], ["y"]))
    return op("If", ["c", "x", "w"], ["y"], then_net=then, else_net=other, name="branchy")


@pytest.mark.parametrize("flag", [True, False])
def test_plain_if_passes_asyncnet_gradcheck(flag: bool) -> None:
    res = check_gradient(_plain_if(), {"c": np.array(flag), "x": X, "w": W}, check=[1, 2], threshold=1e-6)
    assert res.ok, res.describe()
    if not flag:
        np.testing.assert_array_equal(res.analytic["w"], np.zeros_like(W))


def test_output_that_is_also_an_input_passes_its_gradient_through_the_untouching_branch() -> None:
    then = netdef("then", op("Tanh", ["y"], ["v"]), op("Mul", ["v", "w"], ["y"]))
    fwd = netdef(
        "main",
        op("Copy", ["x"], ["y"]),
        op("If", ["c", "y", "w"], ["y"], then_net=then),
        op("Mul", ["y", "y"], ["z"]),
        op("SumElements", ["z"], ["loss"]),
    )
    for flag in (True, False):
        assert_fd(fwd, {"c": np.array(flag), "x": X, "w": W}, ["x", "w"])


def test_nested_if_inside_a_do_branch() -> None:
    inner_then = core.Net("inner_then")
    inner_then.Mul(["x", "x"], "u")
    inner_else = core.Net("inner_else")
    inner_else.Exp("x", "u")
    outer_then = core.Net("outer_then")
    control_ops_util.add_if_op(outer_then, "d", ["d", "x", "u"], inner_then, inner_else)
    outer_then.Mul(["u", "w"], "y")  # u: local to the outer then-branch's workspace
    outer_else = core.Net("outer_else")
    outer_else.Mul(["x", "w"], "y")
    main = core.Net("main")
    control_ops_util.add_if_op(main, "c", ["c", "d", "x", "w", "y"], outer_then, outer_else)
    main.SumElements("y", "loss")
    for c in (True, False):
        for d in (True, False):
            got = assert_fd(main.Proto(), {"c": np.array(c), "d": np.array(d), "x": X, "w": W}, ["x", "w"])
            if c and d:
                np.testing.assert_allclose(got["x"], 2 * X * W, rtol=1e-12)


# -- Do alone --------------------------------------------------------------------------------------


def _do_net() -> pb.NetDef:
    body = netdef(
        "body",
        op("Mul", ["a", "b"], ["p"]),  # p, q: local to the child workspace, saved for the gradient
        op("Tanh", ["p"], ["q"]),
        op("Add", ["q", "a"], ["out"]),
    )
    do = op(
        "Do",
        ["x", "w", "scope"],
        ["y", "scope"],
        net=body,
        inner_blobs=["a", "b", "out"],
        outer_blobs_idx=[0, 1, 2],
        name="block",
    )
    return netdef(
        "main",
        op("CreateScope", [], ["scope"]),
        do,
        op("Mul", ["y", "x"], ["z"]),
        op("SumElements", ["z"], ["loss"]),
    )


def test_do_gradient_matches_finite_differences_and_reads_the_forward_workspace() -> None:
    got = assert_fd(_do_net(), {"x": X, "w": W}, ["x", "w"])
    flat = netdef(
        "flat",
        op("Mul", ["x", "w"], ["p"]),
        op("Tanh", ["p"], ["q"]),
        op("Add", ["q", "x"], ["y"]),
        op("Mul", ["y", "x"], ["z"]),
        op("SumElements", ["z"], ["loss"]),
    )
    want = analytic(flat, {"x": X, "w": W}, ["x", "w"])
    for k in ("x", "w"):
        np.testing.assert_allclose(got[k], want[k], rtol=1e-12)
    net = _do_net()
    add_gradient_ops(net, ["loss"])
    grad_do = next(o for o in net.op if o.type == "Do" and o.is_gradient_op)
    saved = next(a for a in grad_do.arg if a.name == "saved_fwd_blobs")
    assert [s.decode() for s in saved.strings] == ["q"]  # TanhGradient reads the local q
    assert grad_do.name == "block_grad"


def test_compat_given_gradient_reaches_inside_the_gradient_subnets() -> None:
    then_net, else_net = _branches()
    main = core.Net("given")
    control_ops_util.add_if_op(main, "c", ["c", "x", "w", "y"], then_net, else_net)
    grads = main.AddGradientOperators({"y": "y_seed"})
    ws = Workspace()
    for k, v in {"c": np.array(True), "x": X, "w": W, "y_seed": 2.0 * np.ones_like(X)}.items():
        ws.feed(k, v)
    ws.run_net_once(main.Proto())
    np.testing.assert_allclose(ws.fetch(str(grads["x"])), 2.0 * W * (1 - np.tanh(X * W) ** 2), rtol=1e-12)


# -- errors name the inner and the outer op ---------------------------------------------------------


def test_missing_inner_gradient_names_inner_and_outer_op() -> None:
    then = netdef("then_body", op("Mul", ["x", "w"], ["t"]), op("Floor", ["t"], ["y"], name="floor_it"))
    fwd = netdef(
        "main", op("If", ["c", "x", "w"], ["y"], then_net=then, name="gate"), op("SumElements", ["y"], ["loss"])
    )
    with pytest.raises(GradientError) as e:
        add_gradient_ops(fwd, ["loss"])
    text = str(e.value)
    assert "If 'gate'" in text and "then_net 'then_body'" in text and "Floor 'floor_it'" in text


def _raises_naming(fn: Callable[[], object], *parts: str) -> None:
    with pytest.raises(AsyncNetError) as e:
        fn()
    text = str(e.value)
    chained = e.value.__cause__
    while chained is not None:
        text += " | " + str(chained)
        chained = chained.__cause__
    for p in parts:
        assert p in text, (p, text)


def test_failure_inside_the_gradient_subnet_names_inner_and_outer_op() -> None:
    then_net, else_net = _branches()
    main = core.Net("bad")
    control_ops_util.add_if_op(main, "c", ["c", "x", "w", "y"], then_net, else_net)
    main.AddGradientOperators({"y": "y_seed"})
    ws = Workspace()
    for k, v in {"c": np.array(True), "x": X, "w": W, "y_seed": np.ones((5,))}.items():
        ws.feed(k, v)
    _raises_naming(lambda: ws.run_net_once(main.Proto()), "TanhGradient", "Do", "If")


def test_gradient_do_without_its_forward_run_says_so() -> None:
    net = _if_net()
    add_gradient_ops(net, ["loss"])
    grad_if = next(i for i, o in enumerate(net.op) if o.type == "If" and o.is_gradient_op)
    # Flip the condition between the forward and the backward If: the else scope has no workspace.
    net.op.insert(grad_if, op("Not", ["c"], ["c"]))
    ws = Workspace()
    for k, v in {"c": np.array(True), "x": X, "w": W}.items():
        ws.feed(k, v)
    _raises_naming(lambda: ws.run_net_once(net), "holds no forward workspace", "Do", "If")


def test_do_that_updates_a_bound_blob_in_place_differentiates_through_its_incoming_value() -> None:
    body = netdef("inplace_body", op("Mul", ["s", "k"], ["t"]), op("Tanh", ["t"], ["s"]))
    fwd = netdef(
        "main",
        op("Copy", ["x"], ["h"]),
        op("CreateScope", [], ["scope"]),
        op("Do", ["h", "w", "scope"], ["h", "scope"], net=body, inner_blobs=["s", "k"], outer_blobs_idx=[0, 1]),
        op("Mul", ["h", "x"], ["z"]),
        op("SumElements", ["z"], ["loss"]),
    )
    got = assert_fd(fwd, {"x": X, "w": W}, ["x", "w"])
    t = np.tanh(X * W)
    np.testing.assert_allclose(got["w"], X * X * (1 - t**2), rtol=1e-12)


@pytest.mark.timeout(60)
def test_parallel_ifs_under_async_scheduling_give_the_simple_executors_gradients(no_thread_leak: None) -> None:
    def build(executor: str) -> tuple[pb.NetDef, dict[str, str]]:
        main = core.Net(f"par_{executor or 'simple'}")
        for k in range(4):
            then_net = core.Net(f"then{k}")
            then_net.Mul(["x", "w"], "t")
            then_net.Tanh("t", f"y{k}")
            else_net = core.Net(f"else{k}")
            else_net.Sigmoid("w", f"y{k}")
            control_ops_util.add_if_op(main, f"c{k}", [f"c{k}", "x", "w", f"y{k}"], then_net, else_net)
        main.Sum([f"y{k}" for k in range(4)], "s")
        main.SumElements("s", "loss")
        proto = main.Proto()
        proto.type = executor
        if executor:
            proto.num_workers = 2
        grads = add_gradient_ops(proto, ["loss"])
        return proto, grads

    feeds = {"x": X, "w": W, **{f"c{k}": np.array(k % 2 == 0) for k in range(4)}}
    results = []
    for executor in ("", "async_scheduling"):
        net, grads = build(executor)
        with Workspace() as ws:
            for k, v in feeds.items():
                ws.feed(k, v)
            ws.create_net(net)
            for _ in range(3):
                ws.run_net(net.name)
            results.append({n: np.asarray(ws.fetch(grads[n])).copy() for n in ("x", "w")})
    for n in ("x", "w"):
        np.testing.assert_array_equal(results[0][n], results[1][n])
    s = 1 / (1 + np.exp(-W))
    want_w = 2 * X * (1 - np.tanh(X * W) ** 2) + 2 * s * (1 - s)
    np.testing.assert_allclose(results[0]["w"], want_w, rtol=1e-12)
