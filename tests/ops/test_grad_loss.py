"""Loss gradients: SoftmaxWithLoss, LabelCrossEntropy, CrossEntropy, AveragedLoss, SquaredL2Distance.

The forward losses compute in float32, so the finite-difference steps and tolerances are float32-sized.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from asyncnet.training.gradcheck import check_gradient
from tests.ops.run_util import make_op, run_op

F32 = {"stepsize": 1e-2, "threshold": 5e-3}


@settings(max_examples=12)
@given(n=st.integers(1, 5), d=st.integers(2, 5), weighted=st.booleans(), seed=st.integers(0, 2**16))
def test_softmax_with_loss_gradient(n: int, d: int, weighted: bool, seed: int) -> None:
    rng = np.random.default_rng(seed)
    ins = {"x": rng.normal(size=(n, d)).astype(np.float32), "l": rng.integers(0, d, size=n).astype(np.int32)}
    names = ["x", "l"]
    if weighted:
        ins["w"] = rng.uniform(0.5, 2.0, size=n).astype(np.float32)
        names.append("w")
    op = make_op("SoftmaxWithLoss", names, ["p", "loss"], scale=1.5)
    res = check_gradient(op, ins, check=[0], outputs_with_grad=[1], **F32)
    assert res.ok, res.describe()


def test_softmax_with_loss_gradient_label_prob() -> None:
    rng = np.random.default_rng(3)
    lab = rng.uniform(size=(3, 4))
    lab /= lab.sum(axis=1, keepdims=True)
    ins = {"x": rng.normal(size=(3, 4)).astype(np.float32), "l": lab.astype(np.float32)}
    op = make_op("SoftmaxWithLoss", ["x", "l"], ["p", "loss"], label_prob=1)
    res = check_gradient(op, ins, check=[0], outputs_with_grad=[1], **F32)
    assert res.ok, res.describe()


def test_softmax_with_loss_gradient_values() -> None:
    # dX = (P - onehot) * dL / N, against a direct computation.
    x = np.array([[1.0, 2.0, 0.5], [0.0, -1.0, 1.0]], dtype=np.float32)
    label = np.array([2, 0], dtype=np.int32)
    e = np.exp(x - x.max(axis=1, keepdims=True))
    p = e / e.sum(axis=1, keepdims=True)
    (dx,) = run_op("SoftmaxWithLossGradient", [x, label, p, np.float32(3.0)])
    want = p.copy()
    want[0, 2] -= 1
    want[1, 0] -= 1
    np.testing.assert_allclose(dx, want * 3.0 / 2, rtol=1e-6)


def test_label_cross_entropy_gradient() -> None:
    rng = np.random.default_rng(0)
    ins = {"x": rng.uniform(0.2, 1.0, size=(4, 3)).astype(np.float32), "l": np.array([0, 2, 1, 2], np.int32)}
    res = check_gradient(make_op("LabelCrossEntropy", ["x", "l"], ["y"]), ins, check=[0], stepsize=1e-3, threshold=5e-3)
    assert res.ok, res.describe()


def test_cross_entropy_gradient() -> None:
    rng = np.random.default_rng(1)
    ins = {"x": rng.uniform(0.2, 1.0, size=(3, 4)), "l": rng.uniform(size=(3, 4))}
    res = check_gradient(make_op("CrossEntropy", ["x", "l"], ["y"]), ins, check=[0], stepsize=1e-3, threshold=5e-3)
    assert res.ok, res.describe()


@pytest.mark.parametrize("shape", [(5,), (2, 3), (2, 2, 2)])
def test_averaged_loss_gradient(shape: tuple[int, ...]) -> None:
    x = np.random.default_rng(2).normal(size=shape).astype(np.float32)
    res = check_gradient(make_op("AveragedLoss", ["x"], ["y"]), {"x": x}, **F32)
    assert res.ok, res.describe()


def test_squared_l2_distance_gradient() -> None:
    rng = np.random.default_rng(4)
    ins = {"x": rng.normal(size=(3, 4)), "y": rng.normal(size=(3, 4))}
    res = check_gradient(make_op("SquaredL2Distance", ["x", "y"], ["d"]), ins, **F32)
    assert res.ok, res.describe()


@pytest.mark.parametrize("args", [{}, {"log_D_trick": 1}, {"unjoined_lr_loss": 1}], ids=["plain", "log-d", "unjoined"])
def test_sigmoid_cross_entropy_with_logits_gradient(args: dict[str, int]) -> None:
    rng = np.random.default_rng(len(args))
    ins = {"x": rng.normal(size=(3, 4)).astype(np.float32), "t": rng.uniform(size=(3, 4)).astype(np.float32)}
    op = make_op("SigmoidCrossEntropyWithLogits", ["x", "t"], ["loss"], **args)
    res = check_gradient(op, ins, check=[0], **F32)
    assert res.ok, res.describe()


def test_weighted_sigmoid_cross_entropy_with_logits_gradient() -> None:
    rng = np.random.default_rng(9)
    ins = {k: rng.uniform(-1, 1, size=(3, 4)).astype(np.float32) for k in ("x", "t", "w")}
    ins["t"] = np.abs(ins["t"])
    op = make_op("WeightedSigmoidCrossEntropyWithLogits", ["x", "t", "w"], ["loss"])
    res = check_gradient(op, ins, check=[0], **F32)
    assert res.ok, res.describe()


@pytest.mark.parametrize(
    "op_type,args", [("SpatialSoftmaxWithLoss", {}), ("SoftmaxWithLoss", {"spatial": 1, "scale": 1.5})]
)
@pytest.mark.parametrize("weighted", [False, True])
def test_spatial_softmax_with_loss_gradient(op_type: str, args: dict[str, float], weighted: bool) -> None:
    rng = np.random.default_rng(int(weighted))
    ins = {
        "x": rng.normal(size=(2, 3, 2, 3)).astype(np.float32),
        "l": rng.integers(-1, 3, size=(2, 2, 3)).astype(np.int32),  # -1 pixels are ignored
        "w": rng.uniform(0.5, 2.0, size=(2, 2, 3)).astype(np.float32),
    }
    names = ["x", "l", "w"] if weighted else ["x", "l"]
    op = make_op(op_type, names, ["p", "loss"], **args)
    res = check_gradient(op, {k: ins[k] for k in names}, check=[0], outputs_with_grad=[1], **F32)
    assert res.ok, res.describe()
    assert np.all(res.analytic["x"].transpose(0, 2, 3, 1)[ins["l"] == -1] == 0)


def test_spatial_softmax_with_loss_scale_only_scales_the_gradient() -> None:
    # Caffe2's SpatialSoftmaxWithLoss ignores `scale` in the forward pass and applies it in the gradient.
    x = np.random.default_rng(0).normal(size=(1, 2, 2, 2)).astype(np.float32)
    lab = np.array([[[0, 1], [1, 0]]], np.int32)
    e = np.exp(x - x.max(axis=1, keepdims=True))
    p = e / e.sum(axis=1, keepdims=True)
    (g1,) = run_op("SpatialSoftmaxWithLossGradient", [x, lab, p, np.float32(1.0)])
    (g3,) = run_op("SpatialSoftmaxWithLossGradient", [x, lab, p, np.float32(1.0)], scale=3.0)
    np.testing.assert_allclose(g3, 3 * g1, rtol=1e-6)
