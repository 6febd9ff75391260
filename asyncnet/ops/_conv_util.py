"""Window arithmetic shared by convolution, pooling and padding ops (and their gradients).

Caffe2's ``ConvPoolOpBase`` accepts each window parameter in several spellings
(``kernel`` / ``kernels`` / ``kernel_h`` + ``kernel_w`` and so on) and computes output
sizes with a ``legacy_pad`` mode. :class:`WindowArgs` parses those spellings once per
op; :meth:`WindowArgs.resolve` turns them into a :class:`Window` (kernel, stride,
dilation, head/tail pads and output size per spatial dim) for one input shape.

The numeric helpers work on any number of spatial dims, in either storage order:
``window_view`` builds a strided (copy-free) view of every kernel window,
``im2col``/``col2im`` convert between images and GEMM columns, ``conv_forward`` and
``conv_transpose_forward`` are the kernels behind Conv and ConvTranspose.

Gradients reuse the same pieces: for Conv, dW = dY x im2col(X)^T and dX = col2im(W^T x dY)
(``col2im`` is the exact adjoint of ``window_view``); AveragePool's dX is ``col2im`` of dY
divided by ``window_counts`` and broadcast over the kernel; MaxPool's dX routes dY through
the tap (``tap_slices``) that held the maximum.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import as_strided

from asyncnet.errors import ArgumentError, ShapeInferenceError
from asyncnet.opinfo import OpInfo
from asyncnet.schema import Arg

NOTSET, VALID, SAME, CAFFE_LEGACY_POOLING = 0, 1, 2, 3
LEGACY_PAD_NAMES = {NOTSET: "NOTSET", VALID: "VALID", SAME: "SAME", CAFFE_LEGACY_POOLING: "CAFFE_LEGACY_POOLING"}

Dims = tuple[int, ...]

# Arguments that tune engine or library choices in Caffe2; numpy has nothing to tune.
TUNING_ARGS: tuple[Arg, ...] = (
    Arg("shared_buffer", 0, "ignored (Caffe2 col-buffer sharing)"),
    Arg("exhaustive_search", 0, "ignored (cuDNN algorithm search)"),
    Arg("cudnn_exhaustive_search", 0, "ignored (cuDNN algorithm search)"),
    Arg("ws_nbytes_limit", 0, "ignored (cuDNN workspace limit)"),
    Arg("force_algo_fwd", -1, "ignored (cuDNN forced algorithm)"),
    Arg("force_algo_dgrad", -1, "ignored (cuDNN forced algorithm)"),
    Arg("force_algo_wgrad", -1, "ignored (cuDNN forced algorithm)"),
    Arg("deterministic", 0, "ignored (cuDNN determinism)"),
    Arg("float16_compute", 0, "ignored (numpy computes in the input precision)"),
    Arg("algo", "AUTO", "ignored (NNPACK algorithm)"),
    Arg("convolution_transform_strategy", "COMPUTE", "ignored (NNPACK transform caching)"),
)

KERNEL_ARGS: tuple[Arg, ...] = (
    Arg("kernel", None, "kernel size of every spatial dim"),
    Arg("kernels", None, "kernel size per spatial dim"),
    Arg("kernel_h", None, "kernel height (2-D; with kernel_w)"),
    Arg("kernel_w", None, "kernel width (2-D; with kernel_h)"),
)
STRIDE_ARGS: tuple[Arg, ...] = (
    Arg("stride", None, "stride of every spatial dim (default 1)"),
    Arg("strides", None, "stride per spatial dim"),
    Arg("stride_h", None, "vertical stride (2-D; with stride_w)"),
    Arg("stride_w", None, "horizontal stride (2-D; with stride_h)"),
)
PAD_ARGS: tuple[Arg, ...] = (
    Arg("pad", None, "padding at both ends of every spatial dim (default 0)"),
    Arg("pads", None, "padding: the heads of every spatial dim, then the tails"),
    Arg("pad_t", None, "top padding (2-D; with pad_l, pad_b, pad_r)"),
    Arg("pad_l", None, "left padding"),
    Arg("pad_b", None, "bottom padding"),
    Arg("pad_r", None, "right padding"),
)
DILATION_ARGS: tuple[Arg, ...] = (
    Arg("dilation", None, "dilation of every spatial dim (default 1)"),
    Arg("dilations", None, "dilation per spatial dim"),
    Arg("dilation_h", None, "vertical dilation (2-D; with dilation_w)"),
    Arg("dilation_w", None, "horizontal dilation (2-D; with dilation_h)"),
)
LEGACY_PAD_ARG = Arg(
    "legacy_pad", NOTSET, "0 NOTSET (explicit pads), 1 VALID, 2 SAME, 3 CAFFE_LEGACY_POOLING (ceil output size)"
)
ORDER_ARG = Arg("order", "NCHW", "storage order: NCHW (channels first) or NHWC (channels last)")

CONV_ARGS: tuple[Arg, ...] = (
    *KERNEL_ARGS,
    *STRIDE_ARGS,
    *PAD_ARGS,
    *DILATION_ARGS,
    LEGACY_PAD_ARG,
    ORDER_ARG,
    Arg("group", 1, "number of channel groups"),
    *TUNING_ARGS,
)
POOL_ARGS: tuple[Arg, ...] = (
    *KERNEL_ARGS,
    *STRIDE_ARGS,
    *PAD_ARGS,
    *DILATION_ARGS,
    LEGACY_PAD_ARG,
    ORDER_ARG,
    Arg("global_pooling", 0, "pool over the whole spatial extent (kernel = input size)"),
    Arg("cudnn_exhaustive_search", 0, "ignored (cuDNN algorithm search)"),
    Arg("deterministic", 0, "ignored (cuDNN determinism)"),
)


@dataclass(frozen=True)
class Window:
    """Window geometry for one input: every tuple has one entry per spatial dim."""

    kernel: Dims
    stride: Dims
    dilation: Dims
    pad_head: Dims
    pad_tail: Dims
    out: Dims

    @property
    def dkernel(self) -> Dims:
        """Extent of each dilated kernel."""
        return tuple(d * (k - 1) + 1 for k, d in zip(self.kernel, self.dilation))

    @property
    def is_pointwise(self) -> bool:
        """1x1 kernel, stride 1, no padding: a plain GEMM over channels."""
        return (
            all(k == 1 for k in self.kernel)
            and all(s == 1 for s in self.stride)
            and not any(self.pad_head)
            and not any(self.pad_tail)
        )


def compute_size_and_pad(
    in_size: int, stride: int, kernel: int, dilation: int, legacy_pad: int, head: int, tail: int
) -> tuple[int, int, int]:
    """Caffe2's ConvPoolOpBase::ComputeSizeAndPad: (out_size, pad_head, pad_tail).

    Raises ValueError (callers rewrap it) when the window does not fit.
    """
    dk = dilation * (kernel - 1) + 1
    if legacy_pad == NOTSET:
        if in_size + head + tail < dk:
            raise ValueError(f"input size {in_size} plus pads {head}+{tail} is smaller than the kernel extent {dk}")
        return (in_size + head + tail - dk) // stride + 1, head, tail
    if legacy_pad == VALID:
        if in_size < dk:
            raise ValueError(f"input size {in_size} is smaller than the kernel extent {dk} (legacy_pad VALID)")
        return (in_size - dk) // stride + 1, 0, 0
    if legacy_pad == SAME:
        if dilation != 1:
            raise ValueError("legacy_pad SAME does not support dilation")
        target = (in_size + stride - 1) // stride
        needed = max((target - 1) * stride + kernel - in_size, 0)
        head = needed // 2
        return (in_size + needed - dk) // stride + 1, head, needed - head
    if legacy_pad == CAFFE_LEGACY_POOLING:
        # Caffe rounded the output size up where Caffe2 rounds down; the tail pad
        # grows so that the extra window exists.
        if head < 0:
            raise ValueError(f"pad {head} is negative")
        num = in_size + 2 * head - kernel
        out = -(-num // stride) + 1
        if head > 0 and (out - 1) * stride >= in_size + head:
            out -= 1
        standard = int(num / stride + 1)
        return out, head, head + stride * (out - standard)
    raise ValueError(f"unknown legacy_pad {legacy_pad}")


def _get_dims(op: OpInfo, list_name: str, single: str, pair: tuple[str, ...]) -> tuple[int, ...] | int | None:
    """One window parameter from its spellings: a tuple, a scalar to broadcast, or None."""
    if op.has(list_name):
        return tuple(op.ints_arg(list_name))
    if op.has(single):
        return op.int_arg(single)
    given = [n for n in pair if op.has(n)]
    if given and len(given) != len(pair):
        missing = [n for n in pair if n not in given]
        raise ArgumentError(f"{op.label()}: argument(s) {given} need {missing} as well")
    if given:
        return tuple(op.int_arg(n) for n in pair)
    return None


@dataclass(frozen=True)
class WindowArgs:
    """Window arguments of a conv/pool-like op as written (before the input is known)."""

    label: str
    kernel: tuple[int, ...] | int | None
    stride: tuple[int, ...] | int | None
    dilation: tuple[int, ...] | int | None
    pads: tuple[int, ...] | int | None
    legacy_pad: int
    global_pooling: bool
    order: str

    @classmethod
    def parse(cls, op: OpInfo, *, dilation: bool = True, pooling: bool = False) -> WindowArgs:
        """Read every spelling from ``op``; raise ArgumentError on contradictions."""
        order = str(op.arg("order", "NCHW")).upper()
        if order not in ("NCHW", "NHWC"):
            raise ArgumentError(f"{op.label()}: order must be NCHW or NHWC, got '{order}'")
        legacy = op.int_arg("legacy_pad", NOTSET) if "legacy_pad" in op.schema.arg_map else NOTSET
        if legacy not in LEGACY_PAD_NAMES:
            raise ArgumentError(f"{op.label()}: legacy_pad must be 0..3, got {legacy}")
        pads = _get_dims(op, "pads", "pad", ("pad_t", "pad_l", "pad_b", "pad_r"))
        if pads is not None and legacy in (VALID, SAME):
            raise ArgumentError(
                f"{op.label()}: legacy_pad {LEGACY_PAD_NAMES[legacy]} computes the padding itself; "
                f"explicit pads {pads} are not allowed"
            )
        win = cls(
            label=op.label(),
            kernel=_get_dims(op, "kernels", "kernel", ("kernel_h", "kernel_w")),
            stride=_get_dims(op, "strides", "stride", ("stride_h", "stride_w")),
            dilation=_get_dims(op, "dilations", "dilation", ("dilation_h", "dilation_w")) if dilation else None,
            pads=pads,
            legacy_pad=legacy,
            global_pooling=pooling and op.bool_arg("global_pooling", False),
            order=order,
        )
        for name in ("kernel", "stride", "dilation"):
            v = getattr(win, name)
            vals = v if isinstance(v, tuple) else () if v is None else (v,)
            # Global pooling ignores the kernel, and Caffe2 nets do write kernel 0 there.
            if any(x <= 0 for x in vals) and not (name == "kernel" and win.global_pooling and min(vals) == 0):
                raise ArgumentError(f"{op.label()}: {name} values must be positive, got {v}")
        if win.global_pooling:
            bad = [
                n
                for n, v in (("stride", win.stride), ("dilation", win.dilation), ("pads", win.pads))
                if v is not None and any(x != (0 if n == "pads" else 1) for x in (v if isinstance(v, tuple) else (v,)))
            ]
            if bad:
                raise ArgumentError(f"{op.label()}: global_pooling cannot be combined with {', '.join(bad)}")
        return win

    def n_spatial(self) -> int | None:
        """Spatial rank fixed by the arguments (None: any rank)."""
        for v in (self.kernel, self.stride, self.dilation):
            if isinstance(v, tuple):
                return len(v)
        if isinstance(self.pads, tuple):
            return len(self.pads) // 2
        return None

    def expand(self, name: str, v: tuple[int, ...] | int | None, nd: int, default: int) -> Dims:
        """One value per spatial dim: ``default`` when unset, a scalar repeated, a list checked for length."""
        if v is None:
            return (default,) * nd
        if isinstance(v, int):
            return (v,) * nd
        if len(v) != nd:
            raise ArgumentError(f"{self.label}: {name} {list(v)} has {len(v)} values for {nd} spatial dim(s)")
        return v

    # The first name of ``expand``; int8 and gradient kernels call it.
    _expand = expand

    def spatial_shape(self, shape: Sequence[Any]) -> tuple[Any, ...]:
        """The spatial dims of an input shape in this op's storage order."""
        return tuple(shape[2:]) if self.order == "NCHW" else tuple(shape[1:-1])

    def channels(self, shape: Sequence[Any]) -> Any:
        return shape[1] if self.order == "NCHW" else shape[-1]

    def resolve(self, spatial: Sequence[int], filter_kernel: Sequence[int] | None = None) -> Window:
        """Window geometry for an input with these spatial dims.

        ``filter_kernel`` (the filter's spatial dims) supplies the kernel when no
        kernel argument is given and must agree with it otherwise.
        """
        nd = len(spatial)
        if nd == 0:
            raise ArgumentError(f"{self.label}: the input has no spatial dims")
        if self.global_pooling:
            kernel = tuple(int(s) for s in spatial)
        elif self.kernel is None:
            if filter_kernel is None:
                raise ArgumentError(f"{self.label}: no kernel size given (kernel, kernels or kernel_h/kernel_w)")
            kernel = tuple(int(k) for k in filter_kernel)
        else:
            kernel = self.expand("kernel", self.kernel, nd, 1)
            if filter_kernel is not None and tuple(filter_kernel) != kernel:
                raise ArgumentError(
                    f"{self.label}: kernel {list(kernel)} does not match the filter's spatial dims {list(filter_kernel)}"
                )
        stride = self.expand("stride", self.stride, nd, 1)
        dilation = self.expand("dilation", self.dilation, nd, 1)
        if self.pads is None:
            pads: Dims = (0,) * (2 * nd)
        elif isinstance(self.pads, int):
            pads = (self.pads,) * (2 * nd)
        else:
            if len(self.pads) != 2 * nd:
                raise ArgumentError(
                    f"{self.label}: pads {list(self.pads)} must have {2 * nd} values (heads, then tails)"
                )
            pads = self.pads
        if self.legacy_pad in (NOTSET, CAFFE_LEGACY_POOLING) and any(p < 0 for p in pads):
            raise ArgumentError(f"{self.label}: pads must be non-negative, got {list(pads)}")
        if self.global_pooling:
            return Window(kernel, (1,) * nd, (1,) * nd, (0,) * nd, (0,) * nd, (1,) * nd)
        out, head, tail = [], [], []
        for i in range(nd):
            try:
                o, h, t = compute_size_and_pad(
                    int(spatial[i]), stride[i], kernel[i], dilation[i], self.legacy_pad, pads[i], pads[nd + i]
                )
            except ValueError as exc:
                raise ArgumentError(f"{self.label}: spatial dim {i}: {exc}") from None
            if o <= 0:
                raise ArgumentError(f"{self.label}: spatial dim {i} of size {spatial[i]} gives output size {o}")
            out.append(o)
            head.append(h)
            tail.append(t)
        return Window(kernel, stride, dilation, tuple(head), tuple(tail), tuple(out))

    def infer_spatial(
        self, spatial: Sequence[int | None], filter_kernel: Sequence[int | None] | None = None
    ) -> tuple[int | None, ...]:
        """Output spatial dims for partially known input dims (None = unknown)."""
        nd = len(spatial)
        if self.global_pooling:
            return (1,) * nd
        fk = None
        if filter_kernel is not None and all(k is not None for k in filter_kernel):
            fk = [int(k) for k in filter_kernel]  # type: ignore[arg-type]
        if self.kernel is None and fk is None:
            return (None,) * nd
        # Unknown dims get a stand-in size large enough for any window; their output is then dropped.
        big = 1 << 20
        try:
            win = self.resolve([big if s is None else s for s in spatial], fk)
        except ArgumentError as exc:
            raise ShapeInferenceError(str(exc)) from None
        return tuple(None if s is None else o for s, o in zip(spatial, win.out))


