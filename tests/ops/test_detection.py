"""Detection ops vs Caffe2 goldens, onnxruntime and deliberately naive loop references."""

from __future__ import annotations

import math
import zipfile
from typing import Any

import numpy as np
import pytest

from asyncnet.errors import OperatorError
from asyncnet.proto import caffe2_pb2 as pb
from asyncnet.workspace import Workspace
from tests.conftest import realnets_path
from tests.ops.run_util import check_inference, make_op, run_once

F32 = np.float32


def run_op(op_type: str, inputs: dict[str, Any], outputs: list[str], **args: Any) -> list[Any]:
    op = make_op(op_type, list(inputs), outputs, **args)
    outs = run_once(op, inputs)
    check_inference(op, list(inputs.values()), outs)
    return outs


def golden(name: str) -> tuple[pb.OperatorDef, list[np.ndarray], list[np.ndarray]]:
    path = realnets_path("caffe2_serialized_operator_tests", f"{name}.zip")
    with zipfile.ZipFile(path) as z:
        op = pb.OperatorDef()
        op.ParseFromString(z.read("op.pb"))
        with z.open("inout.npz") as f:
            data = np.load(f, encoding="bytes", allow_pickle=True)
            ins = [np.asarray(a) for a in data["inputs"]]
            outs = [np.asarray(a) for a in data["outputs"]]
    return op, ins, outs


@pytest.mark.parametrize("name", ["bbox_transform_test.test_bbox_transform", "box_with_nms_limit_op_test.test_simple"])
def test_caffe2_goldens(name: str) -> None:
    op, ins, want = golden(name)
    with Workspace() as ws:
        for n, v in zip(op.input, ins):
            ws.feed(n, v)
        ws.run_operator_once(op)
        for n, w in zip(op.output, want):
            np.testing.assert_allclose(ws.fetch(n), w, rtol=1e-5, atol=1e-4)


# ---------------------------------------------------------------------------
# Naive references (one box at a time, plain Python floats)


def ref_transform(box: list[float], d: list[float], wts: list[float], im_h: int, im_w: int, off: float) -> list[float]:
    w = box[2] - box[0] + 1.0
    h = box[3] - box[1] + 1.0
    cx, cy = box[0] + 0.5 * w, box[1] + 0.5 * h
    dw = min(d[2] / wts[2], math.log(1000.0 / 16.0))
    dh = min(d[3] / wts[3], math.log(1000.0 / 16.0))
    pcx, pcy = d[0] / wts[0] * w + cx, d[1] / wts[1] * h + cy
    pw, ph = math.exp(dw) * w, math.exp(dh) * h
    out = [pcx - 0.5 * pw, pcy - 0.5 * ph, pcx + 0.5 * pw - off, pcy + 0.5 * ph - off]
    lim = [im_w - 1, im_h - 1, im_w - 1, im_h - 1]
    return [min(max(v, 0.0), m) for v, m in zip(out, lim)]


def iou(a: list[float], b: list[float]) -> float:
    iw = max(min(a[2], b[2]) - max(a[0], b[0]) + 1, 0.0)
    ih = max(min(a[3], b[3]) - max(a[1], b[1]) + 1, 0.0)
    inter = iw * ih
    area = (a[2] - a[0] + 1) * (a[3] - a[1] + 1) + (b[2] - b[0] + 1) * (b[3] - b[1] + 1)
    return inter / (area - inter)


def greedy_nms(
    boxes: list[list[float]], scores: list[float], cand: list[int], thresh: float, top: int = -1
) -> list[int]:
    order = sorted(cand, key=lambda i: -scores[i])
    keep: list[int] = []
    while order and (top < 0 or len(keep) < top):
        i = order.pop(0)
        keep.append(i)
        order = [j for j in order if iou(boxes[i], boxes[j]) <= thresh]
    return keep


def random_boxes(rng: np.random.Generator, n: int, size: float) -> np.ndarray:
    xy = rng.uniform(0, size * 0.7, (n, 2))
    wh = rng.uniform(4, size * 0.4, (n, 2))
    return np.concatenate([xy, xy + wh], 1).astype(F32)


