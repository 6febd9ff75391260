"""Locally connected layers LC / LC1D / LC2D / LC3D (+ gradients): a convolution whose filter differs at
every output position, over 1, 2 or 3 spatial dims.

Layouts as Caffe2: NCHW X (N, C, *S), W (*O, M, C, *K), Y (N, M, *O); NHWC X (N, *S, C),
W (*O, M, *K, C), Y (N, *O, M); the bias is (*O, M) in both orders.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from asyncnet.errors import ArgumentError, TensorError
from asyncnet.opinfo import OpInfo
from asyncnet.ops._conv_util import col2im, padded_for_windows, window_view
from asyncnet.ops._window import CONV_ARGS, Window, WindowArgs
from asyncnet.proto import caffe2_pb2 as pb
from asyncnet.registry import register_op
from asyncnet.schema import Arg, TensorInfo
from asyncnet.training.gradients import GradientContext, GradientSpec, register_gradient

# Op type -> the spatial rank it demands (None: any of 1-3, from X).
_TYPES: dict[str, int | None] = {"LC": None, "LC1D": 1, "LC2D": 2, "LC3D": 3}
_ARGS = (*CONV_ARGS, Arg("no_bias", 0, "there is no bias input"))


class _Lc:
    """Geometry of one LC op applied to a concrete X and W."""

    def __init__(self, op: OpInfo, rank: int | None) -> None:
        self.op, self.rank = op, rank
        self.args = WindowArgs.parse(op)
        self.nhwc = self.args.order == "NHWC"
        if op.int_arg("group") != 1:
            raise ArgumentError(f"{op.label()}: LC has no channel groups (group must be 1, got {op.int_arg('group')})")

    def window(self, x: np.ndarray, w: np.ndarray) -> tuple[Window, int]:
        """The window and the number of filters M; checks every shape."""
        nd = x.ndim - 2
        if nd not in (1, 2, 3) or (self.rank is not None and nd != self.rank):
            want = f"{self.rank + 2}-D" if self.rank is not None else "3-D to 5-D"
            raise TensorError(f"{self.op.label()}: X must be {want}, got shape {x.shape}")
        if w.ndim != 2 * nd + 2:
            raise TensorError(f"{self.op.label()}: W must be {2 * nd + 2}-D for {nd} spatial dim(s), got {w.shape}")
        kernel = w.shape[nd + 1 : nd + 1 + nd] if self.nhwc else w.shape[nd + 2 :]
        spatial = x.shape[1:-1] if self.nhwc else x.shape[2:]
        win = self.args.resolve([int(s) for s in spatial], [int(k) for k in kernel])
        c = x.shape[-1] if self.nhwc else x.shape[1]
        m = int(w.shape[nd])
        want_w = (*win.out, m, *win.kernel, c) if self.nhwc else (*win.out, m, c, *win.kernel)
        if tuple(w.shape) != want_w:
            raise TensorError(f"{self.op.label()}: W must be {want_w} for X {x.shape} and this window, got {w.shape}")
        return win, m

    def columns(self, x: np.ndarray, win: Window) -> np.ndarray:
        """Per output position p the window's values: (N, C*K, P) NCHW, (N, P, K*C) NHWC."""
        order = self.args.order
        view = window_view(padded_for_windows(x, win, order), win, order, kernel_first=True)
        n, p = x.shape[0], int(np.prod(win.out))
        return view.reshape(n, -1, p) if not self.nhwc else view.reshape(n, p, -1)


def _infer(op: OpInfo, ins: list[TensorInfo]) -> list[TensorInfo]:
    x, w = ins[0].shape, ins[1].shape
    if x is None or w is None or len(x) < 3:
        return [TensorInfo(None, ins[0].dtype)]
    nd = len(x) - 2
    nhwc = WindowArgs.parse(op).order == "NHWC"
    out = w[:nd] if len(w) == 2 * nd + 2 else (None,) * nd
    m = w[nd] if len(w) == 2 * nd + 2 else None
    return [TensorInfo((x[0], *out, m) if nhwc else (x[0], m, *out), ins[0].dtype)]


def _forward(op: OpInfo, rank: int | None) -> Callable[..., Any]:
    lc = _Lc(op, rank)

    def run(x: Any, w: Any, b: Any = None) -> tuple[np.ndarray]:
        a, f = np.asarray(x), np.asarray(w)
        win, m = lc.window(a, f)
        cols = lc.columns(a, win)
        p = cols.shape[2] if not lc.nhwc else cols.shape[1]
        fw = f.reshape(p, m, -1)
        y = np.einsum("npq,pmq->npm", cols, fw) if lc.nhwc else np.einsum("nqp,pmq->nmp", cols, fw)
        if b is not None:
            bias = np.asarray(b).reshape(p, m)
            y = y + (bias[None] if lc.nhwc else bias.T[None])
        shape = (a.shape[0], *win.out, m) if lc.nhwc else (a.shape[0], m, *win.out)
        return (np.ascontiguousarray(y.reshape(shape), dtype=a.dtype),)

    return run


