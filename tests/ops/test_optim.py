"""Training ops (Iter, LearningRate, WeightedSum, MomentumSGD(Update), Adagrad, Adam) and asyncnet.training.optimizers."""

from __future__ import annotations

import io
import math
import zipfile
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from asyncnet.errors import ArgumentError
from asyncnet.proto import caffe2_pb2 as pb
from asyncnet.training.gradcheck import check_gradient
from asyncnet.training.gradients import add_gradient_ops
from asyncnet.training.optimizers import add_adagrad, add_adam, add_sgd
from asyncnet.workspace import Workspace
from tests.conftest import realnets_path
from tests.ops.run_util import make_op, run_op


def test_iter_counts_in_place_and_alone() -> None:
    ws = Workspace()
    ws.feed("it", np.zeros(1, np.int64))
    op = make_op("Iter", ["it"], ["it"])
    for _ in range(3):
        ws.run_operator_once(op)
    assert ws.fetch("it").tolist() == [3] and ws.fetch("it").dtype == np.int64
    net = pb.NetDef(name="count")
    net.op.append(make_op("Iter", [], ["n"]))
    n = ws.create_net(net, executor="simple")
    n.run()
    n.run()
    assert ws.fetch("n").tolist() == [2]
    ws.run_operator_once(make_op("AtomicIter", ["it"], ["it"]))
    assert ws.fetch("it").tolist() == [4]


def _lr_reference(policy: str, it: int, a: dict[str, Any]) -> float:
    base = a["base_lr"]
    if policy == "fixed":
        return base
    if policy == "step":
        return base * a["gamma"] ** math.floor(it / a["stepsize"])
    if policy == "exp":
        return base * a["gamma"] ** it
    if policy == "inv":
        return base * (1 + a["gamma"] * it) ** (-a["power"])
    if policy == "poly":
        return base * (1 - it / a["max_iter"]) ** a["power"]
    if policy == "multistep":
        return base * a["gamma"] ** len([s for s in a["stepsizes"] if it >= s])
    if policy == "linearWarmup":
        s = a["start_multiplier"]
        return base * (s + (1 - s) * it / a["num_iter"] if it < a["num_iter"] else 1.0)
    if policy == "constantWarmup":
        return base * (a["multiplier"] if it < a["num_iter"] else 1.0)
    raise AssertionError(policy)


POLICIES: list[tuple[str, dict[str, Any]]] = [
    ("fixed", {}),
    ("step", {"stepsize": 7, "gamma": 0.5}),
    ("exp", {"gamma": 0.99}),
    ("inv", {"gamma": 0.01, "power": 0.75}),
    ("poly", {"max_iter": 200, "power": 2.0}),
    ("multistep", {"stepsizes": [5, 20, 60], "gamma": 0.1}),
    ("linearWarmup", {"start_multiplier": 0.1, "num_iter": 30}),
    ("constantWarmup", {"multiplier": 0.2, "num_iter": 30}),
]


@pytest.mark.parametrize("policy,args", POLICIES, ids=[p for p, _ in POLICIES])
@settings(max_examples=15)
@given(it=st.integers(0, 199))
def test_learning_rate_policies(policy: str, args: dict[str, Any], it: int) -> None:
    full = {"base_lr": -0.1, **args}
    (lr,) = run_op("LearningRate", [np.array([it], np.int64)], policy=policy, **full)
    assert lr.shape == () and lr.dtype == np.float32
    assert float(lr) == pytest.approx(_lr_reference(policy, it, full), rel=1e-5, abs=1e-9)


def test_learning_rate_rejects_unknown_policy() -> None:
    with pytest.raises(ArgumentError, match="unknown learning rate policy 'cosinus'"):
        run_op("LearningRate", [np.array([1], np.int64)], policy="cosinus", base_lr=0.1)