@pytest.mark.parametrize("apply_scale", [0, 1])
def test_bbox_transform_matches_naive(apply_scale: int) -> None:
    rng = np.random.default_rng(1)
    rois = np.concatenate([np.zeros((6, 1)), random_boxes(rng, 6, 60.0)], 1).astype(F32)
    rois[3:, 0] = 1
    deltas = rng.normal(0, 0.5, (6, 12)).astype(F32)
    im_info = np.array([[60, 50, 2.0], [40, 70, 1.0]], F32)
    wts = [10.0, 10.0, 5.0, 5.0]
    box_out, splits = run_op(
        "BBoxTransform", {"rois": rois, "deltas": deltas, "im_info": im_info}, ["box", "splits"],
        weights=wts, apply_scale=apply_scale, correct_transform_coords=1,
    )  # fmt: skip
    np.testing.assert_array_equal(splits, [3, 3])
    for i in range(6):
        b = int(rois[i, 0])
        sc = float(im_info[b, 2])
        h, w = int(im_info[b, 0] / sc + 0.5), int(im_info[b, 1] / sc + 0.5)
        for k in range(3):
            want = ref_transform(
                [float(v) / sc for v in rois[i, 1:]], deltas[i, 4 * k : 4 * k + 4].tolist(), wts, h, w, 1.0
            )
            if apply_scale:
                want = [v * sc for v in want]
            np.testing.assert_allclose(box_out[i, 4 * k : 4 * k + 4], want, rtol=1e-4, atol=1e-3)


def test_bbox_transform_errors() -> None:
    with pytest.raises(OperatorError, match="deltas"):
        run_op(
            "BBoxTransform", {"r": np.zeros((2, 4), F32), "d": np.zeros((3, 4), F32), "i": np.ones((1, 3), F32)}, ["o"]
        )
    # Rotated boxes need deltas of 5 values per class.
    with pytest.raises(OperatorError, match=r"deltas \(M, 5K\)"):
        run_op("BBoxTransform", {"r": np.zeros((2, 5), F32), "d": np.zeros((2, 4), F32), "i": np.ones((1, 3), F32)},
               ["o"], rotated=1)  # fmt: skip


def ref_box_nms(
    scores: np.ndarray, boxes: np.ndarray, thresh: float, nms: float, per_im: int
) -> list[tuple[float, int, list[float]]]:
    found: list[tuple[float, int, list[float]]] = []
    for j in range(1, scores.shape[1]):
        sc = scores[:, j].tolist()
        bx = boxes[:, 4 * j : 4 * j + 4].tolist()
        cand = [i for i in range(len(sc)) if sc[i] > thresh]
        for i in greedy_nms(bx, sc, cand, nms):
            found.append((sc[i], j, bx[i]))
    if len(found) > per_im:
        found = sorted(found, key=lambda t: -t[0])[:per_im]
    return sorted(found, key=lambda t: (t[1], -t[0]))


@pytest.mark.parametrize("per_im", [100, 7])
def test_box_with_nms_limit_matches_naive(per_im: int) -> None:
    rng = np.random.default_rng(2)
    n, k = 40, 4
    base = random_boxes(rng, n, 80.0)
    boxes = np.concatenate([base + rng.normal(0, 3, base.shape).astype(F32) for _ in range(k)], 1).astype(F32)
    scores = rng.uniform(0, 1, (n, k)).astype(F32)
    s, b, c, splits, keeps, sizes = run_op(
        "BoxWithNMSLimit", {"scores": scores, "boxes": boxes},
        ["s", "b", "c", "splits", "keeps", "sizes"], score_thresh=0.3, nms=0.4, detections_per_im=per_im,
    )  # fmt: skip
    want = ref_box_nms(scores, boxes, 0.3, 0.4, per_im)
    assert len(s) == len(want) == int(splits[0]) == int(sizes.sum()) == len(keeps)
    np.testing.assert_allclose(s, [t[0] for t in want])
    np.testing.assert_array_equal(c, [t[1] for t in want])
    np.testing.assert_allclose(b, np.array([t[2] for t in want]).reshape(-1, 4))
    assert sizes[0, 0] == 0


def test_box_with_nms_limit_soft_nms_keeps_more_and_lowers_scores() -> None:
    boxes = np.array([[0, 0, 0, 0, 10, 10, 50, 50], [0, 0, 0, 0, 12, 12, 52, 52]], F32)
    scores = np.array([[0.1, 0.9], [0.1, 0.8]], F32)
    hard = run_op("BoxWithNMSLimit", {"s": scores, "b": boxes}, ["o", "ob", "oc"], nms=0.3)
    soft = run_op("BoxWithNMSLimit", {"s": scores, "b": boxes}, ["o", "ob", "oc"], nms=0.3, soft_nms_enabled=1)
    assert len(hard[0]) == 1
    assert len(soft[0]) == 2
    ov = iou(boxes[0, 4:].tolist(), boxes[1, 4:].tolist())
    np.testing.assert_allclose(soft[0], [0.9, 0.8 * (1 - ov)], rtol=1e-5)


