"""SortedSegmentRange* (+ gradients) and SparseLengthsIndicesInGradient*Gradient against naive loops."""

from __future__ import annotations

import math

import numpy as np
import pytest

from asyncnet.errors import OperatorError
from asyncnet.training.gradcheck import check_gradient
from asyncnet.training.gradients import gradient_for_op
from tests.ops.run_util import make_op, run_op

KINDS = {
    "SortedSegmentRangeSum": lambda v: sum(v),
    "SortedSegmentRangeMean": lambda v: sum(v) / len(v),
    "SortedSegmentRangeMax": max,
    "SortedSegmentRangeLogSumExp": lambda v: math.log(sum(math.exp(x) for x in v)),
    "SortedSegmentRangeLogMeanExp": lambda v: math.log(sum(math.exp(x) for x in v) / len(v)),
}
GRADIENTS = {
    "SortedSegmentRangeSum": "SortedSegmentRangeSumGradient",
    "SortedSegmentRangeMean": "SortedSegmentRangeMeanGradient",
    "SortedSegmentRangeMax": "SortedSegmentRangeMaxGradient",
    "SortedSegmentRangeLogSumExp": "SortedSegmentRangeLogSumExpGradient",
    "SortedSegmentRangeLogMeanExp": "SortedSegmentRangeLogMeanExpGradient",
}


def naive(op_type: str, data: np.ndarray, ids: list[int]) -> np.ndarray:
    k = ids[-1] + 1 if ids else 0
    flat = data.reshape(len(ids), -1)
    out = np.zeros((k, flat.shape[1]))
    for s in range(k):
        rows = [r for r, i in enumerate(ids) if i == s]
        for c in range(flat.shape[1]):
            out[s, c] = KINDS[op_type]([float(flat[r, c]) for r in rows]) if rows else 0.0
    return out.reshape((k,) + data.shape[1:])


@pytest.mark.parametrize("op_type", list(KINDS))
def test_range_reductions_match_naive(op_type: str) -> None:
    rng = np.random.default_rng(0)
    data = rng.normal(size=(7, 2, 3)).astype(np.float32)
    ids = [0, 0, 1, 3, 3, 3, 4]  # id 2 has no rows
    (out,) = run_op(op_type, [data, np.array(ids, np.int32)])
    np.testing.assert_allclose(out, naive(op_type, data, ids), rtol=1e-5, atol=1e-6)
    (empty,) = run_op(op_type, [np.zeros((0, 3), np.float32), np.zeros(0, np.int32)])
    assert empty.shape == (0, 3)


@pytest.mark.parametrize("op_type", list(KINDS))
def test_range_gradients(op_type: str) -> None:
    rng = np.random.default_rng(1)
    data = rng.normal(size=(6, 3))
    ids = np.array([0, 0, 1, 1, 1, 3], np.int32)
    op = make_op(op_type, ["D", "S"], ["Y"])
    (gop,) = gradient_for_op(op, ["Y_grad"]).ops
    assert gop.type == GRADIENTS[op_type] and list(gop.input) == ["D", "Y", "Y_grad", "S"]
    res = check_gradient(op, {"D": data, "S": ids}, check=[0])
    assert res.ok, res.describe()


def test_range_max_gradient_goes_to_every_tied_max() -> None:
    data = np.array([[1.0], [3.0], [3.0], [2.0]])
    ids = np.array([0, 0, 0, 1], np.int32)
    (out,) = run_op("SortedSegmentRangeMax", [data, ids])
    (d,) = run_op("SortedSegmentRangeMaxGradient", [data, out, np.array([[5.0], [7.0]]), ids])
    assert d.reshape(-1).tolist() == [0.0, 5.0, 5.0, 7.0]


def test_range_logsumexp_gradient_reads_output_blocks_whatever_their_shape() -> None:
    # A recurrent link hands OUTPUT and its gradient over as (1, k, D) windows; Caffe2 reads them as k
    # blocks of D. Naive: dX[i, j] = dY[seg(i), j] * exp(X[i, j] - Y[seg(i), j]).
    rng = np.random.default_rng(6)
    x = rng.normal(size=(3, 3)).astype(np.float32)
    ids = np.zeros(3, np.int32)
    (y,) = run_op("SortedSegmentRangeLogSumExp", [x, ids])
    dy = rng.normal(size=(1, 3)).astype(np.float32)
    (dx,) = run_op(
        "SortedSegmentRangeLogSumExpGradient", [x, y.reshape(1, 1, 3), dy.reshape(1, 1, 3), ids], infer=False
    )
    assert dx.shape == (3, 3)
    for i in range(3):
        for j in range(3):
            want = float(dy[0, j]) * math.exp(float(x[i, j]) - float(y[0, j]))
            assert dx[i, j] == pytest.approx(want, rel=1e-5)
    with pytest.raises(OperatorError, match="rows"):
        run_op("SortedSegmentRangeLogSumExpGradient", [x, np.zeros((2, 3), np.float32), dy, ids], infer=False)


def test_range_ids_must_be_sorted() -> None:
    with pytest.raises(OperatorError, match="sorted"):
        run_op("SortedSegmentRangeSum", [np.ones((3, 1)), np.array([0, 2, 1], np.int32)])


@pytest.mark.parametrize(
    ("op_type", "mean"),
    [("SparseLengthsIndicesInGradientSumGradient", False), ("SparseLengthsIndicesInGradientMeanGradient", True)],
)
def test_indices_in_gradient_rows(op_type: str, mean: bool) -> None:
    rng = np.random.default_rng(2)
    dout = rng.normal(size=(3, 2, 4)).astype(np.float32)
    lengths = np.array([3, 0, 2], np.int32)
    indices = rng.integers(0, 50, 5)
    (rows,) = run_op(op_type, [dout, lengths, indices])
    want = []
    for s, n in enumerate(lengths):
        for _ in range(n):
            want.append(dout[s] / (n if mean else 1))
    np.testing.assert_allclose(rows, np.array(want), rtol=1e-6)
    # It equals the plain SparseLengths gradient, which does not take the indices.
    (plain,) = run_op("SparseLengthsMeanGradient" if mean else "SparseLengthsSumGradient", [dout, lengths])
    np.testing.assert_allclose(rows, plain, rtol=1e-6)
    with pytest.raises(OperatorError, match="lengths summing"):
        run_op(op_type, [dout, lengths, indices[:4]])
