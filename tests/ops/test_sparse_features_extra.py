"""NGramFromCategorical, GatherByKey, RowWiseCounter, GatherFused8BitRowwise and Float16SparseNormalize
against naive loops written from Caffe2's documentation."""

from __future__ import annotations

import math

import numpy as np
import pytest

from asyncnet.errors import OperatorError
from tests.ops.run_util import run_op


def test_ngram_from_categorical() -> None:
    rng = np.random.default_rng(0)
    cols, limits = [2, 0], [3, 4]
    vocab = [[10, 20, 30], [7, 8, 9, 100]]
    f = rng.random((30, 4)).astype(np.float32) - 2  # rounds to a value in no vocabulary
    for row in range(30):
        for k, c in enumerate(cols):
            if rng.random() < 0.8:
                f[row, c] = vocab[k][rng.integers(limits[k])]
    (out,) = run_op("NGramFromCategorical", [f], col_ids=cols, categorical_limits=limits, vals=vocab[0] + vocab[1])
    want = []
    for row in range(30):
        total, base = 0, 1
        for k, c in enumerate(cols):
            v = int(round(float(f[row, c])))
            total += base * (vocab[k].index(v) if v in vocab[k] else 0)
            base *= limits[k]
        want.append(total)
    assert out.tolist() == want and out.dtype == np.int32


def test_gather_by_key_inverts_sharding() -> None:
    keys = np.array([5, -3, 8, 0, 4, 7, -1], np.int64)
    data = np.arange(14.0).reshape(7, 2)
    shards = [data[np.mod(keys, 3) == p] for p in range(3)]
    (out,) = run_op("GatherByKey", [keys, *shards])
    np.testing.assert_array_equal(out, data)
    with pytest.raises(OperatorError, match="shard 0"):
        run_op("GatherByKey", [keys, shards[0][:1], shards[1], shards[2]])


def test_rowwise_counter() -> None:
    prev = np.array([[0], [90], [100], [7]], np.int64)
    counter = np.array([3.0, 5.0, 2.0, 1.0])
    idx = np.array([1, 3, 2], np.int64)
    p, c = run_op(
        "RowWiseCounter", [prev, counter, idx, np.array([100], np.int64)], 2, inplace=[0, 1], counter_halflife=10
    )
    want_p, want_c = prev.reshape(-1).tolist(), counter.tolist()
    for i in idx:
        gap = max(0, 100 - want_p[i])
        want_c[i] = 1 + math.exp(-gap * math.log(2) / 10) * want_c[i]
        want_p[i] = max(100, want_p[i])
    assert p.reshape(-1).tolist() == want_p and p.shape == (4, 1)
    np.testing.assert_allclose(c, want_c, rtol=1e-12)
    p2, c2 = run_op("RowWiseCounter", [prev, counter, idx, np.array([100], np.int64)], 2, inplace=[0, 1])
    assert p2.tolist() == prev.tolist() and c2.tolist() == counter.tolist()  # halflife off: unchanged


def test_gather_fused_8bit_rowwise() -> None:
    x = np.random.default_rng(1).random((6, 5)).astype(np.float32)
    (q,) = run_op("FloatToFused8BitRowwiseQuantized", [x])
    idx = np.array([4, 0, 4], np.int32)
    (out,) = run_op("GatherFused8BitRowwise", [q, idx])
    (full,) = run_op("Fused8BitRowwiseQuantizedToFloat", [q])
    np.testing.assert_array_equal(out, full[idx])
    assert out.shape == (3, 5) and out.dtype == np.float32


def test_float16_sparse_normalize() -> None:
    p = np.array([[3.0, 4.0], [0.3, 0.4], [6.0, 8.0]], np.float16)
    (out,) = run_op("Float16SparseNormalize", [p, np.array([0, 1])], inplace=[0], use_max_norm=1, norm=1.0)
    assert out.dtype == np.float16
    np.testing.assert_allclose(out.astype(np.float32), [[0.6, 0.8], [0.3, 0.4], [6.0, 8.0]], atol=2e-3)
