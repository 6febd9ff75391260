"""MatMul, BatchMatMul, FCTransposed, DotProduct and ElementwiseLinear against onnxruntime or naive loops."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from asyncnet.errors import OperatorError
from tests.ops.run_util import floats, ort_run, run1

SETTINGS = settings(max_examples=25)
TOL = {"rtol": 1e-5, "atol": 1e-5}


def _naive_mm(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    m, k = a.shape
    n = b.shape[1]
    out = np.zeros((m, n), np.float64)
    for i in range(m):
        for j in range(n):
            out[i, j] = sum(float(a[i, t]) * float(b[t, j]) for t in range(k))
    return out


@SETTINGS
@given(data=st.data())
def test_matmul_naive(data: Any) -> None:
    m, k, n = (data.draw(st.integers(0, 3)) for _ in range(3))
    ta, tb = data.draw(st.booleans()), data.draw(st.booleans())
    a = data.draw(floats((k, m) if ta else (m, k)))
    b = data.draw(floats((n, k) if tb else (k, n)))
    y = run1("MatMul", a, b, trans_a=int(ta), trans_b=int(tb))
    np.testing.assert_allclose(y, _naive_mm(a.T if ta else a, b.T if tb else b), **TOL)


def test_matmul_flattens_at_axes() -> None:
    a = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    b = np.arange(24, dtype=np.float32).reshape(4, 3, 2)
    y = run1("MatMul", a, b, axis_a=2, axis_b=1)
    np.testing.assert_allclose(y, _naive_mm(a.reshape(6, 4), b.reshape(4, 6)), **TOL)
    with pytest.raises(OperatorError, match="do not multiply"):
        run1("MatMul", a, b)


@SETTINGS
@given(data=st.data())
def test_batch_matmul_matches_onnxruntime(data: Any) -> None:
    batch = tuple(data.draw(st.lists(st.integers(0, 3), max_size=2)))
    m, k, n = (data.draw(st.integers(1, 3)) for _ in range(3))
    ta, tb = data.draw(st.booleans()), data.draw(st.booleans())
    a = data.draw(floats(batch + ((k, m) if ta else (m, k))))
    b = data.draw(floats(batch + ((n, k) if tb else (k, n))))
    y = run1("BatchMatMul", a, b, trans_a=int(ta), trans_b=int(tb))
    a2 = np.swapaxes(a, -1, -2) if ta else a
    b2 = np.swapaxes(b, -1, -2) if tb else b
    (want,) = ort_run("MatMul", [np.ascontiguousarray(a2), np.ascontiguousarray(b2)])
    assert y.shape == want.shape
    np.testing.assert_allclose(y, want, **TOL)


@SETTINGS
@given(data=st.data())
def test_batch_matmul_broadcast_matches_onnxruntime(data: Any) -> None:
    m, k, n = (data.draw(st.integers(1, 3)) for _ in range(3))
    a_batch = tuple(data.draw(st.lists(st.sampled_from([1, 2]), max_size=2)))
    b_batch = tuple(data.draw(st.lists(st.sampled_from([1, 2]), max_size=2)))
    a = data.draw(floats(a_batch + (m, k)))
    b = data.draw(floats(b_batch + (k, n)))
    y = run1("BatchMatMul", a, b, broadcast=1)
    (want,) = ort_run("MatMul", [a, b])
    assert y.shape == want.shape
    np.testing.assert_allclose(y, want, **TOL)


def test_batch_matmul_vectors_and_unequal_batches() -> None:
    v = np.array([1.0, 2.0], np.float32)
    y = run1("BatchMatMul", v, v)
    assert y.shape == (1,) and y[0] == 5.0
    mtx = np.arange(6, dtype=np.float32).reshape(3, 2)
    np.testing.assert_allclose(run1("BatchMatMul", mtx, v), mtx @ v)
    np.testing.assert_allclose(run1("BatchMatMul", v, mtx.T), v @ mtx.T)
    a = np.ones((2, 2, 3), np.float32)
    b = np.ones((1, 3, 4), np.float32)
    with pytest.raises(OperatorError, match="broadcast=1"):
        run1("BatchMatMul", a, b)
    assert run1("BatchMatMul", a, b, broadcast=1).shape == (2, 2, 4)


@SETTINGS
@given(data=st.data())
def test_fc_transposed_matches_onnxruntime_gemm(data: Any) -> None:
    m, k, n = data.draw(st.integers(0, 3)), data.draw(st.integers(1, 3)), data.draw(st.integers(1, 3))
    x = data.draw(floats((m, k)))
    w = data.draw(floats((k, n)))
    b = data.draw(floats((n,)))
    y = run1("FCTransposed", x, w, b)
    (want,) = ort_run("Gemm", [x, w, b])
    np.testing.assert_allclose(y, want, **TOL)
    # FC with W stored the other way gives the same result
    np.testing.assert_allclose(run1("FC", x, np.ascontiguousarray(w.T), b), y, **TOL)


def test_fc_transposed_axes() -> None:
    x = np.arange(12, dtype=np.float32).reshape(2, 2, 3)
    w = np.arange(12, dtype=np.float32).reshape(3, 2, 2)
    b = np.zeros(4, np.float32)
    y = run1("FCTransposed", x, w, b, axis=2, axis_w=1)
    assert y.shape == (2, 2, 4)
    np.testing.assert_allclose(y.reshape(4, 4), _naive_mm(x.reshape(4, 3), w.reshape(3, 4)), **TOL)


@SETTINGS
@given(data=st.data())
def test_dot_product_naive(data: Any) -> None:
    n = data.draw(st.integers(0, 4))
    rest = tuple(data.draw(st.lists(st.integers(1, 3), max_size=2)))
    x = data.draw(floats((n,) + rest))
    y = data.draw(floats((n,) + rest))
    z = run1("DotProduct", x, y)
    assert z.shape == (n,)
    for i in range(n):
        want = sum(float(a) * float(b) for a, b in zip(x[i].reshape(-1), y[i].reshape(-1)))
        np.testing.assert_allclose(z[i], want, **TOL)


def test_dot_product_rejects_mismatch() -> None:
    with pytest.raises(OperatorError, match="one shape"):
        run1("DotProduct", np.ones((2, 3), np.float32), np.ones((2, 2), np.float32))


@SETTINGS
@given(data=st.data())
def test_elementwise_linear_naive(data: Any) -> None:
    n, d = data.draw(st.integers(0, 3)), data.draw(st.integers(1, 4))
    x = data.draw(floats((n, d)))
    a = data.draw(floats((d,)))
    b = data.draw(floats((d,)))
    y = run1("ElementwiseLinear", x, a, b)
    for i in range(n):
        for j in range(d):
            np.testing.assert_allclose(y[i, j], float(x[i, j]) * float(a[j]) + float(b[j]), **TOL)


def test_elementwise_linear_axis() -> None:
    x = np.arange(12, dtype=np.float32).reshape(2, 2, 3)
    a = np.arange(6, dtype=np.float32)
    b = np.ones(6, np.float32)
    y = run1("ElementwiseLinear", x, a, b, axis=1)
    np.testing.assert_allclose(y, (x.reshape(2, 6) * a + b).reshape(2, 2, 3))
    with pytest.raises(OperatorError, match="size D"):
        run1("ElementwiseLinear", x, a[:3], b[:3], axis=1)
