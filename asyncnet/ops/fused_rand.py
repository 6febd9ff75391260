"""FloatToFusedRandRowwiseQuantized / FusedRandRowwiseQuantizedToFloat: row-wise 1/2/4/8-bit quantization
with stochastic rounding (TernGrad), Caffe2's layout: per row [bitwidth u8][tail u8][min f32][max f32][codes].

Codes are packed by segments: with k = 8 / bitwidth codes per byte and S = ceil(cols / k) bytes, element
j goes to bits (j // S) * bitwidth of byte j % S; `tail` counts the unused slots of the last segment.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from asyncnet.errors import ArgumentError, TensorError
from asyncnet.opinfo import OpInfo
from asyncnet.ops._util import info, rng_for
from asyncnet.registry import register_op
from asyncnet.schema import Arg

F32 = np.float32
QEPSILON = 1e-8


def rand_quantize(x: np.ndarray, bits: int, noise: np.ndarray | None) -> np.ndarray:
    """Fused rows of float32 ``x`` (n, d); ``noise`` (n, d) in [0, 1) for stochastic rounding, else nearest."""
    n, d = x.shape
    per = 8 // bits
    seg = (d + per - 1) // per
    tail = (per - d % per) % per
    out = np.zeros((n, 10 + seg), np.uint8)
    lo = x.min(axis=1) if d else np.full(n, np.inf, F32)
    hi = x.max(axis=1) if d else np.full(n, -np.inf, F32)
    out[:, 0], out[:, 1] = bits, tail
    out[:, 2:10] = np.stack([lo, hi], axis=1).astype("<f4").view(np.uint8).reshape(n, 8)
    if d == 0:
        return out
    gap = ((hi - lo) / F32((1 << bits) - 1.0)).astype(F32)
    inv = (1.0 / (gap.astype(np.float64) + QEPSILON)).astype(F32)
    t = ((x - lo[:, None]) * inv[:, None]).astype(F32)
    top = F32((1 << bits) - 1)
    if noise is not None:
        q = np.clip(np.floor(t + noise.astype(F32)), 0, top)
    else:
        q = np.rint(np.clip(t, 0, top))
    codes = q.astype(np.uint8)
    for j0 in range(0, d, seg):
        part = codes[:, j0 : j0 + seg]
        out[:, 10 : 10 + part.shape[1]] |= (part << (j0 // seg * bits)).astype(np.uint8)
    return out


def rand_dequantize(q: np.ndarray) -> np.ndarray:
    """Float32 rows restored from fused rows (the bitwidth and tail of row 0 hold for all, as in Caffe2)."""
    n, width = q.shape
    bits, tail = int(q[0, 0]), int(q[0, 1])
    if bits not in (1, 2, 4, 8) or width < 10:
        raise TensorError(f"rows must start with a bitwidth of 1, 2, 4 or 8 and hold >= 10 bytes, got {bits}, {width}")
    seg = width - 10
    d = seg * (8 // bits) - tail
    mm = np.ascontiguousarray(q[:, 2:10]).view("<f4").reshape(n, 2)
    gap = ((mm[:, 1] - mm[:, 0]) / F32((1 << bits) - 1.0)).astype(np.float64) + QEPSILON
    out = np.zeros((n, d), F32)
    mask = (1 << bits) - 1
    for j0 in range(0, d, seg):
        stride = min(seg, d - j0)
        codes = (q[:, 10 : 10 + stride] >> (j0 // seg * bits)) & mask
        out[:, j0 : j0 + stride] = (codes * gap.astype(F32)[:, None] + mm[:, :1]).astype(F32)
    return out


@register_op(
    "FloatToFusedRandRowwiseQuantized",
    args=(Arg("bitwidth", 8, "bits per value: 1, 2, 4 or 8"), Arg("random", 1, "stochastic rounding (0: nearest)")),
    infer=lambda op, ins: [
        info(
            None
            if ins[0].shape is None or len(ins[0].shape) != 2 or ins[0].shape[1] is None
            else (ins[0].shape[0], 10 + -(-ins[0].shape[1] // (8 // op.int_arg("bitwidth")))),
            np.uint8,
        )
    ],
    doc="Quantize each row of a float32 matrix to `bitwidth` bits on the uniform grid between its min and "
    "max, rounding each value up with probability equal to its fractional position (an unbiased estimate); "
    "rows are [bitwidth][tail][min f32][max f32][codes packed by segments].",
    input_names=("input",),
    output_names=("output",),
)
def float_to_fused_rand_rowwise_quantized(op: OpInfo) -> Callable[..., Any]:
    bits, random = op.int_arg("bitwidth"), op.bool_arg("random")
    if bits not in (1, 2, 4, 8):
        raise ArgumentError(f"{op.label()}: Unsupported bitwidth {bits} (1, 2, 4 or 8)")
    rng = rng_for(op)

    def run(x: Any) -> tuple[np.ndarray]:
        a = np.asarray(x, F32)
        if a.ndim != 2:
            raise TensorError(f"{op.label()}: Expect input to be a matrix, got shape {a.shape}")
        noise = rng.random(a.shape, dtype=F32) if random else None
        return (rand_quantize(a, bits, noise),)

    return run


@register_op(
    "FusedRandRowwiseQuantizedToFloat",
    infer=lambda op, ins: [info((ins[0].shape[0] if ins[0].shape else None, None), F32)],
    doc="Restore float32 rows from FloatToFusedRandRowwiseQuantized: code * (max - min) / (2^bitwidth - 1) + min.",
    input_names=("quantized_input",),
    output_names=("float_input",),
)
def fused_rand_rowwise_quantized_to_float(op: OpInfo) -> Callable[..., Any]:
    def run(q: Any) -> tuple[np.ndarray]:
        a = np.asarray(q)
        if a.ndim != 2 or a.dtype != np.uint8:
            raise TensorError(f"{op.label()}: Expect a uint8 matrix, got {a.dtype} {a.shape}")
        if a.shape[0] == 0:
            return (np.zeros((0, 0), F32),)
        try:
            return (rand_dequantize(a),)
        except TensorError as e:
            raise TensorError(f"{op.label()}: {e}") from e

    return run
