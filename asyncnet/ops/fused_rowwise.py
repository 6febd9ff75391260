"""Fused row-wise quantization (8, 4 and 2 bits) and the embedding-bag ops that read it.

8-bit rows hold D uint8 codes followed by a float32 scale and a float32 bias (D + 8 bytes);
4- and 2-bit rows pack 8 / bits codes per byte (lowest bits first) followed by a float16 scale and
a float16 bias. A value is restored as code * scale + bias. Also FloatToHalf / HalfToFloat.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from asyncnet.errors import ArgumentError
from asyncnet.opinfo import OpInfo
from asyncnet.ops._greedy_range import greedy_ranges
from asyncnet.registry import register_op
from asyncnet.schema import TensorInfo

U8 = np.dtype(np.uint8)
F32 = np.dtype(np.float32)
F16 = np.dtype(np.float16)


def _rows2d(op: OpInfo, x: Any) -> np.ndarray:
    a = np.asarray(x)
    if a.ndim < 1:
        raise ArgumentError(f"{op.label()}: input must have rank >= 1, got a scalar")
    return np.asarray(a.reshape(-1, a.shape[-1]))


def quantize_8bit(x: np.ndarray) -> np.ndarray:
    """Rows of float32 x -> fused uint8 rows [codes, scale (f32 bytes), bias (f32 bytes)]."""
    x = x.astype(np.float32)
    n, d = x.shape
    lo = x.min(axis=1) if d else np.zeros(n, np.float32)
    hi = x.max(axis=1) if d else np.zeros(n, np.float32)
    span = (hi - lo).astype(np.float32)
    scale = (span / np.float32(255.0)).astype(np.float32)
    inv = (np.float32(255.0) / (span + np.float32(1e-8))).astype(np.float32)
    codes = np.rint((x - lo[:, None]) * inv[:, None]).clip(0, 255).astype(np.uint8)
    tail = np.concatenate([scale[:, None], lo[:, None]], axis=1).astype("<f4").view(np.uint8)
    return np.concatenate([codes, tail.reshape(n, 8)], axis=1)


def dequantize_8bit(q: np.ndarray) -> np.ndarray:
    if q.shape[1] < 8:
        raise ArgumentError(f"fused 8-bit rows need at least 8 bytes, got {q.shape[1]}")
    tail: np.ndarray = np.ascontiguousarray(q[:, -8:]).view("<f4").reshape(-1, 2)
    out: np.ndarray = (q[:, :-8].astype(np.float32) * tail[:, :1] + tail[:, 1:]).astype(np.float32)
    return out


def nbit_codes(x: np.ndarray, bits: int, greedy: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows of float32 x -> (codes in [0, 2^bits - 1] as uint8, float16 scale, float16 bias) per row.

    The range is each row's [min, max], or with ``greedy`` the GREEDY engine's searched range.
    """
    x = x.astype(np.float32)
    n, d = x.shape
    levels = (1 << bits) - 1
    if greedy:
        lo, hi = greedy_ranges(x, bits)
    else:
        lo = x.min(axis=1) if d else np.zeros(n, np.float32)
        hi = x.max(axis=1) if d else np.zeros(n, np.float32)
    lo = lo.astype(np.float16).astype(np.float32)
    rng = hi - lo
    scale = np.where(rng == 0, np.float32(1.0), rng / np.float32(levels)).astype(np.float16)
    scale_f = scale.astype(np.float32)
    with np.errstate(divide="ignore"):
        inv = np.where(scale_f == 0, np.float32(1.0), np.float32(1.0) / scale_f)
    bad = (scale_f == 0) | ~np.isfinite(inv)
    scale[bad], inv[bad] = np.float16(1.0), np.float32(1.0)
    codes = np.clip(np.rint((x - lo[:, None]) * inv[:, None]), 0, levels).astype(np.uint8)
    return codes, scale, lo.astype(np.float16)


