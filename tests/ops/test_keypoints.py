"""HeatmapMaxKeypoint against a naive per-heatmap loop (Cramer's rule for the 2x2 Newton step)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from asyncnet.errors import OperatorError
from tests.ops.run_util import run_op

F32 = np.float32


def naive_keypoints(maps: np.ndarray, boxes: np.ndarray, softmax: bool) -> np.ndarray:
    n, k, size, _ = maps.shape
    out = np.zeros((n, 4, k))
    for r in range(n):
        x0, y0, x1, y1 = (float(v) for v in boxes[r, :4])
        xlen, ylen = max(x1 - x0, 1.0), max(y1 - y0, 1.0)
        for j in range(k):
            f = maps[r, j].astype(float)
            best, my, mx = -math.inf, 0, 0
            for y in range(size):
                for x in range(size):
                    if f[y, x] > best:
                        best, my, mx = f[y, x], y, x
            g = [[0.0] * 3 for _ in range(3)]
            for dy in range(3):
                for dx in range(3):
                    yy, xx = my + dy - 1, mx + dx - 1
                    yy = yy - 2 if yy >= size else yy + 2 if yy < 0 else yy
                    xx = xx - 2 if xx >= size else xx + 2 if xx < 0 else xx
                    g[dy][dx] = f[yy, xx]
            bx, by = -(g[1][2] - g[1][0]) / 2, -(g[2][1] - g[0][1]) / 2
            axx = g[1][0] - 2 * g[1][1] + g[1][2]
            ayy = g[0][1] - 2 * g[1][1] + g[2][1]
            axy = (g[2][2] - g[2][0] - g[0][2] + g[0][0]) / 4
            det = axx * ayy - axy * axy
            if abs(det) < 1e-4:
                ddx, ddy, score = 0.0, 0.0, best
            else:
                ddx = (bx * ayy - by * axy) / det
                ddy = (by * axx - bx * axy) / det
                big = max(abs(ddx), abs(ddy))
                if big > 1.5:
                    ddx, ddy = ddx * 1.5 / big, ddy * 1.5 / big
                quad = ddx * ddx * axx + 2 * ddx * ddy * axy + ddy * ddy * ayy
                score = g[1][1] - (bx * ddx + by * ddy) + 0.5 * quad
            prob = 0.0
            if softmax:
                prob = math.exp(best) / sum(math.exp(v) for v in f.reshape(-1))
            out[r, :, j] = (x0 + (mx + ddx + 0.5) * xlen / size, y0 + (my + ddy + 0.5) * ylen / size, score, prob)
    return out


@pytest.mark.parametrize("softmax", [0, 1])
def test_heatmap_max_keypoint_matches_naive(softmax: int) -> None:
    rng = np.random.default_rng(0)
    # Smooth bumps so the quadratic fit is meaningful, one at each border to exercise the mirroring.
    yy, xx = np.mgrid[0:12, 0:12]
    maps = np.zeros((3, 4, 12, 12), F32)
    centres = [(0, 5), (11, 11), (6, 0), (4.3, 7.6)]
    for r in range(3):
        for j, (cy, cx) in enumerate(centres):
            maps[r, j] = np.exp(-((yy - cy) ** 2 + (xx - cx - r * 0.3) ** 2) / 6.0) + rng.normal(0, 0.01, (12, 12))
    boxes = np.array([[10, 20, 110, 70], [0, 0, 0.5, 0.5], [5, 5, 300, 40]], F32)
    (kp,) = run_op("HeatmapMaxKeypoint", [maps, boxes], should_output_softmax=softmax)
    assert kp.shape == (3, 4, 4) and kp.dtype == F32
    np.testing.assert_allclose(kp, naive_keypoints(maps, boxes, bool(softmax)), rtol=1e-4, atol=1e-4)


def test_heatmap_max_keypoint_published_special_cases() -> None:
    # Caffe2's two documented edge cases (a saddle-like and a flat-topped 3x3 map) in a 100x100 box.
    box = np.array([[0, 0, 100, 100]], F32)
    for m in (
        [[0.14722, 0.807823, 0.447052], [0.652919, 0.850923, -0.225462], [0.805912, 0.75778, -0.563371]],
        [[3.19541, 3.69551, 3.87579], [3.63094, 3.89978, 3.67606], [3.78555, 3.87291, 3.28083]],
    ):
        maps = np.array(m, F32).reshape(1, 1, 3, 3)
        (kp,) = run_op("HeatmapMaxKeypoint", [maps, box], should_output_softmax=1)
        np.testing.assert_allclose(kp, naive_keypoints(maps, box, True), rtol=1e-4, atol=1e-4)


def test_heatmap_max_keypoint_shape_errors() -> None:
    with pytest.raises(OperatorError, match="square"):
        run_op("HeatmapMaxKeypoint", [np.zeros((1, 1, 3, 4), F32), np.zeros((1, 4), F32)])
    with pytest.raises(OperatorError, match="bboxes"):
        run_op("HeatmapMaxKeypoint", [np.zeros((2, 1, 3, 3), F32), np.zeros((1, 4), F32)])
