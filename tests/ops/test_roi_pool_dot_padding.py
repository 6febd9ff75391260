"""RoIPool and DotProductWithPadding (and their gradients), DenseVectorToIdList, against naive loops."""

from __future__ import annotations

import math

import numpy as np
import pytest

from asyncnet.errors import OperatorError
from asyncnet.training.gradcheck import check_gradient
from asyncnet.training.gradients import gradient_for_op
from tests.ops.run_util import make_op, run_op


def c_round(v: float) -> int:
    return int(math.copysign(math.floor(abs(v) + 0.5), v))


def naive_roi_pool(x: np.ndarray, rois: np.ndarray, ph: int, pw: int, scale: float) -> np.ndarray:
    out = np.zeros((len(rois), x.shape[1], ph, pw))
    h, w = x.shape[2:]
    for k, roi in enumerate(rois):
        x1, y1, x2, y2 = (c_round(float(v) * scale) for v in roi[1:])
        bh, bw = max(y2 - y1 + 1, 1) / ph, max(x2 - x1 + 1, 1) / pw
        for c in range(x.shape[1]):
            for i in range(ph):
                for j in range(pw):
                    h0 = min(max(math.floor(i * bh) + y1, 0), h)
                    h1 = min(max(math.ceil((i + 1) * bh) + y1, 0), h)
                    w0 = min(max(math.floor(j * bw) + x1, 0), w)
                    w1 = min(max(math.ceil((j + 1) * bw) + x1, 0), w)
                    vals = [x[int(roi[0]), c, a, b] for a in range(h0, h1) for b in range(w0, w1)]
                    out[k, c, i, j] = max(vals) if vals else 0.0
    return out


def test_roi_pool_matches_naive() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 3, 9, 11)).astype(np.float32)
    rois = np.array([[0, 1, 2, 8, 7], [1, 0, 0, 20, 20], [1, 5.4, 3.5, 5.6, 3.5], [0, -4, -4, 2, 1]], np.float32)
    y, arg = run_op("RoIPool", [x, rois], 2, pooled_h=3, pooled_w=2, spatial_scale=0.9)
    np.testing.assert_array_equal(y, naive_roi_pool(x, rois, 3, 2, 0.9))
    flat = x.reshape(2, 3, -1)
    for k in range(4):
        for c in range(3):
            for i, a in enumerate(arg[k, c].reshape(-1)):
                if a >= 0:
                    assert flat[int(rois[k, 0]), c, a] == y[k, c].reshape(-1)[i]
    (test_only,) = run_op("RoIPool", [x, rois], 1, pooled_h=3, pooled_w=2, spatial_scale=0.9, is_test=1)
    np.testing.assert_array_equal(test_only, y)


def test_roi_pool_gradient() -> None:
    rng = np.random.default_rng(1)
    x = rng.permutation(2 * 2 * 6 * 6).reshape(2, 2, 6, 6).astype(np.float64)  # distinct: no ties
    rois = np.array([[0, 0, 0, 4, 3], [1, 1, 2, 5, 5]], np.float32)
    op = make_op("RoIPool", ["X", "R"], ["Y", "A"], pooled_h=2, pooled_w=2)
    assert gradient_for_op(op, ["dY", None]).ops[0].type == "RoIPoolGradient"
    res = check_gradient(op, {"X": x, "R": rois}, check=[0], stepsize=1e-3)
    assert res.ok, res.describe()


@pytest.mark.parametrize(("dx", "dy", "replicate"), [(4, 4, 0), (6, 4, 0), (2, 6, 1), (6, 3, 1)])
def test_dot_product_with_padding(dx: int, dy: int, replicate: int) -> None:
    rng = np.random.default_rng(dx * 10 + dy)
    x, y = rng.normal(size=(5, dx)), rng.normal(size=(5, dy))
    (z,) = run_op(
        "DotProductWithPadding", [x.astype(np.float32), y.astype(np.float32)], pad_value=0.5, replicate=replicate
    )
    want = []
    for r in range(5):
        a, b = list(x[r]), list(y[r])
        short, long_ = (a, b) if len(a) < len(b) else (b, a)
        if replicate:
            short = short * (len(long_) // len(short))
        else:
            short = short + [0.5] * (len(long_) - len(short))
        want.append(sum(p * q for p, q in zip(short, long_)))
    np.testing.assert_allclose(z, want, rtol=1e-5)
    op = make_op("DotProductWithPadding", ["X", "Y"], ["Z"], pad_value=0.5, replicate=replicate)
    res = check_gradient(op, {"X": x, "Y": y}, stepsize=1e-2, threshold=1e-2)
    assert res.ok, res.describe()
    assert gradient_for_op(op, ["dZ"]).ops[0].type == "DotProductWithPaddingGradient"


def test_dot_product_with_padding_errors() -> None:
    with pytest.raises(OperatorError, match="multiple"):
        run_op("DotProductWithPadding", [np.ones((2, 4), np.float32), np.ones((2, 3), np.float32)], replicate=1)


def test_dense_vector_to_id_list() -> None:
    d = np.array([[1, 0, 0, 1, 0, 0, 0, 1], [1, 0, 1, 0, 0, 0, 0, 1], [0, 0, 0, 0, 0, 0, 0, 0]], np.float32)
    lengths, ids = run_op("DenseVectorToIdList", [d], 2)
    assert lengths.tolist() == [3, 3, 0] and lengths.dtype == np.int32
    assert ids.tolist() == [0, 3, 7, 0, 2, 7] and ids.dtype == np.int64