# ---------------------------------------------------------------------------
# Array helpers


def spatial_axes(ndim: int, order: str) -> range:
    """Axes holding spatial dims for an array of rank ``ndim``."""
    return range(2, ndim) if order == "NCHW" else range(1, ndim - 1)


def pad_spatial(x: np.ndarray, head: Sequence[int], tail: Sequence[int], order: str, value: Any = 0) -> np.ndarray:
    """Pad the spatial dims (non-negative pads) with a constant; no copy when nothing is padded."""
    if not any(head) and not any(tail):
        return x
    axes = spatial_axes(x.ndim, order)
    shape = list(x.shape)
    index: list[slice] = [slice(None)] * x.ndim
    for i, ax in enumerate(axes):
        shape[ax] += head[i] + tail[i]
        index[ax] = slice(head[i], head[i] + x.shape[ax])
    out = np.full(shape, value, dtype=x.dtype)
    out[tuple(index)] = x
    return out


def window_view(xp: np.ndarray, win: Window, order: str, *, kernel_first: bool) -> np.ndarray:
    """A strided view of every (dilated, strided) window of a padded input; no copy.

    NCHW input gives ``(N, C, *kernel, *out)`` when ``kernel_first`` else ``(N, C, *out, *kernel)``;
    NHWC input gives ``(N, *out, *kernel, C)`` (``kernel_first`` is ignored).
    """
    axes = list(spatial_axes(xp.ndim, order))
    st = xp.strides
    k_shape = list(win.kernel)
    k_strides = [st[a] * d for a, d in zip(axes, win.dilation)]
    o_shape = list(win.out)
    o_strides = [st[a] * s for a, s in zip(axes, win.stride)]
    if order == "NCHW":
        lead_shape, lead_strides = list(xp.shape[:2]), list(st[:2])
        if kernel_first:
            shape, strides = lead_shape + k_shape + o_shape, lead_strides + k_strides + o_strides
        else:
            shape, strides = lead_shape + o_shape + k_shape, lead_strides + o_strides + k_strides
    else:
        shape = [xp.shape[0]] + o_shape + k_shape + [xp.shape[-1]]
        strides = [st[0]] + o_strides + k_strides + [st[-1]]
    return as_strided(xp, shape=tuple(shape), strides=tuple(strides), writeable=False)


