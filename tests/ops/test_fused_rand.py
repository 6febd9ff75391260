"""FloatToFusedRandRowwiseQuantized / FusedRandRowwiseQuantizedToFloat against a naive per-element packing
loop (nearest rounding) and the unbiasedness of stochastic rounding."""

from __future__ import annotations

import numpy as np
import pytest

from asyncnet.errors import ArgumentError
from tests.ops.run_util import run_op


def naive_pack(x: np.ndarray, bits: int) -> np.ndarray:
    n, d = x.shape
    per = 8 // bits
    seg = -(-d // per)
    out = np.zeros((n, 10 + seg), np.uint8)
    for r in range(n):
        lo, hi = np.float32(x[r].min()), np.float32(x[r].max())
        out[r, 0], out[r, 1] = bits, (per - d % per) % per
        out[r, 2:6] = np.frombuffer(np.float32(lo).tobytes(), np.uint8)
        out[r, 6:10] = np.frombuffer(np.float32(hi).tobytes(), np.uint8)
        gap = np.float32((hi - lo) / np.float32((1 << bits) - 1))
        inv = np.float32(1.0 / (float(gap) + 1e-8))
        for j in range(d):
            t = min(max(float(np.float32((x[r, j] - lo) * inv)), 0.0), (1 << bits) - 1)
            q = int(np.rint(t))
            out[r, 10 + j % seg] |= q << ((j // seg) * bits)
    return out


@pytest.mark.parametrize("bits", [1, 2, 4, 8])
def test_nearest_rounding_layout_and_round_trip(bits: int) -> None:
    x = np.random.default_rng(bits).normal(size=(3, 11)).astype(np.float32)
    (q,) = run_op("FloatToFusedRandRowwiseQuantized", [x], bitwidth=bits, random=0)
    np.testing.assert_array_equal(q, naive_pack(x, bits))
    (back,) = run_op("FusedRandRowwiseQuantizedToFloat", [q], infer=False)
    step = (x.max(axis=1) - x.min(axis=1)) / ((1 << bits) - 1)
    assert back.shape == x.shape and np.all(np.abs(back - x) <= step[:, None] / 2 + 1e-5)


def test_stochastic_rounding_is_unbiased() -> None:
    x = np.tile(np.array([[0.0, 0.3, 0.55, 1.0]], np.float32), (4000, 1))
    (q,) = run_op("FloatToFusedRandRowwiseQuantized", [x], bitwidth=1)
    (back,) = run_op("FusedRandRowwiseQuantizedToFloat", [q], infer=False)
    assert set(np.unique(back).round(5).tolist()) <= {0.0, 1.0}
    np.testing.assert_allclose(back.mean(axis=0), [0.0, 0.3, 0.55, 1.0], atol=0.03)


def test_bitwidth_must_be_supported() -> None:
    with pytest.raises(ArgumentError, match="Unsupported bitwidth"):
        run_op("FloatToFusedRandRowwiseQuantized", [np.ones((1, 2), np.float32)], bitwidth=3)
