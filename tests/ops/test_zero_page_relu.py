"""relu_into (array-speed Relu against zero-page zeros) against a naive loop."""

from __future__ import annotations

import math

import numpy as np
import pytest

from asyncnet.ops import _zeros
from asyncnet.ops._zeros import relu_into, zeros_view


def _naive_relu(values: np.ndarray) -> list[float]:
    out = []
    for v in values.ravel().tolist():
        out.append(v if (math.isnan(v) or v > 0) else 0.0)
    return out


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(3, 5), (64, 19, 19), (2, 3, 61, 57)])
def test_relu_into_matches_a_naive_loop(dtype: type, shape: tuple[int, ...]) -> None:
    rng = np.random.default_rng(7)
    x: np.ndarray = rng.standard_normal(shape).astype(dtype)
    flat = x.reshape(-1)
    flat[::97] = np.nan
    flat[5::131] = np.inf
    flat[7::113] = -np.inf
    expect = _naive_relu(x)
    out = np.empty_like(x)
    got = relu_into(x, out)
    assert got is out
    np.testing.assert_array_equal(got.ravel(), np.asarray(expect, dtype=dtype))
    inplace = x.copy()
    relu_into(inplace, inplace)
    np.testing.assert_array_equal(inplace.ravel(), np.asarray(expect, dtype=dtype))


def test_non_contiguous_and_integer_inputs() -> None:
    rng = np.random.default_rng(1)
    x = rng.standard_normal((160, 240)).astype(np.float32)[:, ::2]  # 19200 values, strided
    out = np.empty(x.shape, np.float32)
    np.testing.assert_array_equal(relu_into(x, out).ravel(), np.asarray(_naive_relu(x), np.float32))
    xi = rng.integers(-5, 5, size=(70, 70)).astype(np.int32)
    oi = np.empty_like(xi)
    np.testing.assert_array_equal(relu_into(xi, oi).ravel(), np.asarray([max(v, 0) for v in xi.ravel().tolist()]))


def test_zeros_view_is_read_only_zeros_and_grows() -> None:
    small = zeros_view((4, 4), np.float32)
    if small is None:
        pytest.skip("no anonymous mappings on this platform: the scalar Relu path is used")
    assert not small.flags.writeable
    with pytest.raises(ValueError):
        small[0, 0] = 1.0
    n = _zeros._zeros.size // 8 + 1000 if _zeros._zeros is not None else 1 << 20  # larger than the mapping
    big = zeros_view((n,), np.float64)
    assert big is not None and big.shape == (n,) and big.dtype == np.float64
    assert not big.any() and not small.any()
