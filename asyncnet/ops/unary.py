"""Elementwise unary math: Exp, Log, Sqrt, Sqr, Abs, Sign, trig, rounding, Erf, Scale, Clip and friends."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from asyncnet.errors import ArgumentError
from asyncnet.opinfo import OpInfo
from asyncnet.ops.arithmetic import binary_infer, legacy_shape
from asyncnet.registry import register_op
from asyncnet.schema import REQUIRED, Arg, TensorInfo, same_as_input

_erf_scalar = np.frompyfunc(math.erf, 1, 1)


def _erf(x: np.ndarray) -> np.ndarray:
    # numpy has no erf and the library may not use scipy; math.erf is exact to double precision.
    out: np.ndarray = np.asarray(_erf_scalar(x.astype(np.float64)), dtype=np.float64)
    return out


def _rsqrt(x: np.ndarray) -> np.ndarray:
    out: np.ndarray = 1 / np.sqrt(x)
    return out


def _sqr(x: np.ndarray) -> np.ndarray:
    out: np.ndarray = x * x
    return out


def _cube(x: np.ndarray) -> np.ndarray:
    out: np.ndarray = x * x * x
    return out


def keep_float_dtype(x: np.ndarray, y: Any) -> np.ndarray:
    """``y`` cast back to ``x``'s dtype when ``x`` is floating (numpy may widen), else as computed."""
    arr: np.ndarray = np.asarray(y)
    if x.dtype.kind == "f" and arr.dtype != x.dtype:
        return arr.astype(x.dtype)
    return arr


def unary_factory(fn: Callable[[np.ndarray], Any]) -> Callable[[OpInfo], Callable[..., Any]]:
    """A kernel factory applying ``fn`` elementwise, keeping a floating input's dtype."""

    def factory(op: OpInfo) -> Callable[..., Any]:
        def run(x: Any) -> tuple[np.ndarray]:
            x = np.asarray(x)
            with np.errstate(all="ignore"):
                return (keep_float_dtype(x, fn(x)),)

        return run

    return factory


_UNARY: tuple[tuple[str, Callable[[np.ndarray], Any], str], ...] = (
    ("Exp", np.exp, "Y = exp(X)."),
    ("Log", np.log, "Y = log(X) (natural logarithm)."),
    ("Log1p", np.log1p, "Y = log(1 + X)."),
    ("Sqrt", np.sqrt, "Y = sqrt(X)."),
    ("Rsqrt", _rsqrt, "Y = 1 / sqrt(X)."),
    ("Sqr", _sqr, "Y = X * X."),
    ("Cube", _cube, "Y = X * X * X."),
    ("Cbrt", np.cbrt, "Y = cube root of X."),
    ("Abs", np.abs, "Y = |X|."),
    ("Sign", np.sign, "Y = sign(X) (-1, 0 or 1)."),
    ("Negative", np.negative, "Y = -X."),
    ("Reciprocal", np.reciprocal, "Y = 1 / X."),
    ("Ceil", np.ceil, "Y = ceil(X)."),
    ("Floor", np.floor, "Y = floor(X)."),
    ("Erf", _erf, "Y = erf(X), the Gauss error function."),
    ("Sin", np.sin, "Y = sin(X)."),
    ("Cos", np.cos, "Y = cos(X)."),
    ("Tan", np.tan, "Y = tan(X)."),
    ("Asin", np.arcsin, "Y = asin(X)."),
    ("Acos", np.arccos, "Y = acos(X)."),
    ("Atan", np.arctan, "Y = atan(X)."),
    ("Sinh", np.sinh, "Y = sinh(X)."),
    ("Cosh", np.cosh, "Y = cosh(X)."),
)

for _name, _fn, _doc in _UNARY:
    register_op(
        _name,
        allow_inplace=[(0, 0)],
        infer=same_as_input(),
        doc=_doc,
        input_names=("X",),
        output_names=("Y",),
    )(unary_factory(_fn))


@register_op(
    "Scale",
    allow_inplace=[(0, 0)],
    args=(Arg("scale", 1.0, "the multiplier"),),
    infer=same_as_input(),
    doc="Y = scale * X (the result keeps X's dtype).",
)
def scale(op: OpInfo) -> Callable[..., Any]:
    s = op.float_arg("scale")

    def run(x: Any) -> tuple[np.ndarray]:
        x = np.asarray(x)
        return ((x * s).astype(x.dtype, copy=False),)

    return run


@register_op(
    "Clip",
    allow_inplace=[(0, 0)],
    args=(
        Arg("min", None, "lower bound (default: the lowest value of the dtype)"),
        Arg("max", None, "upper bound (default: the largest value of the dtype)"),
    ),
    infer=same_as_input(),
    doc="Y = min(max(X, min), max).",
)
def clip(op: OpInfo) -> Callable[..., Any]:
    lo = op.float_arg("min") if op.has("min") else None
    hi = op.float_arg("max") if op.has("max") else None

    def run(x: Any) -> tuple[np.ndarray]:
        x = np.asarray(x)
        y = x
        if lo is not None:
            y = np.maximum(y, np.asarray(lo, dtype=x.dtype))
        if hi is not None:
            y = np.minimum(y, np.asarray(hi, dtype=x.dtype))
        return (np.array(y, dtype=x.dtype, copy=True),)

    return run