def quantize_nbit(x: np.ndarray, bits: int, greedy: bool = False) -> np.ndarray:
    """Rows of float32 x -> packed `bits`-bit codes + float16 scale and bias."""
    codes, scale, lo = nbit_codes(x, bits, greedy)
    n, d = codes.shape
    per = 8 // bits
    width = (d + per - 1) // per
    packed = np.zeros((n, width), np.uint8)
    for k in range(per):
        part = codes[:, k::per]
        packed[:, : part.shape[1]] |= (part << (k * bits)).astype(np.uint8)
    tail = np.concatenate([scale[:, None], lo[:, None]], axis=1).astype("<f2").view(np.uint8)
    return np.concatenate([packed, tail.reshape(n, 4)], axis=1)


def fake_nbit_as_8bit(x: np.ndarray, bits: int, greedy: bool = False) -> np.ndarray:
    """Rows quantized on the `bits`-bit grid but stored as fused 8-bit rows (one code per byte, float32
    scale and bias): what Caffe2's FloatToFused{2,4}BitFakeRowwiseQuantized produces."""
    codes, scale, lo = nbit_codes(x, bits, greedy)
    tail = np.stack([scale.astype(np.float32), lo.astype(np.float32)], axis=1).astype("<f4").view(np.uint8)
    return np.concatenate([codes, tail.reshape(codes.shape[0], 8)], axis=1)


def dequantize_nbit(q: np.ndarray, bits: int, d: int | None = None) -> np.ndarray:
    per = 8 // bits
    width = q.shape[1] - 4
    if width < 0:
        raise ArgumentError(f"fused {bits}-bit rows need at least 4 bytes, got {q.shape[1]}")
    cols = width * per if d is None else d
    tail = np.ascontiguousarray(q[:, -4:]).view("<f2").reshape(-1, 2).astype(np.float32)
    codes = np.zeros((q.shape[0], width * per), np.uint8)
    for k in range(per):
        codes[:, k::per] = (q[:, :width] >> (k * bits)) & ((1 << bits) - 1)
    return (codes[:, :cols].astype(np.float32) * tail[:, :1] + tail[:, 1:]).astype(np.float32)


