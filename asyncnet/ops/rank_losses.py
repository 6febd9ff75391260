"""Learning-to-rank losses over sessions: SessionMarginLoss and LambdaRankNdcg (+ their gradients).

Both take predictions and labels (1-D, float32) and session lengths; they return one loss per
session and the gradient of each session's loss with respect to the predictions. Their gradient ops
only scale that cached gradient by the incoming loss gradient of its session.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from asyncnet.errors import TensorError
from asyncnet.opinfo import OpInfo
from asyncnet.ops._util import info
from asyncnet.proto import caffe2_pb2 as pb
from asyncnet.registry import register_op
from asyncnet.schema import Arg, TensorInfo
from asyncnet.training.gradients import GradientContext, GradientSpec, register_gradient

F32 = np.float32
SessionFn = Callable[[np.ndarray, np.ndarray], tuple[float, np.ndarray]]


def _sessions(op: OpInfo, pred: Any, label: Any, lengths: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    y = np.asarray(pred)
    r = np.asarray(label).astype(F32, copy=False)
    lens = np.asarray(lengths).astype(np.int64, copy=False).reshape(-1)
    if y.ndim != 1:
        raise TensorError(f"{op.label()}: predictions must be 1-D, got shape {y.shape}")
    if r.size != y.size:
        raise TensorError(f"{op.label()}: labels have {r.size} values, predictions {y.size}")
    if (lens < 0).any() or int(lens.sum()) > y.size:
        raise TensorError(
            f"{op.label()}: session lengths {lens.tolist()} must be >= 0 and cover at most the {y.size} predictions"
        )
    return y.astype(F32, copy=False), r.reshape(-1), lens


def _per_session(op: OpInfo, fn: SessionFn) -> Callable[..., Any]:
    def run(pred: Any, label: Any, lengths: Any) -> tuple[np.ndarray, np.ndarray]:
        y, r, lens = _sessions(op, pred, label, lengths)
        loss = np.zeros(lens.size, dtype=F32)
        dy = np.zeros(y.size, dtype=F32)
        start = 0
        for s, n in enumerate(lens.tolist()):
            if n > 0:
                loss[s], dy[start : start + n] = fn(y[start : start + n], r[start : start + n])
            start += n
        return loss, dy

    return run


def _loss_infer(op: OpInfo, ins: list[TensorInfo]) -> list[TensorInfo]:
    sessions = ins[2].shape
    return [info(None if sessions is None else (sessions[0] if sessions else 1,), F32), info(ins[0].shape, F32)]


def _scaled_gradient(op: OpInfo) -> Callable[..., Any]:
    """dY of every session's predictions = dLoss[session] * the cached per-session gradient."""

    def run(pred: Any, lengths: Any, cached: Any, dloss: Any) -> tuple[np.ndarray]:
        y, c = np.asarray(pred), np.asarray(cached, dtype=F32).reshape(-1)
        lens = np.asarray(lengths).astype(np.int64).reshape(-1)
        d = np.asarray(dloss, dtype=F32).reshape(-1)
        if y.ndim != 1 or c.size != y.size:
            raise TensorError(f"{op.label()}: predictions {y.shape} and cached gradient {c.shape} must be equal 1-D")
        if d.size != lens.size:
            raise TensorError(f"{op.label()}: {d.size} loss gradients for {lens.size} sessions")
        if (lens < 0).any() or int(lens.sum()) > c.size:
            raise TensorError(f"{op.label()}: session lengths {lens.tolist()} do not fit {c.size} predictions")
        out = np.zeros_like(c)
        ends = np.cumsum(lens)
        for s in range(lens.size):
            out[ends[s] - lens[s] : ends[s]] = d[s] * c[ends[s] - lens[s] : ends[s]]
        return (out,)

    return run


def _register_cached_gradient(op_type: str) -> None:
    @register_gradient(op_type)
    def _maker(op: pb.OperatorDef, g_out: list[str | None]) -> GradientSpec:
        g = GradientContext(op, g_out)
        return g.spec([g.op_def(f"{op_type}Gradient", [g.I(0), g.I(2), g.O(1), g.GO(0)], [g.GI(0)])])


# -- SessionMarginLoss -------------------------------------------------------------------------------


def _margin_session(margin: float) -> SessionFn:
    def fn(y: np.ndarray, r: np.ndarray) -> tuple[float, np.ndarray]:
        if float(np.abs(r).sum()) < 1e-6:
            return 0.0, np.zeros_like(y)
        n = y.size
        sign = np.sign(r[:, None] - r[None, :]).astype(F32)
        # Pair (i, j) with different labels is violated when sign * (y_i - y_j) < margin.
        diff = (F32(margin) - sign * (y[:, None] - y[None, :])) * np.abs(sign)
        hit = (diff > 0).astype(F32)
        weight = F32(1.0) / F32(n)
        loss = F32(0.5) * weight * (diff * hit).sum(dtype=F32)
        grad = -weight * (hit * sign).sum(axis=1, dtype=F32)
        return float(loss), grad.astype(F32)

    return fn


