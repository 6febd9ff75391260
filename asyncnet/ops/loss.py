"""Losses and metrics: LabelCrossEntropy, CrossEntropy, SoftmaxWithLoss, SpatialSoftmaxWithLoss,
SigmoidCrossEntropyWithLogits, Accuracy, SquaredL2Distance."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

import numpy as np

from asyncnet.errors import ArgumentError
from asyncnet.opinfo import OpInfo
from asyncnet.ops._util import canonical_axis, prod
from asyncnet.registry import register_op
from asyncnet.schema import Arg, TensorInfo

F32 = np.dtype(np.float32)
LOG_THRESHOLD = np.float32(1e-20)
DONT_CARE = -1


def _rows(x: np.ndarray) -> tuple[int, int]:
    """Caffe2's (N, D) view of a prediction tensor: 1-D is a single row."""
    if x.ndim > 1:
        return x.shape[0], prod(x.shape[1:])
    return 1, (x.shape[0] if x.ndim else 1)


def _per_row_infer(op: OpInfo, ins: list[TensorInfo]) -> list[TensorInfo]:
    x = ins[0]
    n = None if x.shape is None else (x.shape[0] if len(x.shape) > 1 else 1)
    return [TensorInfo((n,), F32)]


@register_op(
    "LabelCrossEntropy",
    inputs=2,
    infer=_per_row_infer,
    doc="Y[i] = -log(max(X[i, label[i]], 1e-20)) for probabilities X (N, D) and int32 labels (N,).",
    input_names=("X", "label"),
    output_names=("Y",),
)
def label_cross_entropy(op: OpInfo) -> Callable[..., Any]:
    def run(x: Any, label: Any) -> tuple[np.ndarray]:
        x, label = np.asarray(x), np.asarray(label)
        n, d = _rows(x)
        if not (label.ndim == 1 or (label.ndim == 2 and label.shape[1] == 1)) or label.shape[0] != n:
            raise ArgumentError(f"{op.label()}: label {label.shape} must be ({n},) or ({n}, 1) for X {x.shape}")
        lab = label.reshape(n).astype(np.int64)
        if np.any(lab < 0) or np.any(lab >= d):
            raise ArgumentError(f"{op.label()}: labels must lie in [0, {d}), got {lab.tolist()}")
        p = x.reshape(n, d)[np.arange(n), lab] if n else np.zeros(0, x.dtype)
        return ((-np.log(np.maximum(p, LOG_THRESHOLD))).astype(F32),)

    return run


@register_op(
    "CrossEntropy",
    inputs=2,
    infer=_per_row_infer,
    doc="Y[i] = -sum_j label[i, j] * log(max(X[i, j], 1e-20)) for probabilities X and soft labels of one shape (N, D).",
    input_names=("X", "label"),
    output_names=("Y",),
)
def cross_entropy(op: OpInfo) -> Callable[..., Any]:
    def run(x: Any, label: Any) -> tuple[np.ndarray]:
        x, label = np.asarray(x), np.asarray(label)
        n, d = _rows(x)
        if label.size != n * d or label.shape[0] != (n if x.ndim > 1 else label.shape[0]):
            raise ArgumentError(f"{op.label()}: label {label.shape} must match X {x.shape}")
        lab = label.reshape(n, d)
        if np.any(lab < 0) or np.any(lab > 1):
            raise ArgumentError(f"{op.label()}: soft labels must be probabilities in [0, 1]")
        y = -np.sum(lab * np.log(np.maximum(x.reshape(n, d), LOG_THRESHOLD)), axis=1)
        return (y.astype(F32),)

    return run


# -- softmax losses ----------------------------------------------------------------------------


def _log_softmax_rows(x: np.ndarray) -> np.ndarray:
    m = x.max(axis=1, keepdims=True) if x.shape[1] else np.zeros((x.shape[0], 1), x.dtype)
    z = x - m
    out: np.ndarray = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return out


def _seq_sum(v: np.ndarray) -> np.float32:
    """Sum in float32, one element after the other (as a C loop does)."""
    flat = v.astype(F32, copy=False).reshape(-1)
    total = np.cumsum(flat, dtype=F32)[-1] if flat.size else 0
    return cast(np.float32, np.float32(total))


