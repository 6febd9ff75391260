"""More fill ops: UniformIntFill, UniqueUniformFill, DiagonalFill, Float16UniformFill,
GivenTensorByteStringToUInt8Fill, Range."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from asyncnet.errors import ArgumentError
from asyncnet.opinfo import OpInfo
from asyncnet.ops._util import info, prod, rng_for
from asyncnet.ops.fill import _register_fill, _runtime_shape, empty_rows, uniform_bounds
from asyncnet.registry import register_op
from asyncnet.schema import Arg, TensorInfo
from asyncnet.serde import numpy_dtype


def _check_bounds(op: OpInfo, lo: float, hi: float) -> None:
    """A uniform fill's ``min`` must not be above its ``max``."""
    if lo > hi:
        raise ArgumentError(f"{op.label()}: min {lo} is above max {hi}")


@_register_fill(
    "UniformIntFill",
    (Arg("min", 0, "lowest value"), Arg("max", 1, "highest value (inclusive)")),
    lambda op: np.int32,
    "Uniform random int32 values in [min, max]. Inputs: none, a shape, or (shape, min, max) with one-value "
    "min and max tensors; then min > max gives an empty dim 0 (Caffe2).",
    bounds_inputs=True,
)
def uniform_int_fill(op: OpInfo) -> Callable[..., Any]:
    lo0, hi0 = op.int_arg("min"), op.int_arg("max")
    if len(op.inputs) != 3:
        _check_bounds(op, lo0, hi0)
    rng = rng_for(op)

    def run(*ins: Any) -> tuple[np.ndarray]:
        lo, hi, shape_in = uniform_bounds(op, ins, lo0, hi0)
        shape = _runtime_shape(op, shape_in)
        if lo > hi:
            return (np.zeros(empty_rows(shape), np.int32),)
        return (rng.integers(int(lo), int(hi), size=shape, endpoint=True).astype(np.int32),)

    return run


@_register_fill(
    "Float16UniformFill",
    (Arg("min", 0.0, "lowest value"), Arg("max", 1.0, "highest value")),
    lambda op: np.float16,
    "Uniform random float16 values in [min, max].",
)
def float16_uniform_fill(op: OpInfo) -> Callable[..., Any]:
    lo, hi = op.float_arg("min"), op.float_arg("max")
    _check_bounds(op, lo, hi)
    rng = rng_for(op)
    return lambda *ins: (rng.uniform(lo, hi, size=_runtime_shape(op, ins)).astype(np.float16),)


def _diag_dtype(op: OpInfo) -> Any:
    return numpy_dtype(op.int_arg("dtype")) if op.has("dtype") else np.float32


@_register_fill(
    "DiagonalFill",
    (Arg("value", 0.0, "the diagonal value"), Arg("dtype", 1, "output data type")),
    _diag_dtype,
    "Zeros with `value` on the main diagonal (the positions whose indices are all equal); rank >= 2.",
)
def diagonal_fill(op: OpInfo) -> Callable[..., Any]:
    dtype = np.dtype(_diag_dtype(op))
    value = op.arg("value", 0.0)

    def run(*ins: Any) -> tuple[np.ndarray]:
        shape = _runtime_shape(op, ins)
        if len(shape) < 2:
            raise ArgumentError(f"{op.label()}: DiagonalFill needs rank >= 2, got shape {shape}")
        out = np.zeros(shape, dtype)
        n = min(shape)
        out[tuple(np.arange(n) for _ in shape)] = value
        return (out,)

    return run


def _unique_infer(op: OpInfo, ins: list[TensorInfo]) -> list[TensorInfo]:
    dt = numpy_dtype(op.int_arg("dtype", 2))
    if op.bool_arg("input_as_shape", 0) or not ins:
        return [info(tuple(op.ints_arg("shape")) if not ins else None, dt)]
    return [info(ins[0].shape, dt)]


@register_op(
    "UniqueUniformFill",
    inputs=(0, 2),
    allow_inplace=[(0, 0)],
    args=(
        Arg("min", 0, "lowest value"),
        Arg("max", 0, "highest value (inclusive)"),
        Arg("dtype", 2, "INT32 (2) or INT64 (10)"),
        Arg("shape", [], "output shape (when there is no input)"),
        Arg("extra_shape", [], "dims appended to the input's shape"),
        Arg("input_as_shape", 0, "read the output shape from the values of input 0"),
    ),
    infer=_unique_infer,
    doc="Distinct random integers from [min, max], none of them in the optional input 1 (values to avoid).",
    input_names=("shape_or_like", "avoid"),
    output_names=("output",),
)
def unique_uniform_fill(op: OpInfo) -> Callable[..., Any]:
    lo, hi = op.int_arg("min"), op.int_arg("max")
    dtype = numpy_dtype(op.int_arg("dtype"))
    if dtype not in (np.dtype(np.int32), np.dtype(np.int64)):
        raise ArgumentError(f"{op.label()}: dtype must be INT32 or INT64, got {dtype}")
    rng = rng_for(op)

    def run(*ins: Any) -> tuple[np.ndarray]:
        shape = _runtime_shape(op, ins[:1])
        avoid = set(np.asarray(ins[1]).reshape(-1).tolist()) if len(ins) > 1 else set()
        pool = np.array([v for v in range(lo, hi + 1) if v not in avoid], dtype=np.int64)
        n = prod(shape)
        if n > pool.size:
            raise ArgumentError(f"{op.label()}: {n} distinct values requested, only {pool.size} available")
        return (rng.choice(pool, size=n, replace=False).reshape(shape).astype(dtype),)

    return run


@_register_fill(
    "GivenTensorByteStringToUInt8Fill",
    (Arg("values", b"", "the bytes, as one string"),),
    lambda op: np.uint8,
    "Fill a uint8 tensor with the bytes of the `values` string.",
)
def given_byte_string_fill(op: OpInfo) -> Callable[..., Any]:
    raw = op.arg("values", b"")
    if isinstance(raw, (list, tuple)):
        raw = b"".join(v if isinstance(v, bytes) else str(v).encode("utf-8") for v in raw)
    data = np.frombuffer(raw if isinstance(raw, bytes) else str(raw).encode("utf-8"), dtype=np.uint8)

    def run(*ins: Any) -> tuple[np.ndarray]:
        shape = _runtime_shape(op, ins)
        if prod(shape) != data.size:
            raise ArgumentError(f"{op.label()}: {data.size} bytes given for shape {list(shape)}")
        return (data.reshape(shape).copy(),)

    return run


@register_op(
    "Range",
    inputs=(1, 3),
    infer=lambda op, ins: [TensorInfo((None,), ins[0].dtype)],
    doc="A 1-D range from scalar inputs: (stop), (start, stop) or (start, stop, step), in their dtype.",
    input_names=("start", "stop", "step"),
    output_names=("output",),
)
def range_op(op: OpInfo) -> Callable[..., Any]:
    def run(*ins: Any) -> tuple[np.ndarray]:
        vals = [np.asarray(v) for v in ins]
        if any(v.size != 1 for v in vals):
            raise ArgumentError(f"{op.label()}: every input must hold one value")
        dt = vals[0].dtype
        nums = [v.reshape(-1)[0] for v in vals]
        start, stop, step = (0, nums[0], 1) if len(nums) == 1 else (nums[0], nums[1], nums[2] if len(nums) > 2 else 1)
        if step == 0:
            raise ArgumentError(f"{op.label()}: Step size cannot be 0")
        return (np.arange(start, stop, step).astype(dt),)

    return run
