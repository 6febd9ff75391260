"""Sparse and adaptive optimizers: SparseAdagrad, RowWiseSparseAdagrad, SparseAdam, RowWiseSparseAdam,
SparseMomentumSGDUpdate, Adadelta/SparseAdadelta, Wngrad/SparseWngrad, DecayAdagrad, Lars, Storm/SparseStorm.

As in Caffe2 the learning-rate blob carries the sign (these ops *add* ``lr * step``; only
SparseMomentumSGDUpdate subtracts). A sparse op updates the rows ``param[indices[i]]`` with
``grad[i]`` one index after another, so a repeated index is updated twice, the second time from
the first update's result, as Caffe2's loops do.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from asyncnet.errors import ArgumentError
from asyncnet.opinfo import OpInfo
from asyncnet.registry import register_op
from asyncnet.schema import Arg, TensorInfo


def _lr(v: Any) -> float:
    a = np.asarray(v)
    if a.size != 1:
        raise ArgumentError(f"lr must hold exactly one value, got shape {a.shape}")
    return float(a.reshape(-1)[0])


def _rows(op: OpInfo, param: np.ndarray, indices: Any, grad: Any) -> tuple[np.ndarray, np.ndarray]:
    """Indices (int64) and the gradient as one row per index, checked against param."""
    ii = np.asarray(indices)
    if ii.dtype.kind not in "iu":
        raise ArgumentError(f"{op.label()}: indices must be integers, got {ii.dtype}")
    ii = ii.reshape(-1).astype(np.int64)
    g = np.asarray(grad)
    block = param.shape[1:] if param.ndim else ()
    g = g.reshape((ii.size,) + tuple(block)) if g.size == ii.size * int(np.prod(block, dtype=np.int64)) else g
    if g.shape != (ii.size,) + tuple(block):
        raise ArgumentError(
            f"{op.label()}: grad {np.shape(grad)} must be (len(indices)={ii.size},) + param.shape[1:] {block}"
        )
    if param.ndim == 0 or np.any(ii < 0) or np.any(ii >= param.shape[0]):
        raise ArgumentError(f"{op.label()}: indices must lie in [0, {param.shape[0] if param.ndim else 0})")
    return ii, g


def _same(ins: list[TensorInfo], *idx: int) -> list[TensorInfo]:
    return [ins[i] for i in idx]


EPS = Arg("epsilon", 1e-5, "added to the root")
WD = Arg("weight_decay", 0.0, "L2 penalty: the gradient used is g + weight_decay * param")

# -- Adagrad family -------------------------------------------------------------------------------


HALFLIFE = Arg("counter_halflife", -1, "with a counter input: scale weight_decay by halflife / count per row")


def _row_weight_decay(op: OpInfo, wd: float, halflife: float, counter: Any, rows: int) -> Callable[[int], float]:
    """Row -> weight decay: ``wd``, or with a counter input and counter_halflife > 0, wd * halflife /
    count[row] for rows with a positive count (Caffe2's frequency-adjusted decay)."""
    if counter is None or halflife <= 0:
        return lambda r: wd
    counts = np.asarray(counter, np.float64).reshape(-1)
    if counts.size != rows:
        raise ArgumentError(f"{op.label()}: the counter input needs one count per row ({rows}), got {counts.size}")
    return lambda r: wd * halflife / counts[r] if counts[r] > 0 else wd


@register_op(
    "SparseAdagrad",
    inputs=(5, 6),
    outputs=2,
    allow_inplace=[(0, 0), (1, 1)],
    args=(EPS, WD, Arg("decay", 1.0, "moment decay"), HALFLIFE),
    infer=lambda op, ins: _same(ins, 0, 1),
    doc="Adagrad on the rows named by indices: for each i, row r = indices[i], g = grad[i] + weight_decay * "
    "param[r]; moment[r] = decay * moment[r] + g^2; param[r] += lr * g / (sqrt(moment[r]) + epsilon). "
    "With input 5 (per-row counts) and counter_halflife > 0, a row with count c > 0 uses weight_decay * "
    "counter_halflife / c.",
    input_names=("param", "moment", "indices", "grad", "lr", "counter"),
    output_names=("output_param", "output_moment"),
)
def sparse_adagrad(op: OpInfo) -> Callable[..., Any]:
    eps, wd, decay = op.float_arg("epsilon"), op.float_arg("weight_decay"), op.float_arg("decay")
    halflife = op.float_arg("counter_halflife")

    def run(
        param: Any, moment: Any, indices: Any, grad: Any, lr: Any, counter: Any = None
    ) -> tuple[np.ndarray, np.ndarray]:
        p, m = np.array(param, copy=True), np.array(moment, copy=True)
        ii, g = _rows(op, p, indices, grad)
        rate = _lr(lr)
        decays = _row_weight_decay(op, wd, halflife, counter, p.shape[0] if p.ndim else 0)
        for j, r in enumerate(ii.tolist()):
            gi = g[j] + decays(r) * p[r]
            m[r] = decay * m[r] + gi * gi
            p[r] = p[r] + rate * gi / (np.sqrt(m[r]) + eps)
        return p, m

    return run


@register_op(
    "RowWiseSparseAdagrad",
    inputs=(5, 6),
    outputs=2,
    allow_inplace=[(0, 0), (1, 1)],
    args=(EPS, WD, HALFLIFE),
    infer=lambda op, ins: _same(ins, 0, 1),
    doc="Adagrad with one moment per row: for each i, r = indices[i], g = grad[i] + weight_decay * param[r]; "
    "moment[r] += mean(g^2); param[r] += lr * g / (sqrt(moment[r]) + epsilon). With input 5 (per-row "
    "counts) and counter_halflife > 0, a row with count c > 0 uses weight_decay * counter_halflife / c.",
    input_names=("param", "moment", "indices", "grad", "lr", "counter"),
    output_names=("output_param", "output_moment"),
)
def row_wise_sparse_adagrad(op: OpInfo) -> Callable[..., Any]:
    eps, wd = op.float_arg("epsilon"), op.float_arg("weight_decay")
    halflife = op.float_arg("counter_halflife")

    def run(
        param: Any, moment: Any, indices: Any, grad: Any, lr: Any, counter: Any = None
    ) -> tuple[np.ndarray, np.ndarray]:
        p, m = np.array(param, copy=True), np.array(moment, copy=True)
        ii, g = _rows(op, p, indices, grad)
        if m.reshape(-1).size != (p.shape[0] if p.ndim else 0):
            raise ArgumentError(f"{op.label()}: moment must hold one value per row of param ({p.shape[0]})")
        mf = m.reshape(-1)
        rate = _lr(lr)
        decays = _row_weight_decay(op, wd, halflife, counter, p.shape[0] if p.ndim else 0)
        for j, r in enumerate(ii.tolist()):
            gi = g[j] + decays(r) * p[r]
            mf[r] += np.float64(np.mean(gi * gi)) if gi.size else 0.0
            p[r] = p[r] + rate * gi / (np.sqrt(mf[r]) + eps)
        return p, mf.reshape(m.shape)

    return run


@register_op(
    "DecayAdagrad",
    inputs=6,
    outputs=3,
    allow_inplace=[(0, 0), (1, 1), (2, 2)],
    args=(
        Arg("beta1", 0.9, "first moment decay"),
        Arg("beta2", 0.999, "unused (Caffe2 accepts it)"),
        EPS,
        Arg("weight_decay", 0.0, "added as weight_decay * param to the step"),
        Arg("bias_correction_first", 1, "divide the first moment by 1 - beta1^t"),
    ),
    infer=lambda op, ins: _same(ins, 0, 1, 2),
    doc="Inputs param, m1, m2, grad, lr, iter; t = iter + 1, c = 1 - beta1^t (or 1): m1' = beta1 m1 + (1 - beta1) g; "
    "m2' = m2 + g^2; param' = param + lr * (m1' / c / (sqrt(m2') + epsilon) + weight_decay * param).",
    input_names=("param", "moment_1", "moment_2", "grad", "lr", "iter"),
    output_names=("output_param", "output_moment_1", "output_moment_2"),
)
def decay_adagrad(op: OpInfo) -> Callable[..., Any]:
    b1, eps, wd = op.float_arg("beta1"), op.float_arg("epsilon"), op.float_arg("weight_decay")
    bias_first = op.bool_arg("bias_correction_first")

    def run(p: Any, m1: Any, m2: Any, g: Any, lr: Any, it: Any) -> tuple[np.ndarray, ...]:
        p, m1, m2, g = (np.asarray(v) for v in (p, m1, m2, g))
        t = int(_lr(it)) + 1
        c = 1.0 - b1**t if bias_first else 1.0
        nm1 = m1 * b1 + g * (1.0 - b1)
        nm2 = m2 + g * g
        np_ = p + _lr(lr) * (nm1 / c / (np.sqrt(nm2) + eps) + wd * p)
        return np_.astype(p.dtype), nm1.astype(m1.dtype), nm2.astype(m2.dtype)

    return run


# -- Adam family ----------------------------------------------------------------------------------

ADAM_ARGS = (Arg("beta1", 0.9, "first moment decay"), Arg("beta2", 0.999, "second moment decay"), EPS)


def _adam_factory(row_wise: bool) -> Callable[[OpInfo], Callable[..., Any]]:
    def factory(op: OpInfo) -> Callable[..., Any]:
        b1, b2, eps = op.float_arg("beta1"), op.float_arg("beta2"), op.float_arg("epsilon")

        def run(param: Any, m1: Any, m2: Any, indices: Any, grad: Any, lr: Any, it: Any) -> tuple[np.ndarray, ...]:
            p, a, b = (np.array(v, copy=True) for v in (param, m1, m2))
            ii, g = _rows(op, p, indices, grad)
            t = int(_lr(it)) + 1
            corr = math.sqrt(1.0 - b2**t) / (1.0 - b1**t)
            rate = _lr(lr)
            bf = b.reshape(-1) if row_wise else b
            steps = np.zeros_like(g)
            for j, r in enumerate(ii.tolist()):
                a[r] = a[r] * b1 + g[j] * (1.0 - b1)
                if row_wise:
                    bf[r] = bf[r] * b2 + np.float64(np.mean(g[j] * g[j])) * (1.0 - b2)
                else:
                    bf[r] = bf[r] * b2 + g[j] * g[j] * (1.0 - b2)
                steps[j] = corr * a[r] / (np.sqrt(bf[r]) + eps)
                p[r] = p[r] + rate * steps[j]
            return p, a, bf.reshape(b.shape), steps

        return run

    return factory


for _name, _rw in (("SparseAdam", False), ("RowWiseSparseAdam", True)):
    register_op(
        _name,
        inputs=7,
        outputs=(3, 4),
        allow_inplace=[(0, 0), (1, 1), (2, 2)],
        args=ADAM_ARGS,
        infer=lambda op, ins: (_same(ins, 0, 1, 2) + [TensorInfo(None, ins[4].dtype)])[: len(op.outputs)],
        doc="Adam on the rows named by indices (t = iter + 1, c = sqrt(1 - beta2^t) / (1 - beta1^t)): "
        "m1[r] = beta1 m1[r] + (1 - beta1) g; "
        + (
            "m2[r] (one per row) = beta2 m2[r] + (1 - beta2) mean(g^2); "
            if _rw
            else "m2[r] = beta2 m2[r] + (1 - beta2) g^2; "
        )
        + "param[r] += lr * c * m1[r] / (sqrt(m2[r]) + epsilon). Optional output 3: each index's step.",
        input_names=("param", "moment_1", "moment_2", "indices", "grad", "lr", "iter"),
        output_names=("output_param", "output_moment_1", "output_moment_2", "output_grad"),
    )(_adam_factory(_rw))


# -- momentum ------------------------------------------------------------------------------------


@register_op(
    "SparseMomentumSGDUpdate",
    inputs=5,
    outputs=3,
    allow_inplace=[(0, 0), (1, 1), (3, 2)],
    args=(Arg("momentum", 0.0, "momentum factor"), Arg("nesterov", 0, "use Nesterov momentum")),
    infer=lambda op, ins: [ins[0], ins[1], ins[3]],
    doc="Inputs grad, moment, lr, param, indices: for each i, r = indices[i]: m' = momentum * moment[r] + "
    "lr * grad[i]; the adjusted gradient is m' (Nesterov: (1 + momentum) m' - momentum moment[r]); "
    "param[r] -= adjusted; moment[r] = m'. Output 0 holds the adjusted gradients.",
    input_names=("grad", "moment", "lr", "param", "indices"),
    output_names=("output_grad", "output_moment", "output_param"),
)
def sparse_momentum_sgd_update(op: OpInfo) -> Callable[..., Any]:
    mu, nesterov = op.float_arg("momentum"), op.bool_arg("nesterov")

    def run(grad: Any, moment: Any, lr: Any, param: Any, indices: Any) -> tuple[np.ndarray, ...]:
        p, m = np.array(param, copy=True), np.array(moment, copy=True)
        ii, g = _rows(op, p, indices, grad)
        out = np.array(g, copy=True)
        rate = _lr(lr)
        for j, r in enumerate(ii.tolist()):
            old = m[r].copy()
            new = mu * old + rate * g[j]
            adj = (1.0 + mu) * new - mu * old if nesterov else new
            m[r] = new
            out[j] = adj
            p[r] = p[r] - adj
        return out.reshape(np.shape(grad)), m, p

    return run


# -- Adadelta -------------------------------------------------------------------------------------

ADADELTA_ARGS = (EPS, Arg("decay", 0.95, "decay of both running averages"))


def _adadelta_step(
    g: np.ndarray, h: np.ndarray, d: np.ndarray, eps: float, decay: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    nh = decay * h + (1.0 - decay) * g * g
    ng = np.sqrt(d + eps) / np.sqrt(nh + eps) * g
    nd = decay * d + (1.0 - decay) * ng * ng
    return ng, nh, nd


@register_op(
    "Adadelta",
    inputs=5,
    outputs=3,
    allow_inplace=[(0, 0), (1, 1), (2, 2)],
    args=ADADELTA_ARGS,
    infer=lambda op, ins: _same(ins, 0, 1, 2),
    doc="Inputs param, moment, moment_delta, grad, lr: moment' = decay m + (1 - decay) g^2; "
    "step = sqrt(delta + epsilon) / sqrt(moment' + epsilon) * g; param' = param + lr * step; "
    "delta' = decay delta + (1 - decay) step^2.",
    input_names=("param", "moment", "moment_delta", "grad", "lr"),
    output_names=("output_param", "output_moment", "output_moment_delta"),
)
def adadelta(op: OpInfo) -> Callable[..., Any]:
    eps, decay = op.float_arg("epsilon"), op.float_arg("decay")

    def run(p: Any, h: Any, d: Any, g: Any, lr: Any) -> tuple[np.ndarray, ...]:
        p, h, d, g = (np.asarray(v) for v in (p, h, d, g))
        ng, nh, nd = _adadelta_step(g, h, d, eps, decay)
        return (p + _lr(lr) * ng).astype(p.dtype), nh.astype(h.dtype), nd.astype(d.dtype)

    return run


@register_op(
    "SparseAdadelta",
    inputs=6,
    outputs=3,
    allow_inplace=[(0, 0), (1, 1), (2, 2)],
    args=ADADELTA_ARGS,
    infer=lambda op, ins: _same(ins, 0, 1, 2),
    doc="Adadelta on the rows named by indices (inputs param, moment, moment_delta, indices, grad, lr).",
    input_names=("param", "moment", "moment_delta", "indices", "grad", "lr"),
    output_names=("output_param", "output_moment", "output_moment_delta"),
)
def sparse_adadelta(op: OpInfo) -> Callable[..., Any]:
    eps, decay = op.float_arg("epsilon"), op.float_arg("decay")

    def run(param: Any, moment: Any, delta: Any, indices: Any, grad: Any, lr: Any) -> tuple[np.ndarray, ...]:
        p, h, d = (np.array(v, copy=True) for v in (param, moment, delta))
        ii, g = _rows(op, p, indices, grad)
        rate = _lr(lr)
        for j, r in enumerate(ii.tolist()):
            ng, h[r], d[r] = _adadelta_step(g[j], h[r], d[r], eps, decay)
            p[r] = p[r] + rate * ng
        return p, h, d

    return run


# -- Wngrad ---------------------------------------------------------------------------------------


@register_op(
    "Wngrad",
    inputs=4,
    outputs=(2, 4),
    allow_inplace=[(0, 0), (1, 1)],
    args=(EPS,),
    infer=lambda op, ins: [ins[0], ins[1], ins[1], ins[0]][: len(op.outputs)],
    doc="Inputs param, seq_b (one value), grad, lr: param' = param + lr * g / (b + epsilon); "
    "b' = b + sum(g^2) / (b + epsilon). Optional outputs: the effective lr (one value, shaped as "
    "seq_b, as in Caffe2) and the update.",
    input_names=("param", "seq_b", "grad", "lr"),
    output_names=("output_param", "output_seq_b", "output_effective_lr", "output_update"),
)
def wngrad(op: OpInfo) -> Callable[..., Any]:
    eps = op.float_arg("epsilon")

    def run(p: Any, b: Any, g: Any, lr: Any) -> tuple[np.ndarray, ...]:
        p, b, g = np.asarray(p), np.asarray(b), np.asarray(g)
        b0 = float(b.reshape(-1)[0])
        eff = _lr(lr) / (b0 + eps)
        update = eff * g
        nb = np.full(b.shape, b0 + float(np.sum(g.astype(np.float64) ** 2)) / (b0 + eps), b.dtype)
        eff_arr = np.full(b.shape, eff, p.dtype)
        return (p + update).astype(p.dtype), nb, eff_arr, update.astype(p.dtype)

    return run


@register_op(
    "SparseWngrad",
    inputs=5,
    outputs=2,
    allow_inplace=[(0, 0), (1, 1)],
    args=(EPS,),
    infer=lambda op, ins: _same(ins, 0, 1),
    doc="Wngrad on the rows named by indices (inputs param, seq_b, indices, grad, lr): every row uses the "
    "seq_b from before the op; then seq_b += sum(grad^2) / (seq_b + epsilon).",
    input_names=("param", "seq_b", "indices", "grad", "lr"),
    output_names=("output_param", "output_seq_b"),
)
def sparse_wngrad(op: OpInfo) -> Callable[..., Any]:
    eps = op.float_arg("epsilon")

    def run(param: Any, b: Any, indices: Any, grad: Any, lr: Any) -> tuple[np.ndarray, np.ndarray]:
        p, bb = np.array(param, copy=True), np.asarray(b)
        ii, g = _rows(op, p, indices, grad)
        b0 = float(bb.reshape(-1)[0])
        step = _lr(lr) / (b0 + eps)
        for j, r in enumerate(ii.tolist()):
            p[r] = p[r] + step * g[j]
        nb = np.full(bb.shape, b0 + float(np.sum(g.astype(np.float64) ** 2)) / (b0 + eps), bb.dtype)
        return p, nb

    return run


# -- Lars / Storm ---------------------------------------------------------------------------------


@register_op(
    "Lars",
    inputs=5,
    args=(Arg("offset", 0.5, "added to the norm ratio"), Arg("lr_min", 0.02, "lower clip of the result")),
    infer=lambda op, ins: [TensorInfo((1,), ins[0].dtype)],
    doc="Inputs param, grad, wd, trust, lr_max: rescale = trust / (|grad| / |param| + wd + offset) "
    "(1 when |param| is 0), clipped to [lr_min, lr_max]; output shape (1,).",
    input_names=("X", "dX", "wd", "trust", "lr_max"),
    output_names=("lr_rescaled",),
)
def lars(op: OpInfo) -> Callable[..., Any]:
    offset, lr_min = op.float_arg("offset"), op.float_arg("lr_min")

    def run(x: Any, dx: Any, wd: Any, trust: Any, lr_max: Any) -> tuple[np.ndarray]:
        x, dx = np.asarray(x), np.asarray(dx)
        if x.size != dx.size:
            raise ArgumentError(f"{op.label()}: gradient size {dx.size} does not match parameter size {x.size}")
        xn = math.sqrt(float(np.sum(x.astype(np.float64) ** 2)))
        val = 1.0
        if xn > 0:
            dn = math.sqrt(float(np.sum(dx.astype(np.float64) ** 2)))
            val = _lr(trust) / (dn / xn + _lr(wd) + offset)
        return (np.array([max(min(val, _lr(lr_max)), lr_min)], x.dtype),)

    return run


STORM_ARGS = (Arg("momentum", 10.0, "scales alpha = momentum * lr_eff^2"), Arg("beta", 0.1, "added to the sum"))


@register_op(
    "Storm",
    inputs=5,
    outputs=3,
    allow_inplace=[(0, 0), (1, 1), (2, 2)],
    args=STORM_ARGS,
    infer=lambda op, ins: _same(ins, 0, 1, 2),
    doc="Inputs param, moment, grad_sq_sum, grad, lr: s' = s + |g|^2; lr_eff = lr / (beta + s')^(1/3); "
    "alpha = momentum * lr_eff^2; moment' = g + (1 - alpha) (moment - g); param' = param + lr_eff * moment'.",
    input_names=("param", "moment", "grad_sq_sum", "grad", "lr"),
    output_names=("output_param", "output_moment", "output_grad_sq_sum"),
)
def storm(op: OpInfo) -> Callable[..., Any]:
    mom, beta = op.float_arg("momentum"), op.float_arg("beta")

    def run(p: Any, m: Any, s: Any, g: Any, lr: Any) -> tuple[np.ndarray, ...]:
        p, m, s, g = (np.asarray(v) for v in (p, m, s, g))
        ns = float(s.reshape(-1)[0]) + float(np.sum(g.astype(np.float64) ** 2))
        eff = _lr(lr) * (beta + ns) ** (-1.0 / 3.0)
        alpha = mom * eff * eff
        nm = g + (1.0 - alpha) * (m - g)
        return (p + eff * nm).astype(p.dtype), nm.astype(m.dtype), np.full(s.shape, ns, s.dtype)

    return run


@register_op(
    "SparseStorm",
    inputs=6,
    outputs=3,
    allow_inplace=[(0, 0), (1, 1), (2, 2)],
    args=STORM_ARGS,
    infer=lambda op, ins: _same(ins, 0, 1, 2),
    doc="Storm on the rows named by indices (inputs param, moment, grad_sq_sum, grad, indices, lr): the "
    "sum and lr_eff come from the whole sparse gradient, then each row is updated as in Storm.",
    input_names=("param", "moment", "grad_sq_sum", "grad", "indices", "lr"),
    output_names=("output_param", "output_moment", "output_grad_sq_sum"),
)
def sparse_storm(op: OpInfo) -> Callable[..., Any]:
    mom, beta = op.float_arg("momentum"), op.float_arg("beta")

    def run(param: Any, moment: Any, s: Any, grad: Any, indices: Any, lr: Any) -> tuple[np.ndarray, ...]:
        p, m, ss = np.array(param, copy=True), np.array(moment, copy=True), np.asarray(s)
        ii, g = _rows(op, p, indices, grad)
        ns = float(ss.reshape(-1)[0]) + float(np.sum(g.astype(np.float64) ** 2))
        eff = _lr(lr) * (beta + ns) ** (-1.0 / 3.0)
        alpha = mom * eff * eff
        for j, r in enumerate(ii.tolist()):
            m[r] = g[j] + (1.0 - alpha) * (m[r] - g[j])
            p[r] = p[r] + eff * m[r]
        return p, m, np.full(ss.shape, ns, ss.dtype)

    return run
