"""ConvRelu / FCRelu / SumRelu against independent references (torch for Conv, numpy loops for FC/Sum)."""

from __future__ import annotations

import numpy as np
import pytest

from tests.ops.run_util import check_inference, make_op, run_once

torch = pytest.importorskip("torch")


@pytest.mark.parametrize("group", [1, 2, 4])
def test_conv_relu_matches_torch(group: int) -> None:
    rng = np.random.default_rng(group)
    x = rng.standard_normal((2, 4, 7, 6)).astype(np.float32)
    w = rng.standard_normal((8, 4 // group, 3, 3)).astype(np.float32)
    b = rng.standard_normal(8).astype(np.float32)
    op = make_op("ConvRelu", ["x", "w", "b"], ["y"], kernel=3, pad=1, stride=2, group=group)
    (y,) = run_once(op, {"x": x, "w": w, "b": b})
    ref = torch.relu(
        torch.nn.functional.conv2d(torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(b), 2, 1, 1, group)
    ).numpy()
    np.testing.assert_allclose(y, ref, rtol=1e-4, atol=1e-5)
    assert (y >= 0).all() and (y == 0).any()
    check_inference(op, [x, w, b], [y])


def test_conv_relu_nhwc_without_bias() -> None:
    rng = np.random.default_rng(1)
    x = rng.standard_normal((1, 5, 5, 3)).astype(np.float32)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)  # NHWC filter [M, kh, kw, C]
    op = make_op("ConvRelu", ["x", "w"], ["y"], kernel=3, order="NHWC")
    (y,) = run_once(op, {"x": x, "w": w})
    xt = torch.from_numpy(x.transpose(0, 3, 1, 2).copy())
    wt = torch.from_numpy(w.transpose(0, 3, 1, 2).copy())
    ref = torch.relu(torch.nn.functional.conv2d(xt, wt)).numpy().transpose(0, 2, 3, 1)
    np.testing.assert_allclose(y, ref, rtol=1e-4, atol=1e-5)


def test_fc_relu_matches_a_naive_loop() -> None:
    rng = np.random.default_rng(2)
    x = rng.standard_normal((3, 5)).astype(np.float32)
    w = rng.standard_normal((4, 5)).astype(np.float32)
    b = rng.standard_normal(4).astype(np.float32)
    (y,) = run_once(make_op("FCRelu", ["x", "w", "b"], ["y"]), {"x": x, "w": w, "b": b})
    ref = np.zeros((3, 4), np.float64)
    for i in range(3):
        for j in range(4):
            ref[i, j] = max(0.0, sum(float(x[i, k]) * float(w[j, k]) for k in range(5)) + float(b[j]))
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-6)


def test_sum_relu_in_place_keeps_other_inputs() -> None:
    rng = np.random.default_rng(3)
    a = rng.standard_normal((2, 3)).astype(np.float32)
    c = rng.standard_normal((2, 3)).astype(np.float32)
    a0, c0 = a.copy(), c.copy()
    (y,) = run_once(make_op("SumRelu", ["a", "c"], ["a"]), {"a": a, "c": c})
    np.testing.assert_array_equal(y, np.maximum(a0 + c0, 0))
    np.testing.assert_array_equal(c, c0)


def test_sum_relu_of_one_input_does_not_write_its_input() -> None:
    a = np.array([-1.0, 2.0], np.float32)
    (y,) = run_once(make_op("SumRelu", ["a"], ["y"]), {"a": a})
    np.testing.assert_array_equal(y, [0.0, 2.0])
    np.testing.assert_array_equal(a, [-1.0, 2.0])
