"""Conv forward planned once per input shape: the path, padding buffer and GEMM layout.

:func:`asyncnet.ops._conv_util.conv_forward` is the reference formulation (a window view,
im2col, one batched GEMM). The planned kernel here computes the same result with the work
laid out for OpenBLAS and for numpy's per-call overheads:

* ``pointwise`` (1x1, stride 1, no pads, any group count): the input already is the GEMM
  operand; one ``matmul`` per call writes [N, G, M/G, P] straight into the NCHW output.
* ``flat_depthwise`` (one filter per channel in 2-D NCHW, MobileNet's 3x3): taps summed over
  long flat slices of a phase-split padded copy (:mod:`asyncnet.ops._flat`), instead of C
  tiny GEMMs over im2col columns.
* ``depthwise`` (other depthwise convs, e.g. NHWC): a multiply-add per kernel tap over whole
  padded slices, vectorized across batch, channels and pixels.
* ``shifted`` (stride-1 2-D NCHW, one group, maps wide enough): ``kw`` shifted copies of the
  input and ``kh`` accumulating CBLAS GEMMs over them (:mod:`asyncnet.ops._conv_shifted`),
  where numpy's BLAS exports CBLAS; otherwise:
* ``im2col``: one copy of the strided window view into contiguous columns, then one batched
  ``matmul`` over every image and group, again written directly into the NCHW output.

Tried and dropped (measured slower than ``im2col`` on every ResNet/SqueezeNet 3x3 shape):
Winograd F(2x2, 3x3) — its input/output transforms as numpy passes cost more than the 2.25x
fewer multiplications save, and the filter transform grows with C x M on small maps.

Padding goes to a buffer the plan keeps: its border is zeroed once and only the interior is
copied per run (the geometry is fixed for a plan). NHWC convolutions use the same pointwise
and depthwise ideas channels-last; other NHWC cases fall back to ``conv_forward``.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

from asyncnet.ops import _buffers, _cblas, _conv_shifted
from asyncnet.ops._buffers import OutputBuffer
from asyncnet.ops._conv_util import Window, _full_tail, conv_forward, spatial_axes, tap_slices, taps, window_view
from asyncnet.ops._flat import FlatDepthwise

# Up to this many (image, group) GEMMs per call take the bias-first CBLAS form; more (many groups or
# a large batch) stay one batched numpy matmul plus a bias pass (a ctypes call costs a few us).
MAX_BIAS_GEMMS = 8


class ConvPlan:
    """The forward computation of one Conv for one (X shape, filter shape, dtype)."""

    def __init__(
        self,
        x_shape: tuple[int, ...],
        w_shape: tuple[int, ...],
        dtype: np.dtype[Any],
        win: Window,
        order: str,
        group: int,
    ) -> None:
        self.win, self.order, self.group, self.dtype = win, order, group, dtype
        self.n = x_shape[0]
        self.m = w_shape[0]
        c = x_shape[1] if order == "NCHW" else x_shape[-1]
        self.cg = c // group
        self.mg = self.m // group
        self.kk = int(np.prod(win.kernel, dtype=np.int64))
        self.p = int(np.prod(win.out, dtype=np.int64))
        self.out_shape = (self.n, self.m, *win.out) if order == "NCHW" else (self.n, *win.out, self.m)
        nd = len(win.kernel)
        self.flat: FlatDepthwise | None = None
        self.shifted: _conv_shifted.ShiftedConv | None = None
        self._gemm = _cblas.gemm_for(dtype) if order == "NCHW" else None
        if win.is_pointwise:
            self.kind = "pointwise"
        elif self.cg == 1 and self.mg == 1 and order == "NCHW" and nd == 2:
            self.kind = "flat_depthwise"
            self.flat = FlatDepthwise(x_shape, win, dtype)
        elif self.cg == 1 and self.mg == 1:
            self.kind = "depthwise"
        elif order == "NCHW":
            self.kind = "im2col"
            if self._gemm is not None and _conv_shifted.applicable(x_shape, w_shape, win, group):
                self.kind = "shifted"
                self.shifted = _conv_shifted.ShiftedConv(x_shape, w_shape, win, self._gemm)
        else:
            self.kind = "reference"
        # Padding buffer: heads and the tails every window reaches; border zeroed once, kept.
        sp = [x_shape[a] for a in spatial_axes(len(x_shape), order)]
        tail = _full_tail(sp, win)
        self.padded = any(win.pad_head) or any(tail)
        self._pad: np.ndarray | None = None
        self._cols: np.ndarray | None = None
        self._pad_lock = threading.Lock()
        if self.padded:
            axes = list(spatial_axes(len(x_shape), order))
            pshape = list(x_shape)
            interior: list[slice] = [slice(None)] * len(x_shape)
            for i, ax in enumerate(axes):
                pshape[ax] = x_shape[ax] + win.pad_head[i] + tail[i]
                interior[ax] = slice(win.pad_head[i], win.pad_head[i] + x_shape[ax])
            self._pad_shape = tuple(pshape)
            self._interior = tuple(interior)
        bshape = [1] * (nd + 2)
        bshape[1 if order == "NCHW" else -1] = self.m
        self.bias_shape = tuple(bshape)

    # -- helpers -------------------------------------------------------------------------

    def _padded_input(self, x: np.ndarray, scratch: bool) -> np.ndarray:
        """``x`` with zero padding; ``scratch`` uses (and overwrites) the plan's own buffer."""
        if not self.padded:
            return x
        buf = self._pad if scratch else None
        if buf is None:
            buf = np.zeros(self._pad_shape, dtype=x.dtype)
            if scratch:
                self._pad = buf
        buf[self._interior] = x
        return buf

    def run(self, x: np.ndarray, w: np.ndarray, b: np.ndarray | None, out: OutputBuffer | None) -> np.ndarray:
        """The Conv output for ``x`` (shape and dtype as planned)."""
        if self.kind == "reference" or x.dtype != self.dtype or w.dtype != self.dtype:
            return conv_forward(x, w, b, self.win, self.order, self.group)
        y = out.take(self.out_shape, self.dtype) if out is not None else np.empty(self.out_shape, self.dtype)
        if self.shifted is not None:
            self.shifted.run(x, w, b, y)  # adds the bias itself
            return y
        biased = False
        if self.kind == "pointwise":
            biased = self._pointwise(x, w, y, b)
        elif self.flat is not None:
            self.flat.run(x, w, y)
        else:
            # The padding buffer is the plan's; a concurrent call of the same kernel pads its own copy.
            locked = self._pad_lock.acquire(blocking=False)
            try:
                xp = self._padded_input(x, scratch=locked)
                if self.kind == "depthwise":
                    self._depthwise(xp, w, y)
                else:
                    biased = self._im2col(xp, w, y, locked, b)
            finally:
                if locked:
                    self._pad_lock.release()
        if b is not None and not biased:
            y += b.reshape(self.bias_shape).astype(self.dtype, copy=False)
        return y

    # -- paths ---------------------------------------------------------------------------

    def _pointwise(self, x: np.ndarray, w: np.ndarray, y: np.ndarray, b: np.ndarray | None) -> bool:
        n, g, cg, mg, p = self.n, self.group, self.cg, self.mg, self.p
        if self.order == "NCHW":
            return self._channels_first_matmul(w, x, y, cg, b)
        if g == 1:
            np.matmul(x.reshape(n * p, cg), w.reshape(mg, cg).T, out=y.reshape(n * p, mg))
        else:
            xg = x.reshape(n * p, g, cg).transpose(1, 0, 2)
            yg = np.matmul(xg, w.reshape(g, mg, cg).transpose(0, 2, 1))  # (G, N*P, M/G)
            y.reshape(n * p, g, mg)[...] = yg.transpose(1, 0, 2)
        return False

    def _depthwise(self, xp: np.ndarray, w: np.ndarray, y: np.ndarray) -> None:
        """Channels-last (or not 2-D) depthwise: a multiply-add per tap; channels are the long inner loop."""
        win, order = self.win, self.order
        nd = len(win.kernel)
        wk = w.reshape(self.m, *win.kernel)
        bshape = (1, self.m) + (1,) * nd if order == "NCHW" else (1,) * (nd + 1) + (self.m,)
        tmp: np.ndarray | None = None
        for k, tap in enumerate(taps(win.kernel)):
            sl = xp[tap_slices(win, tap, xp.ndim, order)]
            wt = wk[(slice(None),) + tuple(tap)].reshape(bshape)
            if k == 0:
                np.multiply(sl, wt, out=y)
                continue
            if tmp is None:
                tmp = np.empty_like(y)
            np.multiply(sl, wt, out=tmp)
            y += tmp

    def _im2col(self, xp: np.ndarray, w: np.ndarray, y: np.ndarray, locked: bool, b: np.ndarray | None) -> bool:
        k = self.cg * self.kk
        view = window_view(xp, self.win, "NCHW", kernel_first=True)  # (N, C, *k, *out)
        cols = self._cols if locked else None
        if cols is None:
            cols = np.empty(view.shape, dtype=self.dtype)
            # Columns past glibc's mmap threshold would page-fault afresh every run (see _buffers).
            if locked and cols.nbytes >= _buffers.MIN_BYTES and _buffers.ENABLED:
                self._cols = cols
        np.copyto(cols, view)
        return self._channels_first_matmul(w, cols, y, k, b)

    def _channels_first_matmul(
        self, w: np.ndarray, cols: np.ndarray, y: np.ndarray, k: int, b: np.ndarray | None = None
    ) -> bool:
        """y[n, group, m/group, P] = w[group, m/group, k] @ cols[n, group, k, P]; True when ``b`` was added too.

        With a bias and CBLAS at hand, y starts as the bias and the GEMMs accumulate onto it (one
        pass over the output fewer than adding it afterwards); otherwise one numpy matmul per call.
        """
        n, g, mg, p = self.n, self.group, self.mg, self.p
        gemm = self._gemm
        if (
            gemm is not None
            and b is not None
            and n * g <= MAX_BIAS_GEMMS
            and min(mg, k, p) > 0  # BLAS rejects a zero leading dimension
            and w.flags.c_contiguous
            and cols.flags.c_contiguous
            and y.flags.c_contiguous
        ):
            yv = y.reshape(n, g, mg, p)
            np.copyto(yv, b.reshape(1, g, mg, 1))
            wv, cv = w.reshape(g, mg, k), cols.reshape(n, g, k, p)
            for i in range(n):
                for gi in range(g):
                    gemm(mg, p, k, wv[gi].ctypes.data, k, cv[i, gi].ctypes.data, p, 1.0, yv[i, gi].ctypes.data, p)
            return True
        if g == 1:
            wm = w.reshape(mg, k)
            if n == 1:
                np.matmul(wm, cols.reshape(k, p), out=y.reshape(mg, p))
            else:
                np.matmul(wm, cols.reshape(n, k, p), out=y.reshape(n, mg, p))
        else:
            np.matmul(w.reshape(g, mg, k), cols.reshape(n, g, k, p), out=y.reshape(n, g, mg, p))
        return False
