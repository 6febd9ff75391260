"""BatchDenseToSparse against a naive loop; both it and BatchSparseToDense checked by finite differences."""

from __future__ import annotations

import numpy as np
import pytest

from asyncnet.errors import OperatorError
from asyncnet.training.gradcheck import check_gradient
from asyncnet.training.gradients import gradient_for_op
from tests.ops.run_util import make_op, run_op


def sample(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    lens = rng.integers(0, 5, 6)
    idx = np.concatenate([rng.choice(7, n, replace=False) for n in lens]).astype(np.int64)
    return lens.astype(np.int32), idx, rng.normal(size=(6, 7))


def test_dense_to_sparse_matches_naive() -> None:
    lens, idx, dense = sample(0)
    (vals,) = run_op("BatchDenseToSparse", [lens, idx, dense])
    want, pos = [], 0
    for b, n in enumerate(lens):
        for _ in range(n):
            want.append(dense[b, idx[pos]])
            pos += 1
    assert vals.tolist() == want
    # Round trip: scattering the gathered values back restores the named positions.
    (back,) = run_op("BatchSparseToDense", [lens, idx, vals, dense])
    rows = np.repeat(np.arange(6), lens)
    np.testing.assert_array_equal(back[rows, idx], dense[rows, idx])


@pytest.mark.parametrize(
    ("op_type", "grad_type"),
    [("BatchDenseToSparse", "BatchSparseToDense"), ("BatchSparseToDense", "BatchDenseToSparse")],
)
def test_gradients_are_each_other(op_type: str, grad_type: str) -> None:
    lens, idx, dense = sample(1)
    third = dense if op_type == "BatchDenseToSparse" else run_op("BatchDenseToSparse", [lens, idx, dense])[0]
    names = ["L", "I", "X"] + ([] if op_type == "BatchDenseToSparse" else ["S"])
    feeds = {"L": lens, "I": idx, "X": third} | ({} if op_type == "BatchDenseToSparse" else {"S": dense})
    op = make_op(op_type, names, ["Y"])
    assert gradient_for_op(op, ["dY"]).ops[0].type == grad_type
    res = check_gradient(op, feeds, check=[2])
    assert res.ok, res.describe()


def test_dense_to_sparse_errors() -> None:
    lens, idx, dense = sample(2)
    with pytest.raises(OperatorError, match="DENSE must be"):
        run_op("BatchDenseToSparse", [lens, idx, dense[:2]])
    with pytest.raises(OperatorError, match="INDICES must lie"):
        run_op("BatchDenseToSparse", [lens, idx + 10, dense])
