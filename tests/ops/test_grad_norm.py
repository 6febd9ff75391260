"""SpatialBNGradient (training and test mode) and DropoutGrad."""

from __future__ import annotations

import numpy as np
import pytest

from asyncnet.proto import caffe2_pb2 as pb
from asyncnet.training.gradcheck import check_gradient
from asyncnet.training.gradients import add_gradient_ops, gradient_for_op
from asyncnet.workspace import Workspace
from tests.ops.run_util import make_op, run_op


@pytest.mark.parametrize("order", ["NCHW", "NHWC"])
def test_spatial_bn_training_gradient(order: str) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 2, 2, 2))
    ins = {"x": x, "s": rng.normal(size=2), "b": rng.normal(size=2), "m": np.zeros(2), "v": np.ones(2)}
    op = make_op("SpatialBN", ["x", "s", "b", "m", "v"], ["y", "m", "v", "sm", "siv"], is_test=0, order=order)
    res = check_gradient(op, ins, check=[0, 1, 2], threshold=1e-5, stepsize=1e-6)
    assert res.ok, res.describe()
    (g,) = gradient_for_op(op, ["y_grad", None, None, None, None]).ops
    assert list(g.input) == ["x", "s", "y_grad", "sm", "siv"]
    assert list(g.output) == ["x_grad", "s_grad", "b_grad"]


def test_spatial_bn_test_mode_gradient() -> None:
    rng = np.random.default_rng(1)
    ins = {
        "x": rng.normal(size=(3, 4, 2)),
        "s": rng.normal(size=4),
        "b": rng.normal(size=4),
        "m": rng.normal(size=4),
        "v": rng.uniform(0.5, 2, size=4),
    }
    op = make_op("SpatialBN", ["x", "s", "b", "m", "v"], ["y"], is_test=1, epsilon=1e-3)
    res = check_gradient(op, ins, threshold=1e-5, stepsize=1e-6)
    assert res.ok, res.describe()


def test_dropout_training_gradient_uses_the_forward_mask() -> None:
    op = make_op("Dropout", ["x"], ["y", "mask"], ratio=0.25)
    op.device_option.random_seed = 5
    net = pb.NetDef(name="drop")
    net.op.append(op)
    net.op.append(make_op("SumElements", ["y"], ["loss"]))
    grads = add_gradient_ops(net, ["loss"])
    assert [o.type for o in net.op[2:]] == ["ConstantFill", "SumElementsGradient", "DropoutGrad"]
    assert list(net.op[-1].input) == ["y_grad", "mask"]
    ws = Workspace()
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    ws.feed("x", x)
    ws.run_net_once(net, executor="simple")
    mask = np.asarray(ws.fetch("mask"))
    dx = np.asarray(ws.fetch(grads["x"]))
    # y = x * mask / 0.75 and loss = sum(y): the derivative is mask / 0.75 exactly.
    np.testing.assert_allclose(dx, mask / 0.75, rtol=1e-6)
    assert 0 < mask.sum() < mask.size


def test_dropout_test_mode_gradient_is_identity() -> None:
    op = make_op("Dropout", ["x"], ["y"], is_test=1)
    (g,) = gradient_for_op(op, ["y_grad"]).ops
    assert (g.type, list(g.input), list(g.output)) == ("DropoutGrad", ["y_grad"], ["x_grad"])
    dy = np.random.default_rng(0).normal(size=(2, 3)).astype(np.float32)
    (dx,) = run_op("DropoutGrad", [dy], is_test=1)
    np.testing.assert_array_equal(dx, dy)


@pytest.mark.parametrize("op_type", ["GroupNorm", "InstanceNorm"])
@pytest.mark.parametrize("order", ["NCHW", "NHWC"])
@pytest.mark.parametrize("n_out", [1, 3])
def test_group_and_instance_norm_gradients(op_type: str, order: str, n_out: int) -> None:
    rng = np.random.default_rng(n_out)
    x = rng.normal(size=(2, 4, 3, 2) if order == "NCHW" else (2, 3, 2, 4))
    ins = {"x": x, "g": rng.normal(size=4), "b": rng.normal(size=4)}
    args = {"group": 2} if op_type == "GroupNorm" else {}
    op = make_op(op_type, ["x", "g", "b"], ["y", "mean", "rstd"][:n_out], order=order, epsilon=1e-4, **args)
    res = check_gradient(op, ins, threshold=1e-5, stepsize=1e-6)
    assert res.ok, res.describe()


@pytest.mark.parametrize("learnable", [0, 1])
def test_affine_channel_gradient(learnable: int) -> None:
    rng = np.random.default_rng(learnable)
    ins = {"x": rng.normal(size=(2, 3, 2)), "s": rng.normal(size=3), "b": rng.normal(size=3)}
    op = make_op("AffineChannel", ["x", "s", "b"], ["y"], is_learnable=learnable)
    res = check_gradient(op, ins, threshold=1e-6, stepsize=1e-6)
    assert res.ok, res.describe()
    assert sorted(res.max_error) == (["b", "s", "x"] if learnable else ["x"])


@pytest.mark.parametrize(
    "args",
    [
        {"size": 3, "alpha": 0.5, "beta": 0.75, "bias": 1.0},
        {"size": 4, "alpha": 0.1, "beta": 0.6, "bias": 2.0, "order": "NHWC"},
        {"size": 1, "alpha": 0.3, "beta": 0.5},
    ],
    ids=["odd", "even-nhwc", "one"],
)
def test_lrn_gradient(args: dict[str, float]) -> None:
    shape = (2, 2, 2, 5) if args.get("order") == "NHWC" else (2, 5, 2, 2)
    x = np.random.default_rng(5).normal(size=shape)
    res = check_gradient(make_op("LRN", ["x"], ["y", "scale"], **args), {"x": x}, threshold=1e-6, stepsize=1e-6)
    assert res.ok, res.describe()


def test_spatial_bn_multi_batch_gradient_of_an_empty_batch() -> None:
    # SpatialBNGradient with the aggregated sums (7 inputs) on N = 0: dX empty, dscale / dbias zero.
    x = np.zeros((0, 2, 3, 3), np.float32)
    ones = np.ones(2, np.float32)
    dx, dscale, dbias = run_op(
        "SpatialBNGradient", [x, ones, x, ones, ones, ones * 4, ones * 6], 3, is_test=0, num_batches=2
    )
    assert dx.shape == x.shape and dscale.tolist() == [0.0, 0.0] and dbias.tolist() == [0.0, 0.0]
