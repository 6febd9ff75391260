"""Finite-difference checks of the gradients issue 15 listed as missing (Pow, Gather, BatchGather, Cast,
TopK, BooleanMask, LengthsTile, LengthsTopK, Moments, BatchMoments, FCTransposed, SquareRootDivide,
NanCheck)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from asyncnet.training.gradcheck import check_gradient
from asyncnet.training.gradients import gradient_for_op
from tests.ops.run_util import make_op, run_once

RNG = np.random.default_rng(7)


def _ok(
    op_type: str,
    inputs: dict[str, Any],
    n_out: int = 1,
    check: list[int] | None = None,
    total_out: int | None = None,
    **args: Any,
) -> None:
    outs = [f"y{i}" for i in range(total_out or n_out)]
    op = make_op(op_type, list(inputs), outs, **args)
    res = check_gradient(op, inputs, check=check, outputs_with_grad=list(range(n_out)))
    assert res.ok, f"{op_type}: {res.describe()}"


def test_pow_gradients() -> None:
    x = RNG.uniform(0.5, 2.0, (2, 3))
    _ok("Pow", {"X": x}, exponent=2.5)
    _ok("Pow", {"X": x, "E": RNG.uniform(-1, 2, (2, 3))})
    _ok("Pow", {"X": x, "E": RNG.uniform(-1, 2, (2,))}, broadcast=1, axis=0)  # dE summed back
    _ok("Pow", {"X": x, "E": RNG.uniform(-1, 2, (3,))}, broadcast=1)


def test_sum_reduce_like_matches_naive_loop() -> None:
    a = RNG.normal(size=(2, 3, 4))
    (c,) = run_once(make_op("SumReduceLike", ["A", "B"], ["C"], axis=1), {"A": a, "B": np.zeros(3)})
    want = np.zeros(3)
    for i in range(2):
        for j in range(3):
            for k in range(4):
                want[j] += a[i, j, k]
    np.testing.assert_allclose(c, want)
    (c,) = run_once(make_op("SumReduceLike", ["A", "B"], ["C"]), {"A": a, "B": np.zeros((3, 4))})
    np.testing.assert_allclose(c, a.sum(axis=0))


def test_gather_gradients_accumulate_repeated_indices() -> None:
    d = RNG.normal(size=(4, 3))
    _ok("Gather", {"D": d, "I": np.array([[0, 2], [2, 3]], np.int32)}, check=[0])
    _ok("Gather", {"D": d, "I": np.array([1, 1, 0], np.int64)}, check=[0], axis=1)
    d = RNG.normal(size=(4, 4))
    _ok("BatchGather", {"D": RNG.normal(size=(2, 4, 2)), "I": np.array([3, 0, 3], np.int32)}, check=[0])
    _ok("Gather", {"D": d, "I": np.array([[0, 2], [1, 1], [3, 3], [0, 0]], np.int32)}, check=[0], axis=1, match_outer=1)


def test_cast_gradient_casts_back() -> None:
    op = make_op("Cast", ["X"], ["Y"], to=10, from_type=1)  # FLOAT -> FLOAT16
    spec = gradient_for_op(op, ["Y_grad"])
    (gop,) = spec.ops
    (dx,) = run_once(gop, {"Y_grad": np.array([1.5, -2.0], np.float16)})
    assert dx.dtype == np.float32 and dx.tolist() == [1.5, -2.0]
    with pytest.raises(ValueError, match="from_type"):
        gradient_for_op(make_op("Cast", ["X"], ["Y"], to=10), ["Y_grad"])


def test_topk_gradient() -> None:
    x = RNG.permutation(24).reshape(2, 3, 4).astype(np.float64)
    _ok("TopK", {"X": x}, n_out=1, total_out=2, k=2)
    _ok("TopK", {"X": x}, n_out=1, total_out=2, k=2, axis=1)
    _ok("TopK", {"X": x[:, :, :2]}, n_out=1, total_out=2, k=3)  # padded positions carry no gradient


def test_boolean_mask_lengths_tile_lengths_topk_gradients() -> None:
    _ok("BooleanMask", {"D": RNG.normal(size=(4, 2)), "M": np.array([True, False, True, True])}, check=[0])
    _ok("LengthsTile", {"D": RNG.normal(size=(3, 2)), "L": np.array([2, 0, 3], np.int32)}, check=[0])
    data = RNG.permutation(9).astype(np.float64)
    _ok("LengthsTopK", {"D": data, "L": np.array([4, 1, 0, 4], np.int32)}, check=[0], total_out=2, k=2)


def test_moments_gradients() -> None:
    x = RNG.normal(size=(2, 3, 4))
    _ok("Moments", {"X": x}, n_out=2)
    _ok("Moments", {"X": x}, n_out=2, axes=[0, 2], keepdims=0)
    _ok("BatchMoments", {"X": x}, n_out=2)
    _ok("BatchMoments", {"X": x}, n_out=2, order="NHWC")


def test_fc_transposed_square_root_divide_nan_check_gradients() -> None:
    _ok("FCTransposed", {"X": RNG.normal(size=(3, 4)), "W": RNG.normal(size=(4, 2)), "b": RNG.normal(size=(2,))})
    _ok("SquareRootDivide", {"D": RNG.normal(size=(3, 2)), "S": np.array([4.0, 0.0, 2.0])}, check=[0])
    _ok("NanCheck", {"X": RNG.normal(size=(3,))})


def test_gradient_op_types() -> None:
    # The gradient ops checked above, by the names their makers emit.
    cases = {
        "Pow": "Pow",
        "Gather": "BatchGatherGradient",
        "BatchGather": "BatchGatherGradient",
        "TopK": "TopKGradient",
        "BooleanMask": "BooleanMaskGradient",
        "LengthsTile": "LengthsSum",
        "LengthsTopK": "LengthsTopKGradient",
        "Moments": "MomentsGradient",
        "BatchMoments": "BatchMomentsGradient",
        "FCTransposed": "FCTransposedGradient",
        "SquareRootDivide": "SquareRootDivide",
        "NanCheck": "NanCheck",
    }
    from asyncnet.registry import default_registry

    for fwd, grad in cases.items():
        schema = default_registry().schema(fwd)
        ins = [f"x{i}" for i in range(schema.inputs[0])]
        outs = [f"y{i}" for i in range(schema.outputs[0])]
        args = {"exponent": 2.0} if fwd == "Pow" else {}
        spec = gradient_for_op(make_op(fwd, ins, outs, **args), [f"{o}_grad" for o in outs])
        assert spec.ops[0].type == grad, fwd
