"""Binary arithmetic (Add, Sub, Mul, Div) with numpy and legacy Caffe2 broadcasting; n-ary Sum, Mean, Max, Min."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from asyncnet.errors import ArgumentError, ShapeInferenceError
from asyncnet.opinfo import OpInfo
from asyncnet.registry import register_op
from asyncnet.schema import Arg, TensorInfo, broadcast_shapes

BROADCAST_ARGS = (
    Arg("broadcast", 0, "legacy broadcasting: B matches a contiguous run of A's dims"),
    Arg("axis", -1, "legacy broadcasting: where B's dims start in A (-1: aligned to the end)"),
    Arg("axis_str", "", "legacy broadcasting: axis as a letter of `order`"),
    Arg("order", "NCHW", "used with axis_str"),
)


def legacy_axis(op: OpInfo, a_ndim: int, b_ndim: int) -> int:
    """The start axis of B in A under Caffe2's legacy broadcast rules."""
    axis = op.int_arg("axis", -1)
    axis_str = op.arg("axis_str", "")
    if axis_str:
        order = str(op.arg("order", "NCHW"))
        if len(axis_str) != 1 or axis_str not in order:
            raise ArgumentError(f"{op.label()}: axis_str '{axis_str}' is not a letter of order '{order}'")
        axis = order.index(axis_str)
    if axis == -1:
        axis = a_ndim - b_ndim
    if not 0 <= axis <= a_ndim - b_ndim:
        raise ArgumentError(
            f"{op.label()}: legacy broadcast axis {axis} does not fit B of rank {b_ndim} into A of rank {a_ndim}"
        )
    return axis


def legacy_shape(op: OpInfo, a_shape: tuple[Any, ...], b_shape: tuple[Any, ...]) -> tuple[Any, ...]:
    """B's shape padded with ones so numpy broadcasting gives Caffe2's legacy result."""
    axis = legacy_axis(op, len(a_shape), len(b_shape))
    padded = (1,) * axis + tuple(b_shape) + (1,) * (len(a_shape) - axis - len(b_shape))
    for i, (x, y) in enumerate(zip(a_shape, padded)):
        if y != 1 and x is not None and y is not None and x != y:
            raise ShapeInferenceError(
                f"{op.label()}: legacy broadcast of B {tuple(b_shape)} at axis {axis} does not match A {tuple(a_shape)} at dim {i}"
            )
    return padded


def _int_div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    # C++ integer division truncates toward zero; numpy's // floors.
    q = np.abs(a) // np.abs(b)
    out: np.ndarray = np.where((a < 0) != (b < 0), -q, q).astype(np.result_type(a, b), copy=False)
    return out


def _div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    if a.dtype.kind in "iu" and np.asarray(b).dtype.kind in "iu":
        return _int_div(a, b)
    out: np.ndarray = np.divide(a, b)
    return out


def binary_infer(op: OpInfo, ins: list[TensorInfo]) -> list[TensorInfo]:
    """Shape/dtype of a broadcasting binary op (output dtype = A's)."""
    a, b = ins[0], ins[1]
    if op.bool_arg("broadcast", 0):
        if a.shape is not None and b.shape is not None:
            legacy_shape(op, a.shape, b.shape)
        return [TensorInfo(a.shape, a.dtype)]
    try:
        shape = broadcast_shapes(a.shape, b.shape)
    except Exception as e:
        raise ShapeInferenceError(f"{op.label()}: inputs {a} and {b}: {e}") from e
    return [TensorInfo(shape, a.dtype)]


def binary_kernel(fn: Callable[[Any, Any], Any]) -> Callable[[OpInfo], Callable[..., Any]]:
    """Kernel factory for a broadcasting binary op whose output keeps A's dtype."""

    def factory(op: OpInfo) -> Callable[..., Any]:
        if op.bool_arg("broadcast", 0):

            def run_legacy(a: Any, b: Any) -> tuple[np.ndarray]:
                a = np.asarray(a)
                b = np.asarray(b)
                b = b.reshape(legacy_shape(op, a.shape, b.shape))
                return (np.asarray(fn(a, b)).astype(a.dtype, copy=False),)

            return run_legacy

        def run(a: Any, b: Any) -> tuple[np.ndarray]:
            r = fn(a, b)
            # Fast path (the common case, and the one per-op overhead is measured on): an array of A's dtype.
            if type(r) is np.ndarray and r.dtype is getattr(a, "dtype", None):
                return (r,)
            a = np.asarray(a)
            return (np.asarray(r).astype(a.dtype, copy=False),)

        return run

    return factory


for _name, _fn in (("Add", np.add), ("Sub", np.subtract), ("Mul", np.multiply), ("Div", _div)):
    register_op(
        _name,
        inputs=2,
        outputs=1,
        allow_inplace=[(0, 0), (1, 0)],
        args=BROADCAST_ARGS,
        infer=binary_infer,
        doc=f"Elementwise {_name} of A and B with numpy broadcasting, or Caffe2's legacy "
        "`broadcast=1` rule (B matched into A at `axis`). Output has A's dtype.",
        input_names=("A", "B"),
        output_names=("C",),
    )(binary_kernel(_fn))


