"""2-D window kernels over a phase-split, row-flattened padded copy of the input (NCHW).

Splitting the padded image by stride phase (``xp[a::sh, b::sw]``) turns every kernel tap,
whatever the stride and dilation, into a stride-1 shift of one phase image. With each phase
image's rows laid end to end, the shift is a plain offset into a flat row of ``OH * Ws`` values
per channel: every tap is one long contiguous slice, so numpy's inner loops stay long even on
7x7 maps (a strided 4-D window view iterates rows of OW values). The ``Ws - OW`` columns per
row computed past the output are cropped at the end.

The buffer is kept per shape: its padding (zero, or the lowest value for max pooling) is
written once, and each run copies only the input into it (``sh * sw`` strided copies).
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import as_strided

from asyncnet.ops._window import Window


class PhaseSplit:
    """Geometry and padded buffer of one (input shape, window) pair."""

    def __init__(self, x_shape: tuple[int, ...], win: Window, dtype: np.dtype[Any], fill: Any = 0) -> None:
        n, c, h, w = x_shape
        (kh, kw), (sh, sw), (dh, dw) = win.kernel, win.stride, win.dilation
        (ph, pw), (oh, ow) = win.pad_head, win.out
        hs = -(-((oh - 1) * sh + (kh - 1) * dh + 1) // sh)
        ws = -(-((ow - 1) * sw + (kw - 1) * dw + 1) // sw)
        self.shape = (n, c, oh, ow)
        self.hs, self.ws, self.sw = hs, ws, sw
        self.length = oh * ws
        # Per kernel row i: (phase row a, row offset); per kernel column j: (phase column b, offset).
        self.rows = [((i * dh) % sh, (i * dh) // sh) for i in range(kh)]
        self.cols = [((j * dw) % sw, (j * dw) // sw) for j in range(kw)]
        self.taps: list[tuple[int, int, int, int]] = []  # (phase, flat offset, i, j)
        for i, (a, oi) in enumerate(self.rows):
            for j, (b, oj) in enumerate(self.cols):
                self.taps.append((a * sw + b, oi * ws + oj, i, j))
        extra = max(t[1] for t in self.taps) + self.length - hs * ws
        self.buf_shape = (n, c, sh * sw, hs * ws + max(extra, 0))
        self.dtype, self.fill = dtype, fill
        # Per phase: where the input lands (the rest of the buffer is padding and keeps ``fill``).
        self.copies: list[tuple[tuple[Any, ...], tuple[Any, ...]]] = []
        for a in range(sh):
            r0, r1 = max(-(-(ph - a) // sh), 0), min(hs, (h - 1 + ph - a) // sh + 1)
            for b in range(sw):
                q0, q1 = max(-(-(pw - b) // sw), 0), min(ws, (w - 1 + pw - b) // sw + 1)
                if r1 <= r0 or q1 <= q0:
                    continue
                i0, j0 = r0 * sh + a - ph, q0 * sw + b - pw
                src = (
                    slice(None),
                    slice(None),
                    slice(i0, i0 + (r1 - r0 - 1) * sh + 1, sh),
                    slice(j0, j0 + (q1 - q0 - 1) * sw + 1, sw),
                )
                self.copies.append((src, (a * sw + b, slice(r0, r1), slice(q0, q1))))
        self._buf: np.ndarray | None = None
        self._lock = threading.Lock()

    def run(self, x: np.ndarray, *args: Any) -> None:
        """Fill the buffer from ``x`` and call ``compute(buf, *args)``; concurrent calls pad their own copy."""
        locked = self._lock.acquire(blocking=False)
        try:
            buf = self._buf if locked else None
            if buf is None:
                buf = np.full(self.buf_shape, self.fill, dtype=self.dtype)
                if locked:
                    self._buf = buf
            n, c = self.shape[:2]
            for src, (phase, rows, cols) in self.copies:
                plane = buf[:, :, phase, : self.hs * self.ws].reshape(n, c, self.hs, self.ws)
                plane[:, :, rows, cols] = x[src]
            self.compute(buf, *args)
        finally:
            if locked:
                self._lock.release()

    def compute(self, buf: np.ndarray, *args: Any) -> None:
        raise NotImplementedError

    def crop(self, acc: np.ndarray, y: np.ndarray) -> None:
        """Copy the flat result [N, C, OH * Ws] into ``y`` [N, C, OH, OW]."""
        n, c, oh, ow = self.shape
        y[...] = acc.reshape(n, c, oh, self.ws)[:, :, :, :ow]


class FlatDepthwise(PhaseSplit):
    """Depthwise conv (one filter per channel), e.g. MobileNet's 3x3.

    Three ways to sum the taps, chosen per shape (measured on MobileNet's shapes): large maps
    multiply-add tap by tap; smaller maps at stride 1 make ``kw`` copies of the padded rows, each
    shifted by one kernel column, so that the taps of kernel row ``i`` are ``kw`` rows of one
    strided view, and sum them with one batched ``matmul`` per kernel row ([C, 1, kw] x
    [N, C, kw, L]: 0.57-0.63x the time of the columns form on 256x28x28 and 512x14x14); other
    small maps gather every tap slice into columns for one batched ``matmul``.
    """

    # Flat row length from which tap-by-tap multiply-adds beat the columns + matmul forms.
    TAPWISE_MIN_LEN = 2000
    # Whether stride-1 small maps use the shifted-rows form (bench/ turns it off to compare).
    SHIFTED = True

    def __init__(self, x_shape: tuple[int, ...], win: Window, dtype: np.dtype[Any]) -> None:
        super().__init__(x_shape, win, dtype, 0)
        self.tapwise = self.length >= self.TAPWISE_MIN_LEN
        self.shifted = self.SHIFTED and not self.tapwise and win.stride == (1, 1)
        (kh, _), (dh, dw) = win.kernel, win.dilation
        self.kh, self.dh, self.dw = kh, dh, dw

    def compute(self, buf: np.ndarray, *args: Any) -> None:
        w, y = args
        n, c = self.shape[:2]
        length = self.length
        wk = w.reshape(c, -1)
        kw = w.shape[-1]
        if self.tapwise:
            acc = np.empty((n, c, length), dtype=self.dtype)
            tmp = np.empty_like(acc)
            for k, (phase, off, i, j) in enumerate(self.taps):
                sl = buf[:, :, phase, off : off + length]
                wt = wk[:, i * kw + j].reshape(c, 1)
                if k == 0:
                    np.multiply(sl, wt, out=acc)
                else:
                    np.multiply(sl, wt, out=tmp)
                    acc += tmp
        elif self.shifted:
            acc = self._shifted_rows(buf, wk.reshape(c, self.kh, kw), n, c, kw)
        else:
            cols = np.empty((n, c, len(self.taps), length), dtype=self.dtype)
            order = [i * kw + j for _, _, i, j in self.taps]
            for k, (phase, off, _, _) in enumerate(self.taps):
                cols[:, :, k, :] = buf[:, :, phase, off : off + length]
            acc = np.matmul(wk[:, order].reshape(c, 1, len(order)), cols).reshape(n, c, length)
        self.crop(acc, y)

    def _shifted_rows(self, buf: np.ndarray, w3: np.ndarray, n: int, c: int, kw: int) -> np.ndarray:
        length, row = self.length, self.dh * self.ws
        span = (self.kh - 1) * row + length
        # copies[j] = the flat padded rows moved left by j * dw: kernel row i's taps are then the
        # rows (j) of one view at offset i * dh * Ws, with a row stride numpy's matmul hands to BLAS.
        copies = np.empty((kw, n, c, span), dtype=self.dtype)
        for j in range(kw):
            copies[j] = buf[:, :, 0, j * self.dw : j * self.dw + span]
        item = copies.itemsize
        strides = (c * span * item, span * item, n * c * span * item, item)
        acc = np.empty((n, c, 1, length), dtype=self.dtype)
        part = np.empty_like(acc) if self.kh > 1 else acc
        for i in range(self.kh):
            rows = as_strided(copies[0, :, :, i * row :], shape=(n, c, kw, length), strides=strides, writeable=False)
            np.matmul(w3[:, i, :].reshape(c, 1, kw), rows, out=acc if i == 0 else part)
            if i:
                acc += part
        return acc.reshape(n, c, length)


class FlatPool(PhaseSplit):
    """Max or sum over 2-D windows, separably: kernel rows first (per column phase), then columns.

    Padding holds ``fill`` (the lowest value for max, 0 for sums), so clipped windows come out
    right without per-border work; every pass is a whole flat slice.
    """

    def compute(self, buf: np.ndarray, *args: Any) -> None:
        combine, y = args
        n, c = self.shape[:2]
        length1 = self.length + max(oj for _, oj in self.cols)
        partial: dict[int, np.ndarray] = {}
        for b in sorted({b for b, _ in self.cols}):
            slices = [buf[:, :, a * self.sw + b, oi * self.ws : oi * self.ws + length1] for a, oi in self.rows]
            partial[b] = _reduce_into(np.empty((n, c, length1), dtype=self.dtype), slices, combine)
        slices = [partial[b][:, :, oj : oj + self.length] for b, oj in self.cols]
        self.crop(_reduce_into(np.empty((n, c, self.length), dtype=self.dtype), slices, combine), y)


def _reduce_into(out: np.ndarray, slices: list[np.ndarray], combine: Any) -> np.ndarray:
    """``combine`` of all ``slices`` (at least one), written into ``out``."""
    if len(slices) == 1:
        np.copyto(out, slices[0])
        return out
    combine(slices[0], slices[1], out=out)
    for sl in slices[2:]:
        combine(out, sl, out=out)
    return out