@register_op(
    "Pow",
    inputs=(1, 2),
    allow_inplace=[(0, 0), (1, 0)],
    args=(
        Arg("exponent", None, "the exponent when there is no second input"),
        Arg("broadcast", 0, "legacy broadcasting of the exponent input (see Add)"),
        Arg("axis", -1, "legacy broadcasting axis"),
        Arg("axis_str", "", "legacy broadcasting axis as a letter of `order`"),
        Arg("order", "NCHW", "used with axis_str"),
    ),
    infer=lambda op, ins: binary_infer(op, ins) if len(ins) == 2 else [ins[0]],
    doc="Z = X ** exponent, the exponent being the `exponent` argument or input 1 "
    "(broadcast like Add: numpy rules or legacy `broadcast=1, axis=`).",
    input_names=("X", "exponent"),
    output_names=("Z",),
)
def pow_op(op: OpInfo) -> Callable[..., Any]:
    if len(op.inputs) == 1:
        if not op.has("exponent"):
            raise ArgumentError(f"{op.label()}: Pow needs the `exponent` argument or a second input")
        e = op.float_arg("exponent")

        def run_arg(x: Any) -> tuple[np.ndarray]:
            x = np.asarray(x)
            with np.errstate(all="ignore"):
                return (keep_float_dtype(x, np.power(x, e)),)

        return run_arg
    if op.has("exponent"):
        raise ArgumentError(f"{op.label()}: Pow takes the exponent from the argument or from input 1, not both")
    legacy = op.bool_arg("broadcast", 0)

    def run(x: Any, y: Any) -> tuple[np.ndarray]:
        x, y = np.asarray(x), np.asarray(y)
        if legacy:
            y = y.reshape(legacy_shape(op, x.shape, y.shape))
        with np.errstate(all="ignore"):
            return (keep_float_dtype(x, np.power(x, y)),)

    return run


@register_op(
    "NanCheck",
    inputs=(1, -1),
    allow_inplace=[(0, 0)],
    infer=same_as_input(),
    doc="Y = X; fails when X holds a NaN or an infinity (the further inputs are only named in the error).",
    input_names=("X",),
    output_names=("Y",),
)
def nan_check(op: OpInfo) -> Callable[..., Any]:
    def run(x: Any, *others: Any) -> tuple[Any]:
        a = np.asarray(x)
        if a.dtype.kind in "fc" and not np.all(np.isfinite(a)):
            bad = int(np.size(a) - np.count_nonzero(np.isfinite(a)))
            raise ArgumentError(
                f"{op.label()}: input '{op.inputs[0]}' holds {bad} NaN or infinite value(s)"
                + (f"; also inputs {list(op.inputs[1:])}" if others else "")
            )
        return (x,)

    return run


@register_op(
    "ClipTensorByScaling",
    inputs=(2, 3),
    allow_inplace=[(0, 0)],
    args=(Arg("threshold", REQUIRED, "the largest norm allowed"),),
    infer=same_as_input(),
    doc="Y = X * threshold / val when the norm `val` (input 1) exceeds `threshold` (times the optional "
    "input 2), else Y = X.",
    input_names=("input_tensor", "val", "additional_threshold"),
    output_names=("clipped",),
)
def clip_tensor_by_scaling(op: OpInfo) -> Callable[..., Any]:
    threshold = op.float_arg("threshold")

    def run(x: Any, val: Any, extra: Any = None) -> tuple[np.ndarray]:
        x = np.asarray(x)
        v = np.asarray(val)
        if v.size != 1:
            raise ArgumentError(f"{op.label()}: val must hold one value, got shape {v.shape}")
        limit = threshold
        if extra is not None:
            limit *= float(np.asarray(extra).reshape(-1)[0])
        norm = float(v.reshape(-1)[0])
        if norm > limit:
            return ((x * np.asarray(limit / norm, dtype=x.dtype)).astype(x.dtype, copy=False),)
        return (x.copy(),)

    return run


@register_op(
    "SinusoidPositionEncoding",
    args=(
        Arg("embedding_size", 100, "number of encoding dims"),
        Arg("alpha", 10000.0, "timescale base"),
        Arg("amplitude", 1.0, "output scale"),
    ),
    infer=lambda op, ins: [
        TensorInfo(
            None if ins[0].shape is None else (*ins[0].shape, op.int_arg("embedding_size")), np.dtype(np.float32)
        )
    ],
    doc="For 2-D positions (M, K): output (M, K, embedding_size) with amplitude * sin(pos / alpha^(i / E)) "
    "at even i and amplitude * cos(...) at odd i.",
    input_names=("positions",),
    output_names=("output",),
)
def sinusoid_position_encoding(op: OpInfo) -> Callable[..., Any]:
    e = op.int_arg("embedding_size")
    alpha, amp = op.float_arg("alpha"), op.float_arg("amplitude")
    if e < 1:
        raise ArgumentError(f"{op.label()}: embedding_size must be positive, got {e}")
    dims = np.arange(e)
    scale = np.power(alpha, dims / e)

    def run(positions: Any) -> tuple[np.ndarray]:
        pos = np.asarray(positions)
        if pos.ndim != 2 or pos.dtype.kind not in "iu":
            raise ArgumentError(f"{op.label()}: positions must be a 2-D integer tensor, got {pos.dtype} {pos.shape}")
        x = pos[..., None].astype(np.float64) / scale
        out = np.where(dims % 2 == 0, np.sin(x), np.cos(x)) * amp
        return (out.astype(np.float32),)

    return run


@register_op(
    "NegateGradient",
    allow_inplace=[(0, 0)],
    infer=same_as_input(),
    doc="Y = X in the forward pass; its gradient is the negated output gradient (gradient reversal).",
    input_names=("X",),
    output_names=("Y",),
)
def negate_gradient(op: OpInfo) -> Callable[..., Any]:
    return lambda x: (np.array(x, copy=True),)