def ref_proposals(
    scores: np.ndarray, deltas: np.ndarray, im: np.ndarray, anchors: np.ndarray, stride: float,
    pre: int, post: int, thresh: float, min_size: float,
) -> tuple[list[list[float]], list[float]]:  # fmt: skip
    a_n, h, w = scores.shape
    cands = []
    for y in range(h):
        for x in range(w):
            for a in range(a_n):
                anchor = [anchors[a, 0] + x * stride, anchors[a, 1] + y * stride,
                          anchors[a, 2] + x * stride, anchors[a, 3] + y * stride]  # fmt: skip
                d = [float(deltas[4 * a + c, y, x]) for c in range(4)]
                cands.append((float(scores[a, y, x]), anchor, d))
    cands.sort(key=lambda t: -t[0])
    cands = cands[:pre]
    boxes, sc = [], []
    for s, anchor, d in cands:
        boxes.append(ref_transform([float(v) for v in anchor], d, [1, 1, 1, 1], int(im[0]), int(im[1]), 1.0))
        sc.append(s)
    ms = min_size * float(im[2])
    keep = []
    for i, b in enumerate(boxes):
        bw, bh = b[2] - b[0] + 1, b[3] - b[1] + 1
        if bw >= ms and bh >= ms and b[0] + bw / 2 < im[1] and b[1] + bh / 2 < im[0]:
            keep.append(i)
    kept = greedy_nms(boxes, sc, keep, thresh, post)
    return [boxes[i] for i in kept], [sc[i] for i in kept]


@pytest.mark.parametrize("op_type", ["GenerateProposals", "GenerateProposalsCPP"])
def test_generate_proposals_matches_naive(op_type: str) -> None:
    rng = np.random.default_rng(3)
    n, a, h, w, stride = 2, 3, 5, 6, 8.0
    scores = rng.uniform(0, 1, (n, a, h, w)).astype(F32)
    deltas = rng.normal(0, 0.3, (n, 4 * a, h, w)).astype(F32)
    im_info = np.array([[40, 48, 1.0], [36, 44, 1.5]], F32)
    anchors = np.array([[-4, -4, 11, 11], [-12, -4, 19, 11], [-4, -12, 11, 19]], F32)
    rois, probs = run_op(
        op_type, {"s": scores, "d": deltas, "i": im_info, "a": anchors}, ["rois", "probs"],
        spatial_scale=1 / stride, pre_nms_topN=50, post_nms_topN=12, nms_thresh=0.6, min_size=4.0,
        correct_transform_coords=1,
    )  # fmt: skip
    start = 0
    for b in range(n):
        boxes, sc = ref_proposals(scores[b], deltas[b], im_info[b], anchors, stride, 50, 12, 0.6, 4.0)
        got = rois[rois[:, 0] == b]
        assert len(got) == len(boxes) <= 12
        np.testing.assert_allclose(got[:, 1:], np.array(boxes).reshape(-1, 4), rtol=1e-4, atol=1e-3)
        np.testing.assert_allclose(probs[start : start + len(sc)], sc)
        start += len(sc)


# ---------------------------------------------------------------------------
# RoIAlign


def ort_roi_align(x: np.ndarray, rois: np.ndarray, ph: int, pw: int, ratio: int, scale: float) -> np.ndarray:
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    node = helper.make_node(
        "RoiAlign", ["X", "rois", "idx"], ["Y"], output_height=ph, output_width=pw,
        sampling_ratio=ratio, spatial_scale=scale, mode="avg",
    )  # fmt: skip
    graph = helper.make_graph(
        [node], "g",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, list(x.shape)),
         helper.make_tensor_value_info("rois", TensorProto.FLOAT, [rois.shape[0], 4]),
         helper.make_tensor_value_info("idx", TensorProto.INT64, [rois.shape[0]])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [rois.shape[0], x.shape[1], ph, pw])],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 10)])
    model.ir_version = 7
    onnx.checker.check_model(model)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    out = sess.run(None, {"X": x, "rois": rois[:, 1:].copy(), "idx": rois[:, 0].astype(np.int64)})[0]
    return np.asarray(out)