def _average(loss_sum: Any, weight_sum: Any, scale: float) -> np.ndarray:
    if weight_sum == 0:
        return np.zeros((), F32)
    return np.asarray(np.float32(loss_sum) * np.float32(scale) / np.float32(weight_sum), dtype=F32)


def _softmax_loss_infer(op: OpInfo, ins: list[TensorInfo]) -> list[TensorInfo]:
    return [TensorInfo(ins[0].shape, F32), TensorInfo((), F32)]


def _spatial_loss(
    op: OpInfo, x: np.ndarray, label: np.ndarray, w: np.ndarray | None, scale: float | None
) -> tuple[np.ndarray, np.ndarray]:
    if x.ndim != 4 or label.ndim != 3 or label.shape[0] != x.shape[0] or label.shape[1:] != x.shape[2:]:
        raise ArgumentError(
            f"{op.label()}: X must be (N, D, H, W) and label (N, H, W); got {x.shape} and {label.shape}"
        )
    d = x.shape[1]
    xf = x.astype(F32, copy=False)
    m = xf.max(axis=1, keepdims=True) if d else xf[:, :0]
    e = np.exp(xf - m)
    p = e / e.sum(axis=1, keepdims=True)
    lab = label.astype(np.int64)
    care = lab != DONT_CARE
    if np.any((lab[care] < 0) | (lab[care] >= d)):
        raise ArgumentError(f"{op.label()}: labels must be -1 (ignored) or lie in [0, {d})")
    weights = np.ones(lab.shape, F32) if w is None else w.astype(F32).reshape(lab.shape)
    safe = np.where(care, lab, 0)
    picked = np.take_along_axis(p, safe[:, None], axis=1)[:, 0]
    terms = -np.log(np.maximum(picked, LOG_THRESHOLD)) * weights
    # Caffe2 accumulates in float32 in (y, x, n) order; a float32 cumsum reproduces that rounding.
    order = (1, 2, 0)
    loss_sum = _seq_sum(np.transpose(np.where(care, terms, 0), order))
    total = _seq_sum(np.transpose(np.where(care, weights, 0), order))
    return p.astype(F32), _average(loss_sum, total, 1.0 if scale is None else scale)


@register_op(
    "SoftmaxWithLoss",
    inputs=(2, 3),
    outputs=2,
    args=(
        Arg("scale", 1.0, "multiplies the averaged loss"),
        Arg("label_prob", 0, "labels are probability rows (N, D) instead of class indices"),
        Arg("axis", 1, "X is coerced to (N, D) at this axis"),
        Arg("spatial", 0, "X is (N, D, H, W) with per-pixel labels (N, H, W); label -1 is ignored"),
        Arg("order", "NCHW", "only NCHW is supported"),
        Arg("only_loss", 0, "accepted for compatibility; the softmax output is always produced"),
    ),
    infer=_softmax_loss_infer,
    doc="Softmax of X (coerced to (N, D) at `axis`) and the weighted average cross-entropy "
    "loss against int32 labels (or, with `label_prob`, label distributions), times `scale`. "
    "Optional input 2 weights each row.",
    input_names=("logits", "labels", "weight_tensor"),
    output_names=("softmax", "loss"),
)
def softmax_with_loss(op: OpInfo) -> Callable[..., Any]:
    scale = op.float_arg("scale")
    label_prob, spatial = op.bool_arg("label_prob"), op.bool_arg("spatial")
    axis_arg = op.int_arg("axis")
    if str(op.arg("order")).upper() != "NCHW":
        raise ArgumentError(f"{op.label()}: only order NCHW is supported, got '{op.arg('order')}'")

    def run(x: Any, t: Any, w: Any = None) -> tuple[np.ndarray, np.ndarray]:
        x, t = np.asarray(x), np.asarray(t)
        wt = None if w is None else np.asarray(w, dtype=F32)
        if spatial:
            return _spatial_loss(op, x, t, wt, scale)
        axis = canonical_axis(axis_arg, x.ndim, op)
        n, d = prod(x.shape[:axis]), prod(x.shape[axis:])
        x2 = x.astype(F32, copy=False).reshape(n, d)
        logp = _log_softmax_rows(x2) if n else x2
        weights = np.ones(n, F32) if wt is None else wt.reshape(-1)
        if weights.size != n:
            raise ArgumentError(f"{op.label()}: weights have {weights.size} values, expected {n}")
        if label_prob:
            if t.ndim < 2 or t.size != n * d:
                raise ArgumentError(f"{op.label()}: label_prob labels {t.shape} must have X's shape {x.shape}")
            lab = t.reshape(n, d).astype(F32)
            if np.any(lab < 0):
                raise ArgumentError(f"{op.label()}: label probabilities must be nonnegative")
            if n and np.any(np.abs(lab.sum(axis=1) - 1.0) >= 1e-5):
                raise ArgumentError(f"{op.label()}: label probabilities of each row must sum to 1")
            p = np.exp(logp)
            rows = np.sum(-np.log(np.maximum(p, LOG_THRESHOLD)) * lab, axis=1) * weights
        else:
            if t.size != n or (t.ndim != axis and (prod(t.shape[:axis]) != n)):
                raise ArgumentError(f"{op.label()}: labels {t.shape} must hold one class per row ({n} rows)")
            lab_i = t.reshape(n).astype(np.int64)
            if np.any(lab_i < 0) or np.any(lab_i >= d):
                raise ArgumentError(f"{op.label()}: labels must lie in [0, {d}), got {lab_i.tolist()}")
            rows = -logp[np.arange(n), lab_i] * weights if n else np.zeros(0, F32)
            p = np.exp(logp)
        loss = _average(_seq_sum(rows), _seq_sum(weights), scale)
        return p.reshape(x.shape).astype(F32, copy=False), loss

    return run


