"""Im2Col against a naive per-element loop (Caffe2's column layouts) and Col2Im as its gradient."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from asyncnet.training.gradcheck import check_gradient
from tests.ops.run_util import make_op, run_op

ARGS = dict(
    kernel_h=2, kernel_w=3, stride_h=2, stride_w=1, pad_t=1, pad_l=0, pad_b=0, pad_r=1, dilation_h=1, dilation_w=2
)


def naive(
    x: np.ndarray, kh: int, kw: int, sh: int, sw: int, pt: int, pl: int, pb: int, pr: int, dh: int, dw: int
) -> np.ndarray:
    n, c, h, w = x.shape
    oh = (h + pt + pb - (dh * (kh - 1) + 1)) // sh + 1
    ow = (w + pl + pr - (dw * (kw - 1) + 1)) // sw + 1
    out = np.zeros((n, c * kh * kw, oh, ow), x.dtype)
    for b in range(n):
        for ch in range(c):
            for i in range(kh):
                for j in range(kw):
                    row = (ch * kh + i) * kw + j
                    for y in range(oh):
                        for z in range(ow):
                            r, q = y * sh - pt + i * dh, z * sw - pl + j * dw
                            if 0 <= r < h and 0 <= q < w:
                                out[b, row, y, z] = x[b, ch, r, q]
    return out


@pytest.mark.parametrize("order", ["NCHW", "NHWC"])
def test_im2col_matches_naive_loop(order: str) -> None:
    x = np.random.default_rng(0).normal(size=(2, 3, 5, 6))
    want = naive(x, 2, 3, 2, 1, 1, 0, 0, 1, 1, 2)
    inp = x if order == "NCHW" else x.transpose(0, 2, 3, 1)
    (y,) = run_op("Im2Col", [inp], order=order, **ARGS)
    if order == "NCHW":
        np.testing.assert_array_equal(y, want)
    else:
        n, _, oh, ow = want.shape
        # NHWC columns are ordered (kernel row, kernel column, channel).
        w6 = want.reshape(n, 3, 2, 3, oh, ow).transpose(0, 4, 5, 2, 3, 1).reshape(n, oh, ow, -1)
        np.testing.assert_array_equal(y, w6)


@pytest.mark.parametrize("order", ["NCHW", "NHWC"])
def test_im2col_gradient_is_col2im(order: str) -> None:
    x = np.random.default_rng(1).normal(size=(1, 2, 4, 4))
    inp: Any = x if order == "NCHW" else x.transpose(0, 2, 3, 1).copy()
    res = check_gradient(make_op("Im2Col", ["X"], ["Y"], order=order, kernel=2, stride=1, pad=1), {"X": inp})
    assert res.ok, res.describe()


def test_col2im_adds_overlapping_windows() -> None:
    x = np.zeros((1, 1, 3, 3))
    (cols,) = run_op("Im2Col", [np.ones((1, 1, 3, 3))], kernel=2, stride=1)
    (back,) = run_op("Col2Im", [cols, x], kernel=2, stride=1)
    # Each pixel is counted once per 2x2 window covering it.
    assert back[0, 0].tolist() == [[1, 2, 1], [2, 4, 2], [1, 2, 1]]


def naive_lc(x: np.ndarray, w: np.ndarray, b: np.ndarray | None, stride: int, pad: int) -> np.ndarray:
    n, c, h, wd = x.shape
    oh, ow, m, _, kh, kw = w.shape
    y = np.zeros((n, m, oh, ow))
    for b_ in range(n):
        for mm in range(m):
            for yy in range(oh):
                for xx in range(ow):
                    s = b[yy, xx, mm] if b is not None else 0.0
                    for ch in range(c):
                        for i in range(kh):
                            for j in range(kw):
                                r, q = yy * stride - pad + i, xx * stride - pad + j
                                if 0 <= r < h and 0 <= q < wd:
                                    s += x[b_, ch, r, q] * w[yy, xx, mm, ch, i, j]
                    y[b_, mm, yy, xx] = s
    return y


@pytest.mark.parametrize("order", ["NCHW", "NHWC"])
@pytest.mark.parametrize("with_bias", [False, True])
def test_lc_matches_naive_and_gradient(order: str, with_bias: bool) -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(2, 2, 4, 4))
    w = rng.normal(size=(2, 2, 3, 2, 3, 3))  # out 2x2 with kernel 3, stride 1, pad 0
    b = rng.normal(size=(2, 2, 3)) if with_bias else None
    want = naive_lc(x, w, b, 1, 0)
    xi = x if order == "NCHW" else x.transpose(0, 2, 3, 1).copy()
    wi = w if order == "NCHW" else w.transpose(0, 1, 2, 4, 5, 3).copy()
    ins = [xi, wi] + ([b] if b is not None else [])
    (y,) = run_op("LC", ins, kernels=[3, 3], order=order)
    np.testing.assert_allclose(y if order == "NCHW" else y.transpose(0, 3, 1, 2), want, rtol=1e-10)
    feeds = dict(zip(["X", "W", "b"], ins))
    res = check_gradient(make_op("LC", list(feeds), ["Y"], kernels=[3, 3], order=order), feeds)
    assert res.ok, res.describe()
    from asyncnet.training.gradients import gradient_for_op

    (gop,) = gradient_for_op(make_op("LC", list(feeds), ["Y"], kernel=3), ["Y_grad"]).ops
    assert gop.type == "LCGradient"


@pytest.mark.parametrize("order", ["NCHW", "NHWC"])
def test_lp_pool_matches_naive_and_gradient(order: str) -> None:
    rng = np.random.default_rng(8)
    x = rng.normal(size=(1, 2, 5, 5))
    xi = x if order == "NCHW" else x.transpose(0, 2, 3, 1).copy()
    (y,) = run_op("LpPool", [xi], kernel=3, stride=2, pad=1, p=3.0, order=order)
    yn = y if order == "NCHW" else y.transpose(0, 3, 1, 2)
    for c in range(2):
        for i in range(3):
            for j in range(3):
                acc = 0.0
                for di in range(3):
                    for dj in range(3):
                        r, q = 2 * i - 1 + di, 2 * j - 1 + dj
                        if 0 <= r < 5 and 0 <= q < 5:
                            acc += abs(x[0, c, r, q]) ** 3
                assert yn[0, c, i, j] == pytest.approx(acc ** (1 / 3))
    res = check_gradient(make_op("LpPool", ["X"], ["Y"], kernel=2, stride=1, p=2.5, order=order), {"X": xi})
    assert res.ok, res.describe()
    from asyncnet.training.gradients import gradient_for_op

    assert gradient_for_op(make_op("LpPool", ["X"], ["Y"], kernel=2), ["Y_grad"]).ops[0].type == "LpPoolGradient"


@pytest.mark.parametrize("order", ["NCHW", "NHWC"])
def test_lp_pool_global_pooling(order: str) -> None:
    rng = np.random.default_rng(9)
    x = rng.normal(size=(2, 3, 4, 5))
    xi = x if order == "NCHW" else x.transpose(0, 2, 3, 1).copy()
    (y,) = run_op("LpPool", [xi], global_pooling=1, p=2.0, order=order)
    want = np.sqrt((x**2).sum(axis=(2, 3)))  # one window per (n, c) plane
    got = y.reshape(2, 3) if order == "NCHW" else y.transpose(0, 3, 1, 2).reshape(2, 3)
    assert y.shape == ((2, 3, 1, 1) if order == "NCHW" else (2, 1, 1, 3))
    np.testing.assert_allclose(got, want)
    res = check_gradient(make_op("LpPool", ["X"], ["Y"], global_pooling=1, p=2.0, order=order), {"X": xi})
    assert res.ok, res.describe()
