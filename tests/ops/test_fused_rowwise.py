"""Fused row-wise quantization (8/4/2 bits) and the SparseLengths*Fused*BitRowwise ops, against
byte-by-byte naive codecs written from Caffe2's operator docs."""

from __future__ import annotations

import math
import struct

import numpy as np
import pytest

from tests.ops.run_util import run_op

RNG = np.random.default_rng(5)


def naive_q8(row: np.ndarray) -> list[int]:
    lo, hi = float(np.float32(row.min())), float(np.float32(row.max()))
    scale = np.float32((np.float32(hi) - np.float32(lo)) / np.float32(255.0))
    inv = np.float32(np.float32(255.0) / (np.float32(hi - lo) + np.float32(1e-8)))
    codes = [int(min(255, max(0, np.rint(np.float32(np.float32(v) - np.float32(lo)) * inv)))) for v in row]
    return codes + list(struct.pack("<f", scale)) + list(struct.pack("<f", lo))


def naive_dq8(row: np.ndarray) -> list[float]:
    scale, bias = struct.unpack("<ff", bytes(row[-8:].tolist()))
    return [c * scale + bias for c in row[:-8].tolist()]


def naive_dq_nbit(row: np.ndarray, bits: int, d: int) -> list[float]:
    scale, bias = struct.unpack("<ee", bytes(row[-4:].tolist()))
    per = 8 // bits
    out = []
    for col in range(d):
        byte = int(row[col // per])
        code = (byte >> ((col % per) * bits)) & ((1 << bits) - 1)
        out.append(code * scale + bias)
    return out


def test_8bit_quantize_layout_and_round_trip() -> None:
    x = RNG.normal(size=(4, 7)).astype(np.float32)
    (q,) = run_op("FloatToFused8BitRowwiseQuantized", [x])
    assert q.dtype == np.uint8 and q.shape == (4, 15)
    for i in range(4):
        assert q[i].tolist() == naive_q8(x[i])
    (back,) = run_op("Fused8BitRowwiseQuantizedToFloat", [q])
    for i in range(4):
        np.testing.assert_allclose(back[i], naive_dq8(q[i]), rtol=1e-6, atol=1e-6)
    span = x.max(axis=1) - x.min(axis=1)
    assert np.all(np.abs(back - x) <= (span / 255 / 2 + 1e-6)[:, None])
    (half,) = run_op("Fused8BitRowwiseQuantizedToHalfFloat", [q])
    assert half.dtype == np.float16
    (qh,) = run_op("HalfFloatToFused8BitRowwiseQuantized", [x.astype(np.float16)])
    assert qh.shape == (4, 15)


NBIT = {
    4: ("FloatToFused4BitRowwiseQuantized", "Fused4BitRowwiseQuantizedToFloat",
        "Fused4BitRowwiseQuantizedToHalf", "HalfToFused4BitRowwiseQuantized"),
    2: ("FloatToFused2BitRowwiseQuantized", "Fused2BitRowwiseQuantizedToFloat",
        "Fused2BitRowwiseQuantizedToHalf", "HalfToFused2BitRowwiseQuantized"),
}  # fmt: skip

BAGS = {
    (8, "Sum"): "SparseLengthsSumFused8BitRowwise",
    (8, "WeightedSum"): "SparseLengthsWeightedSumFused8BitRowwise",
    (8, "Mean"): "SparseLengthsMeanFused8BitRowwise",
    (4, "Sum"): "SparseLengthsSumFused4BitRowwise",
    (4, "WeightedSum"): "SparseLengthsWeightedSumFused4BitRowwise",
    (4, "Mean"): "SparseLengthsMeanFused4BitRowwise",
    (2, "Sum"): "SparseLengthsSumFused2BitRowwise",
    (2, "WeightedSum"): "SparseLengthsWeightedSumFused2BitRowwise",
    (2, "Mean"): "SparseLengthsMeanFused2BitRowwise",
}


@pytest.mark.parametrize("bits", [4, 2])
def test_nbit_quantize_round_trip(bits: int) -> None:
    to_q, to_f, to_h, from_h = NBIT[bits]
    d = 7
    x = RNG.normal(size=(3, d)).astype(np.float32)
    (q,) = run_op(to_q, [x])
    per = 8 // bits
    assert q.shape == (3, (d + per - 1) // per + 4)
    for i in range(3):
        want = naive_dq_nbit(q[i], bits, d)
        # The codes restore x within half a quantization step (scale, bias in float16).
        scale = struct.unpack("<e", bytes(q[i, -4:-2].tolist()))[0]
        assert np.all(np.abs(np.array(want) - x[i]) <= scale / 2 + 2e-3)
    (back,) = run_op(to_f, [q])
    for i in range(3):
        np.testing.assert_allclose(back[i, :d], naive_dq_nbit(q[i], bits, d), rtol=1e-6, atol=1e-6)
    (half,) = run_op(to_h, [q])
    assert half.dtype == np.float16
    (qh,) = run_op(from_h, [x.astype(np.float16)])
    assert qh.shape == q.shape


@pytest.mark.parametrize("bits", [8, 4, 2])
@pytest.mark.parametrize("kind", ["Sum", "WeightedSum", "Mean"])
def test_sparse_lengths_fused(bits: int, kind: str) -> None:
    d = 8
    x = RNG.normal(size=(5, d)).astype(np.float32)
    (q,) = run_op(f"FloatToFused{bits}BitRowwiseQuantized", [x])
    idx = np.array([4, 0, 4, 2, 1], np.int32)
    lens = np.array([2, 0, 3], np.int32)
    w = RNG.normal(size=idx.size).astype(np.float32)
    ins = [q, w, idx, lens] if kind == "WeightedSum" else [q, idx, lens]
    (out,) = run_op(BAGS[bits, kind], ins)
    rows = [naive_dq8(q[i]) if bits == 8 else naive_dq_nbit(q[i], bits, d) for i in range(5)]
    start = 0
    for s, n in enumerate(lens.tolist()):
        acc = np.zeros(d)
        for j in range(start, start + n):
            acc += np.array(rows[idx[j]]) * (w[j] if kind == "WeightedSum" else 1.0)
        if kind == "Mean" and n:
            acc /= n
        np.testing.assert_allclose(out[s], acc, rtol=1e-5, atol=1e-5)
        start += n


def test_float_half_conversion() -> None:
    x = np.array([1.5, -2.25, 65504.0], np.float32)
    (h,) = run_op("FloatToHalf", [x])
    assert h.dtype == np.float16 and h.tolist() == [1.5, -2.25, 65504.0]
    (f,) = run_op("HalfToFloat", [h])
    assert f.dtype == np.float32 and f.tolist() == [1.5, -2.25, 65504.0]


def test_rowwise_8bits_quantize_and_bags() -> None:
    x = RNG.normal(size=(4, 5)).astype(np.float32)
    x[2] = 0.75  # a constant row
    q, sb = run_op("FloatToRowwiseQuantized8Bits", [x], 2)
    for i in range(4):
        lo, hi = float(x[i].min()), float(x[i].max())
        if hi - lo < 1e-7:
            assert sb[i].tolist() == [1.0, 0.75] and not q[i].any()
            continue
        scale = np.float32((np.float32(hi) - np.float32(lo)) / np.float32(255.0))
        assert sb[i, 0] == scale and sb[i, 1] == np.float32(lo)
        for j in range(5):
            v = float((np.float32(x[i, j]) - np.float32(lo)) * (np.float32(1.0) / scale))
            assert q[i, j] == min(255, max(0, math.floor(v + 0.5)))
    (back,) = run_op("Rowwise8BitQuantizedToFloat", [q, sb])
    np.testing.assert_allclose(back, q * sb[:, :1] + sb[:, 1:], rtol=1e-6)
    idx, lens, w = np.array([3, 0, 3], np.int64), np.array([1, 2], np.int32), np.array([0.5, 2.0, -1.0], np.float32)
    deq = q.astype(np.float64) * sb[:, :1] + sb[:, 1:]
    cases = {
        "SparseLengthsSum8BitsRowwise": ([q, idx, lens, sb], [deq[3], deq[0] + deq[3]]),
        "SparseLengthsMean8BitsRowwise": ([q, idx, lens, sb], [deq[3], (deq[0] + deq[3]) / 2]),
        "SparseLengthsWeightedSum8BitsRowwise": ([q, w, idx, lens, sb], [0.5 * deq[3], 2 * deq[0] - deq[3]]),
        "SparseLengthsWeightedMean8BitsRowwise": ([q, w, idx, lens, sb], [0.5 * deq[3], (2 * deq[0] - deq[3]) / 2]),
    }
    for name, (ins, want) in cases.items():
        (out,) = run_op(name, ins)
        np.testing.assert_allclose(out, np.array(want), rtol=1e-5, atol=1e-6)