@register_op(
    "SpatialSoftmaxWithLoss",
    inputs=(2, 3),
    outputs=2,
    args=(
        Arg("scale", 1.0, "accepted for compatibility: Caffe2 applies it only in the gradient"),
        Arg("order", "NCHW", "only NCHW is supported"),
    ),
    infer=_softmax_loss_infer,
    doc="Per-pixel softmax over the channels of X (N, D, H, W) and the weighted average "
    "cross-entropy against int32 labels (N, H, W); label -1 is ignored. Optional input 2 weights pixels.",
    input_names=("logits", "labels", "weight_tensor"),
    output_names=("softmax", "loss"),
)
def spatial_softmax_with_loss(op: OpInfo) -> Callable[..., Any]:
    if str(op.arg("order")).upper() != "NCHW":
        raise ArgumentError(f"{op.label()}: only order NCHW is supported, got '{op.arg('order')}'")

    def run(x: Any, t: Any, w: Any = None) -> tuple[np.ndarray, np.ndarray]:
        return _spatial_loss(op, np.asarray(x), np.asarray(t), None if w is None else np.asarray(w), None)

    return run


# -- sigmoid cross entropy ------------------------------------------------------------------------


def _sigmoid_xent_infer(op: OpInfo, ins: list[TensorInfo]) -> list[TensorInfo]:
    x = ins[0]
    return [TensorInfo(None if x.shape is None else tuple(x.shape[:-1]), F32)]


def _xent_terms(x: np.ndarray, t: np.ndarray, log_d_trick: bool, unjoined: bool) -> np.ndarray:
    pos = (x >= 0).astype(x.dtype)
    # log(1 + exp(-|x|)): the stable tail shared by every variant.
    tail = np.log1p(np.exp(x - 2 * x * pos))
    if unjoined:
        out: np.ndarray = x * t + (t - 1) * x * pos - (1 - t) * tail
        return out
    if log_d_trick:
        partition = x * pos + tail
        out = (2 * t - 1) * (x - partition)
        return out
    out = x * (t - pos) - tail
    return out


