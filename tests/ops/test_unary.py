"""Elementwise unary math and activations against onnxruntime, or naive per-element Python math."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from asyncnet.errors import OperatorError
from tests.ops.run_util import floats, ints, ort_run, run1, shapes

SETTINGS = settings(max_examples=15)
RTOL, ATOL = 2e-5, 2e-6

# (Caffe2 type, ONNX type, ONNX attributes, input range)
ORT_UNARY: list[tuple[str, str, dict[str, Any], tuple[float, float]]] = [
    ("Exp", "Exp", {}, (-5, 5)),
    ("Log", "Log", {}, (0.01, 10)),
    ("Sqrt", "Sqrt", {}, (0, 10)),
    ("Abs", "Abs", {}, (-5, 5)),
    ("Sign", "Sign", {}, (-2, 2)),
    ("Negative", "Neg", {}, (-5, 5)),
    ("Reciprocal", "Reciprocal", {}, (0.1, 5)),
    ("Ceil", "Ceil", {}, (-5, 5)),
    ("Floor", "Floor", {}, (-5, 5)),
    ("Erf", "Erf", {}, (-3, 3)),
    ("Sin", "Sin", {}, (-5, 5)),
    ("Cos", "Cos", {}, (-5, 5)),
    ("Tan", "Tan", {}, (-1.4, 1.4)),
    ("Asin", "Asin", {}, (-1, 1)),
    ("Acos", "Acos", {}, (-1, 1)),
    ("Atan", "Atan", {}, (-5, 5)),
    ("Sinh", "Sinh", {}, (-5, 5)),
    ("Cosh", "Cosh", {}, (-5, 5)),
    ("Tanh", "Tanh", {}, (-5, 5)),
    ("Sigmoid", "Sigmoid", {}, (-10, 10)),
    ("Relu", "Relu", {}, (-5, 5)),
    ("Softsign", "Softsign", {}, (-5, 5)),
    ("Softplus", "Softplus", {}, (-10, 10)),
]

# (Caffe2 type, Caffe2 args, ONNX type, ONNX attributes)
ORT_ACTIVATIONS: list[tuple[str, dict[str, Any], str, dict[str, Any]]] = [
    ("LeakyRelu", {}, "LeakyRelu", {"alpha": 0.01}),
    ("LeakyRelu", {"alpha": 0.3}, "LeakyRelu", {"alpha": 0.3}),
    ("Elu", {}, "Elu", {"alpha": 1.0}),
    ("Elu", {"alpha": 0.5}, "Elu", {"alpha": 0.5}),
    ("Selu", {}, "Selu", {}),
    ("Selu", {"alpha": 1.5, "scale": 2.0}, "Selu", {"alpha": 1.5, "gamma": 2.0}),
    ("ThresholdedRelu", {}, "ThresholdedRelu", {"alpha": 1.0}),
    ("ThresholdedRelu", {"alpha": 0.5}, "ThresholdedRelu", {"alpha": 0.5}),
    ("HardSigmoid", {}, "HardSigmoid", {"alpha": 0.2, "beta": 0.5}),
    ("HardSigmoid", {"alpha": 0.3, "beta": 0.4}, "HardSigmoid", {"alpha": 0.3, "beta": 0.4}),
]


@pytest.mark.parametrize(("c2", "onnx_type", "attrs", "rng"), ORT_UNARY, ids=[c[0] for c in ORT_UNARY])
@SETTINGS
@given(data=st.data())
def test_unary_matches_onnxruntime(c2: str, onnx_type: str, attrs: dict[str, Any], rng: Any, data: Any) -> None:
    x = data.draw(floats(shapes(), *rng))
    y = run1(c2, x)
    (want,) = ort_run(onnx_type, [x], **attrs)
    assert y.dtype == np.float32 and y.shape == x.shape
    np.testing.assert_allclose(y, want, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize(
    ("c2", "args", "onnx_type", "attrs"), ORT_ACTIVATIONS, ids=[f"{c[0]}{c[1]}" for c in ORT_ACTIVATIONS]
)
@SETTINGS
@given(x=floats(shapes(), -5, 5))
def test_activation_matches_onnxruntime(
    c2: str, args: dict[str, Any], onnx_type: str, attrs: dict[str, Any], x: np.ndarray
) -> None:
    y = run1(c2, x, **args)
    (want,) = ort_run(onnx_type, [x], **attrs)
    np.testing.assert_allclose(y, want, rtol=RTOL, atol=ATOL)


def _naive(fn: Any, x: np.ndarray) -> np.ndarray:
    return np.array([fn(float(v)) for v in x.reshape(-1)], dtype=np.float64).reshape(x.shape)


NAIVE: list[tuple[str, dict[str, Any], Any, tuple[float, float]]] = [
    ("Sqr", {}, lambda v: v * v, (-5, 5)),
    ("Cube", {}, lambda v: v * v * v, (-5, 5)),
    ("Cbrt", {}, lambda v: math.copysign(abs(v) ** (1 / 3), v), (-5, 5)),
    ("Rsqrt", {}, lambda v: 1 / math.sqrt(v), (0.1, 5)),
    ("Log1p", {}, math.log1p, (-0.9, 5)),
    ("Swish", {}, lambda v: v / (1 + math.exp(-v)), (-8, 8)),
    ("ReluN", {}, lambda v: min(max(v, 0.0), 6.0), (-10, 10)),
    ("ReluN", {"n": 0.5}, lambda v: min(max(v, 0.0), 0.5), (-2, 2)),
    ("Scale", {}, lambda v: v, (-5, 5)),
    ("Scale", {"scale": -2.5}, lambda v: -2.5 * v, (-5, 5)),
    ("Clip", {"min": -1.0, "max": 0.5}, lambda v: min(max(v, -1.0), 0.5), (-3, 3)),
    ("Clip", {"min": 0.0}, lambda v: max(v, 0.0), (-3, 3)),
    ("Clip", {"max": 0.0}, lambda v: min(v, 0.0), (-3, 3)),
    ("Clip", {}, lambda v: v, (-3, 3)),
    ("Pow", {"exponent": 2.0}, lambda v: v**2, (-3, 3)),
    ("Pow", {"exponent": 0.5}, lambda v: v**0.5, (0, 3)),
]


@pytest.mark.parametrize(("c2", "args", "fn", "rng"), NAIVE, ids=[f"{c[0]}{c[1]}" for c in NAIVE])
@SETTINGS
@given(data=st.data())
def test_unary_matches_naive_python(c2: str, args: dict[str, Any], fn: Any, rng: Any, data: Any) -> None:
    x = data.draw(floats(shapes(), *rng))
    y = run1(c2, x, **args)
    assert y.dtype == x.dtype and y.shape == x.shape
    np.testing.assert_allclose(y, _naive(fn, x), rtol=RTOL, atol=ATOL)


@SETTINGS
@given(x=floats(shapes(), -3, 3, dtype=np.float64))
def test_float64_is_kept(x: np.ndarray) -> None:
    for op in ("Exp", "Sigmoid", "Erf", "Sqr", "Scale"):
        y = run1(op, x)
        assert y.dtype == np.float64
    np.testing.assert_allclose(run1("Erf", x), _naive(math.erf, x), rtol=1e-12, atol=1e-14)


@SETTINGS
@given(x=ints(shapes(), -9, 9))
def test_integer_inputs(x: np.ndarray) -> None:
    np.testing.assert_array_equal(run1("Abs", x), np.abs(x))
    np.testing.assert_array_equal(run1("Sign", x), np.sign(x))
    np.testing.assert_array_equal(run1("Negative", x), -x)
    np.testing.assert_array_equal(run1("Sqr", x), x * x)
    np.testing.assert_array_equal(run1("Relu", x), np.where(x > 0, x, 0))
    s = run1("Scale", x, scale=2.0)
    assert s.dtype == np.int32
    np.testing.assert_array_equal(s, x * 2)


@SETTINGS
@given(data=st.data())
def test_pow_exponent_input_with_broadcast(data: Any) -> None:
    x = data.draw(floats((2, 3, 4), 0.1, 3))
    e = data.draw(floats((3, 4), -2, 2))
    (want,) = ort_run("Pow", [x, e])
    np.testing.assert_allclose(run1("Pow", x, e), want, rtol=RTOL, atol=ATOL)
    # Caffe2's legacy form: e of shape (3,) matched at axis 1
    e3 = data.draw(floats((3,), -2, 2))
    y = run1("Pow", x, e3, broadcast=1, axis=1)
    np.testing.assert_allclose(y, x ** e3.reshape(1, 3, 1), rtol=RTOL, atol=ATOL)


def test_pow_needs_one_exponent() -> None:
    x = np.ones(2, np.float32)
    with pytest.raises(Exception, match="exponent"):
        run1("Pow", x)
    with pytest.raises(Exception, match="not both"):
        run1("Pow", x, x, exponent=2.0)


@SETTINGS
@given(data=st.data())
def test_glu_halves_along_dim(data: Any) -> None:
    shape = list(data.draw(shapes(1, 4, 1, 3)))
    dim = data.draw(st.integers(-len(shape), len(shape) - 1))
    shape[dim] *= 2
    x = data.draw(floats(tuple(shape)))
    y = run1("Glu", x, dim=dim)
    half = shape[dim] // 2
    a = np.take(x, range(half), axis=dim).astype(np.float64)
    b = np.take(x, range(half, 2 * half), axis=dim).astype(np.float64)
    np.testing.assert_allclose(y, a * (1 / (1 + np.exp(-b))), rtol=RTOL, atol=ATOL)


def test_glu_default_dim_is_last_and_odd_fails() -> None:
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    y = run1("Glu", x)
    assert y.shape == (2, 2)
    with pytest.raises(OperatorError, match="even"):
        run1("Glu", np.ones((2, 3), np.float32))


def test_relu_n_rejects_nonpositive_n() -> None:
    with pytest.raises(Exception, match="positive"):
        run1("ReluN", np.ones(2, np.float32), n=0.0)


def test_inplace_unary() -> None:
    from asyncnet.workspace import Workspace
    from tests.ops.run_util import make_op

    ws = Workspace()
    ws.feed("x", np.array([-1.0, 4.0], np.float32))
    ws.run_operator_once(make_op("Sqrt", ["x"], ["x"]))
    ws.run_operator_once(make_op("LeakyRelu", ["x"], ["x"], alpha=0.5))
    got = ws.fetch("x")
    assert np.isnan(got[0]) and got[1] == 2.0
