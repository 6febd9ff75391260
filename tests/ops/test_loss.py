"""Losses and metrics against deliberately naive per-element Python loops (float64 math)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from asyncnet.errors import OperatorError
from tests.ops.run_util import floats, ints, run1, run_op

SETTINGS = settings(max_examples=25)
TOL = {"rtol": 1e-5, "atol": 1e-5}


def _softmax_row(row: list[float]) -> list[float]:
    m = max(row)
    e = [math.exp(v - m) for v in row]
    s = sum(e)
    return [v / s for v in e]


@SETTINGS
@given(data=st.data())
def test_label_cross_entropy_naive(data: Any) -> None:
    n, d = data.draw(st.integers(0, 4)), data.draw(st.integers(1, 4))
    x = data.draw(floats((n, d), 0, 1))
    label = data.draw(ints((n,), 0, d - 1))
    y = run1("LabelCrossEntropy", x, label)
    assert y.shape == (n,) and y.dtype == np.float32
    for i in range(n):
        np.testing.assert_allclose(y[i], -math.log(max(float(x[i, label[i]]), 1e-20)), **TOL)


def test_label_cross_entropy_checks_labels() -> None:
    with pytest.raises(OperatorError, match="lie in"):
        run1("LabelCrossEntropy", np.ones((1, 2), np.float32), np.array([2], np.int32))


@SETTINGS
@given(data=st.data())
def test_cross_entropy_naive(data: Any) -> None:
    n, d = data.draw(st.integers(0, 4)), data.draw(st.integers(1, 4))
    x = data.draw(floats((n, d), 0, 1))
    label = data.draw(floats((n, d), 0, 1))
    y = run1("CrossEntropy", x, label)
    for i in range(n):
        want = -sum(float(label[i, j]) * math.log(max(float(x[i, j]), 1e-20)) for j in range(d))
        np.testing.assert_allclose(y[i], want, **TOL)


@SETTINGS
@given(data=st.data())
def test_softmax_with_loss_naive(data: Any) -> None:
    n, d = data.draw(st.integers(1, 4)), data.draw(st.integers(1, 4))
    x = data.draw(floats((n, d), -5, 5))
    label = data.draw(ints((n,), 0, d - 1))
    use_w = data.draw(st.booleans())
    w = data.draw(floats((n,), 0, 2)) if use_w else None
    scale = data.draw(st.sampled_from([1.0, 0.5]))
    ins = [x, label] + ([w] if use_w else [])
    p, loss = run_op("SoftmaxWithLoss", ins, 2, scale=scale)
    total, wsum = 0.0, 0.0
    for i in range(n):
        row = _softmax_row([float(v) for v in x[i]])
        np.testing.assert_allclose(p[i], row, **TOL)
        wi = float(w[i]) if use_w else 1.0
        total += -math.log(row[label[i]]) * wi
        wsum += wi
    assert loss.shape == () and loss.dtype == np.float32
    np.testing.assert_allclose(loss, total * scale / wsum if wsum else 0.0, **TOL)


@SETTINGS
@given(data=st.data())
def test_softmax_with_loss_label_prob_naive(data: Any) -> None:
    n, d = data.draw(st.integers(1, 3)), data.draw(st.integers(1, 4))
    x = data.draw(floats((n, d), -5, 5))
    raw = data.draw(floats((n, d), 0.1, 1)).astype(np.float64)
    label = (raw / raw.sum(axis=1, keepdims=True)).astype(np.float32)
    p, loss = run_op("SoftmaxWithLoss", [x, label], 2, label_prob=1)
    total = 0.0
    for i in range(n):
        row = _softmax_row([float(v) for v in x[i]])
        total += -sum(math.log(max(row[j], 1e-20)) * float(label[i, j]) for j in range(d))
    np.testing.assert_allclose(loss, total / n, **TOL)


def test_softmax_with_loss_axis_and_2d_labels() -> None:
    x = np.random.default_rng(0).standard_normal((2, 3, 4)).astype(np.float32)
    label = np.array([[1], [7]], np.int32)
    p, loss = run_op("SoftmaxWithLoss", [x, label], 2)
    flat = x.reshape(2, 12)
    want = -np.mean([math.log(_softmax_row(list(map(float, flat[i])))[label[i, 0]]) for i in range(2)])
    np.testing.assert_allclose(loss, want, **TOL)
    assert p.shape == x.shape
    p2, _ = run_op("SoftmaxWithLoss", [x, np.zeros((2, 3), np.int32)], 2, axis=2)
    np.testing.assert_allclose(p2.sum(axis=2), np.ones((2, 3)), **TOL)


@SETTINGS
@given(data=st.data())
def test_spatial_softmax_with_loss_naive(data: Any) -> None:
    n, d, h, w = (data.draw(st.integers(1, 3)) for _ in range(4))
    x = data.draw(floats((n, d, h, w), -5, 5))
    label = data.draw(ints((n, h, w), -1, d - 1))  # -1: ignored pixel
    weights = data.draw(floats((n, h, w), 0, 2))
    for op_type, args in (("SpatialSoftmaxWithLoss", {}), ("SoftmaxWithLoss", {"spatial": 1})):
        p, loss = run_op(op_type, [x, label, weights], 2, **args)
        total, wsum = 0.0, 0.0
        for i in range(n):
            for y in range(h):
                for z in range(w):
                    row = _softmax_row([float(x[i, c, y, z]) for c in range(d)])
                    np.testing.assert_allclose(p[i, :, y, z], row, **TOL)
                    if label[i, y, z] != -1:
                        total += -math.log(max(row[label[i, y, z]], 1e-20)) * float(weights[i, y, z])
                        wsum += float(weights[i, y, z])
        np.testing.assert_allclose(loss, total / wsum if wsum else 0.0, **TOL)


def _xent(x: float, t: float, mode: str) -> float:
    sig = 1 / (1 + math.exp(-x))
    if mode == "plain":
        return -(t * math.log(sig) + (1 - t) * math.log(1 - sig))
    # log-D trick: the generator's loss uses log(sigmoid) for both label values
    return -(2 * t - 1) * math.log(sig)


@pytest.mark.parametrize("mode", ["plain", "log_D_trick"])
@SETTINGS
@given(data=st.data())
def test_sigmoid_cross_entropy_naive(mode: str, data: Any) -> None:
    shape = data.draw(st.sampled_from([(3,), (2, 3), (2, 1, 4)]))
    x = data.draw(floats(shape, -6, 6))
    t = data.draw(floats(shape, 0, 1))
    args = {"log_D_trick": 1} if mode == "log_D_trick" else {}
    y = run1("SigmoidCrossEntropyWithLogits", x, t, **args)
    assert y.shape == shape[:-1]
    flat_x, flat_t = x.reshape(-1, shape[-1]), t.reshape(-1, shape[-1])
    want = [sum(_xent(float(a), float(b), mode) for a, b in zip(rx, rt)) / shape[-1] for rx, rt in zip(flat_x, flat_t)]
    np.testing.assert_allclose(y.reshape(-1), want, **TOL)


@SETTINGS
@given(x=floats((2, 3), -6, 6), t=floats((2, 3), 0, 1))
def test_unjoined_lr_loss_naive(x: np.ndarray, t: np.ndarray) -> None:
    # Unjoined logistic regression: positives score their logit, negatives log(1 - sigmoid(x)).
    y = run1("SigmoidCrossEntropyWithLogits", x, t, unjoined_lr_loss=1)
    for i in range(2):
        terms = [
            b * a + (1 - b) * math.log(1 - 1 / (1 + math.exp(-a))) for a, b in zip(map(float, x[i]), map(float, t[i]))
        ]
        np.testing.assert_allclose(y[i], -sum(terms) / 3, **TOL)


@SETTINGS
@given(x=floats((2, 3), -6, 6), t=floats((2, 3), 0, 1), w=floats((2, 3), 0, 2))
def test_weighted_sigmoid_cross_entropy_naive(x: np.ndarray, t: np.ndarray, w: np.ndarray) -> None:
    y = run1("WeightedSigmoidCrossEntropyWithLogits", x, t, w)
    for i in range(2):
        want = sum(_xent(float(a), float(b), "plain") * float(c) for a, b, c in zip(x[i], t[i], w[i])) / 3
        np.testing.assert_allclose(y[i], want, **TOL)


@SETTINGS
@given(data=st.data())
def test_accuracy_naive(data: Any) -> None:
    n, d = data.draw(st.integers(1, 5)), data.draw(st.integers(1, 4))
    x = data.draw(ints((n, d), 0, 2).map(lambda a: a.astype(np.float32)))  # ties are common
    label = data.draw(ints((n,), 0, d - 1))
    k = data.draw(st.integers(1, d))
    acc = run1("Accuracy", x, label, top_k=k)
    correct = 0
    for i in range(n):
        ranked = sorted(range(d), key=lambda j: (-x[i, j], j))
        correct += label[i] in ranked[:k]
    assert acc.shape == () and acc.dtype == np.float32
    np.testing.assert_allclose(acc, correct / n, rtol=1e-6)


@SETTINGS
@given(data=st.data())
def test_squared_l2_distance_naive(data: Any) -> None:
    n = data.draw(st.integers(0, 4))
    rest = tuple(data.draw(st.lists(st.integers(1, 3), max_size=2)))
    x = data.draw(floats((n,) + rest))
    y = data.draw(floats((n,) + rest))
    z = run1("SquaredL2Distance", x, y)
    assert z.shape == (n,)
    for i in range(n):
        want = 0.5 * sum((float(a) - float(b)) ** 2 for a, b in zip(x[i].reshape(-1), y[i].reshape(-1)))
        np.testing.assert_allclose(z[i], want, **TOL)
