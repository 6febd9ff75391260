"""DeformConv against a naive per-tap bilinear loop (and Conv when the offsets are 0); its gradient by
finite differences for X, OFFSET, W and b."""

from __future__ import annotations

import math

import numpy as np
import pytest

from asyncnet.errors import OperatorError
from asyncnet.training.gradcheck import check_gradient
from asyncnet.training.gradients import gradient_for_op
from tests.ops.run_util import make_op, run_op


def bilinear(img: np.ndarray, y: float, x: float) -> float:
    h, w = img.shape
    if not (y > -1 and x > -1 and y < h and x < w):
        return 0.0
    y0, x0 = math.floor(y), math.floor(x)
    total = 0.0
    for yy, wy in ((y0, 1 - (y - y0)), (y0 + 1, y - y0)):
        for xx, wx in ((x0, 1 - (x - x0)), (x0 + 1, x - x0)):
            if 0 <= yy < h and 0 <= xx < w:
                total += wy * wx * img[yy, xx]
    return total


def naive(
    x: np.ndarray, off: np.ndarray, w: np.ndarray, b: np.ndarray, stride: int, pad: int, dil: int, group: int, dg: int
) -> np.ndarray:
    n, c, h, wd = x.shape
    m, cpg, kh, kw = w.shape
    oh, ow = off.shape[2:]
    y = np.zeros((n, m, oh, ow))
    for bi in range(n):
        for mm in range(m):
            g = mm // (m // group)
            for i in range(oh):
                for j in range(ow):
                    total = b[mm]
                    for cc in range(cpg):
                        ch = g * cpg + cc
                        d = ch // (c // dg)
                        for a in range(kh):
                            for q in range(kw):
                                t = a * kw + q
                                sy = i * stride - pad + a * dil + off[bi, 2 * (d * kh * kw + t), i, j]
                                sx = j * stride - pad + q * dil + off[bi, 2 * (d * kh * kw + t) + 1, i, j]
                                total += w[mm, cc, a, q] * bilinear(x[bi, ch], sy, sx)
                    y[bi, mm, i, j] = total
    return y


CASES = [(1, 0, 1, 1, 1), (2, 1, 1, 2, 2), (1, 1, 2, 1, 2)]  # stride, pad, dilation, group, deformable_group


def _inputs(
    stride: int, pad: int, dil: int, group: int, dg: int, seed: int, small: bool = False
) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    n, c, h, w, m, k = (1, 2, 4, 5, 2, 3) if small else (2, 4, 6, 7, 4, 3)
    oh = (h + 2 * pad - dil * (k - 1) - 1) // stride + 1
    ow = (w + 2 * pad - dil * (k - 1) - 1) // stride + 1
    return {
        "X": rng.normal(size=(n, c, h, w)),
        "O": rng.uniform(-1.7, 1.7, size=(n, 2 * dg * k * k, oh, ow)),
        "W": rng.normal(size=(m, c // group, k, k)),
        "b": rng.normal(size=m),
    }


@pytest.mark.parametrize("case", CASES)
def test_deform_conv_matches_naive(case: tuple[int, int, int, int, int]) -> None:
    stride, pad, dil, group, dg = case
    f = _inputs(*case, seed=sum(case))
    args = dict(kernel=3, stride=stride, pad=pad, dilation=dil, group=group, deformable_group=dg)
    (y,) = run_op("DeformConv", [f["X"], f["O"], f["W"], f["b"]], **args)
    np.testing.assert_allclose(
        y, naive(f["X"], f["O"], f["W"], f["b"], stride, pad, dil, group, dg), rtol=1e-9, atol=1e-9
    )
    (flat,) = run_op("DeformConv", [f["X"], np.zeros_like(f["O"]), f["W"], f["b"]], **args)
    (conv,) = run_op("Conv", [f["X"], f["W"], f["b"]], kernel=3, stride=stride, pad=pad, dilation=dil, group=group)
    np.testing.assert_allclose(flat, conv, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("case", CASES[1:])
def test_deform_conv_gradients(case: tuple[int, int, int, int, int]) -> None:
    stride, pad, dil, group, dg = case
    f = _inputs(*case, seed=7, small=True)
    args = dict(kernel=3, stride=stride, pad=pad, dilation=dil, group=group, deformable_group=dg)
    op = make_op("DeformConv", ["X", "O", "W", "b"], ["Y"], **args)
    (gop,) = gradient_for_op(op, ["dY"]).ops
    assert gop.type == "DeformConvGradient" and list(gop.output) == ["O_grad", "W_grad", "b_grad", "X_grad"]
    res = check_gradient(op, f, stepsize=1e-5, threshold=1e-4)
    assert res.ok, res.describe()
    no_bias = make_op("DeformConv", ["X", "O", "W"], ["Y"], **args)
    res = check_gradient(no_bias, {k: v for k, v in f.items() if k != "b"}, stepsize=1e-5, threshold=1e-4)
    assert res.ok, res.describe()


def test_deform_conv_offset_shape_error() -> None:
    f = _inputs(1, 0, 1, 1, 1, seed=0)
    with pytest.raises(OperatorError, match="OFFSET must be"):
        run_op("DeformConv", [f["X"], f["O"][:, :4], f["W"]], kernel=3)
