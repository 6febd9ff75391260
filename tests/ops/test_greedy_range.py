"""The GREEDY engine of FloatToFused{2,4}Bit[Fake]RowwiseQuantized: its range search against a naive
one-row-at-a-time loop written from Caffe2's description, and its error against min/max."""

from __future__ import annotations

import numpy as np
import pytest

from asyncnet.ops._greedy_range import greedy_ranges
from tests.ops.run_util import make_op, run_once


def row_error(row: np.ndarray, lo: float, hi: float, bits: int) -> float:
    levels = (1 << bits) - 1
    bias = float(np.float16(lo))
    span = np.float32(hi) - np.float32(bias)
    scale = float(np.float16(1.0 if span == 0 else span / np.float32(levels))) or 1.0
    total = 0.0
    for v in row:
        q = min(max(round((float(v) - bias) / scale), 0), levels)
        total += (float(v) - (q * scale + bias)) ** 2
    return total**0.5


def naive_search(row: np.ndarray, bits: int) -> tuple[float, float]:
    lo = hi = None
    cur_lo, cur_hi = np.float32(row.min()), np.float32(row.max())
    step = (cur_hi - cur_lo) / np.float32(200)
    stop = np.float32(200) * (np.float32(1) - np.float32(0.16)) * step
    cur = row_error(row, cur_lo, cur_hi, bits)
    best = None
    while cur_lo + stop < cur_hi:
        left = row_error(row, cur_lo + step, cur_hi, bits)
        right = row_error(row, cur_lo, cur_hi - step, bits)
        if cur < left and cur < right and (best is None or cur < best):
            best, lo, hi = cur, cur_lo, cur_hi
        if left < right:
            cur_lo, cur = cur_lo + step, left
        else:
            cur_hi, cur = cur_hi - step, right
    return (float(row.min()), float(row.max())) if lo is None or hi is None else (float(lo), float(hi))


@pytest.mark.parametrize("bits", [2, 4])
def test_greedy_search_matches_naive_loop(bits: int) -> None:
    rng = np.random.default_rng(bits)
    x = np.concatenate([rng.random((4, 40)), rng.normal(size=(3, 40)) ** 3]).astype(np.float32)
    lo, hi = greedy_ranges(x, bits)
    for r in range(x.shape[0]):
        want_lo, want_hi = naive_search(x[r], bits)
        # The float64 loop may break near-ties the other way; the chosen error must agree closely.
        err = row_error(x[r], float(lo[r]), float(hi[r]), bits)
        want = row_error(x[r], want_lo, want_hi, bits)
        assert err == pytest.approx(want, rel=1e-3, abs=1e-5), f"row {r}"


@pytest.mark.parametrize("op_type", ["FloatToFused4BitRowwiseQuantized", "FloatToFused2BitFakeRowwiseQuantized"])
def test_greedy_engine_is_no_worse_than_min_max(op_type: str) -> None:
    x = (np.random.default_rng(0).normal(size=(8, 64)) ** 3).astype(np.float32)
    back = "Fused8BitRowwiseQuantizedToFloat" if "Fake" in op_type else "Fused4BitRowwiseQuantizedToFloat"
    errs = {}
    for engine in ("", "GREEDY"):
        q_op = make_op(op_type, ["x"], ["q"])
        q_op.engine = engine
        (q,) = run_once(q_op, {"x": x})
        (y,) = run_once(make_op(back, ["q"], ["y"]), {"q": q})
        errs[engine] = np.linalg.norm(x - y, axis=1)
    assert np.all(errs["GREEDY"] <= errs[""] * 1.0001)
    assert np.any(errs["GREEDY"] < errs[""] * 0.99)  # heavy tails: the searched range does better
