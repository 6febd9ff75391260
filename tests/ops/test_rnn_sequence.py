"""PackRNNSequence / UnpackRNNSequence against naive loops, and each as the other's gradient."""

from __future__ import annotations

import numpy as np
import pytest

from asyncnet.errors import OperatorError
from asyncnet.training.gradcheck import check_gradient
from asyncnet.training.gradients import gradient_for_op
from tests.ops.run_util import make_op, run_op


def test_pack_and_unpack_match_naive_loops() -> None:
    lens = np.array([2, 4, 1], np.int32)
    values = np.random.default_rng(0).normal(size=(7, 3)).astype(np.float32)
    (packed,) = run_op("PackRNNSequence", [values, lens])
    want = np.zeros((4, 3, 3), np.float32)
    pos = 0
    for n, length in enumerate(lens):
        for t in range(length):
            want[t, n] = values[pos]
            pos += 1
    np.testing.assert_array_equal(packed, want)
    (back,) = run_op("UnpackRNNSequence", [packed, lens])
    np.testing.assert_array_equal(back, values)
    (empty,) = run_op("PackRNNSequence", [np.zeros((0, 3), np.float32), np.zeros(0, np.int32)])
    assert empty.shape == (0, 0, 3)


@pytest.mark.parametrize(
    ("op_type", "grad_type"), [("PackRNNSequence", "UnpackRNNSequence"), ("UnpackRNNSequence", "PackRNNSequence")]
)
def test_each_is_the_others_gradient(op_type: str, grad_type: str) -> None:
    lens = np.array([3, 1, 2], np.int32)
    rng = np.random.default_rng(1)
    x = rng.normal(size=(6, 2)) if op_type == "PackRNNSequence" else rng.normal(size=(3, 3, 2))
    op = make_op(op_type, ["x", "lens"], ["y"])
    (gop,) = gradient_for_op(op, ["y_grad"]).ops
    assert gop.type == grad_type and list(gop.input) == ["y_grad", "lens"]
    res = check_gradient(op, {"x": x, "lens": lens}, check=[0])
    assert res.ok, res.describe()


def test_rnn_sequence_errors() -> None:
    with pytest.raises(OperatorError, match="sum\\(lengths\\)"):
        run_op("PackRNNSequence", [np.zeros((3, 2)), np.array([1, 1], np.int32)])