def _sigmoid_xent_kernel(weighted: bool) -> Callable[[OpInfo], Callable[..., Any]]:
    def factory(op: OpInfo) -> Callable[..., Any]:
        log_d = op.bool_arg("log_D_trick", 0) if not weighted else False
        unjoined = op.bool_arg("unjoined_lr_loss", 0) if not weighted else False
        if log_d and unjoined:
            raise ArgumentError(f"{op.label()}: log_D_trick and unjoined_lr_loss cannot both be set")

        def run(x: Any, t: Any, w: Any = None) -> tuple[np.ndarray]:
            x = np.asarray(x, dtype=F32)
            t = np.asarray(t, dtype=F32)
            if x.shape != t.shape or (w is not None and np.shape(w) != x.shape):
                raise ArgumentError(
                    f"{op.label()}: logits {x.shape}, targets {t.shape}"
                    + ("" if w is None else f" and weights {np.shape(w)}")
                    + " must have one shape"
                )
            terms = _xent_terms(x, t, log_d, unjoined)
            if w is not None:
                terms = terms * np.asarray(w, dtype=F32)
            inner = x.shape[-1] if x.ndim else 1
            out_shape = x.shape[:-1] if x.ndim else ()
            if inner == 0:
                return (np.full(out_shape, np.nan, F32),)
            return ((-terms.reshape(*out_shape, inner).sum(axis=-1) / inner).astype(F32),)

        return run

    return factory


register_op(
    "SigmoidCrossEntropyWithLogits",
    inputs=2,
    args=(
        Arg("log_D_trick", 0, "use the log-D trick (GAN generator loss)"),
        Arg("unjoined_lr_loss", 0, "unjoined logistic-regression loss"),
    ),
    infer=_sigmoid_xent_infer,
    doc="Mean over the last dim of the sigmoid cross-entropy between logits and targets of one shape.",
    input_names=("logits", "targets"),
    output_names=("xentropy",),
)(_sigmoid_xent_kernel(False))

register_op(
    "WeightedSigmoidCrossEntropyWithLogits",
    inputs=3,
    infer=_sigmoid_xent_infer,
    doc="SigmoidCrossEntropyWithLogits with a weight per element (input 2, the shape of the logits).",
    input_names=("logits", "targets", "weights"),
    output_names=("xentropy",),
)(_sigmoid_xent_kernel(True))


# -- metrics --------------------------------------------------------------------------------------


@register_op(
    "Accuracy",
    inputs=2,
    args=(Arg("top_k", 1, "a row counts as correct when its label is among the top_k predictions"),),
    infer=lambda op, ins: [TensorInfo((), F32)],
    doc="Fraction of rows of X (N, D) whose label (N,) is among the `top_k` largest predictions "
    "(ties go to the lower class index).",
    input_names=("predictions", "labels"),
    output_names=("accuracy",),
)
def accuracy(op: OpInfo) -> Callable[..., Any]:
    top_k = op.int_arg("top_k")
    if top_k < 1:
        raise ArgumentError(f"{op.label()}: top_k must be positive, got {top_k}")

    def run(x: Any, label: Any) -> tuple[np.ndarray]:
        x, label = np.asarray(x), np.asarray(label)
        if x.ndim != 2 or label.ndim != 1 or label.shape[0] != x.shape[0]:
            raise ArgumentError(
                f"{op.label()}: predictions must be (N, D) and labels (N,), got {x.shape} and {label.shape}"
            )
        n, d = x.shape
        lab = label.astype(np.int64)
        if np.any(lab < 0) or np.any(lab >= d):
            raise ArgumentError(f"{op.label()}: labels must lie in [0, {d})")
        if n == 0:
            return (np.asarray(np.nan, F32),)
        v = x[np.arange(n), lab][:, None]
        cols = np.arange(d)[None, :]
        ahead = np.sum((x > v) | ((x == v) & (cols < lab[:, None])), axis=1)
        return (np.asarray(np.float32(np.sum(ahead < top_k)) / np.float32(n), dtype=F32),)

    return run