def test_weighted_sum_and_its_gradient() -> None:
    rng = np.random.default_rng(0)
    x0, x1 = rng.normal(size=(2, 3)), rng.normal(size=(2, 3))
    w0, w1 = np.array([0.5]), np.array([-2.0])
    (y,) = run_op("WeightedSum", [x0, w0, x1, w1])
    np.testing.assert_allclose(y, 0.5 * x0 - 2.0 * x1)
    op = make_op("WeightedSum", ["x0", "w0", "x1", "w1"], ["y"], grad_on_w=1)
    res = check_gradient(op, {"x0": x0, "w0": w0, "x1": x1, "w1": w1}, threshold=1e-6, stepsize=1e-6)
    assert res.ok, res.describe()


@pytest.mark.parametrize("nesterov", [0, 1])
def test_momentum_sgd_against_a_scalar_loop(nesterov: int) -> None:
    rng = np.random.default_rng(nesterov)
    g, m, p = (rng.normal(size=5).astype(np.float32) for _ in range(3))
    lr, mu = np.float32([0.3]), 0.9
    adj, new_m = run_op("MomentumSGD", [g, m, lr], 2, momentum=mu, nesterov=nesterov)
    adj2, new_m2, new_p = run_op("MomentumSGDUpdate", [g, m, lr, p], 3, momentum=mu, nesterov=nesterov)
    for i in range(5):
        mi = mu * m[i] + 0.3 * g[i]
        want = (1 + mu) * mi - mu * m[i] if nesterov else mi
        assert adj[i] == pytest.approx(want, rel=1e-5) and adj2[i] == pytest.approx(want, rel=1e-5)
        assert new_m[i] == pytest.approx(mi, rel=1e-5) and new_m2[i] == pytest.approx(mi, rel=1e-5)
        assert new_p[i] == pytest.approx(p[i] - want, rel=1e-5, abs=1e-6)


def test_adagrad_against_a_scalar_loop() -> None:
    rng = np.random.default_rng(2)
    p, m, g = rng.normal(size=4), rng.uniform(size=4), rng.normal(size=4)
    new_p, new_m = run_op("Adagrad", [p, m, g, np.array([-0.1])], 2, epsilon=1e-3, decay=0.9)
    for i in range(4):
        mi = 0.9 * m[i] + g[i] ** 2
        assert new_m[i] == pytest.approx(mi)
        assert new_p[i] == pytest.approx(p[i] - 0.1 * g[i] / (math.sqrt(mi) + 1e-3))


def test_adam_against_a_scalar_loop_over_steps() -> None:
    rng = np.random.default_rng(3)
    p = rng.normal(size=3)
    m1, m2 = np.zeros(3), np.zeros(3)
    ref_p, ref_m1, ref_m2 = p.copy(), np.zeros(3), np.zeros(3)
    b1, b2, eps, lr = 0.9, 0.999, 1e-8, -0.01
    for it in range(4):
        g = rng.normal(size=3)
        p, m1, m2, _ = run_op("Adam", [p, m1, m2, g, np.array([lr]), np.array([it], np.int64)], 4, epsilon=eps)
        t = it + 1
        for i in range(3):
            ref_m1[i] = b1 * ref_m1[i] + (1 - b1) * g[i]
            ref_m2[i] = b2 * ref_m2[i] + (1 - b2) * g[i] ** 2
            step = math.sqrt(1 - b2**t) / (1 - b1**t) * ref_m1[i] / (math.sqrt(ref_m2[i]) + eps)
            ref_p[i] += lr * step
        np.testing.assert_allclose(p, ref_p, rtol=1e-10)
        np.testing.assert_allclose(m2, ref_m2, rtol=1e-10)


@pytest.mark.parametrize(
    "name", ["adagrad_test.test_adagrad", "momentum_sgd_test.test_momentum_sgd", "weighted_sum_test.test_weighted_sum",
             "learning_rate_op_test.test_alter_learning_rate_op"],
)  # fmt: skip
def test_optimizer_goldens(name: str) -> None:
    path = realnets_path("caffe2_serialized_operator_tests", f"{name}.zip")
    with zipfile.ZipFile(path) as zf:
        op = pb.OperatorDef()
        op.ParseFromString(zf.read("op.pb"))
        data = np.load(io.BytesIO(zf.read("inout.npz")), encoding="bytes", allow_pickle=True)
        inputs, outputs = list(data["inputs"]), list(data["outputs"])
    op.ClearField("device_option")
    ws = Workspace()
    for n, v in zip(op.input, inputs):
        ws.feed(n, np.asarray(v))
    ws.run_operator_once(op)
    for n, want in zip(op.output, outputs):
        np.testing.assert_allclose(np.asarray(ws.fetch(n)), np.asarray(want), rtol=1e-5, atol=1e-6, err_msg=n)


