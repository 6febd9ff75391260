"""Regression tests for the 15 semantic bugs of issue 15, each run through asyncnet.compat as its repro
does, asserting Caffe2's behaviour (the bracketed values of the issue)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from asyncnet.compat import core, workspace
from asyncnet.training.gradcheck import check_gradient
from tests.ops.run_util import make_op


def f32(x: Any) -> np.ndarray:
    return np.array(x, np.float32)


def run(op: Any, feeds: dict[str, Any], outs: list[str]) -> list[np.ndarray]:
    workspace.ResetWorkspace()
    for k, v in feeds.items():
        workspace.FeedBlob(k, np.asarray(v))
    workspace.RunOperatorOnce(op)
    return [np.asarray(workspace.FetchBlob(o)) for o in outs]


def test_1_adagrad_weight_decay_and_four_outputs() -> None:
    feeds = dict(p=f32([1, 2]), m=f32([0.5, 0.5]), g=f32([1, -1]), lr=f32([0.1]))
    op = core.CreateOperator("Adagrad", ["p", "m", "g", "lr"], ["p", "m"], epsilon=0.1, weight_decay=0.1)
    p, m = run(op, feeds, ["p", "m"])
    np.testing.assert_allclose(p, [1.07814, 1.93149], atol=1e-5)
    np.testing.assert_allclose(m, [1.71, 1.14], atol=1e-6)
    op4 = core.CreateOperator("Adagrad", ["p", "m", "g", "lr"], ["p2", "m2", "eff", "upd"], epsilon=0.1)
    p2, m2, eff, upd = run(op4, feeds, ["p2", "m2", "eff", "upd"])
    # Naive loop of Caffe2's adagrad_update_output_effective_lr_and_update.
    for i in range(2):
        h = 0.5 + [1, -1][i] ** 2
        e = 0.1 / (np.sqrt(h) + 0.1)
        assert m2[i] == pytest.approx(h) and eff[i] == pytest.approx(e, rel=1e-6)
        assert upd[i] == pytest.approx(e * [1, -1][i], rel=1e-6)
        assert p2[i] == pytest.approx([1, 2][i] + e * [1, -1][i], rel=1e-6)


def test_2_scatter_weighted_sum_repeated_index() -> None:
    op = core.CreateOperator("ScatterWeightedSum", ["D", "w0", "I", "S", "w1"], ["D"])
    feeds = dict(D=f32([[1]]), w0=f32([0.5]), I=np.array([0, 0], np.int32), S=np.ones((2, 1), np.float32), w1=f32([1]))
    (d,) = run(op, feeds, ["D"])
    assert d.tolist() == [[2.25]]


def test_3_resize_nearest_third_scale() -> None:
    # Caffe2's kernel computes (int)(y / height_scale_) with a float scale: a float32 division.
    # 1.0f / 0.33333334f is correctly rounded to 3.0f, so row 1 reads input row 3 (as the upstream
    # resize_op_test reference, int(y / (1/3)), also says); only a float64 quotient would give row 2.
    x = np.arange(48, dtype=np.float32).reshape(1, 1, 8, 6)
    op = core.CreateOperator("ResizeNearest", ["X"], ["Y"], height_scale=1 / 3, width_scale=2.0)
    (y,) = run(op, dict(X=x), ["Y"])
    assert y.shape == (1, 1, 2, 12)
    assert float(np.float32(1.0) / np.float32(1 / 3)) == 3.0
    np.testing.assert_array_equal(y[0, 0, :, 0], x[0, 0, [0, 3], 0])


def test_4_spatial_bn_empty_batch_keeps_running_stats() -> None:
    op = core.CreateOperator(
        "SpatialBN", ["X", "s", "b", "rm", "rv"], ["Y", "rm", "rv", "sm", "sv"], is_test=0, momentum=0.9
    )
    feeds = dict(X=np.zeros((0, 2, 3, 3), np.float32), s=f32([1, 1]), b=f32([0, 0]), rm=f32([1, 2]), rv=f32([3, 4]))
    y, rm, rv = run(op, feeds, ["Y", "rm", "rv"])
    assert y.shape == (0, 2, 3, 3) and rm.tolist() == [1, 2] and rv.tolist() == [3, 4]


def test_4_spatial_bn_multi_batch_gradient_matches_joint_batch() -> None:
    rng = np.random.default_rng(0)
    # Caffe2's multi-batch form assumes batches of equal size.
    x1, x2 = rng.normal(size=(2, 3, 2, 2)), rng.normal(size=(2, 3, 2, 2))
    dy1, dy2 = rng.normal(size=x1.shape), rng.normal(size=x2.shape)
    scale = rng.uniform(0.5, 1.5, 3)
    x, dy = np.concatenate([x1, x2]), np.concatenate([dy1, dy2])
    mean = x.mean(axis=(0, 2, 3))
    rstd = 1 / np.sqrt(x.var(axis=(0, 2, 3)) + 1e-5)
    # Independent reference: the single-batch gradient of the joint batch, from its formula.
    xhat = (x - mean[None, :, None, None]) * rstd[None, :, None, None]
    dbias, dscale = dy.sum(axis=(0, 2, 3)), (dy * xhat).sum(axis=(0, 2, 3))
    m = x.size // 3
    dx_ref = (scale * rstd)[None, :, None, None] * (
        dy - dbias[None, :, None, None] / m - xhat * dscale[None, :, None, None] / m
    )
    fwd = core.CreateOperator(
        "SpatialBN",
        ["X", "s", "b", "rm", "rv", "sums", "sumsq"],
        ["Y", "rm", "rv", "sm", "sv"],
        is_test=0,
        num_batches=2,
    )
    grad_ops, _ = core.GetBackwardPass([fwd], {"Y": "Y_grad"})
    assert [list(g.input) for g in grad_ops][0][5:] == ["s_grad", "b_grad"]
    op = grad_ops[0]
    feeds = dict(X=x1, s=scale, Y_grad=dy1, sm=mean, sv=rstd, s_grad=dscale, b_grad=dbias)
    dx1, ds, db = run(op, feeds, list(op.output))
    np.testing.assert_allclose(dx1, dx_ref[:2], atol=1e-10)
    np.testing.assert_allclose(ds, dscale / 2, atol=1e-10)
    np.testing.assert_allclose(db, dbias / 2, atol=1e-10)


IN_PLACE = [
    ("Rsqrt", ()),
    ("Cbrt", ()),
    ("Reciprocal", ()),
    ("HardSigmoid", ()),
    ("Selu", ()),
    ("Swish", ()),
    ("Mean", ("Y",)),
    ("Add", ("Y",)),
    ("Sub", ("Y",)),
    ("Mul", ("Y",)),
]


@pytest.mark.parametrize("op_type,extra", IN_PLACE, ids=[t for t, _ in IN_PLACE])
def test_5_gradients_of_in_place_ops_run(op_type: str, extra: tuple[str, ...]) -> None:
    workspace.ResetWorkspace()
    net = core.Net(f"inplace_{op_type}")
    getattr(net, op_type)(["X", *extra], ["X"])
    net.SumElements(["X"], ["L"])
    net.AddGradientOperators(["L"])
    workspace.FeedBlob("X", np.full((2, 3), 0.5, np.float32))
    workspace.FeedBlob("Y", np.full((2, 3), 0.25, np.float32))
    workspace.RunNetOnce(net)
    assert np.asarray(workspace.FetchBlob("X_grad")).shape == (2, 3)


def test_5_in_place_rsqrt_gradient_value() -> None:
    # d/dx sum(x^-1/2) = -x^-3/2 / 2; with the forward in place the gradient reads Y = x^-1/2.
    workspace.ResetWorkspace()
    net = core.Net("rsqrt_inplace")
    net.Rsqrt(["X"], ["X"])
    net.SumElements(["X"], ["L"])
    net.AddGradientOperators(["L"])
    x = np.array([0.25, 4.0], np.float32)
    workspace.FeedBlob("X", x)
    workspace.RunNetOnce(net)
    np.testing.assert_allclose(workspace.FetchBlob("X_grad"), -0.5 * x**-1.5, rtol=1e-6)


def test_5_in_place_affine_channel_and_add_into_second_input() -> None:
    workspace.ResetWorkspace()
    net = core.Net("affine_inplace")
    net.AffineChannel(["X", "s", "b"], ["X"])
    net.Add(["Z", "X"], ["X"])
    net.SumElements(["X"], ["L"])
    net.AddGradientOperators(["L"])
    workspace.FeedBlob("X", np.ones((1, 2, 2, 2), np.float32))
    workspace.FeedBlob("Z", np.ones((1, 2, 2, 2), np.float32))
    workspace.FeedBlob("s", f32([2, 3]))
    workspace.FeedBlob("b", f32([0, 0]))
    workspace.RunNetOnce(net)
    g = np.asarray(workspace.FetchBlob("X_grad"))
    np.testing.assert_allclose(g[0, :, 0, 0], [2, 3])


def test_6_conv_transpose_no_bias_trains() -> None:
    workspace.ResetWorkspace()
    net = core.Net("convt")
    net.ConvTranspose(["X", "W"], ["Y"], kernel=2, no_bias=1)
    net.SumElements(["Y"], ["L"])
    net.AddGradientOperators(["L"])
    gop = [o for o in net.Proto().op if o.type == "ConvTransposeGradient"][0]
    assert [a.name for a in gop.arg].count("no_bias") == 1
    workspace.FeedBlob("X", np.ones((1, 2, 3, 3), np.float32))
    workspace.FeedBlob("W", np.ones((2, 1, 2, 2), np.float32))
    workspace.RunNetOnce(net)
    # Every filter tap sees each input pixel once: dW = sum of X over the image = 9.
    np.testing.assert_allclose(workspace.FetchBlob("W_grad"), np.full((2, 1, 2, 2), 9.0))


def test_7_reduce_front_back_gradients_shape_input_and_lengths() -> None:
    op = core.CreateOperator("ReduceFrontSumGradient", ["dY", "S"], ["dX"], num_reduce_dim=1)
    (dx,) = run(op, dict(dY=f32([1, 2]), S=np.array([3, 2], np.int64)), ["dX"])
    assert dx.tolist() == [[1, 2]] * 3
    rng = np.random.default_rng(1)
    x = rng.normal(size=(4, 3))
    lengths = np.array([2, 4, 1], np.int32)
    for fwd in ("ReduceFrontSum", "ReduceFrontMean", "ReduceFrontMax"):
        res = check_gradient(make_op(fwd, ["X", "L"], ["Y"], num_reduce_dim=1), {"X": x, "L": lengths}, check=[0])
        assert res.ok, (fwd, res.describe())
    lengths_b = np.array([1, 3, 2, 2], np.int32)
    for fwd in ("ReduceBackSum", "ReduceBackMean", "ReduceBackMax"):
        res = check_gradient(make_op(fwd, ["X", "L"], ["Y"], num_reduce_dim=1), {"X": x, "L": lengths_b}, check=[0])
        assert res.ok, (fwd, res.describe())


def test_8_topk_pads_beyond_the_axis() -> None:
    op = core.CreateOperator("TopK", ["X"], ["V", "I", "F"], k=3)
    v, i, f = run(op, dict(X=f32([[3, 1]])), ["V", "I", "F"])
    assert v.tolist() == [[3, 1, 0]] and i.tolist() == [[0, 1, -1]] and f.tolist() == [0, 1, -1]


def test_9_reshape_of_zero_size_tensor() -> None:
    op = core.CreateOperator("Reshape", ["X"], ["Y", "old"], shape=[0, -1])
    (y,) = run(op, dict(X=np.zeros((0,), np.float32)), ["Y"])
    assert y.shape == (0, 0)


def test_10_pack_segments_truncates_and_lengths_split_input_wins() -> None:
    op = core.CreateOperator("PackSegments", ["L", "D"], ["P", "M"], max_length=2, return_presence_mask=1)
    p, m = run(op, dict(L=np.array([3, 1], np.int32), D=np.arange(4, dtype=np.float32)), ["P", "M"])
    assert p.tolist() == [[0, 1], [3, 0]] and m.tolist() == [[True, True], [True, False]]
    op = core.CreateOperator("LengthsSplit", ["L", "n"], ["Y"], n_split=3)
    (y,) = run(op, dict(L=np.array([4, 2], np.int32), n=np.array([2], np.int32)), ["Y"])
    assert y.tolist() == [2, 2, 1, 1]


def _lr(it: int, **args: Any) -> float:
    op = core.CreateOperator("LearningRate", ["it"], ["lr"], base_lr=-2.0, **args)
    (lr,) = run(op, dict(it=np.array([it], np.int64)), ["lr"])
    return float(lr)


def test_11_learning_rate_hill_slope_gate_composite() -> None:
    hill = dict(policy="hill", num_iter=10, start_multiplier=0.1, gamma=0.5, power=1.0, end_multiplier=0.2)
    assert _lr(4, **hill) == pytest.approx(-2.0 * (0.1 + 0.9 * 4 / 10))
    assert _lr(12, **hill) == pytest.approx(-2.0 * 0.5)  # (1 + 0.5 * 2)^-1
    assert _lr(100, **hill) == pytest.approx(-2.0 * 0.2)  # bounded below by end_multiplier
    slope = dict(policy="slope", num_iter_1=10, multiplier_1=1.0, num_iter_2=20, multiplier_2=0.5)
    assert [_lr(i, **slope) for i in (5, 15, 25)] == pytest.approx([-2.0, -1.5, -1.0])
    gate = dict(policy="gate", multiplier_1=0.3, multiplier_2=0.7, num_iter=5)
    assert [_lr(i, **gate) for i in (4, 5)] == pytest.approx([-0.6, -1.4])
    comp = dict(
        policy="composite",
        sub_policy_num_iters=[3, 4],
        sub_policy_0_policy="fixed",
        sub_policy_0_lr_scale=0.5,
        sub_policy_1_policy="step",
        sub_policy_1_stepsize=2,
        sub_policy_1_gamma=0.1,
    )
    # Sub-policy 0 covers iterations 1..3, sub-policy 1 from 4 on (each sees the global iteration).
    assert [_lr(i, **comp) for i in (1, 3, 4, 6)] == pytest.approx([-1.0, -1.0, -2.0 * 0.01, -2.0 * 0.001])


def test_12_div_gradient_legacy_three_inputs() -> None:
    op = core.CreateOperator("DivGradient", ["B", "C", "dC"], ["dA", "dB"])
    da, db = run(op, dict(B=f32([2, 4]), C=f32([3, 0.5]), dC=f32([1, 2])), ["dA", "dB"])
    np.testing.assert_allclose(da, [0.5, 0.5])
    np.testing.assert_allclose(db, [-1.5, -0.25])


def test_13_create_operator_argument_forms() -> None:
    op = core.CreateOperator("Concat", ["a", "b"], ["c"], axis=None, add_axis=1)
    assert [a.name for a in op.arg] == ["add_axis"]
    op = core.CreateOperator("Transpose", ["a"], ["b"], axes=range(2))
    assert list(op.arg[0].ints) == [0, 1]
    op = core.CreateOperator("Transpose", ["a"], ["b"], axes=(i for i in (1, 0)))
    assert list(op.arg[0].ints) == [1, 0]
    opt = core.DeviceOption(0, 0, random_seed=3)
    op = core.CreateOperator("Foo", ["a"], ["b"], proto=opt)
    assert op.arg[0].s == opt.SerializeToString()


def test_14_backward_pass_references_and_scoped_inputs() -> None:
    net = core.Net("bp")
    net.Relu(["X"], ["Y"])
    net.SumElements(["Y"], ["L"])
    _, grad_map = core.GetBackwardPass(net.Proto().op, ["L"])
    assert all(isinstance(k, core.BlobReference) and isinstance(v, core.BlobReference) for k, v in grad_map.items())
    assert str(grad_map["X"]) == "X_grad"
    refs = net.AddScopedExternalInputs("a")
    assert isinstance(refs, list) and len(refs) == 1 and str(refs[0]) == "a"
