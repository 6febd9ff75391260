"""The shifted-copies Conv (kw copies, kh accumulating CBLAS GEMMs) against a naive loop."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from asyncnet.ops import _cblas, _conv_shifted
from asyncnet.ops._conv_fast import ConvPlan
from asyncnet.ops._conv_shifted import ShiftedConv
from asyncnet.ops._window import Window
from tests.ops.test_conv_fast import naive_conv

pytestmark = pytest.mark.timeout(120)

needs_cblas = pytest.mark.skipif(
    _cblas.gemm_for(np.dtype(np.float32)) is None, reason="numpy's BLAS exports no CBLAS GEMM here"
)


def _window(
    hw: tuple[int, int], k: tuple[int, int], d: tuple[int, int], heads: tuple[int, int], tails: tuple[int, int]
) -> Window:
    out = tuple(s + h + t - (dd * (kk - 1) + 1) + 1 for s, kk, dd, h, t in zip(hw, k, d, heads, tails))
    return Window(k, (1, 1), d, heads, tails, out)


@needs_cblas
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    "n,c,m,hw,k,d,heads,tails,bias",
    [
        (1, 3, 4, (9, 11), (3, 3), (1, 1), (1, 1), (1, 1), True),
        (2, 2, 5, (10, 8), (5, 5), (1, 1), (2, 2), (2, 2), False),
        (1, 3, 2, (9, 9), (1, 3), (1, 1), (0, 1), (0, 1), True),
        (1, 3, 2, (9, 9), (3, 1), (1, 1), (1, 0), (1, 0), True),
        (2, 2, 3, (12, 10), (3, 3), (2, 1), (2, 0), (1, 3), True),  # dilation, asymmetric pads
        (1, 2, 3, (7, 7), (2, 4), (1, 2), (0, 0), (0, 0), False),  # even kernel, no padding
        (1, 1, 2, (5, 6), (3, 3), (1, 1), (4, 3), (0, 5), True),  # pads wider than the kernel
    ],
)
def test_shifted_conv_matches_naive_loop(
    dtype: type,
    n: int,
    c: int,
    m: int,
    hw: tuple[int, int],
    k: tuple[int, int],
    d: tuple[int, int],
    heads: tuple[int, int],
    tails: tuple[int, int],
    bias: bool,
) -> None:
    win = _window(hw, k, d, heads, tails)
    gemm = _cblas.gemm_for(np.dtype(dtype))
    assert gemm is not None
    rng = np.random.default_rng(11)
    w = rng.standard_normal((m, c, *k)).astype(dtype)
    b = rng.standard_normal(m).astype(dtype) if bias else None
    conv = ShiftedConv((n, c, *hw), w.shape, win, gemm)
    tol = 1e-4 if dtype == np.float32 else 1e-10
    for _ in range(3):  # the scratch (zeroed padding) is reused across runs with new inputs
        x = rng.standard_normal((n, c, *hw)).astype(dtype)
        y = np.full((n, m, *win.out), np.nan, dtype)
        conv.run(x, w, b, y)
        ref = naive_conv(x, w, b, [1, 1], list(d), list(heads), list(win.out), 1)
        np.testing.assert_allclose(y, ref, rtol=tol, atol=tol)


@needs_cblas
def test_plan_takes_the_shifted_path_for_wide_maps_only() -> None:
    wide = _window((20, 20), (3, 3), (1, 1), (1, 1), (1, 1))
    narrow = _window((7, 7), (3, 3), (1, 1), (1, 1), (1, 1))
    assert ConvPlan((1, 3, 20, 20), (2, 3, 3, 3), np.dtype(np.float32), wide, "NCHW", 1).kind == "shifted"
    assert ConvPlan((1, 3, 7, 7), (2, 3, 3, 3), np.dtype(np.float32), narrow, "NCHW", 1).kind == "im2col"
    assert ConvPlan((1, 4, 20, 20), (2, 2, 3, 3), np.dtype(np.float32), wide, "NCHW", 2).kind == "im2col"
    strided = Window((3, 3), (2, 2), (1, 1), (1, 1), (1, 1), (10, 10))
    assert ConvPlan((1, 3, 20, 20), (2, 3, 3, 3), np.dtype(np.float32), strided, "NCHW", 1).kind == "im2col"
    assert ConvPlan((1, 3, 20, 20), (2, 3, 3, 3), np.dtype(np.float16), wide, "NCHW", 1).kind == "im2col"
    _cblas.ENABLED = False
    try:
        assert ConvPlan((1, 3, 20, 20), (2, 3, 3, 3), np.dtype(np.float32), wide, "NCHW", 1).kind == "im2col"
    finally:
        _cblas.ENABLED = True


@needs_cblas
def test_weights_changed_in_place_are_seen_by_the_next_run() -> None:
    """Optimizers update weights in place: nothing derived from a weight array may be cached."""
    win = _window((16, 16), (3, 3), (1, 1), (1, 1), (1, 1))
    rng = np.random.default_rng(2)
    x = rng.standard_normal((1, 2, 16, 16)).astype(np.float32)
    w = rng.standard_normal((3, 2, 3, 3)).astype(np.float32)
    plan = ConvPlan(x.shape, w.shape, np.dtype(np.float32), win, "NCHW", 1)
    assert plan.kind == "shifted"
    plan.run(x, w, None, None)
    w *= -0.5
    w[0, 1, 2, 0] = 3.0
    ref = naive_conv(x, w, None, [1, 1], [1, 1], [1, 1], [16, 16], 1)
    np.testing.assert_allclose(plan.run(x, w, None, None), ref, rtol=1e-4, atol=1e-4)


@needs_cblas
def test_concurrent_calls_of_one_plan_are_each_exact() -> None:
    """A second caller while the plan's scratch is busy works in its own scratch."""
    win = _window((24, 24), (3, 3), (1, 1), (1, 1), (1, 1))
    rng = np.random.default_rng(4)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    b = rng.standard_normal(4).astype(np.float32)
    xs = [rng.standard_normal((1, 3, 24, 24)).astype(np.float32) for _ in range(4)]
    refs = [naive_conv(x, w, b, [1, 1], [1, 1], [1, 1], [24, 24], 1) for x in xs]
    plan = ConvPlan(xs[0].shape, w.shape, np.dtype(np.float32), win, "NCHW", 1)
    assert plan.kind == "shifted"
    errors: list[BaseException] = []
    start = threading.Barrier(len(xs))

    def worker(i: int) -> None:
        try:
            start.wait(timeout=30)
            for _ in range(30):
                np.testing.assert_allclose(plan.run(xs[i], w, b, None), refs[i], rtol=1e-4, atol=1e-4)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    before = set(threading.enumerate())
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(xs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors[0]
    assert not [t for t in threading.enumerate() if t not in before and t.is_alive()]


def test_waste_rule() -> None:
    assert _conv_shifted.waste(Window((3, 3), (1, 1), (1, 1), (1, 1), (1, 1), (56, 56))) == pytest.approx(2 / 56)
    w3 = (8, 8, 3, 3)
    assert not _conv_shifted.applicable((1, 8, 7, 7), w3, Window((3, 3), (1, 1), (1, 1), (1, 1), (1, 1), (7, 7)), 1)
    five = Window((5, 5), (1, 1), (1, 1), (2, 2), (2, 2), (28, 28))
    assert _conv_shifted.applicable((1, 8, 28, 28), (8, 8, 5, 5), five, 1)
    # Many output channels make the wasted GEMM columns cost more than the copies saved.
    assert not _conv_shifted.applicable((1, 8, 28, 28), (256, 8, 5, 5), five, 1)


def test_gemm_for_other_dtypes_is_none() -> None:
    assert _cblas.gemm_for(np.dtype(np.float16)) is None
    assert _cblas.gemm_for(np.dtype(np.int32)) is None
    assert _cblas.gemm_for(np.dtype(">f4")) is None
