"""The GREEDY engine's range search for n-bit row-wise quantization (Caffe2's param_search_greedy).

Starting from [min, max] of a row, each step shrinks the range by one of 200 bins, from whichever end
gives the lower L2 quantization error, until 84% of the range is left; the best local optimum seen
(an error lower than both neighbours) wins, else the full range. All rows are searched together.
"""

from __future__ import annotations

import numpy as np

F32 = np.float32
N_BINS = 200
RATIO = 0.16


def quantization_error(x: np.ndarray, lo: np.ndarray, hi: np.ndarray, bits: int) -> np.ndarray:
    """Per row, the L2 error of quantizing ``x`` on [lo, hi] with float16 scale and bias (float32)."""
    levels = F32((1 << bits) - 1)
    bias = lo.astype(np.float16).astype(F32)
    span = (hi - bias).astype(F32)
    scale = np.where(span == 0, F32(1.0), span / levels).astype(np.float16).astype(F32)
    scale = np.where(scale == 0, F32(1.0), scale)
    inv = (F32(1.0) / scale).astype(F32)
    q = np.clip(np.rint((x - bias[:, None]) * inv[:, None]), 0, levels).astype(F32)
    err = x - (q * scale[:, None] + bias[:, None])
    return np.asarray(np.sqrt((err * err).sum(axis=1, dtype=F32)), dtype=F32)


def greedy_ranges(x: np.ndarray, bits: int) -> tuple[np.ndarray, np.ndarray]:
    """The (lo, hi) quantization range of every row of float32 ``x`` (n, d)."""
    x = x.astype(F32)
    n = x.shape[0]
    if x.shape[1] == 0:
        z = np.zeros(n, F32)
        return z, z.copy()
    lo0, hi0 = x.min(axis=1), x.max(axis=1)
    step = ((hi0 - lo0) / F32(N_BINS)).astype(F32)
    thr = (F32(N_BINS) * (F32(1.0) - F32(RATIO)) * step).astype(F32)
    lo, hi = lo0.copy(), hi0.copy()
    loss = quantization_error(x, lo, hi, bits)
    best_lo, best_hi, best_loss = lo0.copy(), hi0.copy(), np.zeros(n, F32)
    found = np.zeros(n, bool)
    active = lo + thr < hi
    while active.any():
        r = np.nonzero(active)[0]
        left = quantization_error(x[r], lo[r] + step[r], hi[r], bits)
        right = quantization_error(x[r], lo[r], hi[r] - step[r], bits)
        local = (loss[r] < left) & (loss[r] < right)
        better = local & (~found[r] | (loss[r] < best_loss[r]))
        b = r[better]
        best_lo[b], best_hi[b], best_loss[b] = lo[b], hi[b], loss[b]
        found[r[local]] = True
        go_left = left < right
        lo[r] = np.where(go_left, lo[r] + step[r], lo[r])
        hi[r] = np.where(go_left, hi[r], hi[r] - step[r])
        loss[r] = np.where(go_left, left, right)
        active = active & (lo + thr < hi)
    return np.where(found, best_lo, lo0).astype(F32), np.where(found, best_hi, hi0).astype(F32)