# ---------------------------------------------------------------------------
# optimizers.py


def _regression_nets() -> tuple[pb.NetDef, pb.NetDef, np.ndarray, np.ndarray]:
    """Linear regression y = x w_true + 1 as an FC with a squared loss."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 3)).astype(np.float32)
    y = (x @ np.float32([[1.0], [-2.0], [0.5]]) + 1.0).astype(np.float32)
    init = pb.NetDef(name="init")
    init.op.append(make_op("ConstantFill", [], ["w"], shape=[1, 3], value=0.0))
    init.op.append(make_op("ConstantFill", [], ["b"], shape=[1], value=0.0))
    train = pb.NetDef(name="train")
    train.op.append(make_op("FC", ["x", "w", "b"], ["pred"]))
    train.op.append(make_op("SquaredL2Distance", ["pred", "y"], ["dist"]))
    train.op.append(make_op("AveragedLoss", ["dist"], ["loss"]))
    return init, train, x, y


def _train(init: pb.NetDef, train: pb.NetDef, x: np.ndarray, y: np.ndarray, steps: int) -> tuple[float, float]:
    ws = Workspace()
    ws.run_net_once(init, executor="simple")
    ws.feed("x", x)
    ws.feed("y", y)
    net = ws.create_net(train, executor="simple")
    net.run()
    first = float(ws.fetch("loss"))
    for _ in range(steps):
        net.run()
    return first, float(ws.fetch("loss"))


@pytest.mark.parametrize(
    "add,kwargs",
    [
        (add_sgd, {"base_lr": 0.1}),
        (add_sgd, {"base_lr": 0.05, "momentum": 0.9}),
        (add_sgd, {"base_lr": 0.05, "momentum": 0.9, "nesterov": True, "weight_decay": 1e-4}),
        (add_sgd, {"base_lr": 0.2, "policy": "step", "stepsize": 50, "gamma": 0.5}),
        (add_adagrad, {"base_lr": 0.5}),
        (add_adam, {"base_lr": 0.1}),
    ],
    ids=["sgd", "momentum", "nesterov-wd", "sgd-step", "adagrad", "adam"],
)
def test_optimizers_fit_a_linear_regression(add: Any, kwargs: dict[str, Any]) -> None:
    init, train, x, y = _regression_nets()
    grads = add_gradient_ops(train, ["loss"])
    blobs = add(init, train, ["w", "b"], grads, **kwargs)
    assert blobs.iteration in {o for op in init.op for o in op.output}
    first, last = _train(init, train, x, y, 200)
    assert last < 1e-3 * first, (first, last)


def test_sgd_structure_matches_caffe2() -> None:
    init, train, _, _ = _regression_nets()
    grads = add_gradient_ops(train, ["loss"])
    n = len(train.op)
    add_sgd(init, train, ["w", "b"], grads, base_lr=0.1)
    added = [(op.type, list(op.input), list(op.output)) for op in train.op[n:]]
    assert added[0] == ("Iter", ["optimizer_iteration"], ["optimizer_iteration"])
    assert added[1][0] == "LearningRate"
    lr = added[1][2][0]
    assert added[2] == ("WeightedSum", ["w", "ONE", "w_grad", lr], ["w"])
    lr_op = train.op[n + 1]
    assert [a.f for a in lr_op.arg if a.name == "base_lr"] == [pytest.approx(-0.1)]


def test_optimizer_argument_errors() -> None:
    init, train, _, _ = _regression_nets()
    with pytest.raises(ArgumentError, match="no gradient"):
        add_sgd(init, train, ["w"], {"b": "b_grad"})
    with pytest.raises(ArgumentError, match="positive"):
        add_sgd(init, train, ["w"], ["w_grad"], base_lr=-1.0)
    with pytest.raises(ArgumentError, match="init net"):
        add_adam(init, train, ["nope"], ["nope_grad"])
