"""Quantized uint8 ops (Caffe2's Int8* family, as run by QNNPACK): NHWC images of Int8Tensor.

Each op computes in real numbers and requantizes: the integer accumulator of a
Conv/FC, ``sum((x - x_zp) * (w - w_zp)) + bias``, is exact (float64 holds it), then
scaled by ``x_scale * w_scale / Y_scale``, rounded half to even, offset by
``Y_zero_point`` and saturated to [0, 255] (ReLU variants saturate at the zero
point). QNNPACK's fixed-point multiplier can differ from this by one step on exact
halves.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from asyncnet.errors import ArgumentError, TensorError
from asyncnet.opinfo import OpInfo
from asyncnet.ops import _conv_util as cu
from asyncnet.ops._util import info
from asyncnet.qtensor import Int8Tensor
from asyncnet.registry import register_op
from asyncnet.schema import Arg, TensorInfo, same_as_input

U8 = np.dtype(np.uint8)
QUANT_ARGS = (
    Arg("Y_scale", 1.0, "output quantization scale"),
    Arg("Y_zero_point", 0, "output quantization zero point"),
)
NHWC_ARG = Arg("order", "NHWC", "storage order; only NHWC is supported")


def _q(op: OpInfo) -> tuple[float, int]:
    scale = op.float_arg("Y_scale")
    zp = op.int_arg("Y_zero_point")
    if not scale > 0:
        raise ArgumentError(f"{op.label()}: Y_scale must be positive, got {scale}")
    if not 0 <= zp <= 255:
        raise ArgumentError(f"{op.label()}: Y_zero_point must be in [0, 255], got {zp}")
    return scale, zp


def _nhwc(op: OpInfo) -> None:
    order = str(op.arg("order", "NHWC")).upper()
    if order != "NHWC":
        raise ArgumentError(f"{op.label()}: int8 ops support order NHWC only, got '{order}'")


def _int8(op: OpInfo, name: str, v: Any) -> Int8Tensor:
    if not isinstance(v, Int8Tensor):
        raise TensorError(f"{op.label()}: input '{name}' must be an Int8Tensor, got {type(v).__name__}")
    return v


def requantize(acc: np.ndarray, multiplier: float, zero_point: int, *, relu: bool = False) -> np.ndarray:
    """uint8 from an accumulator in units of ``1 / multiplier`` output steps."""
    q = np.rint(acc * multiplier) + zero_point
    out: np.ndarray = np.clip(q, zero_point if relu else 0, 255).astype(np.uint8)
    return out


def centered(t: Int8Tensor) -> np.ndarray:
    """``data - zero_point`` as float64 (exact for any accumulation of uint8 products)."""
    out: np.ndarray = t.data.astype(np.float64) - float(t.zero_point)
    return out


def _quantized_infer(dtype: Any = U8) -> Callable[[OpInfo, list[TensorInfo]], list[TensorInfo]]:
    def infer(op: OpInfo, ins: list[TensorInfo]) -> list[TensorInfo]:
        return [ins[0].with_dtype(dtype)]

    return infer


# ---------------------------------------------------------------------------
# Fills, quantize, dequantize


def _fill_infer(dtype: Any) -> Callable[[OpInfo, list[TensorInfo]], list[TensorInfo]]:
    def infer(op: OpInfo, ins: list[TensorInfo]) -> list[TensorInfo]:
        return [info(op.ints_arg("shape"), dtype)]

    return infer


def _given_values(op: OpInfo, as_int32: bool) -> np.ndarray:
    raw = op.arg("values")
    if as_int32:
        vals = raw if isinstance(raw, list) else [raw]
        return np.asarray(vals, dtype=np.int32)
    if isinstance(raw, str):
        # The argument reader decodes byte strings that happen to be valid UTF-8.
        raw = raw.encode("utf-8")
    if not isinstance(raw, bytes):
        raise ArgumentError(f"{op.label()}: 'values' must be a byte string, got {type(raw).__name__}")
    out: np.ndarray = np.frombuffer(raw, dtype=np.uint8).copy()
    return out


def _given_fill(op_type: str, as_int32: bool, doc: str) -> None:
    def factory(op: OpInfo) -> Callable[..., Any]:
        scale, zp = op.float_arg("Y_scale"), op.int_arg("Y_zero_point")
        shape = tuple(op.ints_arg("shape"))
        data = _given_values(op, as_int32)
        n = int(np.prod(shape, dtype=np.int64))
        if data.size != n:
            raise ArgumentError(f"{op.label()}: 'values' has {data.size} values but shape {list(shape)} needs {n}")
        data = data.reshape(shape)

        def run() -> tuple[Int8Tensor]:
            return (Int8Tensor(data.copy(), scale, zp),)

        return run

    register_op(
        op_type,
        inputs=0,
        outputs=1,
        args=(
            Arg("values", [], "the values (a byte string of uint8, or int32 integers)"),
            Arg("shape", [], "output shape"),
            *QUANT_ARGS,
        ),
        infer=_fill_infer(np.int32 if as_int32 else U8),
        doc=doc,
    )(factory)


_given_fill("Int8GivenTensorFill", False, "Int8Tensor of uint8 `values` (a byte string) with Y_scale/Y_zero_point.")
_given_fill("Int8GivenIntTensorFill", True, "Int8Tensor of int32 `values` (quantized biases).")


@register_op(
    "Int8Quantize",
    inputs=(1, 3),
    outputs=1,
    args=(*QUANT_ARGS, NHWC_ARG),
    infer=_quantized_infer(),
    doc="Y = uint8 quantization of float X with Y_scale and Y_zero_point (round half to even, saturate).",
)
def int8_quantize(op: OpInfo) -> Callable[..., Any]:
    scale, zp = _q(op)

    def run(x: Any, *rest: Any) -> tuple[Int8Tensor]:
        return (Int8Tensor.quantize(x, scale, zp),)

    return run


@register_op(
    "Int8Dequantize",
    inputs=1,
    outputs=1,
    args=(NHWC_ARG,),
    infer=_quantized_infer(np.float32),
    doc="Y = (X - zero_point) * scale as float32.",
)
def int8_dequantize(op: OpInfo) -> Callable[..., Any]:
    return lambda x: (_int8(op, "X", x).dequantize(),)


# ---------------------------------------------------------------------------
# Elementwise, pooling, softmax, resize


def _sum_factory(relu: bool) -> Callable[[OpInfo], Callable[..., Any]]:
    def factory(op: OpInfo) -> Callable[..., Any]:
        scale, zp = _q(op)

        def run(*xs: Any) -> tuple[Int8Tensor]:
            qs = [_int8(op, f"input {i}", x) for i, x in enumerate(xs)]
            if any(q.shape != qs[0].shape for q in qs):
                raise TensorError(f"{op.label()}: inputs must have equal shapes, got {[q.shape for q in qs]}")
            total = sum((centered(q) * q.scale for q in qs), np.zeros(qs[0].shape))
            return (Int8Tensor(requantize(total, 1.0 / scale, zp, relu=relu), scale, zp),)

        return run

    return factory


for _name, _relu in (("Int8Sum", False), ("Int8SumRelu", True), ("Int8Add", False), ("Int8AddRelu", True)):
    register_op(
        _name,
        inputs=(1, -1) if "Sum" in _name else 2,
        outputs=1,
        allow_inplace=[(0, 0)],
        args=(*QUANT_ARGS, NHWC_ARG),
        infer=_quantized_infer(),
        doc="Quantized elementwise sum of equal-shape inputs" + (", then ReLU." if _relu else "."),
    )(_sum_factory(_relu))


@register_op(
    "Int8Relu",
    inputs=1,
    outputs=1,
    allow_inplace=[(0, 0)],
    args=(*QUANT_ARGS, NHWC_ARG),
    infer=same_as_input(),
    doc="Quantized ReLU: Y = max(X, zero_point), same scale and zero point as X.",
)
def int8_relu(op: OpInfo) -> Callable[..., Any]:
    def run(x: Any) -> tuple[Int8Tensor]:
        q = _int8(op, "X", x)
        return (Int8Tensor(np.maximum(q.data, np.uint8(q.zero_point)), q.scale, q.zero_point),)

    return run


def _pool_infer(op: OpInfo, ins: list[TensorInfo]) -> list[TensorInfo]:
    x = ins[0].shape
    if x is None or len(x) != 4:
        return [TensorInfo(None, U8)]
    sp = cu.WindowArgs.parse(op, pooling=True).infer_spatial(x[1:3])
    return [info((x[0], *sp, x[3]), U8)]


_POOL_ARGS_NO_ORDER = tuple(a for a in cu.POOL_ARGS if a.name != "order")


@register_op(
    "Int8AveragePool",
    inputs=1,
    outputs=1,
    args=(*_POOL_ARGS_NO_ORDER, NHWC_ARG, *QUANT_ARGS),
    infer=_pool_infer,
    doc="Quantized average pooling (NHWC), requantized to Y_scale / Y_zero_point.",
)
def int8_average_pool(op: OpInfo) -> Callable[..., Any]:
    _nhwc(op)
    scale, zp = _q(op)
    args = cu.WindowArgs.parse(op, pooling=True)

    def run(x: Any) -> tuple[Int8Tensor]:
        q = _int8(op, "X", x)
        win = args.resolve(q.shape[1:3])
        avg = cu.average_pool(centered(q) * q.scale, win, "NHWC", count_include_pad=True)
        return (Int8Tensor(requantize(avg, 1.0 / scale, zp), scale, zp),)

    return run


@register_op(
    "Int8MaxPool",
    inputs=1,
    outputs=1,
    args=(*_POOL_ARGS_NO_ORDER, NHWC_ARG, *QUANT_ARGS),
    infer=_pool_infer,
    doc="Quantized max pooling (NHWC); keeps the input's scale and zero point.",
)
def int8_max_pool(op: OpInfo) -> Callable[..., Any]:
    _nhwc(op)
    args = cu.WindowArgs.parse(op, pooling=True)

    def run(x: Any) -> tuple[Int8Tensor]:
        q = _int8(op, "X", x)
        win = args.resolve(q.shape[1:3])
        return (Int8Tensor(cu.max_pool(q.data, win, "NHWC"), q.scale, q.zero_point),)

    return run


@register_op(
    "Int8Softmax",
    inputs=1,
    outputs=1,
    args=(*QUANT_ARGS, NHWC_ARG),
    infer=_quantized_infer(),
    doc="Quantized softmax over the last axis (Caffe2 uses Y_scale 1/256, Y_zero_point 0).",
)
def int8_softmax(op: OpInfo) -> Callable[..., Any]:
    scale, zp = _q(op)

    def run(x: Any) -> tuple[Int8Tensor]:
        q = _int8(op, "X", x)
        v = centered(q) * q.scale
        e = np.exp(v - v.max(axis=-1, keepdims=True))
        p = e / e.sum(axis=-1, keepdims=True)
        return (Int8Tensor(requantize(p, 1.0 / scale, zp), scale, zp),)

    return run


def _resize_infer(op: OpInfo, ins: list[TensorInfo]) -> list[TensorInfo]:
    x = ins[0].shape
    if x is None or len(x) != 4:
        return [TensorInfo(None, U8)]
    hs, ws = op.float_arg("height_scale"), op.float_arg("width_scale")
    h = None if x[1] is None else int(x[1] * hs)
    w = None if x[2] is None else int(x[2] * ws)
    return [info((x[0], h, w, x[3]), U8)]


@register_op(
    "Int8ResizeNearest",
    inputs=1,
    outputs=1,
    args=(
        Arg("width_scale", 1.0, "output width / input width"),
        Arg("height_scale", 1.0, "output height / input height"),
        *QUANT_ARGS,
        NHWC_ARG,
    ),
    infer=_resize_infer,
    doc="Nearest-neighbour resize of a quantized NHWC image; keeps scale and zero point.",
)
def int8_resize_nearest(op: OpInfo) -> Callable[..., Any]:
    hs, ws = op.float_arg("height_scale"), op.float_arg("width_scale")
    if not (hs > 0 and ws > 0):
        raise ArgumentError(f"{op.label()}: width_scale and height_scale must be positive, got {ws} and {hs}")

    def run(x: Any) -> tuple[Int8Tensor]:
        q = _int8(op, "X", x)
        if q.ndim != 4:
            raise TensorError(f"{op.label()}: expected X (N, H, W, C), got {q.shape}")
        _, ih, iw, _ = q.shape
        oh, ow = int(ih * hs), int(iw * ws)
        ys = np.minimum((np.arange(oh) / hs).astype(np.int64), ih - 1)
        xs = np.minimum((np.arange(ow) / ws).astype(np.int64), iw - 1)
        return (Int8Tensor(q.data[:, ys][:, :, xs].copy(), q.scale, q.zero_point),)

    return run
