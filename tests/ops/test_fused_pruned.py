"""FloatToFused{2,4}BitFakeRowwiseQuantized, the pruned-table bags SparseLengths*BitRowwiseSparse and
SparseLengthsSumSparseLookup against naive loops written from Caffe2's documentation."""

from __future__ import annotations

import numpy as np
import pytest

from asyncnet.errors import OperatorError
from tests.ops.run_util import run_op

RNG = np.random.default_rng(0)


def naive_fake(x: np.ndarray, bits: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    levels = (1 << bits) - 1
    codes = np.zeros(x.shape, np.uint8)
    scales, biases = np.zeros(x.shape[0], np.float32), np.zeros(x.shape[0], np.float32)
    for r, row in enumerate(x):
        bias = float(np.float16(row.min()))
        span = float(row.max()) - bias
        scale = 1.0 if span == 0 else float(np.float16(np.float32(span) / np.float32(levels)))
        for c, v in enumerate(row):
            codes[r, c] = min(
                max(int(np.rint((np.float32(v) - np.float32(bias)) * np.float32(1.0 / scale))), 0), levels
            )
        scales[r], biases[r] = scale, bias
    return codes, scales, biases


@pytest.mark.parametrize(
    ("op_type", "bits"), [("FloatToFused2BitFakeRowwiseQuantized", 2), ("FloatToFused4BitFakeRowwiseQuantized", 4)]
)
def test_fake_quantization_layout_and_error(op_type: str, bits: int) -> None:
    x = RNG.random((6, 9)).astype(np.float32)
    x[2] = 0.25  # a constant row: scale 1, every code 0
    (q,) = run_op(op_type, [x])
    assert q.dtype == np.uint8 and q.shape == (6, 9 + 8)
    codes, scales, biases = naive_fake(x, bits)
    np.testing.assert_array_equal(q[:, :9], codes)
    tail = np.ascontiguousarray(q[:, 9:]).view("<f4")
    np.testing.assert_array_equal(tail[:, 0], scales)
    np.testing.assert_array_equal(tail[:, 1], biases)
    (back,) = run_op("Fused8BitRowwiseQuantizedToFloat", [q])
    # Within half a step of the bits-bit grid (plus the float16 rounding of the bias).
    step = scales[:, None]
    assert np.all(np.abs(back - x) <= step / 2 + np.abs(x.min(axis=1) - biases)[:, None] + 1e-6)


def pruned_table(bits: int, rows: int, cols: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    x = RNG.random((rows, cols)).astype(np.float32)
    name = "FloatToFused8BitRowwiseQuantized" if bits == 8 else f"FloatToFused{bits}BitRowwiseQuantized"
    (q,) = run_op(name, [x])
    mapping = np.full(rows, -1, np.int32)
    kept = [r for r in range(rows) if RNG.random() < 0.5] or [0]
    mapping[kept] = np.arange(len(kept))
    return q, q[kept], mapping


def dequant(q: np.ndarray, bits: int) -> np.ndarray:
    name = "Fused8BitRowwiseQuantizedToFloat" if bits == 8 else f"Fused{bits}BitRowwiseQuantizedToFloat"
    return np.asarray(run_op(name, [q])[0])


PRUNED = [
    "SparseLengthsSum2BitRowwiseSparse",
    "SparseLengthsSum4BitRowwiseSparse",
    "SparseLengthsSum8BitRowwiseSparse",
    "SparseLengthsWeightedSum2BitRowwiseSparse",
    "SparseLengthsWeightedSum4BitRowwiseSparse",
    "SparseLengthsWeightedSum8BitRowwiseSparse",
    "SparseLengthsMean2BitRowwiseSparse",
    "SparseLengthsMean4BitRowwiseSparse",
    "SparseLengthsMean8BitRowwiseSparse",
]


@pytest.mark.parametrize("op_type", PRUNED)
def test_pruned_bags_match_naive(op_type: str) -> None:
    kind = op_type[len("SparseLengths") : -len("2BitRowwiseSparse")]
    bits = int(op_type[-len("2BitRowwiseSparse")])
    full, pruned, mapping = pruned_table(bits, 10, 8)
    idx = RNG.integers(0, 10, 9).astype(np.int64)
    lens = np.array([3, 0, 4, 2], np.int32)
    w = RNG.random(9).astype(np.float32)
    ins = [pruned] + ([w] if kind == "WeightedSum" else []) + [idx, lens, mapping]
    (out,) = run_op(op_type, ins)
    table = dequant(full, bits)
    want = np.zeros((4, 8))
    pos = 0
    for s, n in enumerate(lens):
        for _ in range(n):
            if mapping[idx[pos]] >= 0:
                want[s] += table[idx[pos]] * (w[pos] if kind == "WeightedSum" else 1.0)
            pos += 1
        if kind == "Mean" and n:
            want[s] /= n
    np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-6)
    # The mapping [0] means "not pruned": the op equals the plain fused bag on the full table.
    plain_name = f"SparseLengths{kind}Fused{bits}BitRowwise"
    (plain,) = run_op(plain_name, [full] + ins[1:-1])
    (unpruned,) = run_op(op_type, [full] + ins[1:-1] + [np.array([0], np.int32)])
    np.testing.assert_array_equal(unpruned, plain)


@pytest.mark.parametrize("weighted", [False, True])
def test_sparse_lookup_rewrites_indices(weighted: bool) -> None:
    mapping = np.array([2, -1, 0, -1, 1], np.int32)
    idx = np.array([0, 1, 4, 3, 3, 2], np.int32)
    lens = np.array([2, 2, 0, 2], np.int32)
    w = np.arange(6, dtype=np.float32)
    outs = run_op("SparseLengthsSumSparseLookup", [idx, lens, mapping] + ([w] if weighted else []), 2 + weighted)
    want_i, want_l, want_w, pos = [], [], [], 0
    for n in lens:
        kept = 0
        for _ in range(n):
            if mapping[idx[pos]] != -1:
                want_i.append(int(mapping[idx[pos]]))
                want_w.append(float(w[pos]))
                kept += 1
            pos += 1
        want_l.append(kept)
    assert outs[0].tolist() == want_i and outs[0].dtype == np.int32 and outs[1].tolist() == want_l
    if weighted:
        assert outs[2].tolist() == want_w


def test_pruned_errors() -> None:
    full, pruned, mapping = pruned_table(4, 6, 4)
    with pytest.raises(OperatorError, match="mapping's size"):
        run_op("SparseLengthsSum4BitRowwiseSparse", [pruned, np.array([7]), np.array([1], np.int32), mapping])
    with pytest.raises(OperatorError, match="sum to"):
        run_op("SparseLengthsSumSparseLookup", [np.array([1]), np.array([2], np.int32), mapping], 2)
