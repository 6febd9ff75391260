"""Comparisons (EQ, NE, LT, LE, GT, GE), logical ops (Not, And, Or, Xor, bitwise) and Where."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from asyncnet.errors import ArgumentError, ShapeInferenceError
from asyncnet.opinfo import OpInfo
from asyncnet.ops.arithmetic import BROADCAST_ARGS, binary_infer, legacy_shape
from asyncnet.registry import register_op
from asyncnet.schema import REQUIRED, Arg, TensorInfo, broadcast_shapes, with_dtype

BOOL = np.dtype(np.bool_)


def _pair_kernel(fn: Callable[[Any, Any], Any], *, need_bool: bool = False) -> Callable[[OpInfo], Callable[..., Any]]:
    """Kernel factory for a broadcasting binary op whose output is ``fn``'s (bool for comparisons)."""

    def factory(op: OpInfo) -> Callable[..., Any]:
        legacy = op.bool_arg("broadcast", 0)

        def run(a: Any, b: Any) -> tuple[np.ndarray]:
            a, b = np.asarray(a), np.asarray(b)
            if need_bool and (a.dtype != BOOL or b.dtype != BOOL):
                raise ArgumentError(f"{op.label()}: inputs must be bool tensors, got {a.dtype} and {b.dtype}")
            if legacy:
                b = b.reshape(legacy_shape(op, a.shape, b.shape))
            return (np.asarray(fn(a, b)),)

        return run

    return factory


_COMPARE: tuple[tuple[str, Callable[[Any, Any], Any], str], ...] = (
    ("EQ", np.equal, "=="),
    ("NE", np.not_equal, "!="),
    ("LT", np.less, "<"),
    ("LE", np.less_equal, "<="),
    ("GT", np.greater, ">"),
    ("GE", np.greater_equal, ">="),
)
for _name, _fn, _sym in _COMPARE:
    register_op(
        _name,
        inputs=2,
        outputs=1,
        args=BROADCAST_ARGS,
        infer=with_dtype(BOOL, binary_infer),
        doc=f"C = A {_sym} B elementwise (bool), with numpy or legacy `broadcast=1` broadcasting as in Add.",
        input_names=("A", "B"),
        output_names=("C",),
    )(_pair_kernel(_fn))

_LOGICAL: tuple[tuple[str, Callable[[Any, Any], Any]], ...] = (
    ("And", np.logical_and),
    ("Or", np.logical_or),
    ("Xor", np.logical_xor),
)
for _name, _fn in _LOGICAL:
    register_op(
        _name,
        inputs=2,
        outputs=1,
        allow_inplace=[(0, 0), (1, 0)],
        args=BROADCAST_ARGS,
        infer=with_dtype(BOOL, binary_infer),
        doc=f"C = A {_name.lower()} B on bool tensors, broadcasting as in Add.",
        input_names=("A", "B"),
        output_names=("C",),
    )(_pair_kernel(_fn, need_bool=True))


def _bitwise_kernel(fn: Callable[[Any, Any], Any]) -> Callable[[OpInfo], Callable[..., Any]]:
    inner = _pair_kernel(fn)

    def factory(op: OpInfo) -> Callable[..., Any]:
        run = inner(op)

        def checked(a: Any, b: Any) -> tuple[np.ndarray]:
            for v in (a, b):
                if np.asarray(v).dtype.kind not in "biu":
                    raise ArgumentError(
                        f"{op.label()}: inputs must be bool or integer tensors, got {np.asarray(v).dtype}"
                    )
            return run(a, b)  # type: ignore[no-any-return]

        return checked

    return factory


_BITWISE: tuple[tuple[str, Callable[[Any, Any], Any]], ...] = (
    ("BitwiseAnd", np.bitwise_and),
    ("BitwiseOr", np.bitwise_or),
    ("BitwiseXor", np.bitwise_xor),
)
for _name, _fn in _BITWISE:
    register_op(
        _name,
        inputs=2,
        outputs=1,
        allow_inplace=[(0, 0), (1, 0)],
        args=BROADCAST_ARGS,
        infer=binary_infer,
        doc=f"C = A {_name[7:].lower()} B bitwise on bool or integer tensors, broadcasting as in Add.",
        input_names=("A", "B"),
        output_names=("C",),
    )(_bitwise_kernel(_fn))


