"""Gradients of losses: SoftmaxWithLoss, LabelCrossEntropy, CrossEntropy, AveragedLoss, SquaredL2Distance."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from asyncnet.errors import ArgumentError
from asyncnet.opinfo import OpInfo
from asyncnet.ops._util import canonical_axis, prod, register_single_gradient_op
from asyncnet.proto import caffe2_pb2 as pb
from asyncnet.registry import register_op
from asyncnet.schema import Arg, same_as_input
from asyncnet.training.gradients import GradientContext, GradientSpec, no_gradient, register_gradient

# Caffe2 clamps probabilities at this value before taking logs and dividing.
LOG_THRESHOLD = 1e-20

no_gradient("Accuracy", "StopGradient", "ArgMax", "ArgMin", "Iter", "LearningRate")
# Caffe2's one_hot_ops.cc: NO_GRADIENT for the one-hot family (a CRF's loss multiplies labels' one-hots in).
no_gradient("OneHot", "BatchOneHot", "SegmentOneHot", "BatchBucketOneHot")
# Caffe2's filler_op.cc and given_tensor_fill_op.cc declared the fills NO_GRADIENT.
no_gradient(
    "ConstantFill",
    "UniformFill",
    "UniformIntFill",
    "UniqueUniformFill",
    "GaussianFill",
    "XavierFill",
    "MSRAFill",
    "DiagonalFill",
    "RangeFill",
    "LengthsRangeFill",
    "GivenTensorFill",
    "GivenTensorDoubleFill",
    "GivenTensorBoolFill",
    "GivenTensorIntFill",
    "GivenTensorInt16Fill",
    "GivenTensorInt64Fill",
    "GivenTensorStringFill",
)


def _softmax_with_loss_maker(grad_type: str) -> Callable[[pb.OperatorDef, list[str | None]], GradientSpec]:
    def maker(op: pb.OperatorDef, g_out: list[str | None]) -> GradientSpec:
        g = GradientContext(op, g_out)
        ins = [g.I(0), g.I(1)] + ([g.I(2)] if len(op.input) == 3 else []) + [g.O(0), g.GO(1)]
        return g.spec([g.op_def(grad_type, ins, [g.GI(0)])])

    return maker


register_gradient("SoftmaxWithLoss")(_softmax_with_loss_maker("SoftmaxWithLossGradient"))
register_gradient("SpatialSoftmaxWithLoss")(_softmax_with_loss_maker("SpatialSoftmaxWithLossGradient"))


def _labels_1d(label: np.ndarray, n: int, d: int) -> np.ndarray:
    lab = label.reshape(-1)
    if lab.size != n:
        raise ArgumentError(f"label {label.shape} must hold one class per row ({n} rows)")
    if lab.dtype.kind not in "iu":
        raise ArgumentError(f"label must be integer without label_prob, got {label.dtype}")
    if lab.size and (lab.min() < 0 or lab.max() >= d):
        raise ArgumentError(f"label values must be in [0, {d}), got [{lab.min()}, {lab.max()}]")
    return lab.astype(np.int64, copy=False)


def spatial_softmax_loss_grad(
    x: np.ndarray, label: np.ndarray, weights: np.ndarray | None, p: np.ndarray, dl: float, scale: float
) -> np.ndarray:
    """dX of the per-pixel softmax loss: (P - onehot) * w / total_w * dL * scale; label -1 pixels get 0."""
    if x.ndim != 4 or label.shape != (x.shape[0], *x.shape[2:]):
        raise ArgumentError(f"X must be (N, D, H, W) and label (N, H, W); got {x.shape} and {label.shape}")
    lab = label.astype(np.int64)
    care = lab != -1
    w = np.ones(lab.shape) if weights is None else weights.astype(np.float64).reshape(lab.shape)
    w = np.where(care, w, 0.0)
    dx = p.astype(np.float64).copy()
    onehot = np.arange(x.shape[1]).reshape(1, -1, 1, 1) == np.where(care, lab, -2)[:, None]
    dx -= onehot
    dx *= w[:, None]
    total = float(w.sum())
    factor = scale * dl / total if total > 0 else 0.0
    return np.asarray(dx * factor)


@register_op(
    "SoftmaxWithLossGradient",
    inputs=(4, 5),
    outputs=1,
    args=(
        Arg("scale", 1.0, "the forward loss scale"),
        Arg("label_prob", 0, "labels are probability rows"),
        Arg("spatial", 0, "per-pixel mode: X (N, D, H, W), labels (N, H, W), label -1 ignored"),
        Arg("axis", 1, "the forward axis"),
        Arg("order", "NCHW", "the forward order"),
        Arg("only_loss", 0, "the forward only_loss flag"),
    ),
    infer=same_as_input(0),
    doc="Inputs X, label, [weights], P (softmax), d_avg_loss; dX = (P - onehot(label)) * w * scale * dL / total_weight.",
    input_names=("X", "label", "weights", "P", "d_avg_loss"),
    output_names=("dX",),
)
def softmax_with_loss_gradient(op: OpInfo) -> Callable[..., Any]:
    scale = op.float_arg("scale")
    label_prob = op.bool_arg("label_prob", 0)
    spatial = op.bool_arg("spatial", 0) or op.type == "SpatialSoftmaxWithLossGradient"
    axis_arg = op.int_arg("axis", 1)

    def run(*ins: Any) -> tuple[np.ndarray]:
        x = np.asarray(ins[0])
        label = np.asarray(ins[1])
        weights = np.asarray(ins[2]).reshape(-1) if len(ins) == 5 else None
        p, dl = np.asarray(ins[-2]), np.asarray(ins[-1])
        dl_value = float(dl.reshape(-1)[0])
        if spatial:
            w = None if weights is None else np.asarray(ins[2])
            return (spatial_softmax_loss_grad(x, label, w, p, dl_value, scale).astype(x.dtype, copy=False),)
        axis = canonical_axis(axis_arg, x.ndim, op)
        n, d = prod(x.shape[:axis]), prod(x.shape[axis:])
        dx = p.reshape(n, d).astype(np.float64)
        if label_prob:
            dx -= label.reshape(n, d)
        else:
            dx[np.arange(n), _labels_1d(label, n, d)] -= 1.0
        if weights is not None:
            dx *= weights.reshape(n, 1)
            total = float(weights.sum())
        else:
            total = float(n)
        factor = scale * dl_value / total if total > 0 else 0.0
        return ((dx * factor).reshape(x.shape).astype(x.dtype, copy=False),)

    return run


register_op(
    "SpatialSoftmaxWithLossGradient",
    inputs=(4, 5),
    outputs=1,
    args=(Arg("scale", 1.0, "multiplies the gradient"), Arg("order", "NCHW", "only NCHW")),
    infer=same_as_input(0),
    doc="Inputs X (N, D, H, W), label (N, H, W), [weights (N, H, W)], P, d_avg_loss; "
    "dX = (P - onehot(label)) * w * scale * dL / total_weight, zero where label is -1.",
    input_names=("X", "label", "weights", "P", "d_avg_loss"),
    output_names=("dX",),
)(softmax_with_loss_gradient)


register_single_gradient_op("LabelCrossEntropy", "LabelCrossEntropyGradient", n_inputs=2, n_grads=1)


@register_op(
    "LabelCrossEntropyGradient",
    inputs=3,
    outputs=1,
    infer=same_as_input(0),
    doc="Inputs X [N, D], label [N], dY [N]; dX[i, label[i]] = -dY[i] / max(X[i, label[i]], 1e-20), 0 elsewhere.",
    input_names=("X", "label", "dY"),
    output_names=("dX",),
)
def label_cross_entropy_gradient(op: OpInfo) -> Callable[..., Any]:
    def run(x: Any, label: Any, dy: Any) -> tuple[np.ndarray]:
        x, dy = np.asarray(x), np.asarray(dy).reshape(-1)
        x2 = x.reshape(x.shape[0], -1) if x.ndim != 1 else x.reshape(1, -1)
        n, d = x2.shape
        lab = _labels_1d(np.asarray(label), n, d)
        dx = np.zeros_like(x2)
        rows = np.arange(n)
        dx[rows, lab] = -dy / np.maximum(x2[rows, lab], LOG_THRESHOLD)
        return (dx.reshape(x.shape),)

    return run


register_single_gradient_op("CrossEntropy", "CrossEntropyGradient", n_inputs=2, n_grads=1)


@register_op(
    "CrossEntropyGradient",
    inputs=3,
    outputs=1,
    infer=same_as_input(0),
    doc="Inputs X [N, D], label probabilities [N, D], dY [N]; dX = -label / max(X, 1e-20) * dY.",
    input_names=("X", "label", "dY"),
    output_names=("dX",),
)
def cross_entropy_gradient(op: OpInfo) -> Callable[..., Any]:
    def run(x: Any, label: Any, dy: Any) -> tuple[np.ndarray]:
        x, label, dy = np.asarray(x), np.asarray(label), np.asarray(dy)
        x2 = x.reshape(x.shape[0], -1) if x.ndim > 1 else x.reshape(1, -1)
        dx = -label.reshape(x2.shape) / np.maximum(x2, LOG_THRESHOLD) * dy.reshape(-1, 1)
        return (dx.reshape(x.shape).astype(x.dtype, copy=False),)

    return run


register_single_gradient_op("AveragedLoss", "AveragedLossGradient", n_inputs=1, n_grads=1)


@register_op(
    "AveragedLossGradient",
    inputs=2,
    outputs=1,
    infer=same_as_input(0),
    doc="Inputs X and the scalar dLoss; dX = dLoss / X.size everywhere.",
    input_names=("X", "dLoss"),
    output_names=("dX",),
)
def averaged_loss_gradient(op: OpInfo) -> Callable[..., Any]:
    def run(x: Any, dl: Any) -> tuple[np.ndarray]:
        x = np.asarray(x)
        value = float(np.asarray(dl).reshape(-1)[0]) / max(x.size, 1)
        return (np.full(x.shape, value, dtype=x.dtype),)

    return run


register_single_gradient_op("SquaredL2Distance", "SquaredL2DistanceGradient", n_inputs=2, n_grads=2)


@register_op(
    "SquaredL2DistanceGradient",
    inputs=3,
    outputs=2,
    infer=lambda op, ins: [ins[0], ins[1]],
    doc="Gradient of 0.5 * sum((X - Y)^2) per row: dX = (X - Y) * dDist, dY = -dX.",
    input_names=("X", "Y", "dDistance"),
    output_names=("dX", "dY"),
)
def squared_l2_distance_gradient(op: OpInfo) -> Callable[..., Any]:
    def run(x: Any, y: Any, dd: Any) -> tuple[np.ndarray, np.ndarray]:
        x, y, dd = np.asarray(x), np.asarray(y), np.asarray(dd)
        n = x.shape[0] if x.ndim else 1
        diff = (x - y).reshape(n, -1) * dd.reshape(n, 1)
        dx = diff.reshape(x.shape).astype(x.dtype, copy=False)
        return dx, (-dx).astype(y.dtype, copy=False)

    return run


@register_gradient("SigmoidCrossEntropyWithLogits")
def _sigmoid_xent_grad(op: pb.OperatorDef, g_out: list[str | None]) -> GradientSpec:
    g = GradientContext(op, g_out)
    return g.spec([g.op_def("SigmoidCrossEntropyWithLogitsGradient", [g.GO(0), g.I(0), g.I(1)], [g.GI(0)])])


@register_gradient("WeightedSigmoidCrossEntropyWithLogits")
def _weighted_sigmoid_xent_grad(op: pb.OperatorDef, g_out: list[str | None]) -> GradientSpec:
    g = GradientContext(op, g_out)
    ins = [g.GO(0), g.I(0), g.I(1), g.I(2)]
    return g.spec([g.op_def("WeightedSigmoidCrossEntropyWithLogitsGradient", ins, [g.GI(0)])])


def _sigmoid_xent_grad_factory(weighted: bool) -> Callable[[OpInfo], Callable[..., Any]]:
    def factory(op: OpInfo) -> Callable[..., Any]:
        log_d = not weighted and op.bool_arg("log_D_trick", 0)
        unjoined = not weighted and op.bool_arg("unjoined_lr_loss", 0)

        def run(dl: Any, x: Any, t: Any, w: Any = None) -> tuple[np.ndarray]:
            x, t = np.asarray(x, dtype=np.float32), np.asarray(t, dtype=np.float32)
            if x.shape != t.shape or x.ndim == 0:
                raise ArgumentError(f"logits {x.shape} and targets {t.shape} must have one shape of rank >= 1")
            sig = np.where(x >= 0, 1.0 / (1.0 + np.exp(-np.abs(x))), np.exp(-np.abs(x)) / (1.0 + np.exp(-np.abs(x))))
            # The forward loss is -mean(terms) over the last dim; these are d(terms)/dX.
            if unjoined:
                dterms = t - (1.0 - t) * sig
            elif log_d:
                dterms = (2.0 * t - 1.0) * (1.0 - sig)
            else:
                dterms = t - sig
            if w is not None:
                dterms = dterms * np.asarray(w, dtype=np.float32)
            scale = np.asarray(dl, dtype=np.float32).reshape(*x.shape[:-1], 1) / x.shape[-1]
            return ((-dterms * scale).astype(np.float32),)

        return run

    return factory


register_op(
    "SigmoidCrossEntropyWithLogitsGradient",
    inputs=3,
    outputs=1,
    args=(Arg("log_D_trick", 0, "the forward log_D_trick"), Arg("unjoined_lr_loss", 0, "the forward flag")),
    infer=lambda op, ins: [ins[1]],
    doc="Inputs dLoss, logits, targets; dX = dLoss * (sigmoid(X) - targets) / D (D = the last dim), "
    "or the log-D-trick / unjoined variants.",
    input_names=("dLoss", "logits", "targets"),
    output_names=("dX",),
)(_sigmoid_xent_grad_factory(False))

register_op(
    "WeightedSigmoidCrossEntropyWithLogitsGradient",
    inputs=4,
    outputs=1,
    infer=lambda op, ins: [ins[1]],
    doc="Inputs dLoss, logits, targets, weights; dX = dLoss * weights * (sigmoid(X) - targets) / D.",
    input_names=("dLoss", "logits", "targets", "weights"),
    output_names=("dX",),
)(_sigmoid_xent_grad_factory(True))
