"""SessionMarginLoss and LambdaRankNdcg against naive per-pair loops written from Caffe2's documentation."""

from __future__ import annotations

import math

import numpy as np
import pytest

from asyncnet.errors import OperatorError
from asyncnet.training.gradcheck import check_gradient
from asyncnet.training.gradients import gradient_for_op
from tests.ops.run_util import make_op, run_op

F32 = np.float32


def sessions(seed: int, n: int, m: int, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    # Well separated scores: the finite-difference steps below never reorder them.
    y = (rng.permutation(n * m) * 0.05 + rng.uniform(0, 0.01, n * m)).astype(F32)
    r = rng.integers(0, k, n * m).astype(F32)
    return y, r, np.full(m, n, np.int32)


def naive_margin(y: np.ndarray, r: np.ndarray, margin: float) -> tuple[float, np.ndarray]:
    n = len(y)
    loss, dy = 0.0, np.zeros(n)
    if np.abs(r).sum() < 1e-6:
        return loss, dy
    for i in range(n):
        for j in range(i + 1, n):
            if r[i] == r[j]:
                continue
            s = 1.0 if r[i] > r[j] else -1.0
            if margin > s * (y[i] - y[j]):
                loss += (margin - s * (y[i] - y[j])) / n
                dy[i] -= s / n
                dy[j] += s / n
    return loss, dy


@pytest.mark.parametrize("margin", [0.06, 1.0])
def test_session_margin_loss_matches_naive_pairs(margin: float) -> None:
    y, r, lens = sessions(0, 8, 3, 4)
    r[8:16] = 0  # one session without any positive label: loss 0, gradient 0
    loss, dy = run_op("SessionMarginLoss", [y, r, lens], 2, margin=margin)
    for s in range(3):
        part = slice(8 * s, 8 * s + 8)
        want_loss, want_dy = naive_margin(y[part].astype(float), r[part].astype(float), margin)
        assert loss[s] == pytest.approx(want_loss, rel=1e-5, abs=1e-6)
        np.testing.assert_allclose(dy[part], want_dy, rtol=1e-5, atol=1e-6)
    assert loss[1] == 0 and not dy[8:16].any()


def test_session_margin_loss_gradient_check() -> None:
    y, r, lens = sessions(1, 6, 2, 3)
    op = make_op("SessionMarginLoss", ["y", "r", "len"], ["loss", "dy"], margin=2.0)
    res = check_gradient(op, {"y": y, "r": r, "len": lens}, check=[0], stepsize=1e-2, threshold=1e-2)
    assert res.ok, res.describe()


def naive_lambda(y: np.ndarray, r: np.ndarray, ndcg_loss: bool, norm: bool, exp_gain: bool) -> tuple[float, np.ndarray]:
    n = len(y)
    if np.abs(r).sum() < 1e-6:
        return 0.0, np.zeros(n)

    def discounts(v: np.ndarray) -> list[float]:
        d = [0.0] * n
        for rank, i in enumerate(sorted(range(n), key=lambda i: -v[i])):
            d[i] = 1.0 / math.log2(rank + 2)
        return d

    g = [float(r[i]) if ndcg_loss and not exp_gain else 2.0 ** r[i] for i in range(n)]
    ideal, d = discounts(r), discounts(y)
    idcg = sum(g[i] * ideal[i] for i in range(n))
    dcg = sum(g[i] * d[i] for i in range(n))
    weight = max(idcg, 1e-5) if norm else 1.0
    loss = (idcg - dcg) / weight if ndcg_loss else 0.0
    dy = np.zeros(n)
    for i in range(n):
        for j in range(n):
            if i == j:
                continue
            lam = abs((g[i] - g[j]) * (d[i] - d[j]))
            z = y[i] - y[j] if r[i] > r[j] else y[j] - y[i]
            if not ndcg_loss:
                loss += lam * math.log1p(math.exp(-z)) / weight
            dy[i] += lam * ((0.0 if r[i] > r[j] else 1.0) - 1.0 / (1.0 + math.exp(y[i] - y[j]))) / weight
    return loss, dy


@pytest.mark.parametrize(
    ("ndcg_loss", "norm", "exp_gain"),
    [(0, 1, 0), (0, 1, 1), (1, 1, 1), (1, 1, 0), (1, 0, 1), (1, 0, 0), (0, 0, 1)],
)
def test_lambda_rank_matches_naive_pairs(ndcg_loss: int, norm: int, exp_gain: int) -> None:
    y, r, lens = sessions(2, 7, 3, 4)
    r[:7] = 0
    args = dict(use_ndcg_as_loss=ndcg_loss, use_idcg_normalization=norm, use_exp_gain=exp_gain)
    loss, dy = run_op("LambdaRankNdcg", [y, r, lens], 2, **args)
    for s in range(3):
        part = slice(7 * s, 7 * s + 7)
        want_loss, want_dy = naive_lambda(y[part].astype(float), r[part].astype(float), *map(bool, args.values()))
        assert loss[s] == pytest.approx(want_loss, rel=1e-5, abs=1e-6)
        np.testing.assert_allclose(dy[part], want_dy, rtol=1e-5, atol=1e-6)


def test_lambda_rank_gradient_is_half_the_pairwise_derivative() -> None:
    """Caffe2's lambda gradient sums each unordered pair once while its loss sums both orders: with
    the pairwise loss, dy is half the derivative (checked by central differences)."""
    y, r, lens = sessions(4, 6, 1, 4)
    (_, dy) = run_op("LambdaRankNdcg", [y, r, lens], 2, use_ndcg_as_loss=0)
    step = 1e-3
    for i in range(len(y)):
        hi, lo = y.copy(), y.copy()
        hi[i] += step
        lo[i] -= step
        diff = (run_op("LambdaRankNdcg", [hi, r, lens], 2)[0][0] - run_op("LambdaRankNdcg", [lo, r, lens], 2)[0][0]) / (
            2 * step
        )
        assert dy[i] == pytest.approx(diff / 2, rel=2e-2, abs=2e-3)


@pytest.mark.parametrize(
    ("op_type", "grad_type"),
    [("LambdaRankNdcg", "LambdaRankNdcgGradient"), ("SessionMarginLoss", "SessionMarginLossGradient")],
)
def test_gradient_ops_scale_each_session(op_type: str, grad_type: str) -> None:
    y, r, lens = sessions(5, 4, 3, 3)
    op = make_op(op_type, ["y", "r", "len"], ["loss", "dy"])
    (gop,) = gradient_for_op(op, ["loss_grad", None]).ops
    assert gop.type == grad_type and list(gop.input) == ["y", "len", "dy", "loss_grad"]
    _, cached = run_op(op_type, [y, r, lens], 2)
    dloss = np.array([0.5, -2.0, 3.0], F32)
    (back,) = run_op(grad_type, [y, lens, cached, dloss])
    for s in range(3):
        np.testing.assert_allclose(back[4 * s : 4 * s + 4], dloss[s] * cached[4 * s : 4 * s + 4], rtol=1e-6)


def test_rank_loss_shape_errors() -> None:
    with pytest.raises(OperatorError, match="labels have 3 values"):
        run_op("LambdaRankNdcg", [np.zeros(4, F32), np.zeros(3, F32), np.array([4], np.int32)], 2)
    with pytest.raises(OperatorError, match="session lengths"):
        run_op("SessionMarginLoss", [np.zeros(4, F32), np.zeros(4, F32), np.array([3, 3], np.int32)], 2)
    with pytest.raises(OperatorError, match="2 loss gradients for 1 sessions"):
        run_op("SessionMarginLossGradient", [np.zeros(4, F32), np.array([4]), np.zeros(4, F32), np.ones(2, F32)])
