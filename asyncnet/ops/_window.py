"""Window geometry and argument parsing shared by convolution, pooling and padding ops.

Caffe2's ``ConvPoolOpBase`` accepts each window parameter in several spellings
(``kernel`` / ``kernels`` / ``kernel_h`` + ``kernel_w`` and so on) and computes output
sizes with a ``legacy_pad`` mode. :class:`WindowArgs` parses those spellings once per
op; :meth:`WindowArgs.resolve` turns them into a :class:`Window` (kernel, stride,
dilation, head/tail pads and output size per spatial dim) for one input shape.

The numeric kernels that consume a :class:`Window` live in :mod:`asyncnet.ops._conv_util`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

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
