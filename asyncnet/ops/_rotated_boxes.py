"""Rotated boxes [ctr_x, ctr_y, w, h, angle in degrees, counter-clockwise]: the delta transform and the
clip that BBoxTransform applies with ``rotated=1`` (float32 like Caffe2)."""

from __future__ import annotations

import math

import numpy as np

F32 = np.float32


def bbox_transform_rotated(
    boxes: np.ndarray,
    deltas: np.ndarray,
    weights: tuple[float, ...],
    angle_bound: tuple[int, int] | None,
    xform_clip: float,
) -> np.ndarray:
    """Apply ``[dx, dy, dw, dh, da (radians)]`` deltas to rotated boxes (M, 5).

    dw and dh are capped at ``xform_clip``; with ``angle_bound`` (lo, hi) the new angle is moved by one
    period (hi - lo) into [lo, hi].
    """
    if boxes.shape[0] == 0:
        return np.zeros((0, 5), dtype=F32)
    cx, cy, w, h, a = (boxes[:, i] for i in range(5))
    dx = deltas[:, 0] / F32(weights[0])
    dy = deltas[:, 1] / F32(weights[1])
    dw = np.minimum(deltas[:, 2] / F32(weights[2]), F32(xform_clip))
    dh = np.minimum(deltas[:, 3] / F32(weights[3]), F32(xform_clip))
    angle = (deltas[:, 4].astype(np.float64) * 180.0 / math.pi + a).astype(F32)
    if angle_bound is not None:
        lo, hi = angle_bound
        period = F32(hi - lo)
        angle = np.where(angle < lo, angle + period, np.where(angle > hi, angle - period, angle))
    out = np.stack([dx * w + cx, dy * h + cy, np.exp(dw) * w, np.exp(dh) * h, angle], 1)
    return out.astype(F32, copy=False)


def clip_boxes_rotated(boxes: np.ndarray, height: int, width: int, angle_thresh: float, plus_one: float) -> np.ndarray:
    """Clip only the nearly upright boxes (|angle| <= angle_thresh) into the image, as [x1, y1, x2, y2]."""
    out: np.ndarray = boxes.copy()
    up = np.abs(boxes[:, 4]) <= F32(angle_thresh)
    if not up.any():
        return out
    cx, cy, w, h = (boxes[up, i] for i in range(4))
    one = F32(plus_one)
    half_w, half_h = (w - one) / F32(2.0), (h - one) / F32(2.0)
    x1 = np.clip(cx - half_w, 0, F32(width - plus_one))
    y1 = np.clip(cy - half_h, 0, F32(height - plus_one))
    x2 = np.clip(cx + half_w, 0, F32(width - plus_one))
    y2 = np.clip(cy + half_h, 0, F32(height - plus_one))
    out[up, 0] = (x1 + x2) / F32(2.0)
    out[up, 1] = (y1 + y2) / F32(2.0)
    out[up, 2] = x2 - x1 + one
    out[up, 3] = y2 - y1 + one
    return out
