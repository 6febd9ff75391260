"""Quantized convolution and FC (Int8Conv, Int8ConvRelu, Int8ConvTranspose, Int8FC); see ``int8.py``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from asyncnet.errors import TensorError
from asyncnet.opinfo import OpInfo
from asyncnet.ops import _conv_util as cu
from asyncnet.ops._util import info
from asyncnet.ops.int8 import NHWC_ARG, QUANT_ARGS, U8, _int8, _nhwc, _q, centered, requantize
from asyncnet.qtensor import Int8Tensor
from asyncnet.registry import register_op
from asyncnet.schema import Arg, TensorInfo

# ---------------------------------------------------------------------------
# Convolution and FC


def _conv_infer(transpose: bool) -> Callable[[OpInfo, list[TensorInfo]], list[TensorInfo]]:
    def infer(op: OpInfo, ins: list[TensorInfo]) -> list[TensorInfo]:
        x, w = ins[0].shape, ins[1].shape
        if x is None or len(x) != 4:
            return [TensorInfo(None, U8)]
        m = None if w is None else (w[-1] * op.int_arg("group", 1) if transpose and w[-1] is not None else w[0])
        if transpose:
            if w is None:
                return [info((x[0], None, None, m), U8)]
            args = cu.WindowArgs.parse(op, dilation=False)
            k = args._expand("kernel", args.kernel, 2, 1) if args.kernel is not None else tuple(w[1:3])
            s = args._expand("stride", args.stride, 2, 1)
            pads = _pads(args)
            adj = _adj(op)
            sp = tuple(
                None if d is None or kk is None else (d - 1) * st + kk - pads[i] - pads[2 + i] + adj[i]
                for i, (d, kk, st) in enumerate(zip(x[1:3], k, s))
            )
            return [info((x[0], *sp, m), U8)]
        args = cu.WindowArgs.parse(op)
        sp = args.infer_spatial(x[1:3], None if w is None else w[1:3])
        return [info((x[0], *sp, m), U8)]

    return infer


def _pads(args: cu.WindowArgs) -> tuple[int, ...]:
    if args.pads is None:
        return (0, 0, 0, 0)
    if isinstance(args.pads, int):
        return (args.pads,) * 4
    return tuple(args.pads)


def _adj(op: OpInfo) -> tuple[int, int]:
    if op.has("adjs"):
        a = op.ints_arg("adjs")
        return (a[0], a[1])
    if op.has("adj_h") or op.has("adj_w"):
        return (op.int_arg("adj_h", 0), op.int_arg("adj_w", 0))
    a0 = op.int_arg("adj", 0)
    return (a0, a0)


def _bias(op: OpInfo, rest: tuple[Any, ...], m: int) -> np.ndarray | None:
    if not rest:
        return None
    b = rest[0]
    data = np.asarray(b.data if isinstance(b, Int8Tensor) else b).astype(np.float64).reshape(-1)
    if data.size != m:
        raise TensorError(f"{op.label()}: bias has {data.size} values, expected {m} (output channels)")
    return data


def _depthwise(x: np.ndarray, w: np.ndarray, bias: np.ndarray | None, win: cu.Window) -> np.ndarray:
    """Depthwise NHWC conv as a loop over kernel taps, each a per-channel multiply-add.

    float32 is exact here: |(x - zp) * (w - zp)| < 2**16 per tap, and a 3x3 or 5x5
    kernel keeps the sum below 2**24.
    """
    exact = np.float32 if float(np.prod(win.kernel)) * 65025.0 < 2.0**24 else np.float64
    xp = cu.padded_for_windows(x.astype(exact), win, "NHWC", 0)
    acc = np.zeros((x.shape[0], *win.out, x.shape[3]), dtype=exact)
    for tap in cu.taps(win.kernel):
        acc += xp[cu.tap_slices(win, tap, xp.ndim, "NHWC")] * w[(slice(None), tap[0], tap[1], 0)].astype(exact)
    out = acc.astype(np.float64)
    if bias is not None:
        out += bias
    return out


def _conv_factory(relu: bool) -> Callable[[OpInfo], Callable[..., Any]]:
    def factory(op: OpInfo) -> Callable[..., Any]:
        _nhwc(op)
        scale, zp = _q(op)
        args = cu.WindowArgs.parse(op)
        group = op.int_arg("group", 1)

        def run(x: Any, w: Any, *rest: Any) -> tuple[Int8Tensor]:
            xq, wq = _int8(op, "X", x), _int8(op, "filter", w)
            if xq.ndim != 4 or wq.ndim != 4:
                raise TensorError(f"{op.label()}: expected X (N, H, W, C) and filter (M, kh, kw, C/group)")
            if xq.shape[3] != wq.shape[3] * group:
                raise TensorError(
                    f"{op.label()}: X has {xq.shape[3]} channels but the filter {wq.shape} with group {group} "
                    f"expects {wq.shape[3] * group}"
                )
            win = args.resolve(xq.shape[1:3], wq.shape[1:3])
            m = wq.shape[0]
            bias = _bias(op, rest, m)
            if group > 1 and wq.shape[3] == 1 and m == group:
                acc = _depthwise(centered(xq), centered(wq), bias, win)
            else:
                acc = cu.conv_forward(centered(xq), centered(wq), bias, win, "NHWC", group)
            mult = xq.scale * wq.scale / scale
            return (Int8Tensor(requantize(acc, mult, zp, relu=relu), scale, zp),)

        return run

    return factory


_CONV_ARGS_NO_ORDER = tuple(a for a in cu.CONV_ARGS if a.name != "order")

for _name, _relu in (("Int8Conv", False), ("Int8ConvRelu", True)):
    register_op(
        _name,
        inputs=(2, 3),
        outputs=1,
        args=(*_CONV_ARGS_NO_ORDER, NHWC_ARG, *QUANT_ARGS),
        infer=_conv_infer(False),
        input_names=("X", "filter", "bias"),
        doc="Quantized 2-D convolution, NHWC; filter (M, kh, kw, C/group) uint8, bias int32"
        + (", then ReLU." if _relu else "."),
    )(_conv_factory(_relu))


@register_op(
    "Int8ConvTranspose",
    inputs=(2, 3),
    outputs=1,
    args=(
        *_CONV_ARGS_NO_ORDER,
        NHWC_ARG,
        *QUANT_ARGS,
        Arg("adj", 0, "extra output size at the tail"),
        Arg("adjs", None, "extra output size per spatial dim"),
        Arg("adj_h", 0, "extra output height"),
        Arg("adj_w", 0, "extra output width"),
    ),
    infer=_conv_infer(True),
    input_names=("X", "filter", "bias"),
    doc="Quantized 2-D transposed convolution, NHWC; filter (C_in, kh, kw, M/group).",
)
def int8_conv_transpose(op: OpInfo) -> Callable[..., Any]:
    _nhwc(op)
    scale, zp = _q(op)
    args = cu.WindowArgs.parse(op, dilation=False)
    group = op.int_arg("group", 1)
    adj = _adj(op)

    def run(x: Any, w: Any, *rest: Any) -> tuple[Int8Tensor]:
        xq, wq = _int8(op, "X", x), _int8(op, "filter", w)
        if xq.ndim != 4 or wq.ndim != 4 or wq.shape[0] != xq.shape[3]:
            raise TensorError(
                f"{op.label()}: expected X (N, H, W, C) and filter (C, kh, kw, M/group), got {xq.shape} and {wq.shape}"
            )
        k = tuple(wq.shape[1:3])
        if args.kernel is not None and args._expand("kernel", args.kernel, 2, 1) != k:
            raise TensorError(f"{op.label()}: kernel argument does not match the filter's spatial dims {k}")
        stride = args._expand("stride", args.stride, 2, 1)
        pads = _pads(args)
        out_sp = tuple(
            (d - 1) * s + kk - pads[i] - pads[2 + i] + adj[i]
            for i, (d, s, kk) in enumerate(zip(xq.shape[1:3], stride, k))
        )
        m = wq.shape[3] * group
        acc = cu.conv_transpose_forward(
            centered(xq), centered(wq), _bias(op, rest, m), k, stride, pads[:2], out_sp, "NHWC", group
        )
        mult = xq.scale * wq.scale / scale
        return (Int8Tensor(requantize(acc, mult, zp), scale, zp),)

    return run


def _fc_infer(op: OpInfo, ins: list[TensorInfo]) -> list[TensorInfo]:
    x, w = ins[0].shape, ins[1].shape
    return [info((None if x is None else x[0], None if w is None else w[0]), U8)]


@register_op(
    "Int8FC",
    inputs=(2, 3),
    outputs=1,
    args=(*QUANT_ARGS, NHWC_ARG),
    infer=_fc_infer,
    input_names=("X", "W", "b"),
    doc="Quantized fully connected: X flattened to (N, K), W (M, K) uint8, b (M) int32.",
)
def int8_fc(op: OpInfo) -> Callable[..., Any]:
    scale, zp = _q(op)

    def run(x: Any, w: Any, *rest: Any) -> tuple[Int8Tensor]:
        xq, wq = _int8(op, "X", x), _int8(op, "W", w)
        xs = centered(xq).reshape(xq.shape[0], -1)
        ws = centered(wq).reshape(wq.shape[0], -1)
        if xs.shape[1] != ws.shape[1]:
            raise TensorError(
                f"{op.label()}: X {xq.shape} has {xs.shape[1]} features per row, W {wq.shape} expects {ws.shape[1]}"
            )
        acc = xs @ ws.T
        b = _bias(op, rest, ws.shape[0])
        if b is not None:
            acc += b
        return (Int8Tensor(requantize(acc, xq.scale * wq.scale / scale, zp), scale, zp),)

    return run