@register_op(
    "Not",
    allow_inplace=[(0, 0)],
    infer=lambda op, ins: [ins[0].with_dtype(BOOL)],
    doc="Y = not X on a bool tensor.",
)
def not_op(op: OpInfo) -> Callable[..., Any]:
    def run(x: Any) -> tuple[np.ndarray]:
        x = np.asarray(x)
        if x.dtype != BOOL:
            raise ArgumentError(f"{op.label()}: input must be a bool tensor, got {x.dtype}")
        return (np.logical_not(x),)

    return run


def _where_infer(op: OpInfo, ins: list[TensorInfo]) -> list[TensorInfo]:
    c, x, y = ins
    if op.bool_arg("broadcast_on_rows", 0):
        return [TensorInfo(x.shape, x.dtype)]
    try:
        shape = broadcast_shapes(broadcast_shapes(c.shape, x.shape), y.shape)
    except Exception as e:
        raise ShapeInferenceError(f"{op.label()}: C {c}, X {x} and Y {y} do not fit: {e}") from e
    return [TensorInfo(shape, x.dtype)]


@register_op(
    "Where",
    inputs=3,
    outputs=1,
    allow_inplace=[(1, 0), (2, 0)],
    args=(Arg("broadcast_on_rows", 0, "C is 1-D and selects whole rows (dim 0) of X and Y"),),
    infer=_where_infer,
    doc="Z = X where C else Y. C is bool; with `broadcast_on_rows` a 1-D C picks rows.",
    input_names=("C", "X", "Y"),
    output_names=("Z",),
)
def where(op: OpInfo) -> Callable[..., Any]:
    rows = op.bool_arg("broadcast_on_rows", 0)

    def run(c: Any, x: Any, y: Any) -> tuple[np.ndarray]:
        c, x, y = np.asarray(c), np.asarray(x), np.asarray(y)
        if c.dtype != BOOL:
            raise ArgumentError(f"{op.label()}: C must be a bool tensor, got {c.dtype}")
        if x.shape != y.shape:
            raise ArgumentError(f"{op.label()}: X {x.shape} and Y {y.shape} must have one shape")
        if rows:
            if c.ndim != 1 or x.ndim == 0 or c.shape[0] != x.shape[0]:
                raise ArgumentError(f"{op.label()}: C {c.shape} must have one value per row of X {x.shape}")
            c = c.reshape(c.shape + (1,) * (x.ndim - 1))
        elif c.shape != x.shape:
            raise ArgumentError(f"{op.label()}: C {c.shape} must have the shape of X {x.shape}")
        return (np.where(c, x, y).astype(x.dtype, copy=False),)

    return run


@register_op(
    "IsMemberOf",
    args=(
        Arg("value", REQUIRED, "the set of values to test against"),
        Arg("dtype", 0, "TensorProto.DataType of `value` (informational)"),
    ),
    infer=lambda op, ins: [ins[0].with_dtype(BOOL)],
    doc="Y[i] = X[i] is one of the values of the `value` argument (bool).",
    input_names=("X",),
    output_names=("Y",),
)
def is_member_of(op: OpInfo) -> Callable[..., Any]:
    values = op.arg("value")
    allowed = list(values) if isinstance(values, (list, tuple)) else [values]

    def run(x: Any) -> tuple[np.ndarray]:
        x = np.asarray(x)
        if x.dtype.kind in "OSU":
            keys = {v.decode() if isinstance(v, bytes) else v for v in allowed}
            flat = [(v.decode() if isinstance(v, bytes) else v) in keys for v in x.reshape(-1).tolist()]
            return (np.asarray(flat, dtype=BOOL).reshape(x.shape),)
        return (np.isin(x, np.asarray(allowed)),)

    return run


@register_op(
    "Conditional",
    inputs=3,
    infer=lambda op, ins: [ins[1]],
    doc="Row i of the output is row i of DataT where the 1-D bool Condition is true, else of DataF.",
    input_names=("Condition", "DataT", "DataF"),
    output_names=("DataO",),
)
def conditional(op: OpInfo) -> Callable[..., Any]:
    def run(c: Any, t: Any, f: Any) -> tuple[np.ndarray]:
        c, t, f = np.asarray(c), np.asarray(t), np.asarray(f)
        if c.ndim != 1 or c.dtype != BOOL:
            raise ArgumentError(f"{op.label()}: Condition must be a 1-D bool tensor, got {c.dtype} {c.shape}")
        if t.shape != f.shape or t.dtype != f.dtype or t.ndim == 0 or t.shape[0] != c.shape[0]:
            raise ArgumentError(
                f"{op.label()}: DataT {t.shape} and DataF {f.shape} must match and have {c.shape[0]} rows"
            )
        return (np.where(c.reshape((-1,) + (1,) * (t.ndim - 1)), t, f),)

    return run
