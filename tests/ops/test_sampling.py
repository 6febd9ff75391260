"""WeightedSample and WeightedMultiSampling: one-hot weights pick exactly, and draws follow the weights."""

from __future__ import annotations

import numpy as np

from tests.ops.run_util import run_op


def test_weighted_sample_one_hot_rows() -> None:
    rng = np.random.default_rng(0)
    w = np.zeros((20, 7), np.float32)
    vals = rng.random((20, 7)).astype(np.float32)
    pick = rng.integers(0, 7, 20)
    w[np.arange(20), pick] = 1.0
    idx, v = run_op("WeightedSample", [w, vals], 2)
    assert idx.dtype == np.int32 and idx.tolist() == pick.tolist()
    np.testing.assert_array_equal(v, vals[np.arange(20), pick])
    (only,) = run_op("WeightedSample", [w])
    assert only.tolist() == pick.tolist()
    empty_idx, empty_v = run_op("WeightedSample", [np.zeros((0, 4), np.float32), np.zeros((0, 4), np.float32)], 2)
    assert empty_idx.shape == (0,) and empty_v.shape == (0,)


def test_weighted_sample_frequencies() -> None:
    w = np.tile(np.array([[1.0, 3.0, 0.0, 6.0]], np.float32), (20000, 1))
    (idx,) = run_op("WeightedSample", [w])
    freq = np.bincount(idx, minlength=4) / idx.size
    np.testing.assert_allclose(freq, [0.1, 0.3, 0.0, 0.6], atol=0.015)


def test_weighted_multi_sampling() -> None:
    w = np.zeros(50, np.float32)
    w[-1] = 1.5
    (idx,) = run_op("WeightedMultiSampling", [w], num_samples=9)
    assert idx.tolist() == [49] * 9
    (shaped,) = run_op("WeightedMultiSampling", [np.array([1.0, 1.0, 2.0], np.float32), np.zeros(4000)], infer=False)
    freq = np.bincount(shaped, minlength=3) / 4000
    np.testing.assert_allclose(freq, [0.25, 0.25, 0.5], atol=0.03)
    (none,) = run_op("WeightedMultiSampling", [np.zeros(0, np.float32)], num_samples=5, infer=False)
    assert none.size == 0
