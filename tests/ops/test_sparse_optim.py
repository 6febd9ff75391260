"""Sparse and adaptive optimizers against element-by-element loops written from Caffe2's operator docs
(the Caffe2 goldens for Adadelta, SparseAdadelta, SparseAdagrad, RowWiseSparseAdagrad,
SparseMomentumSGDUpdate, Wngrad and SparseWngrad run in test_goldens.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tests.ops.run_util import run_op

RNG = np.random.default_rng(11)
IDX = np.array([2, 0, 2], np.int64)  # a repeated row: updated twice, in order


def setup(rows: int = 4, cols: int = 3) -> tuple[np.ndarray, np.ndarray]:
    return RNG.normal(size=(rows, cols)).astype(np.float32), RNG.normal(size=(IDX.size, cols)).astype(np.float32)


def test_sparse_adagrad() -> None:
    p, g = setup()
    m = RNG.uniform(0.1, 1, p.shape).astype(np.float32)
    lr, eps, wd = -0.1, 1e-4, 0.05
    got_p, got_m = run_op("SparseAdagrad", [p, m, IDX, g, np.array([lr], np.float32)], 2, epsilon=eps, weight_decay=wd)
    wp, wm = p.astype(np.float64), m.astype(np.float64)
    for i, r in enumerate(IDX.tolist()):
        for c in range(p.shape[1]):
            gi = g[i, c] + wd * wp[r, c]
            wm[r, c] += gi * gi
            wp[r, c] += lr * gi / (math.sqrt(wm[r, c]) + eps)
    np.testing.assert_allclose(got_p, wp, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got_m, wm, rtol=1e-5)


@pytest.mark.parametrize("op_type", ["SparseAdagrad", "RowWiseSparseAdagrad"])
def test_sparse_adagrad_counter_scales_weight_decay(op_type: str) -> None:
    p, g = setup()
    row_wise = op_type == "RowWiseSparseAdagrad"
    m = RNG.uniform(0.1, 1, p.shape[0] if row_wise else p.shape).astype(np.float32)
    count = np.zeros(p.shape[0], np.float64)
    count[::2] = RNG.uniform(0.5, 4, count[::2].shape)  # odd rows: count 0 -> plain weight_decay
    lr, eps, wd, half = -0.1, 1e-4, 0.05, 5.0
    ins = [p, m, IDX, g, np.array([lr], np.float32), count]
    got_p, got_m = run_op(op_type, ins, 2, epsilon=eps, weight_decay=wd, counter_halflife=half)
    wp, wm = p.astype(np.float64), m.astype(np.float64)
    for i, r in enumerate(IDX.tolist()):
        rwd = wd * half / count[r] if count[r] > 0 else wd
        gi = [g[i, c] + rwd * wp[r, c] for c in range(p.shape[1])]
        if row_wise:
            wm[r] += sum(v * v for v in gi) / p.shape[1]
        for c in range(p.shape[1]):
            if not row_wise:
                wm[r, c] += gi[c] * gi[c]
            wp[r, c] += lr * gi[c] / (math.sqrt(wm[r] if row_wise else wm[r, c]) + eps)
    np.testing.assert_allclose(got_p, wp, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got_m, wm, rtol=1e-5)


def test_row_wise_sparse_adagrad() -> None:
    p, g = setup()
    m = RNG.uniform(0.1, 1, p.shape[0]).astype(np.float32)
    lr, eps = -0.1, 1e-4
    got_p, got_m = run_op("RowWiseSparseAdagrad", [p, m, IDX, g, np.array([lr], np.float32)], 2, epsilon=eps)
    wp, wm = p.astype(np.float64), m.astype(np.float64)
    for i, r in enumerate(IDX.tolist()):
        wm[r] += sum(float(g[i, c]) ** 2 for c in range(p.shape[1])) / p.shape[1]
        for c in range(p.shape[1]):
            wp[r, c] += lr * g[i, c] / (math.sqrt(wm[r]) + eps)
    np.testing.assert_allclose(got_p, wp, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got_m, wm, rtol=1e-5)


@pytest.mark.parametrize("row_wise", [False, True])
def test_sparse_adam_and_row_wise(row_wise: bool) -> None:
    p, g = setup()
    m1 = RNG.normal(size=p.shape).astype(np.float32)
    m2 = RNG.uniform(0.1, 1, p.shape[0] if row_wise else p.shape).astype(np.float32)
    lr, b1, b2, eps, it = -0.01, 0.8, 0.9, 1e-5, 4
    name = "RowWiseSparseAdam" if row_wise else "SparseAdam"
    ins = [p, m1, m2, IDX, g, np.array([lr], np.float32), np.array([it], np.int64)]
    got = run_op(name, ins, 4, beta1=b1, beta2=b2, epsilon=eps)
    wp, w1, w2 = p.astype(np.float64), m1.astype(np.float64), m2.astype(np.float64)
    corr = math.sqrt(1 - b2 ** (it + 1)) / (1 - b1 ** (it + 1))
    steps = np.zeros(g.shape)
    for i, r in enumerate(IDX.tolist()):
        if row_wise:
            w2[r] = w2[r] * b2 + (1 - b2) * sum(float(x) ** 2 for x in g[i]) / g.shape[1]
        for c in range(p.shape[1]):
            w1[r, c] = w1[r, c] * b1 + (1 - b1) * g[i, c]
            if not row_wise:
                w2[r, c] = w2[r, c] * b2 + (1 - b2) * g[i, c] ** 2
            v = w2[r] if row_wise else w2[r, c]
            steps[i, c] = corr * w1[r, c] / (math.sqrt(v) + eps)
            wp[r, c] += lr * steps[i, c]
    for have, want in zip(got, (wp, w1, w2, steps)):
        np.testing.assert_allclose(have, want, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("nesterov", [0, 1])
def test_sparse_momentum_sgd_update(nesterov: int) -> None:
    p, g = setup()
    m = RNG.normal(size=p.shape).astype(np.float32)
    lr, mu = 0.1, 0.9
    got_g, got_m, got_p = run_op(
        "SparseMomentumSGDUpdate", [g, m, np.array([lr], np.float32), p, IDX], 3, momentum=mu, nesterov=nesterov
    )
    wp, wm, wg = p.astype(np.float64), m.astype(np.float64), np.zeros(g.shape)
    for i, r in enumerate(IDX.tolist()):
        for c in range(p.shape[1]):
            old = wm[r, c]
            new = mu * old + lr * g[i, c]
            wg[i, c] = (1 + mu) * new - mu * old if nesterov else new
            wm[r, c] = new
            wp[r, c] -= wg[i, c]
    np.testing.assert_allclose(got_g, wg, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got_m, wm, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got_p, wp, rtol=1e-5, atol=1e-6)


def _adadelta(p: float, h: float, d: float, g: float, lr: float, eps: float, dec: float) -> tuple[float, ...]:
    h = dec * h + (1 - dec) * g * g
    step = math.sqrt(d + eps) / math.sqrt(h + eps) * g
    return p + lr * step, h, dec * d + (1 - dec) * step * step


def test_adadelta_and_sparse() -> None:
    p, g = setup()
    h, d = (RNG.uniform(0.1, 1, p.shape).astype(np.float32) for _ in range(2))
    lr, eps, dec = -0.5, 1e-4, 0.9
    gd = RNG.normal(size=p.shape).astype(np.float32)
    dense = run_op("Adadelta", [p, h, d, gd, np.array([lr], np.float32)], 3, epsilon=eps, decay=dec)
    want = np.vectorize(lambda *a: _adadelta(*a, lr, eps, dec))(p, h, d, gd)
    for have, w in zip(dense, want):
        np.testing.assert_allclose(have, w, rtol=1e-5, atol=1e-6)
    sparse = run_op("SparseAdadelta", [p, h, d, IDX, g, np.array([lr], np.float32)], 3, epsilon=eps, decay=dec)
    wp, wh, wd = (x.astype(np.float64) for x in (p, h, d))
    for i, r in enumerate(IDX.tolist()):
        for c in range(p.shape[1]):
            wp[r, c], wh[r, c], wd[r, c] = _adadelta(wp[r, c], wh[r, c], wd[r, c], g[i, c], lr, eps, dec)
    for have, w in zip(sparse, (wp, wh, wd)):
        np.testing.assert_allclose(have, w, rtol=1e-5, atol=1e-6)


def test_wngrad_and_sparse() -> None:
    p, g = setup()
    b, lr, eps = np.array([2.0], np.float32), -0.3, 1e-5
    gd = RNG.normal(size=p.shape).astype(np.float32)
    np_, nb, eff, upd = run_op("Wngrad", [p, b, gd, np.array([lr], np.float32)], 4, epsilon=eps)
    np.testing.assert_allclose(np_, p + lr * gd / (2.0 + eps), rtol=1e-5)
    np.testing.assert_allclose(nb, [2.0 + float((gd.astype(np.float64) ** 2).sum()) / (2.0 + eps)], rtol=1e-5)
    # One effective lr for the whole param, shaped like seq_b (Caffe2's WngradOp).
    assert eff.shape == (1,)
    np.testing.assert_allclose(eff, [lr / (2.0 + eps)], rtol=1e-5)
    np.testing.assert_allclose(upd, lr * gd / (2.0 + eps), rtol=1e-5)
    sp, sb = run_op("SparseWngrad", [p, b, IDX, g, np.array([lr], np.float32)], 2, epsilon=eps)
    want = p.astype(np.float64)
    for i, r in enumerate(IDX.tolist()):
        want[r] += lr * g[i] / (2.0 + eps)
    np.testing.assert_allclose(sp, want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(sb, [2.0 + float((g.astype(np.float64) ** 2).sum()) / (2.0 + eps)], rtol=1e-5)


@pytest.mark.parametrize("bias_first", [0, 1])
def test_decay_adagrad(bias_first: int) -> None:
    p, m1, m2, g = (RNG.normal(size=(3, 2)).astype(np.float32) for _ in range(4))
    m2 = np.abs(m2)
    lr, b1, eps, wd, it = -0.1, 0.7, 1e-5, 0.01, 2
    ins = [p, m1, m2, g, np.array([lr], np.float32), np.array([it], np.int64)]
    got = run_op("DecayAdagrad", ins, 3, beta1=b1, epsilon=eps, weight_decay=wd, bias_correction_first=bias_first)
    c = 1 - b1 ** (it + 1) if bias_first else 1.0
    for k in range(p.size):
        pi, a, b, gi = (float(x.reshape(-1)[k]) for x in (p, m1, m2, g))
        na, nb = a * b1 + gi * (1 - b1), b + gi * gi
        npi = pi + lr * (na / c / (math.sqrt(nb) + eps) + wd * pi)
        for have, w in zip(got, (npi, na, nb)):
            assert have.reshape(-1)[k] == pytest.approx(w, rel=1e-5, abs=1e-6)


def test_lars() -> None:
    x, dx = np.array([3.0, 4.0], np.float32), np.array([0.6, 0.8], np.float32)
    args = [np.array([0.1], np.float32), np.array([2.0], np.float32), np.array([5.0], np.float32)]
    (r,) = run_op("Lars", [x, dx, *args], offset=0.5, lr_min=0.02)
    assert r.tolist() == pytest.approx([2.0 / (1.0 / 5.0 + 0.1 + 0.5)])
    (r,) = run_op("Lars", [x, dx, args[0], args[1], np.array([1.0], np.float32)])
    assert r.tolist() == [1.0]  # clipped to lr_max
    (r,) = run_op("Lars", [np.zeros(2, np.float32), dx, *args], lr_min=0.02)
    assert r.tolist() == [1.0]  # zero parameter norm: rescale 1


def test_storm_and_sparse() -> None:
    p, g = setup()
    m, s = RNG.normal(size=p.shape).astype(np.float32), np.array([0.5], np.float32)
    lr, mom, beta = 0.2, 2.0, 0.1
    gd = RNG.normal(size=p.shape).astype(np.float32)
    got = run_op("Storm", [p, m, s, gd, np.array([lr], np.float32)], 3, momentum=mom, beta=beta)
    ns = 0.5 + sum(float(v) ** 2 for v in gd.reshape(-1))
    eff = lr / (beta + ns) ** (1 / 3)
    alpha = mom * eff * eff
    nm = gd + (1 - alpha) * (m.astype(np.float64) - gd)
    np.testing.assert_allclose(got[1], nm, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got[0], p + eff * nm, rtol=1e-5, atol=1e-6)
    assert got[2].tolist() == pytest.approx([ns], rel=1e-6)
    sp = run_op("SparseStorm", [p, m, s, g, IDX, np.array([lr], np.float32)], 3, momentum=mom, beta=beta)
    ns = 0.5 + sum(float(v) ** 2 for v in g.reshape(-1))
    eff = lr / (beta + ns) ** (1 / 3)
    alpha = mom * eff * eff
    wp, wm = p.astype(np.float64), m.astype(np.float64)
    for i, r in enumerate(IDX.tolist()):
        wm[r] = g[i] + (1 - alpha) * (wm[r] - g[i])
        wp[r] = wp[r] + eff * wm[r]
    np.testing.assert_allclose(sp[0], wp, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(sp[1], wm, rtol=1e-5, atol=1e-6)


def test_sparse_optimizers_refuse_bad_indices() -> None:
    from asyncnet.errors import OperatorError

    p, g = setup()
    with pytest.raises(OperatorError, match="indices"):
        run_op("SparseAdagrad", [p, p, np.array([0, 9, 1]), g, np.array([0.1], np.float32)], 2)
