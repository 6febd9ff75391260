"""RoIAlignRotated (+ gradient): RoIAlign over rotated RoIs [ctr_x, ctr_y, w, h, angle in degrees,
counter-clockwise], as Caffe2's CPU kernel."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from asyncnet.errors import ArgumentError, TensorError
from asyncnet.opinfo import OpInfo
from asyncnet.ops._util import info, order_arg
from asyncnet.ops.detection import F32, checked_array
from asyncnet.proto import caffe2_pb2 as pb
from asyncnet.registry import register_op
from asyncnet.schema import Arg, TensorInfo
from asyncnet.training.gradients import GradientContext, GradientSpec, register_gradient


class _Sampler:
    """Bilinear sample positions and weights of one RoI: the four corner indices into the flattened
    (H*W) map and their weights, per (output cell, sample), plus the sample count per cell."""

    def __init__(self, roi: np.ndarray, h: int, w: int, geom: tuple[int, int, int, float, bool]) -> None:
        ph, pw, ratio, scale, aligned = geom
        offset = F32(0.5) if aligned else F32(0.0)
        cx, cy = roi[0] * F32(scale) - offset, roi[1] * F32(scale) - offset
        rw, rh = roi[2] * F32(scale), roi[3] * F32(scale)
        theta = F32(float(roi[4]) * math.pi / 180.0)
        if aligned:
            if rw < 0 or rh < 0:
                raise TensorError(f"RoI {roi.tolist()} has a negative size")
        else:
            rw, rh = max(rw, F32(1.0)), max(rh, F32(1.0))
        bh, bw = rh / F32(ph), rw / F32(pw)
        gh = ratio if ratio > 0 else int(math.ceil(rh / ph))
        gw = ratio if ratio > 0 else int(math.ceil(rw / pw))
        self.count = gh * gw
        iy = (np.arange(gh, dtype=F32) + F32(0.5)) * bh / F32(max(gh, 1))
        ix = (np.arange(gw, dtype=F32) + F32(0.5)) * bw / F32(max(gw, 1))
        yy = (-rh / F32(2.0) + np.arange(ph, dtype=F32) * bh)[:, None, None, None] + iy[None, None, :, None]
        xx = (-rw / F32(2.0) + np.arange(pw, dtype=F32) * bw)[None, :, None, None] + ix[None, None, None, :]
        cos, sin = np.cos(theta), np.sin(theta)
        x = (xx * cos + yy * sin + cx).astype(F32).reshape(ph * pw, -1)
        y = (yy * cos - xx * sin + cy).astype(F32).reshape(ph * pw, -1)
        valid = ~((y < -1.0) | (y > h) | (x < -1.0) | (x > w))
        y, x = np.maximum(y, F32(0.0)), np.maximum(x, F32(0.0))
        y_lo, x_lo = y.astype(np.int64), x.astype(np.int64)
        y_end, x_end = y_lo >= h - 1, x_lo >= w - 1
        y_lo, x_lo = np.where(y_end, h - 1, y_lo), np.where(x_end, w - 1, x_lo)
        y_hi, x_hi = np.where(y_end, h - 1, y_lo + 1), np.where(x_end, w - 1, x_lo + 1)
        ly = np.where(y_end, F32(0.0), y - y_lo).astype(F32)
        lx = np.where(x_end, F32(0.0), x - x_lo).astype(F32)
        hy, hx = F32(1.0) - ly, F32(1.0) - lx
        self.pos = np.stack([y_lo * w + x_lo, y_lo * w + x_hi, y_hi * w + x_lo, y_hi * w + x_hi])
        self.wts = np.stack([hy * hx, hy * lx, ly * hx, ly * lx]) * valid

    def pool(self, fmap: np.ndarray) -> np.ndarray:
        """(C, H*W) -> (C, cells): the mean of the bilinear samples of each cell."""
        vals = fmap[:, self.pos] * self.wts[None]
        return np.asarray(vals.sum(axis=(1, 3)) / F32(max(self.count, 1)))

    def scatter(self, grad: np.ndarray, into: np.ndarray) -> None:
        """Add the adjoint of ``pool`` for cell gradients (C, cells) into ``into`` (C, H*W)."""
        share = grad[:, None, :, None] * self.wts[None] / F32(max(self.count, 1))
        for c in range(into.shape[0]):
            np.add.at(into[c], self.pos.reshape(-1), share[c].reshape(-1))


_ARGS = (
    Arg("spatial_scale", 1.0, "feature-map scale relative to the RoI coordinates"),
    Arg("pooled_h", 1, "output height"),
    Arg("pooled_w", 1, "output width"),
    Arg("sampling_ratio", -1, "samples per bin side (<= 0: adaptive, ceil(roi size / pooled))"),
    Arg("aligned", 0, "shift the RoI by -0.5 pixel and allow sizes below 1"),
    Arg("order", "NCHW", "NCHW or NHWC"),
)


class _Geometry:
    def __init__(self, op: OpInfo) -> None:
        self.ph, self.pw = op.int_arg("pooled_h"), op.int_arg("pooled_w")
        if self.ph < 1 or self.pw < 1:
            raise ArgumentError(f"{op.label()}: pooled_h and pooled_w must be positive, got {self.ph}, {self.pw}")
        self.args = (
            self.ph,
            self.pw,
            op.int_arg("sampling_ratio"),
            op.float_arg("spatial_scale"),
            op.bool_arg("aligned"),
        )
        self.nhwc = order_arg(op) == "NHWC"
        self.op = op

    def prepare(self, x: Any, rois: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """NCHW features, RoIs (R, 5) without batch column, and each RoI's batch index."""
        feat = checked_array(self.op, "X", x, 4)
        r = np.asarray(rois, dtype=F32)
        if r.size == 0:
            r = r.reshape(0, 6)
        if r.ndim != 2 or r.shape[1] not in (5, 6):
            raise TensorError(f"{self.op.label()}: RoIs must be (R, 5) or (R, 6), got {r.shape}")
        f = feat.transpose(0, 3, 1, 2) if self.nhwc else feat
        batch = r[:, 0].astype(np.int64) if r.shape[1] == 6 else np.zeros(r.shape[0], np.int64)
        if batch.size and (batch.min() < 0 or batch.max() >= f.shape[0]):
            raise TensorError(f"{self.op.label()}: RoI batch index out of range [0, {f.shape[0]})")
        return f, r[:, -5:], batch

    def sampler(self, roi: np.ndarray, h: int, w: int) -> _Sampler:
        try:
            return _Sampler(roi, h, w, self.args)
        except TensorError as e:
            raise TensorError(f"{self.op.label()}: {e}") from e