def tap_slices(win: Window, tap: Sequence[int], ndim: int, order: str) -> tuple[slice, ...]:
    """Index of a padded input selecting, for kernel position ``tap``, the element of every window."""
    index: list[slice] = [slice(None)] * ndim
    for i, ax in enumerate(spatial_axes(ndim, order)):
        start = tap[i] * win.dilation[i]
        index[ax] = slice(start, start + win.stride[i] * (win.out[i] - 1) + 1, win.stride[i])
    return tuple(index)


def taps(kernel: Sequence[int]) -> itertools.product[tuple[int, ...]]:
    """Every kernel position (the loop over taps is short; pixels stay vectorized)."""
    return itertools.product(*(range(k) for k in kernel))


def _full_tail(x_spatial: Sequence[int], win: Window) -> Dims:
    """Tail pads large enough for every window (Caffe2 clips windows that run past the input)."""
    return tuple(
        max(win.pad_tail[i], (win.out[i] - 1) * win.stride[i] + win.dkernel[i] - x_spatial[i] - win.pad_head[i], 0)
        for i in range(len(x_spatial))
    )


def padded_for_windows(x: np.ndarray, win: Window, order: str, value: Any = 0) -> np.ndarray:
    """``x`` padded at the heads and as far at the tails as the windows reach."""
    sp = [x.shape[a] for a in spatial_axes(x.ndim, order)]
    return pad_spatial(x, win.pad_head, _full_tail(sp, win), order, value)


