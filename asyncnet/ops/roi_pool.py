"""RoIPool (Fast R-CNN) and its gradient: max over each of pooled_h x pooled_w bins of a RoI, with
RoI corners rounded to the feature grid as Caffe2's CPU kernel does."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from asyncnet.errors import ArgumentError, TensorError
from asyncnet.opinfo import OpInfo
from asyncnet.ops._util import info, order_arg
from asyncnet.ops.detection import checked_array
from asyncnet.proto import caffe2_pb2 as pb
from asyncnet.registry import register_op
from asyncnet.schema import Arg, TensorInfo
from asyncnet.training.gradients import GradientContext, GradientSpec, register_gradient

_ARGS = (
    Arg("spatial_scale", 1.0, "feature-map scale relative to the RoI coordinates"),
    Arg("pooled_h", 1, "output height"),
    Arg("pooled_w", 1, "output width"),
    Arg("is_test", 0, "inference: no argmax output"),
    Arg("order", "NCHW", "only NCHW"),
)


def _round(v: float) -> int:
    """C's round: halves away from zero."""
    return int(math.floor(v + 0.5)) if v >= 0 else -int(math.floor(-v + 0.5))


def _bins(roi: np.ndarray, h: int, w: int, ph: int, pw: int, scale: float) -> list[tuple[int, int, int, int]]:
    """(h0, h1, w0, w1) of every bin, row-major, clipped to the map (may be empty)."""
    x1, y1, x2, y2 = (_round(float(v) * scale) for v in roi)
    rh, rw = max(y2 - y1 + 1, 1), max(x2 - x1 + 1, 1)
    bh, bw = rh / ph, rw / pw
    out = []
    for i in range(ph):
        h0 = min(max(int(math.floor(i * bh)) + y1, 0), h)
        h1 = min(max(int(math.ceil((i + 1) * bh)) + y1, 0), h)
        for j in range(pw):
            w0 = min(max(int(math.floor(j * bw)) + x1, 0), w)
            w1 = min(max(int(math.ceil((j + 1) * bw)) + x1, 0), w)
            out.append((h0, h1, w0, w1))
    return out


class _Geom:
    def __init__(self, op: OpInfo) -> None:
        self.ph, self.pw = op.int_arg("pooled_h"), op.int_arg("pooled_w")
        self.scale = op.float_arg("spatial_scale")
        if self.ph < 1 or self.pw < 1:
            raise ArgumentError(f"{op.label()}: pooled_h and pooled_w must be positive")
        if order_arg(op) != "NCHW":
            raise ArgumentError(f"{op.label()}: RoIPool supports only NCHW")
        self.op = op

    def rois(self, x: Any, rois: Any) -> tuple[np.ndarray, np.ndarray]:
        feat = checked_array(self.op, "X", x, 4)
        r = np.asarray(rois, np.float32)
        if r.ndim != 2 or r.shape[1] != 5:
            raise TensorError(f"{self.op.label()}: RoIs must be (R, 5) [batch, x1, y1, x2, y2], got {r.shape}")
        b = r[:, 0].astype(np.int64)
        if b.size and (b.min() < 0 or b.max() >= feat.shape[0]):
            raise TensorError(f"{self.op.label()}: RoI batch index out of range [0, {feat.shape[0]})")
        return feat, r


def _infer(op: OpInfo, ins: list[TensorInfo]) -> list[TensorInfo]:
    x, r = ins[0].shape, ins[1].shape
    shape = (None if r is None else r[0], None if x is None else x[1], op.int_arg("pooled_h"), op.int_arg("pooled_w"))
    return [info(shape, ins[0].dtype), info(shape, np.int32)][: len(op.outputs)]


@register_op(
    "RoIPool",
    inputs=2,
    outputs=(1, 2),
    args=_ARGS,
    infer=_infer,
    doc="Max pooling of each RoI (R, 5) [batch, x1, y1, x2, y2] (corners scaled and rounded) into "
    "pooled_h x pooled_w bins; an empty bin gives 0. Output 1 (training): the flat h * W + w index of each "
    "max (-1 for an empty bin).",
    input_names=("X", "RoIs"),
    output_names=("Y", "argmaxes"),
)
def roi_pool(op: OpInfo) -> Callable[..., Any]:
    g = _Geom(op)
    want_argmax = len(op.outputs) > 1

    def run(x: Any, rois: Any) -> tuple[np.ndarray, ...]:
        feat, r = g.rois(x, rois)
        n, c, h, w = feat.shape
        y = np.zeros((r.shape[0], c, g.ph * g.pw), feat.dtype)
        arg = np.full((r.shape[0], c, g.ph * g.pw), -1, np.int32)
        for k in range(r.shape[0]):
            img = feat[int(r[k, 0])]
            for b, (h0, h1, w0, w1) in enumerate(_bins(r[k, 1:], h, w, g.ph, g.pw, g.scale)):
                if h1 <= h0 or w1 <= w0:
                    continue
                win = img[:, h0:h1, w0:w1].reshape(c, -1)
                best = win.argmax(axis=1)
                y[k, :, b] = win[np.arange(c), best]
                arg[k, :, b] = (h0 + best // (w1 - w0)) * w + w0 + best % (w1 - w0)
        shape = (r.shape[0], c, g.ph, g.pw)
        return (y.reshape(shape), arg.reshape(shape))[: 2 if want_argmax else 1]

    return run


@register_gradient("RoIPool")
def _roi_pool_grad(op: pb.OperatorDef, g_out: list[str | None]) -> GradientSpec:
    g = GradientContext(op, g_out)
    return g.spec([g.op_def("RoIPoolGradient", [g.I(0), g.I(1), g.O(1), g.GO(0)], [g.GI(0)])])


@register_op(
    "RoIPoolGradient",
    inputs=4,
    args=_ARGS,
    infer=lambda op, ins: [ins[0]],
    doc="Gradient of RoIPool: inputs X, RoIs, argmaxes, dY; each bin's gradient goes to its max.",
    input_names=("X", "RoIs", "argmaxes", "dY"),
    output_names=("dX",),
)
def roi_pool_gradient(op: OpInfo) -> Callable[..., Any]:
    g = _Geom(op)

    def run(x: Any, rois: Any, argmax: Any, dy: Any) -> tuple[np.ndarray]:
        feat, r = g.rois(x, rois)
        n, c, h, w = feat.shape
        a, d = np.asarray(argmax).astype(np.int64), np.asarray(dy)
        if a.shape != (r.shape[0], c, g.ph, g.pw) or d.shape != a.shape:
            raise TensorError(f"{op.label()}: argmaxes and dY must be {(r.shape[0], c, g.ph, g.pw)}")
        dx = np.zeros((n, c, h * w), feat.dtype)
        for k in range(r.shape[0]):
            flat_a, flat_d = a[k].reshape(c, -1), d[k].reshape(c, -1)
            for ch in range(c):
                ok = flat_a[ch] >= 0
                np.add.at(dx[int(r[k, 0]), ch], flat_a[ch][ok], flat_d[ch][ok])
        return (dx.reshape(feat.shape),)

    return run