def _infer(op: OpInfo, ins: list[TensorInfo]) -> list[TensorInfo]:
    x, r = ins[0].shape, ins[1].shape
    ph, pw = op.int_arg("pooled_h"), op.int_arg("pooled_w")
    n = r[0] if r is not None else None
    nhwc = order_arg(op) == "NHWC"
    c = None if x is None or len(x) != 4 else x[3 if nhwc else 1]
    return [info((n, ph, pw, c) if nhwc else (n, c, ph, pw), ins[0].dtype or F32)]


@register_op(
    "RoIAlignRotated",
    inputs=2,
    args=_ARGS,
    infer=_infer,
    doc="RoIAlign for rotated RoIs (R, 5 or 6) [batch, ctr_x, ctr_y, w, h, angle in degrees counter-clockwise]: "
    "each output bin is the mean of bilinear samples on a grid rotated with the RoI about its centre. "
    "Output (R, C, pooled_h, pooled_w) (NHWC: (R, pooled_h, pooled_w, C)).",
    input_names=("X", "RoIs"),
    output_names=("Y",),
)
def roi_align_rotated(op: OpInfo) -> Callable[..., Any]:
    geom = _Geometry(op)

    def run(x: Any, rois: Any) -> tuple[np.ndarray]:
        f, r, batch = geom.prepare(x, rois)
        n, c, h, w = f.shape
        out = np.zeros((r.shape[0], c, geom.ph * geom.pw), dtype=F32)
        flat = f.reshape(n, c, h * w).astype(F32, copy=False)
        for k in range(r.shape[0]):
            out[k] = geom.sampler(r[k], h, w).pool(flat[batch[k]])
        y = out.reshape(r.shape[0], c, geom.ph, geom.pw)
        return (np.ascontiguousarray(y.transpose(0, 2, 3, 1)) if geom.nhwc else y,)

    return run


@register_gradient("RoIAlignRotated")
def _roi_align_rotated_grad(op: pb.OperatorDef, g_out: list[str | None]) -> GradientSpec:
    g = GradientContext(op, g_out)
    return g.spec([g.op_def("RoIAlignRotatedGradient", [g.I(0), g.I(1), g.GO(0)], [g.GI(0)])])


@register_op(
    "RoIAlignRotatedGradient",
    inputs=3,
    args=_ARGS,
    infer=lambda op, ins: [ins[0]],
    doc="Gradient of RoIAlignRotated: inputs X, RoIs, dY; dX spreads each bin's gradient over its bilinear "
    "samples (no gradient for the RoIs).",
    input_names=("X", "RoIs", "dY"),
    output_names=("dX",),
)
def roi_align_rotated_gradient(op: OpInfo) -> Callable[..., Any]:
    geom = _Geometry(op)

    def run(x: Any, rois: Any, dy: Any) -> tuple[np.ndarray]:
        f, r, batch = geom.prepare(x, rois)
        n, c, h, w = f.shape
        d = np.asarray(dy, dtype=F32)
        d = d.transpose(0, 3, 1, 2) if geom.nhwc else d
        if d.shape != (r.shape[0], c, geom.ph, geom.pw):
            raise TensorError(f"{op.label()}: dY must be {(r.shape[0], c, geom.ph, geom.pw)} (NCHW), got {d.shape}")
        dx = np.zeros((n, c, h * w), dtype=F32)
        for k in range(r.shape[0]):
            geom.sampler(r[k], h, w).scatter(d[k].reshape(c, -1), dx[batch[k]])
        out = dx.reshape(n, c, h, w).astype(np.asarray(x).dtype, copy=False)
        return (np.ascontiguousarray(out.transpose(0, 2, 3, 1)) if geom.nhwc else out,)

    return run