@register_op(
    "SquaredL2Distance",
    inputs=2,
    infer=lambda op, ins: [
        TensorInfo(None if ins[0].shape is None else (ins[0].shape[0] if ins[0].shape else 1,), ins[0].dtype)
    ],
    doc="Y[i] = 0.5 * sum((X[i] - Y[i])^2) over all but the first dim (inputs of one shape).",
    input_names=("X", "Y"),
    output_names=("Z",),
)
def squared_l2_distance(op: OpInfo) -> Callable[..., Any]:
    def run(x: Any, y: Any) -> tuple[np.ndarray]:
        x, y = np.asarray(x), np.asarray(y)
        if x.shape != y.shape:
            raise ArgumentError(f"{op.label()}: X {x.shape} and Y {y.shape} must have one shape")
        n = x.shape[0] if x.ndim else 1
        diff = (x - y).reshape(n, -1) if n else np.zeros((0, 0), x.dtype)
        return ((0.5 * np.sum(diff * diff, axis=1)).astype(x.dtype, copy=False),)

    return run


@register_op(
    "CosineEmbeddingCriterion",
    inputs=2,
    args=(Arg("margin", 0.0, "similarity below which negative pairs cost nothing"),),
    infer=lambda op, ins: [ins[0].with_dtype(F32)],
    doc="Per pair: 1 - S where the label Y is 1, else max(0, S - margin).",
    input_names=("S", "Y"),
    output_names=("loss",),
)
def cosine_embedding_criterion(op: OpInfo) -> Callable[..., Any]:
    margin = np.float32(op.float_arg("margin"))

    def run(s: Any, y: Any) -> tuple[np.ndarray]:
        s, y = np.asarray(s, dtype=F32), np.asarray(y)
        if s.shape != y.shape:
            raise ArgumentError(f"{op.label()}: S {s.shape} and Y {y.shape} must have one shape")
        return (np.where(y == 1, np.float32(1) - s, np.maximum(np.float32(0), s - margin)).astype(F32),)

    return run


@register_op(
    "MarginRankingCriterion",
    inputs=3,
    args=(Arg("margin", 1.0, "the required gap between the ranked scores"),),
    infer=lambda op, ins: [ins[0].with_dtype(F32)],
    doc="loss = max(0, -Y * (X1 - X2) + margin) elementwise, Y being +1 or -1.",
    input_names=("X1", "X2", "Y"),
    output_names=("loss",),
)
def margin_ranking_criterion(op: OpInfo) -> Callable[..., Any]:
    margin = np.float32(op.float_arg("margin"))

    def run(x1: Any, x2: Any, y: Any) -> tuple[np.ndarray]:
        x1, x2 = np.asarray(x1, dtype=F32), np.asarray(x2, dtype=F32)
        yy = np.asarray(y).astype(F32)
        if not x1.shape == x2.shape == yy.shape:
            raise ArgumentError(f"{op.label()}: X1 {x1.shape}, X2 {x2.shape} and Y {yy.shape} must have one shape")
        return (np.maximum(np.float32(0), -yy * (x1 - x2) + margin).astype(F32),)

    return run


def _entropy(p: np.ndarray) -> np.ndarray:
    """Bernoulli entropy rounded to float32 (0 within 1e-20 of 0 or 1), as Caffe2 computes it."""
    q = np.float32(1) - p
    # The logs and products run in double (C's log), rounded to float once.
    p64, q64 = p.astype(np.float64), q.astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        h = -p64 * np.log(p64) - q64 * np.log(q64)
    out: np.ndarray = np.where((p < LOG_THRESHOLD) | (q < LOG_THRESHOLD), np.float32(0), h).astype(F32)
    return out


@register_op(
    "BernoulliJSD",
    inputs=2,
    infer=lambda op, ins: [ins[0].with_dtype(F32)],
    doc="Jensen-Shannon divergence between Bernoulli distributions with probabilities p and q, elementwise.",
    input_names=("X", "T"),
    output_names=("L",),
)
def bernoulli_jsd(op: OpInfo) -> Callable[..., Any]:
    def run(p: Any, q: Any) -> tuple[np.ndarray]:
        p, q = np.asarray(p, dtype=F32), np.asarray(q, dtype=F32)
        if p.shape != q.shape:
            raise ArgumentError(f"{op.label()}: X {p.shape} and T {q.shape} must have one shape")
        m = ((p.astype(np.float64) + q) / 2).astype(F32)
        # The final combination runs in double precision in Caffe2.
        jsd = _entropy(m).astype(np.float64) - (_entropy(p).astype(np.float64) + _entropy(q)) / 2
        return (jsd.astype(F32),)

    return run