def naive_roi_align(
    x: np.ndarray, rois: np.ndarray, ph: int, pw: int, ratio: int, scale: float, aligned: bool
) -> np.ndarray:
    n, c, h, w = x.shape
    out = np.zeros((len(rois), c, ph, pw))

    def bilinear(img: np.ndarray, yy: float, xx: float) -> np.ndarray:
        if yy < -1.0 or yy > h or xx < -1.0 or xx > w:
            return np.zeros(c)
        yy, xx = max(yy, 0.0), max(xx, 0.0)
        y0, x0 = int(yy), int(xx)
        if y0 >= h - 1:
            y0 = y1 = h - 1
            yy = float(y0)
        else:
            y1 = y0 + 1
        if x0 >= w - 1:
            x0 = x1 = w - 1
            xx = float(x0)
        else:
            x1 = x0 + 1
        ly, lx = yy - y0, xx - x0
        return (1 - ly) * (1 - lx) * img[:, y0, x0] + (1 - ly) * lx * img[:, y0, x1] + ly * (1 - lx) * img[:, y1, x0] + ly * lx * img[:, y1, x1]  # fmt: skip

    off = 0.5 if aligned else 0.0
    for r, roi in enumerate(rois):
        b = int(roi[0])
        x1, y1, x2, y2 = (float(v) * scale - off for v in roi[1:])
        rw, rh = x2 - x1, y2 - y1
        if not aligned:
            rw, rh = max(rw, 1.0), max(rh, 1.0)
        bh, bw = rh / ph, rw / pw
        gh = ratio if ratio > 0 else math.ceil(rh / ph)
        gw = ratio if ratio > 0 else math.ceil(rw / pw)
        for i in range(ph):
            for j in range(pw):
                acc = np.zeros(c)
                for iy in range(gh):
                    for ix in range(gw):
                        yy = y1 + i * bh + (iy + 0.5) * bh / gh
                        xx = x1 + j * bw + (ix + 0.5) * bw / gw
                        acc += bilinear(x[b], yy, xx)
                out[r, :, i, j] = acc / max(gh * gw, 1)
    return out


def roi_inputs(seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 1, (2, 3, 9, 11)).astype(F32)
    boxes = random_boxes(rng, 7, 40.0)
    boxes[0] = [-6, -3, 50, 44]  # reaches outside the image
    boxes[1] = [10, 10, 10.5, 10.2]  # smaller than a pixel
    rois = np.concatenate([rng.integers(0, 2, (7, 1)).astype(F32), boxes], 1).astype(F32)
    return x, rois


@pytest.mark.parametrize("ratio", [0, 2])
def test_roi_align_matches_onnxruntime(ratio: int) -> None:
    x, rois = roi_inputs(4)
    (y,) = run_op(
        "RoIAlign", {"X": x, "R": rois}, ["Y"], pooled_h=3, pooled_w=4, sampling_ratio=ratio, spatial_scale=0.25
    )
    want = ort_roi_align(x, rois, 3, 4, ratio, 0.25)
    np.testing.assert_allclose(y, want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("aligned", [0, 1])
def test_roi_align_matches_naive_loop_in_both_orders(aligned: int) -> None:
    x, rois = roi_inputs(5)
    want = naive_roi_align(x, rois, 2, 3, 0, 0.3, bool(aligned))
    (y,) = run_op("RoIAlign", {"X": x, "R": rois}, ["Y"], pooled_h=2, pooled_w=3, spatial_scale=0.3, aligned=aligned)
    np.testing.assert_allclose(y, want, rtol=1e-4, atol=1e-5)
    x_nhwc = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
    (y2,) = run_op("RoIAlign", {"X": x_nhwc, "R": rois}, ["Y"], pooled_h=2, pooled_w=3, spatial_scale=0.3,
                   aligned=aligned, order="NHWC")  # fmt: skip
    np.testing.assert_allclose(y2, want.transpose(0, 2, 3, 1), rtol=1e-4, atol=1e-5)
    # Four-column RoIs read image 0.
    (y3,) = run_op("RoIAlign", {"X": x[:1], "R": rois[:, 1:].copy()}, ["Y"], pooled_h=2, pooled_w=3, spatial_scale=0.3,
                   aligned=aligned)  # fmt: skip
    np.testing.assert_allclose(y3, naive_roi_align(x[:1], np.concatenate([np.zeros((7, 1), F32), rois[:, 1:]], 1),
                                                   2, 3, 0, 0.3, bool(aligned)), rtol=1e-4, atol=1e-5)  # fmt: skip


def test_roi_align_rejects_bad_batch_index() -> None:
    x = np.zeros((1, 2, 4, 4), F32)
    with pytest.raises(OperatorError, match="batch index 3"):
        run_op("RoIAlign", {"X": x, "R": np.array([[3, 0, 0, 2, 2]], F32)}, ["Y"], pooled_h=2, pooled_w=2)
