"""Finite-difference checks of the segment / packing gradient makers (ops/grad_segments.py)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from asyncnet.errors import GradientError, OperatorError
from asyncnet.training.gradcheck import check_gradient
from asyncnet.training.gradients import gradient_for_op
from tests.ops.run_util import make_op, run_op

RNG = np.random.default_rng(11)


def _ok(op_type: str, inputs: dict[str, Any], n_out: int = 1, check: list[int] | None = None, **args: Any) -> None:
    op = make_op(op_type, list(inputs), [f"y{i}" for i in range(n_out)], **args)
    res = check_gradient(op, inputs, check=check, outputs_with_grad=list(range(n_out)))
    assert res.ok, f"{op_type}: {res.describe()}"


def test_split_by_lengths_gradient() -> None:
    data = RNG.normal(size=(6, 2))
    _ok("SplitByLengths", {"D": data, "L": np.array([1, 2, 0, 3], np.int32)}, n_out=2, check=[0])
    _ok("SplitByLengths", {"D": RNG.normal(size=(2, 6)), "L": np.array([4, 2], np.int32)}, n_out=2, check=[0], axis=1)


@pytest.mark.parametrize(
    "rows,lengths,n_out",
    [(12, [1, 2, 0, 3], 2), (6, [1, 1, 1], 3), (0, [1, 1], 2), (4, [2, 2], 1)],
)
def test_split_by_lengths_scaling_lengths(rows: int, lengths: list[int], n_out: int) -> None:
    # Naive reference: K = rows / sum(lengths); output k takes the rows of its group of segments, each
    # segment K times as long. An empty input (rows 0) gives K = 0: every output is empty.
    data = RNG.normal(size=(rows, 2))
    outs = run_op("SplitByLengths", [data, np.array(lengths, np.int32)], n_out, use_scaling_lengths=1)
    k = rows // sum(lengths)
    per = len(lengths) // n_out
    pos = 0
    for j in range(n_out):
        n = k * sum(lengths[j * per : (j + 1) * per])
        np.testing.assert_array_equal(outs[j], data[pos : pos + n])
        pos += n
    if rows:
        _ok(
            "SplitByLengths",
            {"D": data, "L": np.array(lengths, np.int32)},
            n_out=n_out,
            check=[0],
            use_scaling_lengths=1,
        )


def test_split_by_lengths_scaling_needs_a_whole_multiple() -> None:
    with pytest.raises(OperatorError, match="whole multiple"):
        run_op("SplitByLengths", [np.zeros((5, 2)), np.array([1, 1], np.int32)], 2, use_scaling_lengths=1)


def test_split_by_lengths_gradient_needs_every_output_gradient() -> None:
    op = make_op("SplitByLengths", ["D", "L"], ["a", "b"])
    with pytest.raises(GradientError, match="every output"):
        gradient_for_op(op, ["a_grad", None])


def test_pack_segments_gradient() -> None:
    lengths = np.array([2, 0, 3], np.int32)
    _ok("PackSegments", {"L": lengths, "D": RNG.normal(size=(5, 2))}, check=[1])
    _ok("PackSegments", {"L": lengths, "D": RNG.normal(size=(5,))}, check=[1], max_length=4)


def test_reverse_packed_segs_gradient() -> None:
    _ok("ReversePackedSegs", {"D": RNG.normal(size=(4, 3, 2)), "L": np.array([4, 1, 0], np.int64)}, check=[0])


def test_negate_gradient_gradient_is_negative() -> None:
    # NegateGradient is the identity forward; Caffe2 defines its gradient as Negative(dY).
    op = make_op("NegateGradient", ["X"], ["Y"])
    spec = gradient_for_op(op, ["Y_grad"])
    assert [(o.type, list(o.input), list(o.output)) for o in spec.ops] == [("Negative", ["Y_grad"], ["X_grad"])]
