"""GatherRangesToDense, IndexHash, MergeIdLists and LearningRateAdaption against naive loops written from
Caffe2's operator docs (their goldens run in test_goldens.py)."""

from __future__ import annotations

import math
import struct

import numpy as np
import pytest

from asyncnet.errors import AsyncNetError
from tests.ops.run_util import run_op


def test_gather_ranges_to_dense() -> None:
    data = np.arange(10, dtype=np.float32)
    ranges = np.array([[[0, 2], [2, 3]], [[5, 0], [6, 3]], [[9, 1], [0, 3]]], np.int64)
    a, b = run_op("GatherRangesToDense", [data, ranges], 2, lengths=[2, 3])
    assert a.tolist() == [[0, 1], [0, 0], [0, 0]]  # empty and mismatched (length 1 for 2) give zeros
    assert b.tolist() == [[2, 3, 4], [6, 7, 8], [0, 1, 2]]


def test_gather_ranges_to_dense_orders_each_range_by_key() -> None:
    data = np.arange(10, 20).astype(np.float32)
    key = np.array([5, 3, 9, 1, 0, 2, 8, 7, 6, 4], np.int64)
    ranges = np.array([[[0, 3], [3, 2]], [[5, 3], [0, 0]], [[8, 2], [1, 1]]], np.int32)
    a, b = run_op("GatherRangesToDense", [data, ranges, key], 2, lengths=[3, 2], max_mismatched_ratio=1.0)
    want_a, want_b = np.zeros((3, 3), np.float32), np.zeros((3, 2), np.float32)
    for i in range(3):
        for k, (want, n) in enumerate(((want_a, 3), (want_b, 2))):
            start, length = ranges[i, k]
            if length != n:
                continue
            # A naive selection sort of the range's (key, value) pairs.
            pairs = [(int(key[j]), float(data[j])) for j in range(start, start + length)]
            for p in range(n):
                best = min(range(p, n), key=lambda q: pairs[q][0])
                pairs[p], pairs[best] = pairs[best], pairs[p]
                want[i, p] = pairs[p][1]
    np.testing.assert_array_equal(a, want_a)
    np.testing.assert_array_equal(b, want_b)


def test_gather_ranges_to_dense_ratio_checks() -> None:
    data = np.arange(6).astype(np.float32)
    # Feature 0: 1 empty range of 4 examples; feature 1: 2 mismatched (length 1, not 2).
    ranges = np.array([[[0, 1], [1, 2]], [[1, 0], [3, 1]], [[2, 1], [4, 1]], [[3, 1], [4, 2]]], np.int32)
    # Allowed: mismatched 2 <= max(4, 4) * 0.5.
    run_op("GatherRangesToDense", [data, ranges], 2, lengths=[1, 2], min_observation=4, max_mismatched_ratio=0.5)
    with pytest.raises(AsyncNetError, match="mismatched ranges for feature 1 is 0.5"):
        run_op("GatherRangesToDense", [data, ranges], 2, lengths=[1, 2], min_observation=4, max_mismatched_ratio=0.3)
    # min_observation raises the denominator: 2 <= 10 * 0.3.
    run_op("GatherRangesToDense", [data, ranges], 2, lengths=[1, 2], min_observation=10, max_mismatched_ratio=0.3)
    with pytest.raises(AsyncNetError, match="empty ranges for feature 0"):
        run_op(
            "GatherRangesToDense",
            [data, ranges],
            2,
            lengths=[1, 2],
            min_observation=4,
            max_mismatched_ratio=1.0,
            max_empty_ratio=0.2,
        )


def naive_hash(v: int, seed: int, modulo: int, fmt: str, bits: int) -> int:
    def wrap(x: int) -> int:
        x %= 1 << bits
        return x - (1 << bits) if x >= 1 << (bits - 1) else x

    h = wrap(seed * 0xDEADBEEF)
    for byte in struct.unpack(f"<{bits // 8}b", struct.pack(fmt, v)):
        h = wrap(h * 65537 + byte)
    r = int(math.fmod(h, modulo))
    return r + modulo if r < 0 else r


@pytest.mark.parametrize("dtype,fmt,bits", [(np.int32, "<i", 32), (np.int64, "<q", 64)])
def test_index_hash(dtype: type, fmt: str, bits: int) -> None:
    x = np.array([0, 1, -7, 123456, 2**30], dtype)
    (h,) = run_op("IndexHash", [x], seed=3, modulo=1000)
    assert h.dtype == x.dtype
    assert h.tolist() == [naive_hash(int(v), 3, 1000, fmt, bits) for v in x]


def test_merge_id_lists() -> None:
    l0, v0 = np.array([2, 0, 1], np.int32), np.array([5, 3, 9], np.int64)
    l1, v1 = np.array([1, 2, 1], np.int32), np.array([3, 4, 4, 9], np.int64)
    ml, mv = run_op("MergeIdLists", [l0, v0, l1, v1], 2)
    assert ml.tolist() == [2, 1, 1] and mv.tolist() == [3, 5, 4, 9]


@pytest.mark.parametrize("normalized", [0, 1])
def test_learning_rate_adaption(normalized: int) -> None:
    g, e = np.array([1.0, 2.0], np.float32), np.array([0.5, -1.0], np.float32)
    (lr,) = run_op(
        "LearningRateAdaption", [np.array([0.1], np.float32), g, e], lr_alpha=0.5, normalized_lr_adaption=normalized
    )
    x = 1.0 * 0.5 + 2.0 * -1.0
    want = 0.1 * (1 - 0.5 * x / (math.sqrt(5) * math.sqrt(1.25))) if normalized else 0.1 - 0.5 * x
    assert lr.tolist() == pytest.approx([want], rel=1e-6)
