"""Fill operators: ConstantFill, GivenTensor*Fill, Uniform/Gaussian/Xavier/MSRA fills."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from asyncnet.errors import ArgumentError
from asyncnet.opinfo import OpInfo
from asyncnet.ops._util import info, prod, rng_for
from asyncnet.registry import KernelFactory, register_op
from asyncnet.schema import Arg, TensorInfo
from asyncnet.serde import checked_numel, numpy_dtype

SHAPE_ARGS = (
    Arg("shape", [], "output shape (when there is no input)"),
    Arg("extra_shape", [], "dims appended to the input's shape"),
    Arg("input_as_shape", 0, "read the output shape from the values of input 0"),
)


def _shape_arg(op: OpInfo) -> tuple[int, ...]:
    """The `shape` argument, which Caffe2 read as a repeated argument: a single integer is refused."""
    v = op.arg("shape", [])
    if isinstance(v, int):
        raise ArgumentError(f"{op.label()}: shape must be a list of integers (e.g. shape=[{v}]), got the integer {v}")
    return tuple(op.ints_arg("shape"))


def _static_shape(op: OpInfo, in_shape: tuple[int | None, ...] | None) -> tuple[int | None, ...] | None:
    """Output shape known without running, or None."""
    if not op.inputs:
        return _shape_arg(op)
    if op.bool_arg("input_as_shape", 0):
        return None
    if in_shape is None:
        return None
    return tuple(in_shape) + tuple(op.ints_arg("extra_shape"))


def _runtime_shape(op: OpInfo, inputs: tuple[Any, ...]) -> tuple[int, ...]:
    if not inputs:
        shape = _shape_arg(op)
    elif op.bool_arg("input_as_shape", 0):
        src = np.asarray(inputs[0])
        if src.ndim != 1:
            raise ArgumentError(f"{op.label()}: input_as_shape needs a 1-D shape tensor, got shape {src.shape}")
        shape = tuple(int(v) for v in src)
    else:
        shape = tuple(np.shape(inputs[0])) + tuple(op.ints_arg("extra_shape"))
    checked_numel(shape, f"{op.label()} output")
    return shape


def _fill_infer(dtype_of: Callable[[OpInfo], Any]) -> Callable[[OpInfo, list[TensorInfo]], list[TensorInfo]]:
    def infer(op: OpInfo, ins: list[TensorInfo]) -> list[TensorInfo]:
        shape = _static_shape(op, ins[0].shape if ins else None)
        if shape is not None and len(ins) == 3 and shape:
            # Bounds from inputs: min > max empties dim 0 at run time.
            shape = (None, *shape[1:])
        return [info(shape, dtype_of(op))]

    return infer


def _register_fill(
    op_type: str, args: tuple[Arg, ...], dtype_of: Callable[[OpInfo], Any], doc: str, bounds_inputs: bool = False
) -> Callable[[KernelFactory], KernelFactory]:
    """``register_op`` for a fill op: no input, or one giving the shape (and writable in place); ``args`` + SHAPE_ARGS.

    ``bounds_inputs``: the uniform fills also take (shape, min, max) as three inputs, as in Caffe2.
    """
    return register_op(
        op_type,
        inputs=(0, 3) if bounds_inputs else (0, 1),
        arity=(lambda i, o: i != 2) if bounds_inputs else None,
        arity_doc="no input, a shape input, or shape, min and max inputs" if bounds_inputs else "",
        outputs=1,
        allow_inplace=[(0, 0)],
        args=(*args, *SHAPE_ARGS),
        infer=_fill_infer(dtype_of),
        doc=doc,
    )


def uniform_bounds(op: OpInfo, inputs: tuple[Any, ...], lo: Any, hi: Any) -> tuple[Any, Any, tuple[Any, ...]]:
    """(min, max, shape inputs) of a uniform fill: with three inputs, min and max are one-value tensors."""
    if len(inputs) != 3:
        return lo, hi, inputs
    vals = []
    for name, t in (("min", inputs[1]), ("max", inputs[2])):
        a = np.asarray(t)
        if a.size != 1:
            raise ArgumentError(f"{op.label()}: the {name} input must hold one value, got shape {a.shape}")
        vals.append(a.reshape(-1)[0].item())
    return vals[0], vals[1], inputs[:1]


def empty_rows(shape: tuple[int, ...]) -> tuple[int, ...]:
    """Caffe2's uniform fills with min > max from inputs give dim 0 size 0."""
    return (0, *shape[1:]) if shape else shape


def _constant_dtype(op: OpInfo) -> np.dtype[Any]:
    if op.has("dtype"):
        return numpy_dtype(op.int_arg("dtype"))
    value = op.arg("value", 0.0)
    if isinstance(value, int) and not isinstance(value, bool):
        return np.dtype(np.int64)
    if isinstance(value, str):
        return np.dtype(object)
    return np.dtype(np.float32)


@_register_fill(
    "ConstantFill",
    (
        Arg("value", 0.0, "fill value"),
        Arg("dtype", 1, "TensorProto.DataType of the output (default: from the value's type)"),
    ),
    _constant_dtype,
    "Fill a tensor with one value; shape from `shape`, or input 0 (+`extra_shape`), or its values.",
)
def constant_fill(op: OpInfo) -> Callable[..., Any]:
    dtype = _constant_dtype(op)
    value = op.arg("value", 0.0)

    def run(*inputs: Any) -> tuple[np.ndarray]:
        return (np.full(_runtime_shape(op, inputs), value, dtype=dtype),)

    return run