@register_op(
    "SessionMarginLoss",
    inputs=3,
    outputs=2,
    args=(Arg("margin", 1.0, "the margin by which a higher-labelled item should outscore a lower one"),),
    infer=_loss_infer,
    doc="Pairwise margin ranking loss within each session: for every pair with different labels, "
    "max(0, margin - sign(r_i - r_j) * (y_i - y_j)), averaged over the session size (each unordered pair "
    "counted once). Outputs the loss per session and its gradient w.r.t. the predictions; a session whose "
    "labels are all 0 has loss 0.",
    input_names=("pred", "label", "session_lengths"),
    output_names=("loss", "dpred"),
)
def session_margin_loss(op: OpInfo) -> Callable[..., Any]:
    return _per_session(op, _margin_session(op.float_arg("margin")))


@register_op(
    "SessionMarginLossGradient",
    inputs=4,
    args=(Arg("margin", 1.0, "the forward op's margin (unused)"),),
    infer=lambda op, ins: [info(ins[2].shape, F32)],
    doc="Gradient of SessionMarginLoss: inputs pred, session_lengths, dpred (forward output 1), dloss; "
    "dpred of each session scaled by that session's loss gradient.",
    input_names=("pred", "session_lengths", "precomputed_dpred", "dloss"),
    output_names=("dpred",),
)
def session_margin_loss_gradient(op: OpInfo) -> Callable[..., Any]:
    return _scaled_gradient(op)


_register_cached_gradient("SessionMarginLoss")


# -- LambdaRankNdcg ----------------------------------------------------------------------------------


def _discounts(order: np.ndarray, n: int) -> np.ndarray:
    """1 / log2(rank + 2) for each item, ranks taken from ``order`` (best first)."""
    d = np.empty(n, dtype=F32)
    d[order] = (np.log(F32(2.0)) / np.log(np.arange(2, n + 2, dtype=F32))).astype(F32)
    return d


def _log_sigmoid(v: np.ndarray) -> np.ndarray:
    # Far tails are clamped (0 above, v below) so exp never overflows.
    with np.errstate(over="ignore"):
        mid = -np.log1p(np.exp(-v))
    return np.where(v > 100, 0.0, np.where(v < -100, v, mid))


def _lambda_session(ndcg_loss: bool, idcg_norm: bool, exp_gain: bool) -> SessionFn:
    def fn(y: np.ndarray, r: np.ndarray) -> tuple[float, np.ndarray]:
        if float(np.abs(r).sum()) < 1e-6:
            return 0.0, np.zeros_like(y)
        n = y.size
        gain = r.astype(np.float64) if ndcg_loss and not exp_gain else np.exp2(r.astype(np.float64))
        ideal = _discounts(np.argsort(-r, kind="stable"), n).astype(np.float64)
        disc = _discounts(np.argsort(-y, kind="stable"), n).astype(np.float64)
        idcg = float((gain * ideal).sum())
        dcg = float((gain * disc).sum())
        lam = np.abs((disc[:, None] - disc[None, :]) * (gain[:, None] - gain[None, :]))
        # Label ties count as "i below j" (sign -1); their lambda weight is 0 anyway.
        sign = np.where(r[:, None] - r[None, :] > 0, 1.0, -1.0)
        ydiff = y[:, None].astype(np.float64) - y[None, :]
        grad = -(lam * sign / (1.0 + np.exp(sign * ydiff))).sum(axis=1)
        loss = idcg - dcg if ndcg_loss else -float((lam * _log_sigmoid(sign * ydiff)).sum())
        if idcg_norm:
            norm = max(idcg, 1e-5)
            grad, loss = grad / norm, loss / norm
        return float(loss), grad.astype(F32)

    return fn


_LAMBDA_ARGS = (
    Arg("use_ndcg_as_loss", 0, "loss = IDCG - DCG instead of the lambda-weighted pairwise logistic loss"),
    Arg("use_idcg_normalization", 1, "divide loss and gradient by max(IDCG, 1e-5) (NDCG)"),
    Arg("use_exp_gain", 1, "gain 2^label (else the label itself, only with use_ndcg_as_loss)"),
)


@register_op(
    "LambdaRankNdcg",
    inputs=3,
    outputs=2,
    args=_LAMBDA_ARGS,
    infer=_loss_infer,
    doc="LambdaRank (Wu et al. 2010) per session: pairwise logistic losses weighted by "
    "|gain_i - gain_j| * |discount_i - discount_j| (discount 1/log2(rank + 1) by predicted score, gain "
    "2^label), or IDCG - DCG with use_ndcg_as_loss; normalised by IDCG unless use_idcg_normalization=0. "
    "Outputs the loss per session and the lambda gradient w.r.t. the predictions.",
    input_names=("y", "r", "session_lengths"),
    output_names=("loss", "dy"),
)
def lambda_rank_ndcg(op: OpInfo) -> Callable[..., Any]:
    fn = _lambda_session(
        op.bool_arg("use_ndcg_as_loss"), op.bool_arg("use_idcg_normalization"), op.bool_arg("use_exp_gain")
    )
    return _per_session(op, fn)


@register_op(
    "LambdaRankNdcgGradient",
    inputs=4,
    args=_LAMBDA_ARGS,
    infer=lambda op, ins: [info(ins[2].shape, F32)],
    doc="Gradient of LambdaRankNdcg: inputs y, session_lengths, dy (forward output 1), dloss; dy of each "
    "session scaled by that session's loss gradient.",
    input_names=("y", "session_lengths", "dy_cache", "dloss"),
    output_names=("dy",),
)
def lambda_rank_ndcg_gradient(op: OpInfo) -> Callable[..., Any]:
    return _scaled_gradient(op)


_register_cached_gradient("LambdaRankNdcg")
