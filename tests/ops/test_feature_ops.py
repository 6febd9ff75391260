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
    data = np.array([10, 11, 12, 13, 14], np.int64)
    key = np.array([3, 1, 2, 9, 0], np.int64)
    ranges = np.array([[[0, 3]], [[3, 2]]], np.int32)
    (a,) = run_op("GatherRangesToDense", [data, ranges, key], 1, lengths=[3], max_mismatched_ratio=1.0)
    want = []
    for start, length in ((0, 3), (3, 2)):
        if length != 3:
            want.append([0, 0, 0])
            continue
        pairs = sorted(zip(key[start : start + length].tolist(), data[start : start + length].tolist()))
        want.append([v for _, v in pairs])
    assert a.tolist() == want == [[11, 12, 10], [0, 0, 0]]


def test_gather_ranges_to_dense_ratio_checks() -> None:
    data = np.arange(12, dtype=np.float32)
    # 2 examples x 2 features expecting lengths (1, 2): over the 4 ranges one is empty (0, 0) and
    # one mismatched (length 1 for feature 1).
    ranges = np.array([[[0, 0], [1, 1]], [[3, 1], [4, 2]]], np.int64)
    lens = [1, 2]
    run_op("GatherRangesToDense", [data, ranges], 2, lengths=lens, min_observation=2, max_mismatched_ratio=0.25)
    with pytest.raises(AsyncNetError, match="1 of 4 ranges do not have"):
        run_op("GatherRangesToDense", [data, ranges], 2, lengths=lens, min_observation=2, max_mismatched_ratio=0.2)
    # Below min_observation the mismatch ratio is not checked; the empty ratio always is.
    run_op("GatherRangesToDense", [data, ranges], 2, lengths=lens, min_observation=5, max_mismatched_ratio=0.0)
    with pytest.raises(AsyncNetError, match="1 of 4 ranges are empty"):
        run_op("GatherRangesToDense", [data, ranges], 2, lengths=lens, min_observation=50, max_empty_ratio=0.2)


def naive_hash(v: int, seed: int, modulo: int, fmt: str, bits: int) -> int:
    def wrap(x: int) -> int:
        x %= 1 << bits
        return x - (1 << bits) if x >= 1 << (bits - 1) else x

    h = wrap(seed * 0xDEADBEEF)
    for byte in struct.unpack(f"<{bits // 8}b", struct.pack(fmt, v)):
        h = wrap(h * 65537 + byte)
    r = abs(h) % modulo * (1 if h >= 0 else -1)  # C++'s truncating remainder, in exact integers
    return (modulo + r) % modulo


@pytest.mark.parametrize("dtype,fmt,bits", [(np.int32, "<i", 32), (np.int64, "<q", 64)])
def test_index_hash(dtype: type, fmt: str, bits: int) -> None:
    # 64-bit hashes near 2**63 need exact integer remainders (a float fmod is off in the low digits).
    x = np.array([0, 1, -7, 123456, 2**30, 987654321], dtype)
    (h,) = run_op("IndexHash", [x], seed=3, modulo=100003)
    assert h.dtype == x.dtype
    assert h.tolist() == [naive_hash(int(v), 3, 100003, fmt, bits) for v in x]


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
