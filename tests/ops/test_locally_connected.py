"""LC / LC1D / LC2D / LC3D against a naive N-d loop, and their gradients by finite differences."""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import pytest

from asyncnet.errors import ArgumentError, OperatorError
from asyncnet.training.gradcheck import check_gradient
from asyncnet.training.gradients import gradient_for_op
from tests.ops.run_util import make_op, run_op


def naive_lc(x: np.ndarray, w: np.ndarray, b: np.ndarray | None, stride: int, pad: int) -> np.ndarray:
    """NCHW X (N, C, *S), W (*O, M, C, *K): every output position has its own filter."""
    n, c = x.shape[:2]
    nd = x.ndim - 2
    out, m, kernel = w.shape[:nd], w.shape[nd], w.shape[nd + 2 :]
    y = np.zeros((n, m, *out))
    for bi in range(n):
        for mm in range(m):
            for o in itertools.product(*(range(s) for s in out)):
                total = b[(*o, mm)] if b is not None else 0.0
                for ch in range(c):
                    for k in itertools.product(*(range(s) for s in kernel)):
                        pos = [oi * stride - pad + ki for oi, ki in zip(o, k)]
                        if all(0 <= p < s for p, s in zip(pos, x.shape[2:])):
                            total += x[(bi, ch, *pos)] * w[(*o, mm, ch, *k)]
                y[(bi, mm, *o)] = total
    return y


GRADIENT_TYPES = {"LC": "LCGradient", "LC1D": "LC1DGradient", "LC2D": "LC2DGradient", "LC3D": "LC3DGradient"}

CASES = [
    ("LC1D", (2, 3, 7), (3,), 2, 1),
    ("LC", (2, 2, 6), (2,), 1, 0),
    ("LC2D", (1, 2, 5, 4), (2, 3), 1, 1),
    ("LC3D", (1, 2, 4, 3, 4), (2, 2, 2), 1, 0),
    ("LC", (2, 1, 3, 4, 3), (2, 1, 2), 2, 1),
]


def _inputs(shape: tuple[int, ...], kernel: tuple[int, ...], stride: int, pad: int, seed: int) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    out = tuple((s + 2 * pad - k) // stride + 1 for s, k in zip(shape[2:], kernel))
    m = 2
    return {
        "X": rng.normal(size=shape),
        "W": rng.normal(size=(*out, m, shape[1], *kernel)),
        "b": rng.normal(size=(*out, m)),
    }


@pytest.mark.parametrize(("op_type", "shape", "kernel", "stride", "pad"), CASES)
@pytest.mark.parametrize("with_bias", [True, False])
def test_lc_matches_naive_loop(
    op_type: str, shape: tuple[int, ...], kernel: tuple[int, ...], stride: int, pad: int, with_bias: bool
) -> None:
    f = _inputs(shape, kernel, stride, pad, len(shape))
    ins = [f["X"], f["W"], f["b"]] if with_bias else [f["X"], f["W"]]
    (y,) = run_op(op_type, ins, kernels=list(kernel), stride=stride, pad=pad)
    np.testing.assert_allclose(y, naive_lc(f["X"], f["W"], f["b"] if with_bias else None, stride, pad), rtol=1e-10)


@pytest.mark.parametrize(("op_type", "shape", "kernel"), [("LC1D", (2, 3, 6), (2,)), ("LC", (2, 2, 5, 4), (2, 3))])
def test_lc_nhwc_is_the_transposed_nchw(op_type: str, shape: tuple[int, ...], kernel: tuple[int, ...]) -> None:
    f = _inputs(shape, kernel, 1, 0, 1)
    nd = len(kernel)
    (want,) = run_op(op_type, [f["X"], f["W"], f["b"]], kernels=list(kernel))
    x_last = np.moveaxis(f["X"], 1, -1).copy()
    w_last = np.moveaxis(f["W"], nd + 1, -1).copy()  # (*O, M, C, *K) -> (*O, M, *K, C)
    (y,) = run_op(op_type, [x_last, w_last, f["b"]], kernels=list(kernel), order="NHWC")
    np.testing.assert_allclose(np.moveaxis(y, -1, 1), want, rtol=1e-10)


@pytest.mark.parametrize(("op_type", "shape", "kernel", "stride", "pad"), [CASES[0], CASES[3], CASES[4]])
@pytest.mark.parametrize("with_bias", [True, False])
def test_lc_gradients(
    op_type: str, shape: tuple[int, ...], kernel: tuple[int, ...], stride: int, pad: int, with_bias: bool
) -> None:
    f = _inputs(shape, kernel, stride, pad, 5)
    feeds = f if with_bias else {"X": f["X"], "W": f["W"]}
    op = make_op(op_type, list(feeds), ["Y"], kernels=list(kernel), stride=stride, pad=pad)
    (gop,) = gradient_for_op(op, ["Y_grad"]).ops
    assert gop.type == GRADIENT_TYPES[op_type]
    res = check_gradient(op, feeds)
    assert res.ok, res.describe()


def test_lc_nhwc_gradient() -> None:
    f = _inputs((1, 2, 4, 5), (2, 2), 1, 0, 9)
    feeds = {"X": np.moveaxis(f["X"], 1, -1).copy(), "W": np.moveaxis(f["W"], 3, -1).copy(), "b": f["b"]}
    op = make_op("LC2D", list(feeds), ["Y"], kernels=[2, 2], order="NHWC")
    assert gradient_for_op(op, ["Y_grad"]).ops[0].type == GRADIENT_TYPES["LC2D"]
    res = check_gradient(op, feeds)
    assert res.ok, res.describe()


def test_lc_shape_errors() -> None:
    x, w = np.zeros((1, 2, 5)), np.zeros((4, 1, 2, 2))
    with pytest.raises(OperatorError, match="X must be 5-D"):
        run_op("LC3D", [x, w], kernels=[2])
    with pytest.raises(OperatorError, match="W must be"):
        run_op("LC1D", [x, np.zeros((3, 1, 2, 2))], kernels=[2])
    with pytest.raises((OperatorError, ArgumentError), match="kernel"):
        run_op("LC1D", [x, w], kernels=[3])