def _backward(op: OpInfo, rank: int | None) -> Callable[..., Any]:
    lc = _Lc(op, rank)
    no_bias = op.bool_arg("no_bias")

    def run(x: Any, w: Any, dy: Any) -> list[np.ndarray]:
        a, f, d = np.asarray(x), np.asarray(w), np.asarray(dy)
        win, m = lc.window(a, f)
        cols = lc.columns(a, win)
        n, p = a.shape[0], int(np.prod(win.out))
        if lc.nhwc:
            d3 = d.reshape(n, p, m)
            dw = np.einsum("npm,npq->pmq", d3, cols)
            dcols = np.einsum("npm,pmq->npq", d3, f.reshape(p, m, -1))
            dcols = dcols.reshape(n, *win.out, *win.kernel, a.shape[-1])
            db = d3.sum(axis=0)
        else:
            d3 = d.reshape(n, m, p)
            dw = np.einsum("nmp,nqp->pmq", d3, cols)
            dcols = np.einsum("nmp,pmq->nqp", d3, f.reshape(p, m, -1))
            dcols = dcols.reshape(n, a.shape[1], *win.kernel, *win.out)
            db = d3.sum(axis=0).T
        spatial = a.shape[1:-1] if lc.nhwc else a.shape[2:]
        dx = col2im(dcols, win, lc.args.order, [int(s) for s in spatial])
        out = [np.ascontiguousarray(dw.reshape(f.shape), dtype=f.dtype)]
        if not no_bias:
            out.append(np.ascontiguousarray(db.reshape(*win.out, m), dtype=f.dtype))
        if len(op.outputs) > len(out):
            out.append(np.ascontiguousarray(dx, dtype=a.dtype))
        return out

    return run


def _grad_maker(op: pb.OperatorDef, g_out: list[str | None]) -> GradientSpec:
    g = GradientContext(op, g_out)
    ins = [g.I(0), g.I(1), g.GO(0)]
    grad_type = f"{op.type}Gradient"
    if len(op.input) == 3:
        return g.spec([g.op_def(grad_type, ins, [g.GI(1), g.GI(2), g.GI(0)])])
    extra = {} if g.has_arg("no_bias") else {"no_bias": 1}
    return g.spec([g.op_def(grad_type, ins, [g.GI(1), g.GI(0)], extra)])


def _grad_infer(op: OpInfo, ins: list[TensorInfo]) -> list[TensorInfo]:
    w = ins[1].shape
    bias: list[TensorInfo] = []
    if not op.bool_arg("no_bias"):
        x = ins[0].shape
        nd = None if x is None else len(x) - 2
        shape = None if w is None or nd is None or len(w) != 2 * nd + 2 else tuple(w[: nd + 1])
        bias = [TensorInfo(shape, ins[1].dtype)]
    return [ins[1], *bias, ins[0]][: len(op.outputs)]


def _register(op_type: str, rank: int | None) -> None:
    dims = "1, 2 or 3 spatial dims (from X)" if rank is None else f"{rank} spatial dim(s)"
    register_op(
        op_type,
        inputs=(2, 3),
        args=_ARGS,
        infer=_infer,
        doc=f"Locally connected layer over {dims}: a convolution whose filter differs at every output "
        "position. NCHW: X (N, C, *S), W (*out, M, C, *kernel); NHWC: X (N, *S, C), W (*out, M, *kernel, C); "
        "bias (*out, M). Kernel, stride, pads and dilation as Conv.",
        input_names=("X", "W", "b"),
        output_names=("Y",),
    )(lambda op: _forward(op, rank))
    register_op(
        f"{op_type}Gradient",
        inputs=3,
        outputs=(1, 3),
        args=_ARGS,
        infer=_grad_infer,
        doc=f"Gradient of {op_type}: inputs X, W, dY; outputs dW, db (unless no_bias), dX.",
        input_names=("X", "W", "dY"),
        output_names=("dW", "db", "dX"),
    )(lambda op: _backward(op, rank))
    register_gradient(op_type)(_grad_maker)


for _type, _rank in _TYPES.items():
    _register(_type, _rank)
