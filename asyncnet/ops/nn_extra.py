"""Math/NN extras with their gradients: Gelu, Mish, Normalize, NormalizeL1, LpNorm, RMSNorm,
CosineSimilarity, L1Distance, IntegralImage, ChannelBackpropStats."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from asyncnet.errors import ArgumentError
from asyncnet.opinfo import OpInfo
from asyncnet.ops._util import canonical_axis, register_single_gradient_op
from asyncnet.proto import caffe2_pb2 as pb
from asyncnet.registry import register_op
from asyncnet.schema import Arg, TensorInfo, same_as_input
from asyncnet.training.gradients import GradientContext, GradientSpec, register_gradient

KEPS = 1e-12
_SQRT2PI = math.sqrt(2.0 / math.pi)


def _erf(x: np.ndarray) -> np.ndarray:
    return np.vectorize(math.erf, otypes=[np.float64])(x) if x.size else x.astype(np.float64)


# -- Gelu / Mish ------------------------------------------------------------------------------------


@register_op(
    "Gelu",
    allow_inplace=[(0, 0)],
    args=(Arg("fast_gelu", 0, "use the tanh approximation"),),
    infer=same_as_input(),
    doc="Y = X * Phi(X) = 0.5 X (1 + erf(X / sqrt 2)); fast_gelu: 0.5 X (1 + tanh(sqrt(2/pi) (X + 0.044715 X^3))).",
    input_names=("X",),
    output_names=("Y",),
)
def gelu(op: OpInfo) -> Callable[..., Any]:
    fast = op.bool_arg("fast_gelu")

    def run(x: Any) -> tuple[np.ndarray]:
        a = np.asarray(x)
        xf = a.astype(np.float64)
        if fast:
            y = 0.5 * xf * (1.0 + np.tanh(_SQRT2PI * (xf + 0.044715 * xf**3)))
        else:
            y = 0.5 * xf * (1.0 + _erf(xf / math.sqrt(2.0)))
        return (y.astype(a.dtype),)

    return run


@register_gradient("Gelu")
def _gelu_grad(op: pb.OperatorDef, g_out: list[str | None]) -> GradientSpec:
    g = GradientContext(op, g_out)
    return g.spec([g.op_def("GeluGradient", [g.GO(0), g.I(0)], [g.GI(0)])])


@register_op(
    "GeluGradient",
    inputs=2,
    allow_inplace=[(0, 0)],
    args=(Arg("fast_gelu", 0, "the forward fast_gelu"),),
    infer=same_as_input(1),
    doc="Gradient of Gelu: inputs dY, X; dX = dY * (Phi(X) + X phi(X)) (or the tanh form's derivative).",
    input_names=("dY", "X"),
    output_names=("dX",),
)
def gelu_gradient(op: OpInfo) -> Callable[..., Any]:
    fast = op.bool_arg("fast_gelu")

    def run(dy: Any, x: Any) -> tuple[np.ndarray]:
        d, xf = np.asarray(dy), np.asarray(x, np.float64)
        if fast:
            u = _SQRT2PI * (xf + 0.044715 * xf**3)
            t = np.tanh(u)
            dydx = 0.5 * (1 + t) + 0.5 * xf * (1 - t * t) * _SQRT2PI * (1 + 3 * 0.044715 * xf**2)
        else:
            dydx = 0.5 * (1.0 + _erf(xf / math.sqrt(2.0))) + xf * np.exp(-0.5 * xf * xf) / math.sqrt(2 * math.pi)
        return ((d * dydx).astype(d.dtype),)

    return run


@register_op(
    "Mish",
    allow_inplace=[(0, 0)],
    infer=same_as_input(),
    doc="Y = X * tanh(ln(1 + exp(X))).",
    input_names=("X",),
    output_names=("Y",),
)
def mish(op: OpInfo) -> Callable[..., Any]:
    def run(x: Any) -> tuple[np.ndarray]:
        a = np.asarray(x)
        xf = a.astype(np.float64)
        return ((xf * np.tanh(np.logaddexp(0.0, xf))).astype(a.dtype),)

    return run


@register_gradient("Mish")
def _mish_grad(op: pb.OperatorDef, g_out: list[str | None]) -> GradientSpec:
    g = GradientContext(op, g_out)
    return g.spec([g.op_def("MishGradient", [g.I(0), g.O(0), g.GO(0)], [g.GI(0)])])


@register_op(
    "MishGradient",
    inputs=3,
    allow_inplace=[(2, 0)],
    infer=same_as_input(2),
    doc="Gradient of Mish: inputs X, Y, dY; dX = dY * (tanh(sp) + X sigmoid(X) (1 - tanh(sp)^2)), sp = softplus(X).",
    input_names=("X", "Y", "dY"),
    output_names=("dX",),
)
def mish_gradient(op: OpInfo) -> Callable[..., Any]:
    def run(x: Any, y: Any, dy: Any) -> tuple[np.ndarray]:
        xf, d = np.asarray(x, np.float64), np.asarray(dy)
        t = np.tanh(np.logaddexp(0.0, xf))
        sig = 1.0 / (1.0 + np.exp(-xf))
        return ((d * (t + xf * sig * (1 - t * t))).astype(d.dtype),)

    return run


# -- norms --------------------------------------------------------------------------------------------


def _norm_axis(op: OpInfo, a: np.ndarray) -> int:
    return canonical_axis(op.int_arg("axis"), a.ndim, op)


@register_op(
    "Normalize",
    args=(Arg("axis", -1, "the axis normalized"),),
    infer=same_as_input(),
    doc="Y = X / max(|X|_2, 1e-12) along `axis`.",
    input_names=("X",),
    output_names=("Y",),
)
def normalize(op: OpInfo) -> Callable[..., Any]:
    def run(x: Any) -> tuple[np.ndarray]:
        a = np.asarray(x)
        ax = _norm_axis(op, a)
        n = np.maximum(np.sqrt(np.sum(a.astype(np.float64) ** 2, axis=ax, keepdims=True)), KEPS)
        return ((a / n).astype(a.dtype),)

    return run


register_single_gradient_op("Normalize", "NormalizeGradient", n_inputs=1, n_grads=1)


@register_op(
    "NormalizeGradient",
    inputs=2,
    args=(Arg("axis", -1, "the forward axis"),),
    infer=same_as_input(),
    doc="Gradient of Normalize: inputs X, dY; dX = (dY - Y (Y . dY)) / max(|X|, 1e-12), Y = X / |X|.",
    input_names=("X", "dY"),
    output_names=("dX",),
)
def normalize_gradient(op: OpInfo) -> Callable[..., Any]:
    def run(x: Any, dy: Any) -> tuple[np.ndarray]:
        a, d = np.asarray(x, np.float64), np.asarray(dy)
        ax = _norm_axis(op, a)
        n = np.maximum(np.sqrt(np.sum(a**2, axis=ax, keepdims=True)), KEPS)
        y = a / n
        dx = (d - y * np.sum(y * d, axis=ax, keepdims=True)) / n
        return (dx.astype(d.dtype),)

    return run


@register_op(
    "NormalizeL1",
    args=(Arg("axis", -1, "the axis normalized"),),
    infer=same_as_input(),
    doc="Y = X / sum(|X|) along `axis` (slices summing to 0 are copied).",
    input_names=("X",),
    output_names=("Y",),
)
def normalize_l1(op: OpInfo) -> Callable[..., Any]:
    def run(x: Any) -> tuple[np.ndarray]:
        a = np.asarray(x)
        n = np.sum(np.abs(a.astype(np.float64)), axis=_norm_axis(op, a), keepdims=True)
        return ((a / np.where(n == 0, 1.0, n)).astype(a.dtype),)

    return run


@register_op(
    "LpNorm",
    args=(Arg("p", 2, "1 (sum of |x|) or 2 (sum of x^2, not its root)"), Arg("average", 0, "divide by the size")),
    infer=lambda op, ins: [TensorInfo((1,), ins[0].dtype)],
    doc="Output (1,): sum |X| (p=1) or sum X^2 (p=2), divided by X.size when `average` (NaN for an empty X).",
    input_names=("X",),
    output_names=("Z",),
)
def lp_norm(op: OpInfo) -> Callable[..., Any]:
    p, avg = op.int_arg("p"), op.bool_arg("average")
    if p not in (1, 2):
        raise ArgumentError(f"{op.label()}: p must be 1 or 2, got {p}")

    def run(x: Any) -> tuple[np.ndarray]:
        a = np.asarray(x)
        v = float(np.sum(np.abs(a)) if p == 1 else np.sum(a.astype(np.float64) ** 2))
        # Averaging an empty X is 0 / 0: NaN, as in Caffe2.
        mean = v / a.size if a.size else float("nan")
        return (np.array([mean if avg else v], a.dtype),)

    return run


register_single_gradient_op("LpNorm", "LpNormGradient", n_inputs=1, n_grads=1)


@register_op(
    "LpNormGradient",
    inputs=2,
    args=(Arg("p", 2, "the forward p"), Arg("average", 0, "the forward average")),
    infer=same_as_input(),
    doc="Gradient of LpNorm: inputs X, dZ; dX = dZ * sign(X) (p=1) or dZ * 2X (p=2), / X.size when `average`.",
    input_names=("X", "dZ"),
    output_names=("dX",),
)
def lp_norm_gradient(op: OpInfo) -> Callable[..., Any]:
    p, avg = op.int_arg("p"), op.bool_arg("average")

    def run(x: Any, dz: Any) -> tuple[np.ndarray]:
        a = np.asarray(x)
        g = float(np.asarray(dz).reshape(-1)[0]) / (max(a.size, 1) if avg else 1)
        dx = g * (np.sign(a) if p == 1 else 2.0 * a)
        return (dx.astype(a.dtype),)

    return run


@register_op(
    "RMSNorm",
    inputs=3,
    outputs=2,
    args=(Arg("axis", 1, "dims from here on are normalized"), Arg("eps", 0.0, "added to the mean square")),
    infer=lambda op, ins: [
        ins[0],
        TensorInfo(None if ins[0].shape is None else tuple(ins[0].shape[: op.int_arg("axis")]), ins[0].dtype),
    ],
    doc="rrms = 1 / sqrt(mean(X^2 over dims >= axis) + eps); Y = X * rrms * gamma + beta (gamma, beta "
    "shaped like the normalized dims). Outputs Y, rrms.",
    input_names=("X", "gamma", "beta"),
    output_names=("Y", "rrms"),
)
def rms_norm(op: OpInfo) -> Callable[..., Any]:
    eps = op.float_arg("eps")

    def run(x: Any, gamma: Any, beta: Any) -> tuple[np.ndarray, np.ndarray]:
        a = np.asarray(x)
        ax = canonical_axis(op.int_arg("axis"), a.ndim, op)
        m, n = int(np.prod(a.shape[:ax], dtype=np.int64)), int(np.prod(a.shape[ax:], dtype=np.int64))
        x2 = a.reshape(m, n).astype(np.float64)
        rr = 1.0 / np.sqrt(np.mean(x2 * x2, axis=1) + eps) if n else np.zeros(m)
        y = x2 * rr[:, None] * np.asarray(gamma).reshape(1, n) + np.asarray(beta).reshape(1, n)
        return y.reshape(a.shape).astype(a.dtype), rr.reshape(a.shape[:ax]).astype(a.dtype)

    return run


@register_gradient("RMSNorm")
def _rms_norm_grad(op: pb.OperatorDef, g_out: list[str | None]) -> GradientSpec:
    g = GradientContext(op, g_out)
    ins = [g.GO(0), g.I(0), g.I(1), g.O(1)]
    return g.spec([g.op_def("RMSNormGradient", ins, [g.GI(0), g.GI(1), g.GI(2)])])


@register_op(
    "RMSNormGradient",
    inputs=4,
    outputs=3,
    args=(Arg("axis", 1, "the forward axis"), Arg("eps", 0.0, "the forward eps")),
    infer=lambda op, ins: [ins[1], ins[2], ins[2]],
    doc="Gradient of RMSNorm: inputs dY, X, gamma, rrms; outputs dX, dgamma, dbeta.",
    input_names=("dY", "X", "gamma", "rrms"),
    output_names=("dX", "dgamma", "dbeta"),
)
def rms_norm_gradient(op: OpInfo) -> Callable[..., Any]:
    def run(dy: Any, x: Any, gamma: Any, rrms: Any) -> tuple[np.ndarray, ...]:
        a, d, gm = np.asarray(x), np.asarray(dy), np.asarray(gamma)
        ax = canonical_axis(op.int_arg("axis"), a.ndim, op)
        m, n = int(np.prod(a.shape[:ax], dtype=np.int64)), int(np.prod(a.shape[ax:], dtype=np.int64))
        x2, d2 = a.reshape(m, n).astype(np.float64), d.reshape(m, n).astype(np.float64)
        g2, rr = gm.reshape(1, n).astype(np.float64), np.asarray(rrms, np.float64).reshape(m, 1)
        dg = (d2 * x2 * rr).sum(axis=0)
        db = d2.sum(axis=0)
        dxh = d2 * g2
        dx = rr * dxh - x2 * rr**3 * np.sum(dxh * x2, axis=1, keepdims=True) / max(n, 1)
        return (
            dx.reshape(a.shape).astype(a.dtype),
            dg.reshape(gm.shape).astype(gm.dtype),
            db.reshape(gm.shape).astype(gm.dtype),
        )

    return run


# -- row-wise distances --------------------------------------------------------------------------------


def _pairs(op: OpInfo, x: Any, y: Any) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(x), np.asarray(y)
    if a.shape != b.shape or a.ndim == 0:
        raise ArgumentError(f"{op.label()}: X {a.shape} and Y {b.shape} must have one shape (rank >= 1)")
    n = a.shape[0] if a.ndim > 1 else 1
    return a.reshape(n, -1).astype(np.float64), b.reshape(n, -1).astype(np.float64)


def _rows_out(ins: list[TensorInfo]) -> list[TensorInfo]:
    s = ins[0].shape
    return [TensorInfo(None if s is None else ((s[0],) if len(s) > 1 else (1,)), ins[0].dtype)]


@register_op(
    "CosineSimilarity",
    inputs=2,
    infer=lambda op, ins: _rows_out(ins),
    doc="Row-wise cosine: X_i . Y_i / (max(|X_i|, 1e-12) max(|Y_i|, 1e-12)).",
    input_names=("X", "Y"),
    output_names=("Z",),
)
def cosine_similarity(op: OpInfo) -> Callable[..., Any]:
    def run(x: Any, y: Any) -> tuple[np.ndarray]:
        a, b = _pairs(op, x, y)
        na = np.maximum(np.linalg.norm(a, axis=1), KEPS)
        nb = np.maximum(np.linalg.norm(b, axis=1), KEPS)
        return (((a * b).sum(axis=1) / (na * nb)).astype(np.asarray(x).dtype),)

    return run


register_single_gradient_op("CosineSimilarity", "CosineSimilarityGradient", n_inputs=2, n_grads=2)


@register_op(
    "CosineSimilarityGradient",
    inputs=3,
    outputs=2,
    infer=lambda op, ins: [ins[0], ins[1]],
    doc="Gradient of CosineSimilarity: inputs X, Y, dZ; outputs dX, dY.",
    input_names=("X", "Y", "dZ"),
    output_names=("dX", "dY"),
)
def cosine_similarity_gradient(op: OpInfo) -> Callable[..., Any]:
    def run(x: Any, y: Any, dz: Any) -> tuple[np.ndarray, np.ndarray]:
        a, b = _pairs(op, x, y)
        g = np.asarray(dz, np.float64).reshape(-1, 1)
        na = np.maximum(np.linalg.norm(a, axis=1, keepdims=True), KEPS)
        nb = np.maximum(np.linalg.norm(b, axis=1, keepdims=True), KEPS)
        dot = (a * b).sum(axis=1, keepdims=True)
        dx = g * (b / (na * nb) - dot * a / (na**3 * nb))
        dyy = g * (a / (na * nb) - dot * b / (na * nb**3))
        xs = np.asarray(x)
        return dx.reshape(xs.shape).astype(xs.dtype), dyy.reshape(xs.shape).astype(xs.dtype)

    return run


@register_op(
    "L1Distance",
    inputs=2,
    infer=lambda op, ins: _rows_out(ins),
    doc="Row-wise sum |X_i - Y_i|.",
    input_names=("X", "Y"),
    output_names=("Z",),
)
def l1_distance(op: OpInfo) -> Callable[..., Any]:
    def run(x: Any, y: Any) -> tuple[np.ndarray]:
        a, b = _pairs(op, x, y)
        return (np.abs(a - b).sum(axis=1).astype(np.asarray(x).dtype),)

    return run


register_single_gradient_op("L1Distance", "L1DistanceGradient", n_inputs=2, n_grads=2)


@register_op(
    "L1DistanceGradient",
    inputs=3,
    outputs=2,
    infer=lambda op, ins: [ins[0], ins[1]],
    doc="Gradient of L1Distance: inputs X, Y, dZ; dX = dZ * sign(X - Y) (0 within 1e-12), dY = -dX.",
    input_names=("X", "Y", "dZ"),
    output_names=("dX", "dY"),
)
def l1_distance_gradient(op: OpInfo) -> Callable[..., Any]:
    def run(x: Any, y: Any, dz: Any) -> tuple[np.ndarray, np.ndarray]:
        a, b = _pairs(op, x, y)
        diff = a - b
        sgn = np.where(diff > KEPS, 1.0, np.where(diff < -KEPS, -1.0, 0.0))
        dx = np.asarray(dz, np.float64).reshape(-1, 1) * sgn
        xs = np.asarray(x)
        return dx.reshape(xs.shape).astype(xs.dtype), (-dx).reshape(xs.shape).astype(xs.dtype)

    return run


# -- IntegralImage / ChannelBackpropStats -----------------------------------------------------------------


@register_op(
    "IntegralImage",
    infer=lambda op, ins: [
        TensorInfo(
            None
            if ins[0].shape is None
            else (*ins[0].shape[:2], *(None if d is None else d + 1 for d in ins[0].shape[2:])),
            ins[0].dtype,
        )
    ],
    doc="Summed-area table of each NCHW image: Y (N, C, H+1, W+1), Y[.., i, j] = sum of X[.., :i, :j].",
    input_names=("X",),
    output_names=("Y",),
)
def integral_image(op: OpInfo) -> Callable[..., Any]:
    def run(x: Any) -> tuple[np.ndarray]:
        a = np.asarray(x)
        if a.ndim != 4:
            raise ArgumentError(f"{op.label()}: X must be 4-D NCHW, got {a.shape}")
        out = np.zeros((*a.shape[:2], a.shape[2] + 1, a.shape[3] + 1), a.dtype)
        # Row pass, then column pass: Caffe2's order, so float sums round alike.
        out[:, :, 1:, 1:] = a.cumsum(axis=3).cumsum(axis=2)
        return (out,)

    return run


register_single_gradient_op("IntegralImage", "IntegralImageGradient", n_inputs=1, n_grads=1)


@register_op(
    "IntegralImageGradient",
    inputs=2,
    infer=same_as_input(),
    doc="Caffe2's IntegralImageGradient: inputs X, dY; dX[.., i, j] = sum of dY[.., :i+1, :j+1] (prefix "
    "sums of dY's first H rows and W columns, as Caffe2 computes it; its goldens record this).",
    input_names=("X", "dY"),
    output_names=("dX",),
)
def integral_image_gradient(op: OpInfo) -> Callable[..., Any]:
    def run(x: Any, dy: Any) -> tuple[np.ndarray]:
        a, d = np.asarray(x), np.asarray(dy)
        h, w = a.shape[2], a.shape[3]
        return (d[:, :, :h, :w].cumsum(axis=3).cumsum(axis=2).astype(a.dtype),)

    return run


@register_op(
    "ChannelBackpropStats",
    inputs=4,
    outputs=2,
    infer=lambda op, ins: [ins[1], ins[1]],
    doc="Per channel of NCHW X: scale_grad = sum(dY * (X - mean) * inv_std), bias_grad = sum(dY).",
    input_names=("X", "mean", "invStdDev", "outputGrad"),
    output_names=("scaleGrad", "biasGrad"),
)
def channel_backprop_stats(op: OpInfo) -> Callable[..., Any]:
    def run(x: Any, mean: Any, inv: Any, dy: Any) -> tuple[np.ndarray, np.ndarray]:
        a, d = np.asarray(x), np.asarray(dy)
        if a.ndim < 2 or a.shape != d.shape:
            raise ArgumentError(f"{op.label()}: X {a.shape} and outputGrad {d.shape} must match (rank >= 2)")
        shape = (1, -1) + (1,) * (a.ndim - 2)
        axes = tuple(i for i in range(a.ndim) if i != 1)
        xh = (a - np.asarray(mean).reshape(shape)) * np.asarray(inv).reshape(shape)
        return (d * xh).sum(axis=axes).astype(a.dtype), d.sum(axis=axes).astype(a.dtype)

    return run
