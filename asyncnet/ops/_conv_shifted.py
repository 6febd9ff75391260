"""Stride-1 2-D convolution as kernel-height accumulating GEMMs over shifted copies of the input.

im2col copies the input ``kh * kw`` times into columns [C * kh * kw, OH * OW] and runs one GEMM.
Here the image is laid out as in :mod:`asyncnet.ops._flat` -- padded rows of ``Ws`` values end to
end, so that a kernel tap is a plain offset into a flat row -- and copied only ``kw`` times, each
copy shifted left by one kernel column (``cols[j, c] = padded[c]`` moved by ``j * dw``). The taps
of kernel row ``i`` are then the rows of all ``kw`` copies read from offset ``i * dh * Ws``: one
[kw * C, OH * Ws] operand with leading dimension ``Hs * Ws``, no copy. ``kh`` GEMMs (through
:mod:`asyncnet.ops._cblas`, which accumulates with ``beta = 1``, what numpy's matmul cannot) sum
into [M, OH * Ws]; the bias is the accumulator's starting value, and the ``Ws - OW`` columns per
row past the output are cropped at the end.

Compared with im2col: a third of the copying for 3x3 kernels (a fifth for 5x5), and columns that
stay in cache; but the GEMMs do ``Ws / OW`` times the work, in ``kh`` smaller calls. Per input
value, im2col's extra copies cost about what ``M * waste`` multiply-adds do, so the kernel is used
where ``M * (Ws - OW) / OW`` is at most :data:`MAX_EXTRA_MACS` (and the waste itself at most
:data:`MAX_WASTE`). Measured against the im2col path on the 2-vCPU bench machine (same process,
interleaved; M * waste in brackets): 0.76x the time on ResNet-50's 64x56x56 3x3 conv [2.3],
0.80-0.95x on 128x28x28 [9], 0.49-0.61x on the INCEPTION bench's 5x5 and 3x3 convs [1.1, 1.7];
in SqueezeNet, 1.3-1.4x on its 48->192 and 64->256 14x14 expand convs [27, 37] and 1.17x on
512x7x7 [146], which stay on im2col.
"""

from __future__ import annotations

import threading

import numpy as np

from asyncnet.ops._cblas import Gemm
from asyncnet.ops._window import Window

# Largest extra GEMM work (Ws - OW) / OW, and output channels times it, for which this kernel
# is chosen over im2col.
MAX_WASTE = 0.15
MAX_EXTRA_MACS = 16.0


def waste(win: Window) -> float:
    """The fraction of extra GEMM columns this kernel computes for ``win`` (stride 1)."""
    (kw,), (dw,), (ow,) = win.kernel[1:], win.dilation[1:], win.out[1:]
    return (kw - 1) * dw / ow if ow else float("inf")


def applicable(x_shape: tuple[int, ...], w_shape: tuple[int, ...], win: Window, group: int) -> bool:
    """NCHW 2-D, stride 1, non-negative pads, one group, a non-empty output, little waste."""
    return (
        len(x_shape) == 4
        and len(win.kernel) == 2
        and group == 1
        and win.stride == (1, 1)
        and all(p >= 0 for p in (*win.pad_head, *win.pad_tail))
        and all(o > 0 for o in win.out)
        and all(d > 0 for d in x_shape)
        and w_shape[0] > 0
        and waste(win) <= MAX_WASTE
        and waste(win) * w_shape[0] <= MAX_EXTRA_MACS
    )


class ShiftedConv:
    """The shifted-copies convolution for one (input shape, filter shape, dtype)."""

    def __init__(self, x_shape: tuple[int, ...], w_shape: tuple[int, ...], win: Window, gemm: Gemm) -> None:
        n, c, h, w = x_shape
        m, _, kh, kw = w_shape
        (ph, pw), (dh, dw), (oh, ow) = win.pad_head, win.dilation, win.out
        self.gemm, self.dtype = gemm, gemm.dtype
        self.n, self.c, self.m, self.kh, self.kw, self.dh, self.dw = n, c, m, kh, kw, dh, dw
        self.oh, self.ow = oh, ow
        self.ws = ow + (kw - 1) * dw
        self.hs = oh + (kh - 1) * dh
        self.length = oh * self.ws
        # GEMM geometry, fixed by the plan: K rows (j, c) of the copies, each Hs * Ws apart; kernel row
        # i's weights start i * row_bytes into the reordered filter and its taps i * dh * Ws values
        # into the copies.
        item = gemm.dtype.itemsize
        self.k, self.plane = kw * c, self.hs * self.ws
        self.row_bytes = m * kw * c * item
        self.tap_bytes = dh * self.ws * item
        # Per shifted copy j: where the input lands, clipped to the copy (rows past Hs and columns
        # past Ws are never read; columns shifted out on the left are dropped).
        r0, r1 = ph, min(self.hs, ph + h)
        self.copies: list[tuple[int, tuple[slice, slice], tuple[slice, slice]]] = []
        for j in range(kw):
            t0 = pw - j * dw  # target column of input column 0
            q0 = max(0, -t0)
            q1 = min(w, self.ws - t0)
            if r1 > r0 and q1 > q0:
                self.copies.append((j, (slice(r0, r1), slice(t0 + q0, t0 + q1)), (slice(0, r1 - r0), slice(q0, q1))))
        self._scratch: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        self._lock = threading.Lock()

    def run(self, x: np.ndarray, w: np.ndarray, b: np.ndarray | None, y: np.ndarray) -> None:
        """``y`` [N, M, OH, OW] = conv(x, w) + b; concurrent calls use their own scratch."""
        locked = self._lock.acquire(blocking=False)
        try:
            scratch = self._scratch if locked else None
            if scratch is None:
                scratch = (
                    # Zeroed once: the padding and the columns shifted in on the right are never written.
                    np.zeros((self.kw, self.c, self.hs, self.ws), dtype=self.dtype),
                    np.empty((self.m, self.length), dtype=self.dtype),
                    np.empty((self.kh, self.m, self.kw, self.c), dtype=self.dtype),
                )
                if locked:
                    self._scratch = scratch
            cols, acc, rows = scratch
            # Kernel row i as [M, kw * C] (column j * C + c, the row order of the copies). Copied every
            # run, never cached: optimizers and users may change a weight array in place.
            np.copyto(rows, w.transpose(2, 0, 3, 1))
            bias = None if b is None else b.reshape(self.m, 1).astype(self.dtype, copy=False)
            for img in range(self.n):
                self._image(x[img], rows, bias, cols, acc)
                y[img] = acc.reshape(self.m, self.oh, self.ws)[:, :, : self.ow]
        finally:
            if locked:
                self._lock.release()

    def _image(
        self, x: np.ndarray, rows: np.ndarray, bias: np.ndarray | None, cols: np.ndarray, acc: np.ndarray
    ) -> None:
        for j, dst, src in self.copies:
            cols[j, :, dst[0], dst[1]] = x[:, src[0], src[1]]
        beta = 0.0
        if bias is not None:
            np.copyto(acc, bias)
            beta = 1.0
        for i in range(self.kh):
            # In bounds: i * dh * Ws + OH * Ws <= Hs * Ws.
            self.gemm(
                self.m,
                self.length,
                self.k,
                rows.ctypes.data + i * self.row_bytes,
                self.k,
                cols.ctypes.data + i * self.tap_bytes,
                self.plane,
                beta,
                acc.ctypes.data,
                self.length,
            )
            beta = 1.0