def _given(op_type: str, dtype: Any, doc: str, convert: Callable[[list[Any]], np.ndarray] | None = None) -> None:
    def dtype_of(op: OpInfo) -> Any:
        if op_type == "GivenTensorFill" and op.has("dtype"):
            return numpy_dtype(op.int_arg("dtype"))
        return dtype

    def factory(op: OpInfo) -> Callable[..., Any]:
        raw = op.arg("values")
        values = list(raw) if isinstance(raw, (list, tuple)) else [raw]
        out_dtype = dtype_of(op)
        arr = convert(values) if convert is not None else np.asarray(values, dtype=out_dtype)
        static = None if op.inputs else tuple(op.ints_arg("shape"))
        if static is not None:
            n = checked_numel(static, f"{op.label()} output")
            if n != arr.size:
                raise ArgumentError(f"{op.label()}: 'values' has {arr.size} values but shape {list(static)} needs {n}")
            arr = arr.reshape(static)
            arr.flags.writeable = False

        def run(*inputs: Any) -> tuple[np.ndarray]:
            if static is not None:
                # Hand out a fresh array each run: downstream in-place ops may write to it.
                return (arr.copy(),)
            shape = _runtime_shape(op, inputs)
            if prod(shape) != arr.size:
                raise ArgumentError(
                    f"{op.label()}: 'values' has {arr.size} values but shape {list(shape)} needs {prod(shape)}"
                )
            return (arr.reshape(shape).copy(),)

        return run

    _register_fill(
        op_type,
        (Arg("values", [], "the values, row-major"), Arg("dtype", 1, "output data type (GivenTensorFill)")),
        dtype_of,
        doc,
    )(factory)


def _strings(values: list[Any]) -> np.ndarray:
    out = np.empty(len(values), dtype=object)
    out[:] = [v.encode("utf-8") if isinstance(v, str) else v for v in values]
    return out


_given("GivenTensorFill", np.float32, "Fill a float tensor with the given `values`.")
_given("GivenTensorDoubleFill", np.float64, "Fill a double tensor with the given `values`.")
_given("GivenTensorIntFill", np.int32, "Fill an int32 tensor with the given `values`.")
_given("GivenTensorInt16Fill", np.int16, "Fill an int16 tensor with the given `values`.")
_given("GivenTensorInt64Fill", np.int64, "Fill an int64 tensor with the given `values`.")
_given("GivenTensorBoolFill", np.bool_, "Fill a bool tensor with the given `values`.")
_given("GivenTensorStringFill", object, "Fill a string tensor with the given `values` (bytes).", _strings)


def _random_fill(
    op_type: str,
    extra_args: tuple[Arg, ...],
    sample: Callable[[OpInfo, np.random.Generator, tuple[int, ...]], np.ndarray],
    doc: str,
) -> None:
    def factory(op: OpInfo) -> Callable[..., Any]:
        rng = rng_for(op)
        dtype = numpy_dtype(op.int_arg("dtype", 1)) if op.has("dtype") else np.dtype(np.float32)

        def run(*inputs: Any) -> tuple[np.ndarray]:
            shape = _runtime_shape(op, inputs)
            return (sample(op, rng, shape).astype(dtype, copy=False),)

        return run

    _register_fill(
        op_type,
        (*extra_args, Arg("dtype", 1, "output data type")),
        lambda op: numpy_dtype(op.int_arg("dtype", 1)) if op.has("dtype") else np.float32,
        doc,
    )(factory)


def _fan(shape: tuple[int, ...], axis: int, op: OpInfo) -> int:
    if len(shape) <= axis or shape[axis] == 0:
        raise ArgumentError(f"{op.label()}: needs a shape with a non-zero dim {axis}, got {list(shape)}")
    return max(prod(shape) // shape[axis], 1)


def _uniform_dtype(op: OpInfo) -> Any:
    return numpy_dtype(op.int_arg("dtype", 1)) if op.has("dtype") else np.float32


@_register_fill(
    "UniformFill",
    (Arg("min", 0.0, "lower bound"), Arg("max", 1.0, "upper bound"), Arg("dtype", 1, "output data type")),
    _uniform_dtype,
    "Uniform random values in [min, max]. Inputs: none, a shape, or (shape, min, max) with one-value min "
    "and max tensors; then min > max gives an empty dim 0 (Caffe2).",
    bounds_inputs=True,
)
def uniform_fill(op: OpInfo) -> Callable[..., Any]:
    rng = rng_for(op)
    dtype = np.dtype(_uniform_dtype(op))
    lo0, hi0 = op.float_arg("min"), op.float_arg("max")

    def run(*inputs: Any) -> tuple[np.ndarray]:
        lo, hi, shape_in = uniform_bounds(op, inputs, lo0, hi0)
        shape = _runtime_shape(op, shape_in)
        if lo > hi:
            return (np.zeros(empty_rows(shape), dtype),)
        return (rng.uniform(float(lo), float(hi), size=shape).astype(dtype, copy=False),)

    return run


_random_fill(
    "GaussianFill",
    (Arg("mean", 0.0, "mean"), Arg("std", 1.0, "standard deviation")),
    lambda op, rng, shape: rng.normal(op.float_arg("mean"), op.float_arg("std"), size=shape),
    "Normal random values with `mean` and `std`.",
)
_random_fill(
    "XavierFill",
    (),
    lambda op, rng, shape: rng.uniform(-1, 1, size=shape) * math.sqrt(3.0 / _fan(shape, 0, op)),
    "Uniform in +-sqrt(3 / fan_in), fan_in = size / shape[0] (Caffe2's Xavier).",
)
_random_fill(
    "MSRAFill",
    (),
    lambda op, rng, shape: rng.normal(0.0, math.sqrt(2.0 / _fan(shape, 1, op)), size=shape),
    "Normal with std sqrt(2 / fan_out), fan_out = size / shape[1] (Caffe2's MSRA).",
)