def _sum_infer(op: OpInfo, ins: list[TensorInfo]) -> list[TensorInfo]:
    shape = ins[0].shape
    for t in ins[1:]:
        if shape is not None and t.shape is not None and len(shape) == len(t.shape):
            for x, y in zip(shape, t.shape):
                if x is not None and y is not None and x != y:
                    raise ShapeInferenceError(f"{op.label()}: inputs have different shapes {ins[0]} and {t}")
    return [TensorInfo(shape, ins[0].dtype)]


@register_op(
    "Sum",
    inputs=(1, -1),
    outputs=1,
    allow_inplace=lambda i, o: o == 0,
    infer=_sum_infer,
    doc="Elementwise sum of any number of inputs of one shape.",
)
def sum_op(op: OpInfo) -> Callable[..., Any]:
    def run(*xs: Any) -> tuple[np.ndarray]:
        first = np.asarray(xs[0])
        for x in xs[1:]:
            if np.shape(x) != first.shape:
                raise ArgumentError(f"Sum inputs must have one shape: {first.shape} vs {np.shape(x)}")
        if len(xs) == 1:
            return (first.copy(),)
        out = np.asarray(np.add(first, xs[1]))
        for x in xs[2:]:
            np.add(out, x, out=out)
        return (out.astype(first.dtype, copy=False),)

    return run


def _nary_infer(op: OpInfo, ins: list[TensorInfo]) -> list[TensorInfo]:
    shape = ins[0].shape
    try:
        for t in ins[1:]:
            shape = broadcast_shapes(shape, t.shape)
    except Exception as e:
        raise ShapeInferenceError(f"{op.label()}: inputs {', '.join(map(str, ins))} do not broadcast: {e}") from e
    return [TensorInfo(shape, ins[0].dtype)]


@register_op(
    "Mean",
    inputs=(1, -1),
    outputs=1,
    allow_inplace=lambda i, o: o == 0,
    infer=_sum_infer,
    doc="Elementwise mean of any number of inputs of one shape.",
)
def mean_op(op: OpInfo) -> Callable[..., Any]:
    def run(*xs: Any) -> tuple[np.ndarray]:
        first = np.asarray(xs[0])
        out = first.astype(np.result_type(first.dtype, np.float32) if first.dtype.kind != "f" else first.dtype)
        for x in xs[1:]:
            if np.shape(x) != first.shape:
                raise ArgumentError(f"Mean inputs must have one shape: {first.shape} vs {np.shape(x)}")
            out = out + x
        out = out / len(xs)
        return (out.astype(first.dtype, copy=False),)

    return run


def _nary_kernel(fn: Callable[[Any, Any], Any]) -> Callable[[OpInfo], Callable[..., Any]]:
    def factory(op: OpInfo) -> Callable[..., Any]:
        def run(*xs: Any) -> tuple[np.ndarray]:
            first = np.asarray(xs[0])
            out = first
            for x in xs[1:]:
                out = fn(out, x)
            if len(xs) == 1:
                return (first.copy(),)
            return (np.asarray(out).astype(first.dtype, copy=False),)

        return run

    return factory


for _mm_name, _mm_fn in (("Max", np.maximum), ("Min", np.minimum)):
    register_op(
        _mm_name,
        inputs=(1, -1),
        outputs=1,
        allow_inplace=lambda i, o: o == 0,
        infer=_nary_infer,
        doc=f"Elementwise {_mm_name.lower()}imum of any number of inputs (numpy broadcasting).",
    )(_nary_kernel(_mm_fn))


@register_op(
    "SquareRootDivide",
    inputs=2,
    outputs=1,
    allow_inplace=[(0, 0)],
    infer=lambda op, ins: [ins[0]],
    doc="Divide each row i of `data` (N, ...) by sqrt(scale[i]); rows with scale 0 are kept as they are.",
    input_names=("data", "scale"),
    output_names=("result",),
)
def square_root_divide(op: OpInfo) -> Callable[..., Any]:
    def run(data: Any, scale: Any) -> tuple[np.ndarray]:
        data, scale = np.asarray(data), np.asarray(scale)
        n = data.shape[0] if data.ndim else 1
        if scale.size != n:
            raise ArgumentError(f"{op.label()}: scale has {scale.size} values for {n} rows of data {data.shape}")
        s = scale.reshape(-1).astype(data.dtype)
        factor = np.ones_like(s)
        nz = s != 0
        factor[nz] = 1 / np.sqrt(s[nz])
        out = data * factor.reshape((n,) + (1,) * max(data.ndim - 1, 0))
        return (out.reshape(data.shape).astype(data.dtype, copy=False),)

    return run
