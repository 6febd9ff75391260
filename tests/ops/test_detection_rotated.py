"""Rotated boxes: BBoxTransform(rotated=1) and RoIAlignRotated (+ gradient) against naive loops written
from Caffe2's documented semantics."""

from __future__ import annotations

import math

import numpy as np
import pytest

from asyncnet.errors import ArgumentError, OperatorError
from asyncnet.training.gradcheck import check_gradient
from asyncnet.training.gradients import gradient_for_op
from tests.ops.run_util import make_op, run_op

F32 = np.float32


def naive_rotated_transform(
    box: list[float], delta: list[float], bound: bool, thresh: float, h: int, w: int
) -> list[float]:
    cx, cy, bw, bh, a = box
    dx, dy, dw, dh, da = delta
    clip = math.log(1000.0 / 16.0)
    out = [dx * bw + cx, dy * bh + cy, math.exp(min(dw, clip)) * bw, math.exp(min(dh, clip)) * bh]
    angle = a + da * 180.0 / math.pi
    if bound:
        if angle < -90:
            angle += 180
        elif angle > 90:
            angle -= 180
    if abs(angle) <= thresh:
        x1 = min(max(out[0] - (out[2] - 1) / 2, 0), w - 1)
        x2 = min(max(out[0] + (out[2] - 1) / 2, 0), w - 1)
        y1 = min(max(out[1] - (out[3] - 1) / 2, 0), h - 1)
        y2 = min(max(out[1] + (out[3] - 1) / 2, 0), h - 1)
        out = [(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1 + 1, y2 - y1 + 1]
    return [*out, angle]


@pytest.mark.parametrize(("bound", "thresh"), [(1, 1.0), (0, 1.0), (1, -1.0), (0, 90.0)])
def test_bbox_transform_rotated_matches_naive(bound: int, thresh: float) -> None:
    rng = np.random.default_rng(int(bound * 10 + thresh))
    counts, dims = [3, 0, 4], [200, 150, 300]
    rows = []
    for b, (cnt, dim) in enumerate(zip(counts, dims)):
        for _ in range(cnt):
            rows.append([b, *rng.uniform(0, dim, 2), *rng.uniform(5, dim / 2, 2), rng.uniform(-90, 90)])
    rois = np.array(rows, F32)
    rois[0, 5] = 0.5  # nearly upright: clipped with the default threshold
    deltas = rng.normal(0, 1, (len(rows), 10)).astype(F32)
    im_info = np.array([[d, d, 1.0] for d in dims], F32)
    box_out, splits = run_op(
        "BBoxTransform",
        [rois, deltas, im_info],
        2,
        rotated=1,
        apply_scale=0,
        correct_transform_coords=1,
        angle_bound_on=bound,
        clip_angle_thresh=thresh,
    )
    assert splits.tolist() == counts and box_out.shape == deltas.shape
    for i, row in enumerate(rows):
        dim = dims[int(row[0])]
        for k in range(2):
            want = naive_rotated_transform(
                [float(v) for v in rois[i, 1:]], deltas[i, 5 * k : 5 * k + 5].tolist(), bool(bound), thresh, dim, dim
            )
            np.testing.assert_allclose(box_out[i, 5 * k : 5 * k + 5], want, rtol=1e-4, atol=1e-3)


def test_bbox_transform_rotated_scales_all_but_the_angle() -> None:
    rois = np.array([[50, 40, 20, 10, 30]], F32)
    deltas = np.array([[0.1, -0.2, 0.3, 0.0, 0.2]], F32)
    (plain,) = run_op("BBoxTransform", [rois, deltas, np.array([[100, 100, 1.0]], F32)], rotated=1)
    scaled_rois = rois.copy()
    scaled_rois[:, :4] *= 2
    (scaled,) = run_op("BBoxTransform", [scaled_rois, deltas, np.array([[200, 200, 2.0]], F32)], rotated=1)
    np.testing.assert_allclose(scaled[:, :4], plain[:, :4] * 2, rtol=1e-5)
    np.testing.assert_allclose(scaled[:, 4], plain[:, 4], rtol=1e-6)


def test_bbox_transform_rotated_rejects_bad_bounds() -> None:
    with pytest.raises(ArgumentError, match="multiple of 180"):
        run_op(
            "BBoxTransform",
            [np.zeros((1, 5), F32), np.zeros((1, 5), F32), np.ones((1, 3), F32)],
            rotated=1,
            angle_bound_lo=-45,
            angle_bound_hi=45,
        )


# -- RoIAlignRotated -------------------------------------------------------------------------------


def bilinear(img: np.ndarray, y: float, x: float) -> float:
    h, w = img.shape
    if y < -1.0 or y > h or x < -1.0 or x > w:
        return 0.0
    y, x = max(y, 0.0), max(x, 0.0)
    y0, x0 = int(y), int(x)
    if y0 >= h - 1:
        y0 = y1 = h - 1
        y = float(y0)
    else:
        y1 = y0 + 1
    if x0 >= w - 1:
        x0 = x1 = w - 1
        x = float(x0)
    else:
        x1 = x0 + 1
    ly, lx = y - y0, x - x0
    return float(
        (1 - ly) * (1 - lx) * img[y0, x0]
        + (1 - ly) * lx * img[y0, x1]
        + ly * (1 - lx) * img[y1, x0]
        + ly * lx * img[y1, x1]
    )


def naive_roi_align_rotated(x: np.ndarray, rois: np.ndarray, ph: int, pw: int, scale: float, ratio: int) -> np.ndarray:
    out = np.zeros((len(rois), x.shape[1], ph, pw))
    for r, roi in enumerate(rois):
        b = int(roi[0]) if len(roi) == 6 else 0
        cx, cy, rw, rh, angle = (float(v) for v in roi[-5:])
        cx, cy, rw, rh = cx * scale, cy * scale, max(rw * scale, 1.0), max(rh * scale, 1.0)
        cos, sin = math.cos(math.radians(angle)), math.sin(math.radians(angle))
        gh = ratio if ratio > 0 else math.ceil(rh / ph)
        gw = ratio if ratio > 0 else math.ceil(rw / pw)
        for c in range(x.shape[1]):
            for i in range(ph):
                for j in range(pw):
                    total = 0.0
                    for iy in range(gh):
                        for ix in range(gw):
                            yy = -rh / 2 + (i + (iy + 0.5) / gh) * rh / ph
                            xx = -rw / 2 + (j + (ix + 0.5) / gw) * rw / pw
                            total += bilinear(x[b, c], yy * cos - xx * sin + cy, xx * cos + yy * sin + cx)
                    out[r, c, i, j] = total / (gh * gw)
    return out


@pytest.mark.parametrize("ratio", [0, 2])
def test_roi_align_rotated_matches_naive(ratio: int) -> None:
    rng = np.random.default_rng(ratio)
    x = rng.normal(size=(2, 2, 12, 15)).astype(F32)
    rois = np.array(
        [[0, 7, 6, 6, 4, 30], [1, 3, 9, 8, 5, -120], [1, 14, 1, 5, 7, 90], [0, 6, 6, 0.5, 0.5, 0]], F32
    )  # the last one is smaller than a pixel: forced to 1x1
    (y,) = run_op("RoIAlignRotated", [x, rois], pooled_h=3, pooled_w=4, spatial_scale=0.9, sampling_ratio=ratio)
    np.testing.assert_allclose(y, naive_roi_align_rotated(x, rois, 3, 4, 0.9, ratio), rtol=1e-4, atol=1e-5)
    # NHWC is the same computation on transposed data; 5-column RoIs use image 0.
    (yn,) = run_op(
        "RoIAlignRotated", [x[:1].transpose(0, 2, 3, 1).copy(), rois[[0, 3], 1:]], order="NHWC", pooled_h=3, pooled_w=4,
        spatial_scale=0.9, sampling_ratio=ratio,
    )  # fmt: skip
    np.testing.assert_allclose(yn.transpose(0, 3, 1, 2), y[[0, 3]], rtol=1e-5, atol=1e-6)


def test_roi_align_rotated_quarter_turn_is_a_rotated_image() -> None:
    # A 90 degree counter-clockwise RoI on X samples what an upright RoI samples on X turned clockwise.
    rng = np.random.default_rng(7)
    h, w = 9, 11
    x = rng.normal(size=(1, 1, h, w)).astype(F32)
    roi = np.array([[0, 4.0, 5.0, 4.0, 3.0, 90.0]], F32)
    (y,) = run_op("RoIAlignRotated", [x, roi], pooled_h=3, pooled_w=3, sampling_ratio=2)
    turned = np.rot90(x, k=-1, axes=(2, 3)).copy()
    upright = np.array([[0, h - 5.0 - 1, 4.0, 4.0, 3.0, 0.0]], F32)
    (want,) = run_op("RoIAlignRotated", [turned, upright], pooled_h=3, pooled_w=3, sampling_ratio=2)
    np.testing.assert_allclose(y, want, rtol=1e-4, atol=1e-5)


def test_roi_align_rotated_empty_rois() -> None:
    (y,) = run_op("RoIAlignRotated", [np.ones((1, 3, 5, 5), F32), np.zeros((0, 6), F32)], pooled_h=2, pooled_w=2)
    assert y.shape == (0, 3, 2, 2)


def test_roi_align_rotated_gradient_check() -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(2, 2, 6, 7)).astype(F32)
    rois = np.array([[1, 3.2, 2.7, 4, 3, 25], [0, 2.5, 3.5, 3, 5, -60]], F32)
    op = make_op("RoIAlignRotated", ["X", "R"], ["Y"], pooled_h=2, pooled_w=2, sampling_ratio=2)
    spec = gradient_for_op(op, ["Y_grad"])
    assert [g.type for g in spec.ops] == ["RoIAlignRotatedGradient"] and spec.grad_inputs[1] is None
    res = check_gradient(op, {"X": x, "R": rois}, check=[0], stepsize=1e-2, threshold=1e-3)
    assert res.ok, res.describe()


def test_roi_align_rotated_errors() -> None:
    with pytest.raises(OperatorError, match="RoIs must be"):
        run_op("RoIAlignRotated", [np.ones((1, 1, 4, 4), F32), np.zeros((2, 4), F32)])
    with pytest.raises(OperatorError, match="batch index"):
        run_op("RoIAlignRotated", [np.ones((1, 1, 4, 4), F32), np.array([[3, 1, 1, 2, 2, 0]], F32)])
