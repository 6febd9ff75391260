"""Detection ops (Faster / Mask R-CNN): GenerateProposals, BBoxTransform, BoxWithNMSLimit (RoIAlign: roi_align.py).

Semantics follow Caffe2's CPU kernels (Detectron conventions): boxes are
``[x1, y1, x2, y2]`` in pixels; with ``legacy_plus_one`` (the default) a box's
width is ``x2 - x1 + 1``. Rotated boxes: BBoxTransform only (helpers in _rotated_boxes.py).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from asyncnet.errors import ArgumentError, TensorError, UnsupportedError
from asyncnet.opinfo import OpInfo
from asyncnet.ops._rotated_boxes import bbox_transform_rotated, clip_boxes_rotated
from asyncnet.ops._util import info
from asyncnet.registry import register_op
from asyncnet.schema import Arg, TensorInfo

F32 = np.float32
# Largest log-space width/height scaling a delta may apply (Detectron's BBOX_XFORM_CLIP).
BBOX_XFORM_CLIP = math.log(1000.0 / 16.0)

ANGLE_ARGS = (
    Arg("angle_bound_on", 1, "rotated boxes only (unsupported)"),
    Arg("angle_bound_lo", -90, "rotated boxes only (unsupported)"),
    Arg("angle_bound_hi", 90, "rotated boxes only (unsupported)"),
    Arg("clip_angle_thresh", 1.0, "rotated boxes only (unsupported)"),
)


def _no_rotated(op: OpInfo) -> None:
    if op.bool_arg("rotated", 0):
        raise UnsupportedError(f"{op.label()}: rotated boxes (rotated=1) are not supported")


def _plus_one(op: OpInfo) -> float:
    return 1.0 if op.bool_arg("legacy_plus_one", 1) else 0.0


def checked_array(op: OpInfo, name: str, value: Any, ndim: int | tuple[int, ...]) -> np.ndarray:
    """``value`` as an array of one of the ranks ``ndim``, else a TensorError naming the input."""
    arr = np.asarray(value)
    dims = (ndim,) if isinstance(ndim, int) else ndim
    if arr.ndim not in dims:
        raise TensorError(f"{op.label()}: input '{name}' must have rank {' or '.join(map(str, dims))}, got {arr.shape}")
    return arr


# ---------------------------------------------------------------------------
# Box helpers (float32 like Caffe2)


def bbox_transform(
    boxes: np.ndarray, deltas: np.ndarray, weights: tuple[float, ...], plus_one: float, x2_offset: float
) -> np.ndarray:
    """Apply ``[dx, dy, dw, dh]`` regression deltas to ``[x1, y1, x2, y2]`` boxes."""
    if boxes.shape[0] == 0:
        return np.zeros((0, 4), dtype=F32)
    w = boxes[:, 2] - boxes[:, 0] + F32(plus_one)
    h = boxes[:, 3] - boxes[:, 1] + F32(plus_one)
    cx = boxes[:, 0] + F32(0.5) * w
    cy = boxes[:, 1] + F32(0.5) * h
    dx = deltas[:, 0] / F32(weights[0])
    dy = deltas[:, 1] / F32(weights[1])
    dw = np.minimum(deltas[:, 2] / F32(weights[2]), F32(BBOX_XFORM_CLIP))
    dh = np.minimum(deltas[:, 3] / F32(weights[3]), F32(BBOX_XFORM_CLIP))
    pcx = dx * w + cx
    pcy = dy * h + cy
    pw = np.exp(dw) * w
    ph = np.exp(dh) * h
    off = F32(x2_offset)
    out = np.stack([pcx - F32(0.5) * pw, pcy - F32(0.5) * ph, pcx + F32(0.5) * pw - off, pcy + F32(0.5) * ph - off], 1)
    return out.astype(F32, copy=False)


def clip_boxes(boxes: np.ndarray, height: int, width: int, plus_one: float) -> np.ndarray:
    """Clip boxes into the image (``[0, width - 1]`` with legacy_plus_one)."""
    out: np.ndarray = boxes.copy()
    out[:, 0::2] = np.clip(out[:, 0::2], 0, F32(width - plus_one))
    out[:, 1::2] = np.clip(out[:, 1::2], 0, F32(height - plus_one))
    return out


def nms(
    boxes: np.ndarray, scores: np.ndarray, order: np.ndarray, thresh: float, top_n: int, plus_one: float
) -> list[int]:
    """Greedy NMS over ``order`` (indices sorted by decreasing score); keeps at most ``top_n`` (-1: all)."""
    x1, y1, x2, y2 = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]
    areas = (x2 - x1 + F32(plus_one)) * (y2 - y1 + F32(plus_one))
    keep: list[int] = []
    rest = np.asarray(order, dtype=np.int64)
    while rest.size:
        if 0 <= top_n <= len(keep):
            break
        i = int(rest[0])
        keep.append(i)
        others = rest[1:]
        xx1 = np.maximum(x1[others], x1[i])
        yy1 = np.maximum(y1[others], y1[i])
        xx2 = np.minimum(x2[others], x2[i])
        yy2 = np.minimum(y2[others], y2[i])
        iw = np.maximum(xx2 - xx1 + F32(plus_one), 0)
        ih = np.maximum(yy2 - yy1 + F32(plus_one), 0)
        inter = iw * ih
        # Two empty boxes give 0/0 = NaN, which (as in Caffe2) never passes the test below.
        with np.errstate(invalid="ignore", divide="ignore"):
            ovr = inter / (areas[i] + areas[others] - inter)
        rest = others[ovr <= thresh]
    return keep


def soft_nms(
    boxes: np.ndarray,
    scores: np.ndarray,
    indices: np.ndarray,
    *,
    sigma: float,
    overlap: float,
    min_score: float,
    method: int,
    plus_one: float,
) -> tuple[list[int], np.ndarray]:
    """Soft-NMS (linear: method 1, gaussian: 2); returns kept indices and updated scores."""
    x1, y1, x2, y2 = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]
    areas = (x2 - x1 + F32(plus_one)) * (y2 - y1 + F32(plus_one))
    out = scores.astype(F32, copy=True)
    keep: list[int] = []
    pending = np.asarray(indices, dtype=np.int64)
    while pending.size:
        pos = int(np.argmax(out[pending]))
        i = int(pending[pos])
        keep.append(i)
        pending[0], pending[pos] = pending[pos], pending[0]
        rest = pending[1:]
        xx1 = np.maximum(x1[rest], x1[i])
        yy1 = np.maximum(y1[rest], y1[i])
        xx2 = np.minimum(x2[rest], x2[i])
        yy2 = np.minimum(y2[rest], y2[i])
        inter = np.maximum(xx2 - xx1 + F32(plus_one), 0) * np.maximum(yy2 - yy1 + F32(plus_one), 0)
        with np.errstate(invalid="ignore", divide="ignore"):
            ovr = inter / (areas[i] + areas[rest] - inter)
        if method == 1:
            weight = np.where(ovr > overlap, 1.0 - ovr, 1.0)
        elif method == 2:
            weight = np.exp(-1.0 * ovr * ovr / sigma)
        else:
            weight = np.where(ovr > overlap, 0.0, 1.0)
        out[rest] = (out[rest] * weight).astype(F32)
        pending = rest[out[rest] >= min_score]
    return keep, out


def _sorted_desc(scores: np.ndarray, idx: np.ndarray) -> np.ndarray:
    return idx[np.argsort(-scores[idx], kind="stable")]


# ---------------------------------------------------------------------------
# BBoxTransform


def _bbox_transform_infer(op: OpInfo, ins: list[TensorInfo]) -> list[TensorInfo]:
    im = ins[2].shape
    return [info(ins[1].shape, F32), info(None if im is None else (im[0],), F32)]


@register_op(
    "BBoxTransform",
    inputs=3,
    outputs=(1, 2),
    args=(
        Arg("weights", [1.0, 1.0, 1.0, 1.0], "[wx, wy, ww, wh] dividing the deltas"),
        Arg("apply_scale", 1, "scale the boxes back to the scaled image after the transform"),
        Arg("correct_transform_coords", 0, "subtract 1 from x2/y2 of the result (Detectron)"),
        Arg("rotated", 0, "boxes are [ctr_x, ctr_y, w, h, angle in degrees], deltas [dx, dy, dw, dh, da]"),
        Arg("legacy_plus_one", 1, "widths are x2 - x1 + 1"),
        Arg("angle_bound_on", 1, "rotated: move the new angle by one period into [angle_bound_lo, angle_bound_hi]"),
        Arg("angle_bound_lo", -90, "rotated: lowest angle (degrees)"),
        Arg("angle_bound_hi", 90, "rotated: highest angle (degrees); hi - lo must be a multiple of 180"),
        Arg("clip_angle_thresh", 1.0, "rotated: clip only boxes with |angle| <= this (negative: none)"),
    ),
    infer=_bbox_transform_infer,
    input_names=("rois", "deltas", "im_info"),
    output_names=("box_out", "roi_batch_splits"),
    doc="Apply per-class box regression deltas (M, 4K) to RoIs (M, 4 or 5) and clip to the image. With "
    "rotated=1 RoIs are (M, 5 or 6) [batch, ctr_x, ctr_y, w, h, angle], deltas (M, 5K) with the angle delta "
    "in radians; only nearly upright boxes (|angle| <= clip_angle_thresh) are clipped.",
)
def bbox_transform_op(op: OpInfo) -> Callable[..., Any]:
    weights = tuple(op.floats_arg("weights"))
    if len(weights) != 4:
        raise ArgumentError(f"{op.label()}: weights must have 4 values, got {list(weights)}")
    apply_scale = op.bool_arg("apply_scale")
    plus_one = _plus_one(op)
    # Older Caffe2 subtracted 1 from x2/y2 only with correct_transform_coords; newer
    # releases tie it to legacy_plus_one. An explicit argument wins.
    x2_offset = (
        1.0
        if op.bool_arg("correct_transform_coords", int(plus_one) if not op.has("correct_transform_coords") else 0)
        else 0.0
    )
    rotated = op.bool_arg("rotated")
    dim = 5 if rotated else 4
    bound = (op.int_arg("angle_bound_lo"), op.int_arg("angle_bound_hi")) if op.bool_arg("angle_bound_on") else None
    if rotated and bound is not None and (bound[1] - bound[0] <= 0 or (bound[1] - bound[0]) % 180):
        raise ArgumentError(f"{op.label()}: angle_bound_hi - angle_bound_lo must be a positive multiple of 180")
    angle_thresh = op.float_arg("clip_angle_thresh")

    def transform(boxes: np.ndarray, deltas: np.ndarray, img_h: int, img_w: int) -> np.ndarray:
        if rotated:
            t = bbox_transform_rotated(boxes, deltas, weights, bound, BBOX_XFORM_CLIP)
            return clip_boxes_rotated(t, img_h, img_w, angle_thresh, plus_one)
        return clip_boxes(bbox_transform(boxes, deltas, weights, plus_one, x2_offset), img_h, img_w, plus_one)

    def run(rois: Any, deltas: Any, im_info: Any) -> tuple[np.ndarray, np.ndarray]:
        r = checked_array(op, "rois", rois, 2).astype(F32, copy=False)
        d = checked_array(op, "deltas", deltas, 2).astype(F32, copy=False)
        im = checked_array(op, "im_info", im_info, 2).astype(F32, copy=False)
        n = r.shape[0]
        if r.shape[1] not in (dim, dim + 1) or d.shape[0] != n or d.shape[1] % dim or im.shape[1] != 3:
            raise TensorError(
                f"{op.label()}: expected rois (M, {dim} or {dim + 1}), deltas (M, {dim}K), im_info (B, 3); "
                f"got {r.shape}, {d.shape}, {im.shape}"
            )
        batch = im.shape[0]
        if r.shape[1] == dim:
            if batch != 1:
                raise TensorError(f"{op.label()}: rois without batch index need im_info of 1 image, got {im.shape}")
            counts = np.asarray([n])
        else:
            ids = r[:, 0].astype(np.int64)
            if n and (ids.min() < 0 or ids.max() >= batch):
                raise TensorError(f"{op.label()}: roi batch index out of range [0, {batch})")
            counts = np.bincount(ids, minlength=batch)
        out = np.empty_like(d)
        offset = 0
        for b in range(batch):
            cnt = int(counts[b])
            scale_before = im[b, 2]
            scale_after = im[b, 2] if apply_scale else F32(1.0)
            img_h = int(im[b, 0] / scale_before + 0.5)
            img_w = int(im[b, 1] / scale_before + 0.5)
            boxes = r[offset : offset + cnt, -dim:].copy()
            # The angle of a rotated box is not scaled.
            boxes[:, :4] /= scale_before
            for k in range(d.shape[1] // dim):
                t = transform(boxes, d[offset : offset + cnt, dim * k : dim * (k + 1)], img_h, img_w)
                t[:, :4] *= scale_after
                out[offset : offset + cnt, dim * k : dim * (k + 1)] = t
            offset += cnt
        return out, counts.astype(F32)

    return run


# ---------------------------------------------------------------------------
# BoxWithNMSLimit


def _box_nms_infer(op: OpInfo, ins: list[TensorInfo]) -> list[TensorInfo]:
    splits = ins[2].shape if len(ins) > 2 else (1,)
    n_cls = ins[0].shape[1] if ins[0].shape is not None and len(ins[0].shape) >= 2 else None
    return [
        info((None,), F32),
        info((None, 4), F32),
        info((None,), F32),
        info(splits, F32),
        info((None,), np.int32),
        info(None if splits is None else (splits[0], n_cls), np.int32),
    ]


@register_op(
    "BoxWithNMSLimit",
    inputs=(2, 3),
    outputs=(3, 6),
    args=(
        Arg("score_thresh", 0.05, "keep boxes scoring above this"),
        Arg("nms", 0.3, "NMS IoU threshold"),
        Arg("detections_per_im", 100, "keep at most this many detections per image (<= 0: all)"),
        Arg("soft_nms_enabled", 0, "use soft NMS"),
        Arg("soft_nms_method", "linear", "linear or gaussian"),
        Arg("soft_nms_sigma", 0.5, "gaussian soft-NMS sigma"),
        Arg("soft_nms_min_score_thres", 0.001, "soft NMS drops boxes whose score falls below this"),
        Arg("rotated", 0, "boxes carry an angle (unsupported)"),
        Arg("cls_agnostic_bbox_reg", 0, "one box per RoI for all classes"),
        Arg("input_boxes_include_bg_cls", 1, "boxes (and scores) include the background class 0"),
        Arg("output_classes_include_bg_cls", 1, "output class ids count the background class"),
        Arg("legacy_plus_one", 1, "widths are x2 - x1 + 1"),
    ),
    infer=_box_nms_infer,
    input_names=("scores", "boxes", "batch_splits"),
    output_names=("scores", "boxes", "classes", "batch_splits", "keeps", "keeps_size"),
    doc="Per-class NMS of detections (background class skipped) and a per-image detection limit.",
)
def box_with_nms_limit(op: OpInfo) -> Callable[..., Any]:
    _no_rotated(op)
    score_thresh = op.float_arg("score_thresh")
    nms_thresh = op.float_arg("nms")
    per_im = op.int_arg("detections_per_im")
    soft = op.bool_arg("soft_nms_enabled")
    method_name = op.arg("soft_nms_method")
    method_name = method_name.decode() if isinstance(method_name, bytes) else str(method_name)
    if method_name not in ("linear", "gaussian"):
        raise ArgumentError(f"{op.label()}: soft_nms_method must be 'linear' or 'gaussian', got '{method_name}'")
    method = 1 if method_name == "linear" else 2
    sigma = op.float_arg("soft_nms_sigma")
    min_score = op.float_arg("soft_nms_min_score_thres")
    agnostic = op.bool_arg("cls_agnostic_bbox_reg")
    boxes_bg = op.bool_arg("input_boxes_include_bg_cls")
    out_bg = op.bool_arg("output_classes_include_bg_cls")
    plus_one = _plus_one(op)
    score_start = 1 if boxes_bg else 0

    def box_col(j: int) -> int:
        return 0 if agnostic else (j if boxes_bg else j - 1)

    def run(scores_in: Any, boxes_in: Any, *rest: Any) -> tuple[np.ndarray, ...]:
        scores = checked_array(op, "scores", scores_in, (2, 4)).astype(F32, copy=False)
        boxes = checked_array(op, "boxes", boxes_in, (2, 4)).astype(F32, copy=False)
        scores = scores.reshape(scores.shape[0], -1)
        boxes = boxes.reshape(boxes.shape[0], -1)
        n, n_cls = scores.shape
        if boxes.shape[0] != n or boxes.shape[1] != (box_col(n_cls - 1) + 1) * 4:
            raise TensorError(
                f"{op.label()}: boxes must be ({n}, {(box_col(n_cls - 1) + 1) * 4}) for scores {scores.shape}, "
                f"got {boxes.shape}"
            )
        splits = np.asarray(rest[0]).astype(np.int64) if rest else np.asarray([n])
        if int(splits.sum()) != n:
            raise TensorError(f"{op.label()}: batch_splits sum to {int(splits.sum())}, expected {n}")
        out_s: list[np.ndarray] = []
        out_b: list[np.ndarray] = []
        out_c: list[np.ndarray] = []
        out_k: list[np.ndarray] = []
        keep_sizes = np.zeros((len(splits), n_cls), dtype=np.int32)
        per_batch: list[int] = []
        offset = 0
        for b, cnt in enumerate(splits.tolist()):
            sc = scores[offset : offset + cnt]
            bx = boxes[offset : offset + cnt]
            keeps: list[list[int]] = [[] for _ in range(n_cls)]
            used = sc.copy()
            for j in range(1, n_cls):
                col = j - 1 + score_start
                cur = sc[:, col]
                cur_boxes = bx[:, 4 * box_col(j) : 4 * box_col(j) + 4]
                inds = np.nonzero(cur > F32(score_thresh))[0]
                if soft:
                    keeps[j], new = soft_nms(
                        cur_boxes, cur, inds, sigma=sigma, overlap=nms_thresh, min_score=min_score,
                        method=method, plus_one=plus_one,
                    )  # fmt: skip
                    used[:, col] = new
                else:
                    keeps[j] = nms(
                        cur_boxes, cur, _sorted_desc(cur, inds), nms_thresh, per_im if per_im > 0 else -1, plus_one
                    )
            total = sum(len(k) for k in keeps)
            if per_im > 0 and total > per_im:
                flat = [(j, i) for j in range(1, n_cls) for i in keeps[j]]
                vals = np.asarray([used[i, j - 1 + score_start] for j, i in flat], dtype=F32)
                order = np.argsort(-vals, kind="stable")[:per_im]
                keeps = [[] for _ in range(n_cls)]
                for t in order.tolist():
                    j, i = flat[t]
                    keeps[j].append(i)
                total = per_im
            per_batch.append(total)
            for j in range(1, n_cls):
                idx = np.asarray(keeps[j], dtype=np.int64)
                col = j - 1 + score_start
                out_s.append(used[idx, col])
                out_b.append(bx[idx, 4 * box_col(j) : 4 * box_col(j) + 4])
                out_c.append(np.full(len(idx), j - (0 if out_bg else 1), dtype=F32))
            for j in range(n_cls):
                out_k.append(np.asarray(keeps[j], dtype=np.int32))
                keep_sizes[b, j] = len(keeps[j])
            offset += cnt
        return (
            np.concatenate(out_s).astype(F32) if out_s else np.zeros(0, F32),
            np.concatenate(out_b).reshape(-1, 4).astype(F32) if out_b else np.zeros((0, 4), F32),
            np.concatenate(out_c).astype(F32) if out_c else np.zeros(0, F32),
            np.asarray(per_batch, dtype=F32),
            np.concatenate(out_k) if out_k else np.zeros(0, np.int32),
            keep_sizes,
        )

    return run


# ---------------------------------------------------------------------------
# GenerateProposals


def _proposals_infer(op: OpInfo, ins: list[TensorInfo]) -> list[TensorInfo]:
    return [info((None, 5), F32), info((None,), F32)]


@register_op(
    "GenerateProposals",
    inputs=4,
    outputs=2,
    args=(
        Arg("spatial_scale", 1.0 / 16, "feature-map scale relative to the image (1 / stride)"),
        Arg("pre_nms_topN", 6000, "proposals kept (by score) before NMS"),
        Arg("post_nms_topN", 300, "proposals kept after NMS"),
        Arg("nms_thresh", 0.7, "NMS IoU threshold"),
        Arg("nms_thres", 0.7, "misspelling written by some Detectron exports; Caffe2 ignores it"),
        Arg("min_size", 16.0, "drop proposals smaller than this (scaled by im_info[2])"),
        Arg("correct_transform_coords", 0, "subtract 1 from x2/y2 after the transform (Detectron)"),
        Arg("legacy_plus_one", 1, "widths are x2 - x1 + 1"),
        *ANGLE_ARGS,
    ),
    aliases=("GenerateProposalsCPP",),
    infer=_proposals_infer,
    input_names=("scores", "bbox_deltas", "im_info", "anchors"),
    output_names=("rois", "rois_probs"),
    doc="RPN proposals: anchors + deltas -> clipped, filtered boxes, top-N by score, NMS, top-N again.",
)
def generate_proposals(op: OpInfo) -> Callable[..., Any]:
    stride = 1.0 / op.float_arg("spatial_scale")
    pre_n = op.int_arg("pre_nms_topN")
    post_n = op.int_arg("post_nms_topN")
    thresh = op.float_arg("nms_thresh")
    min_size = op.float_arg("min_size")
    plus_one = _plus_one(op)
    x2_offset = (
        1.0
        if op.bool_arg("correct_transform_coords", int(plus_one) if not op.has("correct_transform_coords") else 0)
        else 0.0
    )

    def one_image(
        im: np.ndarray, anchors: np.ndarray, deltas: np.ndarray, scores: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        a, h, w = scores.shape
        # Rows ordered (H, W, A) to match the shifted anchors.
        d = deltas.reshape(a, 4, h, w).transpose(2, 3, 0, 1).reshape(-1, 4)
        s = scores.transpose(1, 2, 0).reshape(-1)
        sx = np.arange(w, dtype=F32) * F32(stride)
        sy = np.arange(h, dtype=F32) * F32(stride)
        gx, gy = np.meshgrid(sx, sy)
        shifts = np.stack([gx.ravel(), gy.ravel(), gx.ravel(), gy.ravel()], 1)
        all_anchors = (shifts[:, None, :] + anchors[None, :, :]).reshape(-1, 4).astype(F32)
        order = np.argsort(-s, kind="stable")
        if 0 < pre_n < s.size:
            order = order[:pre_n]
        props = bbox_transform(all_anchors[order], d[order], (1.0, 1.0, 1.0, 1.0), plus_one, x2_offset)
        props = clip_boxes(props, int(im[0]), int(im[1]), plus_one)
        s_sorted = s[order]
        ms = F32(min_size * im[2])
        ws = props[:, 2] - props[:, 0] + F32(plus_one)
        hs = props[:, 3] - props[:, 1] + F32(plus_one)
        ctr_x = props[:, 0] + ws / F32(2)
        ctr_y = props[:, 1] + hs / F32(2)
        keep = np.nonzero((ws >= ms) & (hs >= ms) & (ctr_x < im[1]) & (ctr_y < im[0]))[0]
        top = post_n if 0 < post_n < keep.size else -1
        kept = np.asarray(nms(props, s_sorted, keep, thresh, top, plus_one), dtype=np.int64)
        return props[kept], s_sorted[kept]

    def run(scores: Any, deltas: Any, im_info: Any, anchors: Any) -> tuple[np.ndarray, np.ndarray]:
        sc = checked_array(op, "scores", scores, 4).astype(F32, copy=False)
        dl = checked_array(op, "bbox_deltas", deltas, 4).astype(F32, copy=False)
        im = checked_array(op, "im_info", im_info, 2).astype(F32, copy=False)
        an = checked_array(op, "anchors", anchors, 2).astype(F32, copy=False)
        n, a, h, w = sc.shape
        if an.shape[1] == 5:
            raise UnsupportedError(f"{op.label()}: rotated anchors (A, 5) are not supported")
        if dl.shape != (n, 4 * a, h, w) or im.shape != (n, 3) or an.shape != (a, 4):
            raise TensorError(
                f"{op.label()}: expected bbox_deltas {(n, 4 * a, h, w)}, im_info {(n, 3)}, anchors {(a, 4)} "
                f"for scores {sc.shape}; got {dl.shape}, {im.shape}, {an.shape}"
            )
        rois: list[np.ndarray] = []
        probs: list[np.ndarray] = []
        for i in range(n):
            boxes, p = one_image(im[i], an, dl[i], sc[i])
            rois.append(np.concatenate([np.full((len(boxes), 1), i, dtype=F32), boxes], 1))
            probs.append(p)
        return np.concatenate(rois).astype(F32), np.concatenate(probs).astype(F32)

    return run