# ---------------------------------------------------------------------------
# Convolution


def im2col(x: np.ndarray, win: Window, order: str, group: int = 1) -> np.ndarray:
    """GEMM columns of ``x`` (a contiguous copy unless the conv is pointwise).

    NCHW: ``(N, G, C/G * prod(kernel), prod(out))`` rows ordered (channel, *kernel).
    NHWC: ``(G, N * prod(out), prod(kernel) * C/G)`` columns ordered (*kernel, channel).
    """
    n = x.shape[0]
    p = int(np.prod(win.out, dtype=np.int64))
    kk = int(np.prod(win.kernel, dtype=np.int64))
    if order == "NCHW":
        c = x.shape[1]
        if win.is_pointwise:
            return x.reshape(n, group, c // group, p)
        view = window_view(padded_for_windows(x, win, order), win, order, kernel_first=True)
        return view.reshape(n, group, (c // group) * kk, p)
    c = x.shape[-1]
    cg = c // group
    if group == 1:
        if win.is_pointwise:
            return x.reshape(1, n * p, c)
        return window_view(padded_for_windows(x, win, order), win, order, kernel_first=False).reshape(1, n * p, kk * c)
    view = window_view(padded_for_windows(x, win, order), win, order, kernel_first=False)
    # (N, *out, *k, C) -> (G, N, *out, *k, C/G): split channels, move the group axis first.
    split = view.reshape(*view.shape[:-1], group, cg)
    return np.moveaxis(split, -2, 0).reshape(group, n * p, kk * cg)


def depthwise_conv(x: np.ndarray, w: np.ndarray, win: Window, order: str) -> np.ndarray:
    """Conv with one filter per input channel (group == C == M): a multiply-add per kernel tap.

    Channels-last grouped GEMMs are tiny and strided; summing over the few taps is faster.
    """
    xp = padded_for_windows(x, win, order)
    c = w.shape[0]
    nd = len(win.kernel)
    wk = w.reshape(c, *win.kernel)
    bshape = (1, c) + (1,) * nd if order == "NCHW" else (1,) * (nd + 1) + (c,)
    dtype = np.result_type(x.dtype, w.dtype)
    acc: np.ndarray | None = None
    for tap in taps(win.kernel):
        term = xp[tap_slices(win, tap, xp.ndim, order)] * wk[(slice(None),) + tuple(tap)].reshape(bshape)
        if acc is None:
            acc = term.astype(dtype, copy=False)
        else:
            acc += term
    assert acc is not None  # kernels have at least one tap
    return acc


def conv_forward(x: np.ndarray, w: np.ndarray, b: np.ndarray | None, win: Window, order: str, group: int) -> np.ndarray:
    """Caffe2 Conv: ``x`` [N, C, *S] (NCHW) or [N, *S, C] (NHWC), filter [M, C/G, *k] or [M, *k, C/G]."""
    n = x.shape[0]
    m = w.shape[0]
    dtype = np.result_type(x.dtype, w.dtype)
    kk = int(np.prod(win.kernel, dtype=np.int64))
    if order == "NCHW":
        cols = im2col(x, win, order, group)  # (N, G, K, P)
        wmat = w.reshape(group, m // group, -1)
        y = np.matmul(wmat, cols).reshape(n, m, *win.out)
        if b is not None:
            y += b.reshape((1, m) + (1,) * len(win.out)).astype(dtype, copy=False)
        out: np.ndarray = y.astype(dtype, copy=False)
        return out
    cg = x.shape[-1] // group
    if group > 1 and cg == 1 and m == group:
        y = depthwise_conv(x, w, win, order)
        if b is not None:
            y += b.reshape(m).astype(dtype, copy=False)
        return np.ascontiguousarray(y, dtype=dtype)
    cols = im2col(x, win, order, group)  # (G, N*P, K*Cg)
    wmat = w.reshape(group, m // group, kk * cg)
    if group == 1:
        y = cols[0] @ wmat[0].T
    else:
        y = np.matmul(cols, wmat.transpose(0, 2, 1)).transpose(1, 0, 2)
    y = y.reshape(n, *win.out, m)
    if b is not None:
        y += b.reshape(m).astype(dtype, copy=False)
    return np.ascontiguousarray(y, dtype=dtype)


def col2im(cols: np.ndarray, win: Window, order: str, out_spatial: Sequence[int], *, crop: bool = True) -> np.ndarray:
    """Scatter-add window columns back into an image (the adjoint of ``window_view``).

    ``cols`` is ``(N, C, *kernel, *win.out)`` (NCHW) or ``(N, *win.out, *kernel, C)`` (NHWC).
    The result has spatial dims ``out_spatial`` (the unpadded image) when ``crop``,
    else the padded extent.
    """
    nd = len(win.kernel)
    full = [h + s + t for h, s, t in zip(win.pad_head, out_spatial, _full_tail(out_spatial, win))]
    if order == "NCHW":
        n, c = cols.shape[:2]
        buf = np.zeros((n, c, *full), dtype=cols.dtype)
    else:
        n, c = cols.shape[0], cols.shape[-1]
        buf = np.zeros((n, *full, c), dtype=cols.dtype)
    for tap in taps(win.kernel):
        index = tap_slices(win, tap, buf.ndim, order)
        if order == "NCHW":
            src = cols[(slice(None), slice(None)) + tuple(tap)]
        else:
            src = cols[(slice(None),) + (slice(None),) * nd + tuple(tap)]
        buf[index] += src
    if not crop:
        return buf
    index_l: list[slice] = [slice(None)] * buf.ndim
    for i, ax in enumerate(spatial_axes(buf.ndim, order)):
        index_l[ax] = slice(win.pad_head[i], win.pad_head[i] + out_spatial[i])
    return buf[tuple(index_l)]


def conv_transpose_forward(
    x: np.ndarray,
    w: np.ndarray,
    b: np.ndarray | None,
    kernel: Sequence[int],
    stride: Sequence[int],
    pad_head: Sequence[int],
    out_spatial: Sequence[int],
    order: str,
    group: int,
) -> np.ndarray:
    """Caffe2 ConvTranspose: filter [C_in, C_out/G, *k] (NCHW) or [C_in, *k, C_out/G] (NHWC).

    One GEMM per group gives every kernel tap's contribution; ``col2im`` sums them into
    the output, whose spatial size ``out_spatial`` already accounts for pads and adj.
    """
    n = x.shape[0]
    nd = len(kernel)
    dtype = np.result_type(x.dtype, w.dtype)
    kk = int(np.prod(kernel, dtype=np.int64))
    cin = w.shape[0]
    cout_g = w.shape[1] if order == "NCHW" else w.shape[-1]
    cout = cout_g * group
    in_sp = tuple(x.shape[2:]) if order == "NCHW" else tuple(x.shape[1:-1])
    p = int(np.prod(in_sp, dtype=np.int64))
    # Express the scatter as col2im over a window whose "output" is the input grid.
    tail = tuple(
        max(o + h - ((i - 1) * s + k), 0) for o, h, i, s, k in zip(out_spatial, pad_head, in_sp, stride, kernel)
    )
    win = Window(tuple(kernel), tuple(stride), (1,) * nd, tuple(pad_head), tail, in_sp)
    if order == "NCHW":
        xg = x.reshape(n, group, cin // group, p)
        wg = w.reshape(group, cin // group, cout_g * kk)
        cols = np.matmul(wg.transpose(0, 2, 1), xg)  # (N, G, Cout/G * K, P)
        cols = cols.reshape(n, cout, *kernel, *in_sp)
    else:
        xg = x.reshape(n * p, group, cin // group).transpose(1, 0, 2)
        wg = w.reshape(group, cin // group, kk * cout_g)
        cols = np.matmul(xg, wg)  # (G, N*P, K*Cout/G)
        cols = cols.reshape(group, n, *in_sp, *kernel, cout_g)
        cols = np.moveaxis(cols, 0, -2).reshape(n, *in_sp, *kernel, cout)
    y = col2im(cols.astype(dtype, copy=False), win, order, out_spatial)
    if b is not None:
        shape = (1, cout) + (1,) * nd if order == "NCHW" else (cout,)
        y = y + b.reshape(shape).astype(dtype, copy=False)
    return np.ascontiguousarray(y, dtype=dtype)


# ---------------------------------------------------------------------------
# Pooling


def window_counts(x_spatial: Sequence[int], win: Window) -> list[np.ndarray]:
    """Per spatial dim: how many input positions each output window covers (Caffe2 clips at the input)."""
    counts = []
    for i, size in enumerate(x_spatial):
        start = np.arange(win.out[i]) * win.stride[i] - win.pad_head[i]
        end = np.minimum(start + win.kernel[i], size)
        counts.append(end - np.maximum(start, 0))
    return counts


def lowest(dtype: np.dtype[Any]) -> Any:
    """The smallest finite value of a dtype (Caffe2 starts max pooling there)."""
    if np.issubdtype(dtype, np.floating):
        return np.finfo(dtype).min
    if np.issubdtype(dtype, np.integer):
        return np.iinfo(dtype).min
    return False


def _separable_reduce(xp: np.ndarray, win: Window, order: str, combine: Any) -> np.ndarray:
    """Reduce every window of a padded input one spatial dim at a time (max and sum are separable):
    k_h + k_w passes over shrinking arrays instead of k_h * k_w passes."""
    y = xp
    for i, ax in enumerate(spatial_axes(xp.ndim, order)):
        acc: np.ndarray | None = None
        index: list[slice] = [slice(None)] * xp.ndim
        for t in range(win.kernel[i]):
            start = t * win.dilation[i]
            index[ax] = slice(start, start + win.stride[i] * (win.out[i] - 1) + 1, win.stride[i])
            sl = y[tuple(index)]
            if acc is None:
                acc = sl.copy()
            else:
                combine(acc, sl, out=acc)
        assert acc is not None  # kernels have at least one tap
        y = acc
    return y


def max_pool(x: np.ndarray, win: Window, order: str) -> np.ndarray:
    """Max over each window; padding never wins (windows are clipped to the input)."""
    return _separable_reduce(padded_for_windows(x, win, order, lowest(x.dtype)), win, order, np.maximum)


def average_pool(x: np.ndarray, win: Window, order: str, count_include_pad: bool) -> np.ndarray:
    """Mean over each window: divided by the full kernel size or by the positions inside the input."""
    work = x if np.issubdtype(x.dtype, np.inexact) else x.astype(np.float64)
    acc = _separable_reduce(padded_for_windows(work, win, order, 0), win, order, np.add)
    if count_include_pad:
        acc *= work.dtype.type(1.0 / float(np.prod(win.kernel)))
    else:
        sp = [x.shape[a] for a in spatial_axes(x.ndim, order)]
        counts = window_counts(sp, win)
        denom = counts[0].astype(np.float64)
        for c in counts[1:]:
            denom = np.multiply.outer(denom, c)
        shape = (1, 1, *denom.shape) if order == "NCHW" else (1, *denom.shape, 1)
        # Division by zero cannot happen: legal windows always overlap the input.
        acc /= denom.reshape(shape).astype(acc.dtype)
    return acc.astype(x.dtype, copy=False)
