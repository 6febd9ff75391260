"""RoIAlign (Mask R-CNN): average of bilinear samples per output bin, as Caffe2's CPU kernel."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from asyncnet.errors import ArgumentError, TensorError
from asyncnet.opinfo import OpInfo
from asyncnet.ops._util import info, order_arg
from asyncnet.ops.detection import F32, checked_array
from asyncnet.registry import register_op
from asyncnet.schema import Arg, TensorInfo


def _roi_align_infer(op: OpInfo, ins: list[TensorInfo]) -> list[TensorInfo]:
    x, r = ins[0].shape, ins[1].shape
    ph, pw = op.int_arg("pooled_h"), op.int_arg("pooled_w")
    n_rois = r[0] if r is not None else None
    c = None if x is None or len(x) != 4 else (x[1] if order_arg(op) == "NCHW" else x[3])
    shape = (n_rois, c, ph, pw) if order_arg(op) == "NCHW" else (n_rois, ph, pw, c)
    return [info(shape, ins[0].dtype or F32)]


def _axis_weights(start: float, bin_size: float, pooled: int, grid: int, size: int) -> tuple[np.ndarray, int, int]:
    """Bilinear sampling weights (pooled, size) summed over the grid of each bin, and the used range."""
    wts = np.zeros((pooled, size), dtype=np.float64)
    p = np.arange(pooled)[:, None]
    g = np.arange(grid)[None, :]
    coords = (start + p * bin_size + (g + 0.5) * bin_size / grid).astype(F32).astype(np.float64)
    valid = (coords >= -1.0) & (coords <= size)
    c = np.maximum(coords, 0.0)
    low = np.floor(c).astype(np.int64)
    at_end = low >= size - 1
    low = np.where(at_end, size - 1, low)
    high = np.where(at_end, size - 1, low + 1)
    c = np.where(at_end, low.astype(np.float64), c)
    frac = c - low
    w_low = np.where(valid, 1.0 - frac, 0.0)
    w_high = np.where(valid, frac, 0.0)
    rows = np.broadcast_to(p, coords.shape)
    np.add.at(wts, (rows, low), w_low)
    np.add.at(wts, (rows, high), w_high)
    used = np.nonzero(wts.any(axis=0))[0]
    if used.size == 0:
        return wts[:, :0], 0, 0
    lo, hi = int(used[0]), int(used[-1]) + 1
    return wts[:, lo:hi], lo, hi


@register_op(
    "RoIAlign",
    inputs=2,
    outputs=1,
    args=(
        Arg("spatial_scale", 1.0, "feature-map scale relative to the RoI coordinates"),
        Arg("pooled_h", 1, "output height"),
        Arg("pooled_w", 1, "output width"),
        Arg("sampling_ratio", -1, "samples per bin side (<= 0: adaptive, ceil(roi size / pooled))"),
        Arg("aligned", 0, "shift the RoI by -0.5 pixel (pixel-centre alignment)"),
        Arg("order", "NCHW", "NCHW or NHWC"),
    ),
    infer=_roi_align_infer,
    input_names=("X", "RoIs"),
    doc="RoIAlign: average of bilinear samples per output bin for RoIs (R, 5) [batch, x1, y1, x2, y2] or (R, 4).",
)
def roi_align(op: OpInfo) -> Callable[..., Any]:
    scale = op.float_arg("spatial_scale")
    ph, pw = op.int_arg("pooled_h"), op.int_arg("pooled_w")
    ratio = op.int_arg("sampling_ratio")
    aligned = op.bool_arg("aligned")
    nhwc = order_arg(op) == "NHWC"
    if ph < 1 or pw < 1:
        raise ArgumentError(f"{op.label()}: pooled_h and pooled_w must be positive, got {ph} and {pw}")

    def run(x: Any, rois: Any) -> tuple[np.ndarray]:
        feat = checked_array(op, "X", x, 4)
        r = checked_array(op, "RoIs", rois, 2).astype(F32, copy=False)
        if r.shape[1] not in (4, 5):
            raise TensorError(f"{op.label()}: RoIs must be (R, 4) or (R, 5), got {r.shape}")
        f = feat.transpose(0, 3, 1, 2) if nhwc else feat
        n, c, h, w = f.shape
        out = np.zeros((r.shape[0], c, ph, pw), dtype=feat.dtype)
        offset = F32(0.5) if aligned else F32(0.0)
        for k in range(r.shape[0]):
            b = int(r[k, 0]) if r.shape[1] == 5 else 0
            if not 0 <= b < n:
                raise TensorError(f"{op.label()}: RoI {k} has batch index {b}, outside [0, {n})")
            x1, y1, x2, y2 = (r[k, -4:] * F32(scale) - offset).tolist()
            rw, rh = x2 - x1, y2 - y1
            if not aligned:
                rw, rh = max(rw, 1.0), max(rh, 1.0)
            bh, bw = rh / ph, rw / pw
            gh = ratio if ratio > 0 else max(int(math.ceil(rh / ph)), 1)
            gw = ratio if ratio > 0 else max(int(math.ceil(rw / pw)), 1)
            wy, y0, y1_ = _axis_weights(y1, bh, ph, gh, h)
            wx, x0, x1_ = _axis_weights(x1, bw, pw, gw, w)
            if y1_ == y0 or x1_ == x0:
                continue
            patch = f[b, :, y0:y1_, x0:x1_].astype(np.float64)
            out[k] = np.einsum("py,cyx,qx->cpq", wy, patch, wx, optimize=True) / (gh * gw)
        return (out.transpose(0, 2, 3, 1).copy() if nhwc else out,)

    return run
