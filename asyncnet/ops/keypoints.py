"""HeatmapMaxKeypoint (Mask R-CNN keypoints): sub-pixel maxima of keypoint heatmaps mapped into boxes."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from asyncnet.errors import TensorError
from asyncnet.opinfo import OpInfo
from asyncnet.ops._util import info
from asyncnet.ops.detection import F32, checked_array
from asyncnet.registry import register_op
from asyncnet.schema import Arg, TensorInfo

# Largest sub-pixel step from the arg-max cell (beyond the 3x3 neighbourhood the fit is meaningless).
_MAX_DELTA = 1.5


def _neighbourhood(hm: np.ndarray, my: int, mx: int) -> np.ndarray:
    """The 3x3 values around (my, mx), mirrored back inside at the borders."""
    size = hm.shape[0]
    rows = [my + d - 2 * (my + d >= size) + 2 * (my + d < 0) for d in (-1, 0, 1)]
    cols = [mx + d - 2 * (mx + d >= size) + 2 * (mx + d < 0) for d in (-1, 0, 1)]
    return hm[np.ix_(rows, cols)].astype(F32)


def _refine(f: np.ndarray, max_score: float) -> tuple[float, float, float]:
    """Newton step of a quadratic fit to the 3x3 grid ``f``: (dx, dy, fitted score)."""
    b = np.asarray([-(f[1, 2] - f[1, 0]) / 2, -(f[2, 1] - f[0, 1]) / 2], dtype=np.float64)
    cross = (f[2, 2] - f[2, 0] - f[0, 2] + f[0, 0]) / 4
    a = np.asarray([[f[1, 0] - 2 * f[1, 1] + f[1, 2], cross], [cross, f[0, 1] - 2 * f[1, 1] + f[2, 1]]], np.float64)
    det = float(np.float32(a[0, 0] * a[1, 1] - a[0, 1] * a[1, 0]))
    if abs(det) < 1e-4:
        return 0.0, 0.0, max_score
    delta = np.linalg.solve(a, b)
    big = float(np.abs(delta).max())
    if big > _MAX_DELTA:
        delta = delta / big * _MAX_DELTA
    score = float(f[1, 1]) - float(b @ delta) + 0.5 * float(delta @ a @ delta)
    return float(delta[0]), float(delta[1]), score


def _infer(op: OpInfo, ins: list[TensorInfo]) -> list[TensorInfo]:
    hm = ins[0].shape
    return [info(None if hm is None or len(hm) != 4 else (hm[0], 4, hm[1]), F32)]


@register_op(
    "HeatmapMaxKeypoint",
    inputs=2,
    args=(Arg("should_output_softmax", 0, "fill row 3 with the spatial softmax probability of the maximum"),),
    infer=_infer,
    doc="Keypoints from heatmaps (N, K, S, S) and boxes (N, 4+) [x1, y1, x2, y2]: for each heatmap take the "
    "first arg-max cell, refine it with a Newton step of a quadratic fit to its 3x3 neighbourhood (mirrored at "
    "the border; step clipped to 1.5 cells), and map it into the box. Output (N, 4, K): x, y, fitted score, "
    "and the softmax probability at the maximum (0 unless should_output_softmax).",
    input_names=("heatmaps", "bboxes"),
    output_names=("keypoints",),
)
def heatmap_max_keypoint(op: OpInfo) -> Callable[..., Any]:
    softmax = op.bool_arg("should_output_softmax")

    def run(heatmaps: Any, bboxes: Any) -> tuple[np.ndarray]:
        hm = checked_array(op, "heatmaps", heatmaps, 4).astype(F32, copy=False)
        boxes = checked_array(op, "bboxes", bboxes, 2).astype(F32, copy=False)
        n, k, size, size_w = hm.shape
        if size < 2 or size_w != size:
            raise TensorError(f"{op.label()}: heatmaps must be square and at least 2x2, got {hm.shape}")
        if boxes.shape[0] != n or boxes.shape[1] < 4:
            raise TensorError(f"{op.label()}: bboxes must be ({n}, >= 4), got {boxes.shape}")
        flat = hm.reshape(n, k, size * size)
        arg = flat.argmax(axis=2)
        if softmax:
            e = np.exp(flat - flat.max(axis=2, keepdims=True))
            probs = e / e.sum(axis=2, keepdims=True, dtype=F32)
        out = np.zeros((n, 4, k), dtype=F32)
        for r in range(n):
            x0, y0 = float(boxes[r, 0]), float(boxes[r, 1])
            xlen = max(float(np.float32(boxes[r, 2] - boxes[r, 0])), 1.0)
            ylen = max(float(np.float32(boxes[r, 3] - boxes[r, 1])), 1.0)
            for j in range(k):
                idx = int(arg[r, j])
                my, mx = divmod(idx, size)
                dx, dy, score = _refine(_neighbourhood(hm[r, j], my, mx), float(flat[r, j, idx]))
                out[r, 0, j] = x0 + (0.5 + mx + dx) * xlen / size
                out[r, 1, j] = y0 + (0.5 + my + dy) * ylen / size
                out[r, 2, j] = score
                if softmax:
                    out[r, 3, j] = probs[r, j, idx]
        return (out,)

    return run