def _q_infer(extra: int, per: int) -> Callable[[OpInfo, list[TensorInfo]], list[TensorInfo]]:
    def infer(op: OpInfo, ins: list[TensorInfo]) -> list[TensorInfo]:
        s = ins[0].shape
        if s is None or not s or s[-1] is None:
            return [TensorInfo(None, U8)]
        return [TensorInfo(tuple(s[:-1]) + ((s[-1] + per - 1) // per + extra,), U8)]

    return infer


def _dq_infer(extra: int, per: int, dtype: np.dtype[Any]) -> Callable[[OpInfo, list[TensorInfo]], list[TensorInfo]]:
    def infer(op: OpInfo, ins: list[TensorInfo]) -> list[TensorInfo]:
        s = ins[0].shape
        if s is None or not s or s[-1] is None:
            return [TensorInfo(None, dtype)]
        return [TensorInfo(tuple(s[:-1]) + ((s[-1] - extra) * per,), dtype)]

    return infer


def _register_codec(bits: int) -> None:
    if bits == 8:
        q_fn: Callable[[np.ndarray], np.ndarray] = quantize_8bit
        dq_fn: Callable[[np.ndarray], np.ndarray] = dequantize_8bit
        extra, per, tail = 8, 1, "a float32 scale and bias"
    else:
        q_fn = lambda x: quantize_nbit(x, bits)  # noqa: E731
        dq_fn = lambda q: dequantize_nbit(q, bits)  # noqa: E731
        extra, per, tail = 4, 8 // bits, "a float16 scale and bias"
    for src, src_dtype in (("Float", F32), ("HalfFloat", F16)):
        if bits != 8 and src == "HalfFloat":
            name = f"HalfToFused{bits}BitRowwiseQuantized"
        else:
            name = f"{src}ToFused{bits}BitRowwiseQuantized"

        def q_factory(op: OpInfo, want: np.dtype[Any] = src_dtype) -> Callable[..., Any]:
            def run(x: Any) -> tuple[np.ndarray]:
                a = np.asarray(x)
                if a.dtype != want:
                    raise ArgumentError(f"{op.label()}: input must be {want}, got {a.dtype}")
                rows = _rows2d(op, a)
                return (q_fn(rows).reshape(a.shape[:-1] + (-1,)),)

            return run

        register_op(
            name,
            infer=_q_infer(extra, per),
            doc=f"Quantize each row of the {src_dtype} input to {bits} bits (codes = round((x - min) / scale), "
            f"scale = (max - min) / {(1 << bits) - 1}) with {tail} appended to the row.",
            input_names=("input",),
            output_names=("output",),
        )(q_factory)
    for dst, dst_dtype in (("Float", F32), ("HalfFloat", F16)):
        name = (
            f"Fused{bits}BitRowwiseQuantizedTo{dst}"
            if (bits == 8 or dst == "Float")
            else f"Fused{bits}BitRowwiseQuantizedToHalf"
        )

        def dq_factory(op: OpInfo, out_dtype: np.dtype[Any] = dst_dtype) -> Callable[..., Any]:
            def run(q: Any) -> tuple[np.ndarray]:
                a = np.asarray(q)
                if a.dtype != U8:
                    raise ArgumentError(f"{op.label()}: input must be uint8 fused rows, got {a.dtype}")
                rows = _rows2d(op, a)
                return (dq_fn(rows).astype(out_dtype).reshape(a.shape[:-1] + (-1,)),)

            return run

        register_op(
            name,
            infer=_dq_infer(extra, per, dst_dtype),
            doc=f"Restore {dst_dtype} rows from fused {bits}-bit rows: x = code * scale + bias.",
            input_names=("input",),
            output_names=("output",),
        )(dq_factory)


for _bits in (8, 4, 2):
    _register_codec(_bits)


def _float_rows_factory(fn: Callable[[np.ndarray], np.ndarray]) -> Callable[[OpInfo], Callable[..., Any]]:
    def factory(op: OpInfo) -> Callable[..., Any]:
        def run(x: Any) -> tuple[np.ndarray]:
            a = np.asarray(x)
            if a.dtype != F32:
                raise ArgumentError(f"{op.label()}: input must be float32, got {a.dtype}")
            return (fn(_rows2d(op, a)).reshape(a.shape[:-1] + (-1,)),)

        return run

    return factory


def _fake_factory(bits: int) -> Callable[[OpInfo], Callable[..., Any]]:
    return _float_rows_factory(lambda rows: fake_nbit_as_8bit(rows, bits))


for _bits in (4, 2):
    register_op(
        f"FloatToFused{_bits}BitFakeRowwiseQuantized",
        infer=_q_infer(8, 1),
        doc=f"Quantize each float32 row on the {_bits}-bit grid (float16-rounded min as bias, float16 scale = "
        f"(max - min) / {(1 << _bits) - 1}) but store it in the fused 8-bit layout: one code per byte, then "
        "float32 scale and bias (read it with Fused8BitRowwiseQuantizedToFloat). Engine GREEDY searches "
        "the range that minimizes the L2 error instead of using [min, max].",
        input_names=("input",),
        output_names=("output",),
    )(_fake_factory(_bits))


def _register_greedy(bits: int) -> None:
    # Engine "GREEDY": the same layouts, with the quantization range found by greedy search.
    from asyncnet.registry import _DEFAULT

    _DEFAULT.add_kernel(
        f"FloatToFused{bits}BitRowwiseQuantized",
        _float_rows_factory(lambda rows: quantize_nbit(rows, bits, greedy=True)),
        engine="GREEDY",
    )
    _DEFAULT.add_kernel(
        f"FloatToFused{bits}BitFakeRowwiseQuantized",
        _float_rows_factory(lambda rows: fake_nbit_as_8bit(rows, bits, greedy=True)),
        engine="GREEDY",
    )


for _bits in (4, 2):
    _register_greedy(_bits)


# -- embedding bags over fused rows --------------------------------------------------------------------


def reduce_rows(
    data: np.ndarray, idx: np.ndarray, w: np.ndarray | None, seg: np.ndarray, lens: np.ndarray, mean: bool, bits: int
) -> np.ndarray:
    """Sum the restored rows data[idx] (times w) into segments ``seg`` (one output row per entry of
    ``lens``); with ``mean`` divide by ``lens``."""
    rows = dequantize_8bit(data[idx]) if bits == 8 else dequantize_nbit(data[idx], bits)
    if w is not None:
        rows = rows * w.astype(np.float32)[:, None]
    out = np.zeros((lens.size, rows.shape[1]), np.float32)
    np.add.at(out, seg, rows)
    if mean:
        out /= np.maximum(lens, 1).astype(np.float32)[:, None]
    return out


def _bag_factory(bits: int, kind: str) -> Callable[[OpInfo], Callable[..., Any]]:
    weighted = kind == "WeightedSum"

    def factory(op: OpInfo) -> Callable[..., Any]:
        def run(*ins: Any) -> tuple[np.ndarray]:
            data = np.asarray(ins[0])
            if data.dtype != U8 or data.ndim != 2:
                raise ArgumentError(f"{op.label()}: DATA must be 2-D uint8 fused rows, got {data.dtype} {data.shape}")
            w = np.asarray(ins[1]).reshape(-1) if weighted else None
            idx = np.asarray(ins[2 if weighted else 1]).reshape(-1)
            lens = np.asarray(ins[-1]).reshape(-1).astype(np.int64)
            if idx.dtype.kind not in "iu" or np.any(idx < 0) or np.any(idx >= data.shape[0]):
                raise ArgumentError(f"{op.label()}: INDICES must be integers in [0, {data.shape[0]})")
            if np.any(lens < 0) or int(lens.sum()) != idx.size:
                raise ArgumentError(f"{op.label()}: LENGTHS must be nonnegative and sum to {idx.size}")
            if w is not None and w.size != idx.size:
                raise ArgumentError(f"{op.label()}: WEIGHTS has {w.size} values for {idx.size} indices")
            seg = np.repeat(np.arange(lens.size), lens)
            return (reduce_rows(data, idx, w, seg, lens, kind == "Mean", bits),)

        return run

    return factory


def bag_infer(bits: int, lengths_input: int = -1) -> Callable[[OpInfo, list[TensorInfo]], list[TensorInfo]]:
    """Shape inference of an embedding bag over row-wise quantized DATA (input 0): one float32 row of
    the dequantized width per segment of LENGTHS (input ``lengths_input``)."""
    extra, per = (8, 1) if bits == 8 else (4, 8 // bits)

    def infer(op: OpInfo, ins: list[TensorInfo]) -> list[TensorInfo]:
        d, lens = ins[0].shape, ins[lengths_input].shape
        n = lens[0] if lens else None
        cols = None if d is None or len(d) != 2 or d[1] is None else (d[1] - extra) * per
        return [TensorInfo((n, cols), F32)]

    return infer


for _bits in (8, 4, 2):
    for _kind in ("Sum", "WeightedSum", "Mean"):
        _names = ("DATA", "WEIGHTS", "INDICES", "LENGTHS") if _kind == "WeightedSum" else ("DATA", "INDICES", "LENGTHS")
        register_op(
            f"SparseLengths{_kind}Fused{_bits}BitRowwise",
            inputs=len(_names),
            infer=bag_infer(_bits),
            doc=f"SparseLengths{_kind} over fused {_bits}-bit rows: each DATA[INDICES[j]] is restored "
            "(code * scale + bias) before the reduction; output float32.",
            input_names=_names,
            output_names=("output",),
        )(_bag_factory(_bits, _kind))


@register_op(
    "GatherFused8BitRowwise",
    inputs=2,
    infer=lambda op, ins: [
        TensorInfo(
            None
            if ins[0].shape is None or ins[1].shape is None or ins[0].shape[1] is None
            else (*ins[1].shape, ins[0].shape[1] - 8),
            F32,
        )
    ],
    doc="Gather on fused 8-bit rows: output[i] is row DATA[INDICES[i]] restored to float32 "
    "(code * scale + bias); DATA (rows, cols + 8), INDICES 1-D.",
    input_names=("DATA", "INDICES"),
    output_names=("output",),
)
def gather_fused_8bit_rowwise(op: OpInfo) -> Callable[..., Any]:
    def run(data: Any, indices: Any) -> tuple[np.ndarray]:
        d, idx = np.asarray(data), np.asarray(indices)
        if d.dtype != U8 or d.ndim != 2 or d.shape[1] <= 8:
            raise ArgumentError(
                f"{op.label()}: DATA must be 2-D uint8 fused rows of > 8 bytes, got {d.dtype} {d.shape}"
            )
        if idx.ndim != 1 or idx.dtype.kind not in "iu" or (idx.size and (idx.min() < 0 or idx.max() >= d.shape[0])):
            raise ArgumentError(f"{op.label()}: INDICES must be a vector of integers in [0, {d.shape[0]})")
        return (dequantize_8bit(d[idx.astype(np.int64)]),)

    return run


# -- plain float16 conversion ----------------------------------------------------------------------


@register_op(
    "FloatToHalf",
    infer=lambda op, ins: [TensorInfo(ins[0].shape, F16)],
    doc="Convert a float32 tensor to float16.",
    input_names=("X",),
    output_names=("Y",),
)
def float_to_half(op: OpInfo) -> Callable[..., Any]:
    return lambda x: (np.asarray(x, dtype=np.float32).astype(np.float16),)


@register_op(
    "HalfToFloat",
    infer=lambda op, ins: [TensorInfo(ins[0].shape, F32)],
    doc="Convert a float16 tensor to float32.",
    input_names=("X",),
    output_names=("Y",),
)
def half_to_float(op: OpInfo) -> Callable[..., Any]:
    return lambda x: (np.asarray(x).astype(np.float32),)


# -- non-fused 8-bit row-wise (codes and a separate (N, 2) scale_bias) --------------------------------------


@register_op(
    "FloatToRowwiseQuantized8Bits",
    outputs=2,
    infer=lambda op, ins: [
        TensorInfo(ins[0].shape, U8),
        TensorInfo(None if ins[0].shape is None else (ins[0].shape[0], 2), F32),
    ],
    doc="Quantize each row of a 2-D float tensor to uint8 codes round((x - min) / scale), scale = "
    "(max - min) / 255; output 1 holds (scale, min) per row (scale 1 and zero codes for a constant row).",
    input_names=("input",),
    output_names=("quantized_input", "scale_bias"),
)
def float_to_rowwise_8bits(op: OpInfo) -> Callable[..., Any]:
    def run(x: Any) -> tuple[np.ndarray, np.ndarray]:
        a = np.asarray(x, np.float32)
        if a.ndim != 2:
            raise ArgumentError(f"{op.label()}: input must be 2-D, got {a.shape}")
        lo = a.min(axis=1) if a.shape[1] else np.zeros(a.shape[0], np.float32)
        hi = a.max(axis=1) if a.shape[1] else np.zeros(a.shape[0], np.float32)
        flat = (hi - lo) < np.float32(1e-7)
        scale = np.where(flat, np.float32(1.0), (hi - lo) / np.float32(255.0)).astype(np.float32)
        inv = (np.float32(1.0) / scale).astype(np.float32)
        # std::round: halves away from zero.
        v = (a - lo[:, None]) * inv[:, None]
        codes = np.clip(np.sign(v) * np.floor(np.abs(v) + 0.5), 0, 255).astype(np.uint8)
        codes[flat] = 0
        return codes, np.stack([scale, lo], axis=1).astype(np.float32)

    return run


def _dq_rows(q: np.ndarray, sb: np.ndarray) -> np.ndarray:
    return np.asarray(q.astype(np.float32) * sb[:, :1] + sb[:, 1:2], dtype=np.float32)


@register_op(
    "Rowwise8BitQuantizedToFloat",
    inputs=2,
    infer=lambda op, ins: [TensorInfo(ins[0].shape, F32)],
    doc="Restore float rows from uint8 codes and their (scale, bias) rows: x = code * scale + bias.",
    input_names=("quantized_input", "scale_bias"),
    output_names=("dequantized_input",),
)
def rowwise_8bit_to_float(op: OpInfo) -> Callable[..., Any]:
    def run(q: Any, sb: Any) -> tuple[np.ndarray]:
        qa, s = np.asarray(q), np.asarray(sb, np.float32).reshape(-1, 2)
        if qa.ndim != 2 or s.shape[0] != qa.shape[0]:
            raise ArgumentError(f"{op.label()}: codes {qa.shape} and scale_bias {s.shape} must have one row each")
        return (_dq_rows(qa, s),)

    return run


def _bag8_factory(kind: str, weighted: bool) -> Callable[[OpInfo], Callable[..., Any]]:
    def factory(op: OpInfo) -> Callable[..., Any]:
        def run(*ins: Any) -> tuple[np.ndarray]:
            data = np.asarray(ins[0])
            w = np.asarray(ins[1], np.float32).reshape(-1) if weighted else None
            idx = np.asarray(ins[2 if weighted else 1]).reshape(-1).astype(np.int64)
            lens = np.asarray(ins[3 if weighted else 2]).reshape(-1).astype(np.int64)
            sb = np.asarray(ins[-1], np.float32).reshape(-1, 2)
            if data.ndim != 2 or sb.shape[0] != data.shape[0]:
                raise ArgumentError(f"{op.label()}: DATA {data.shape} and scale_bias {sb.shape} must have one row each")
            if np.any(idx < 0) or np.any(idx >= data.shape[0]) or int(lens.sum()) != idx.size:
                raise ArgumentError(
                    f"{op.label()}: INDICES must lie in [0, {data.shape[0]}) and LENGTHS sum to {idx.size}"
                )
            rows = _dq_rows(data[idx], sb[idx])
            if w is not None:
                rows = rows * w[:, None]
            out = np.zeros((lens.size, data.shape[1]), np.float32)
            np.add.at(out, np.repeat(np.arange(lens.size), lens), rows)
            if kind == "Mean":
                out /= np.maximum(lens, 1).astype(np.float32)[:, None]
            return (out,)

        return run

    return factory


for _kind, _w in (("Sum", False), ("WeightedSum", True), ("Mean", False), ("WeightedMean", True)):
    _names8 = (
        ("DATA", "WEIGHTS", "INDICES", "LENGTHS", "scale_bias") if _w else ("DATA", "INDICES", "LENGTHS", "scale_bias")
    )
    register_op(
        f"SparseLengths{_kind}8BitsRowwise",
        inputs=len(_names8),
        infer=lambda op, ins: [
            TensorInfo((ins[-2].shape[0] if ins[-2].shape else None, ins[0].shape[1] if ins[0].shape else None), F32)
        ],
        doc=f"SparseLengths{_kind.replace('Weighted', 'Weighted')} over uint8 rows restored with their "
        "scale_bias rows (code * scale + bias); output float32.",
        input_names=_names8,
        output_names=("output",),
    )(_bag8_factory("Mean" if "Mean" in _kind else "Sum", _w))
