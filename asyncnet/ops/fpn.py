"""FPN proposal routing (Detectron): CollectRpnProposals, DistributeFpnProposals,
CollectAndDistributeFpnRpnProposals; and RMACRegions (image retrieval regions).

Collect: concatenate every RPN level's RoIs (batch index, x1, y1, x2, y2) and keep the
rpn_post_nms_topN best by score (stable sort, descending). Distribute: level of a RoI =
floor(canonical_level + log2(sqrt(area) / canonical_scale + 1e-6)) clipped to
[roi_min_level, roi_max_level] (area with legacy_plus_one widths, in float32 as Caffe2), RoIs per
level in their order, plus the int32 permutation restoring the collected order.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from asyncnet.errors import ArgumentError
from asyncnet.opinfo import OpInfo
from asyncnet.registry import register_op
from asyncnet.schema import Arg, TensorInfo

F32 = np.dtype(np.float32)
_LEVEL_ARGS = (
    Arg("roi_canonical_scale", 224, "s0 of the FPN level formula"),
    Arg("roi_canonical_level", 4, "lvl0 of the FPN level formula"),
    Arg("roi_max_level", 5, "finest level of the outputs"),
    Arg("roi_min_level", 2, "coarsest level of the outputs"),
    Arg("legacy_plus_one", 1, "widths are x2 - x1 + 1"),
)
_RPN_ARGS = (
    Arg("rpn_max_level", 6, "last RPN level of the inputs"),
    Arg("rpn_min_level", 2, "first RPN level of the inputs"),
    Arg("rpn_post_nms_topN", 2000, "RoIs kept after collecting"),
)


def collect(op: OpInfo, ins: tuple[Any, ...]) -> np.ndarray:
    n = len(ins) // 2
    rois = [np.asarray(r, F32).reshape(-1, 5) for r in ins[:n]]
    scores = [np.asarray(s, F32).reshape(-1) for s in ins[n:]]
    for k, (r, s) in enumerate(zip(rois, scores)):
        if r.shape[0] != s.size:
            raise ArgumentError(f"{op.label()}: level {k} has {r.shape[0]} RoIs and {s.size} scores")
    all_rois = np.concatenate(rois) if rois else np.zeros((0, 5), F32)
    all_scores = np.concatenate(scores) if scores else np.zeros(0, F32)
    order = np.argsort(-all_scores, kind="stable")
    top = op.int_arg("rpn_post_nms_topN")
    if 0 < top < order.size:
        order = order[:top]
    return np.asarray(all_rois[order])


def distribute(op: OpInfo, rois: np.ndarray) -> list[np.ndarray]:
    lo, hi = op.int_arg("roi_min_level"), op.int_arg("roi_max_level")
    s0, l0 = np.float32(op.int_arg("roi_canonical_scale")), np.float32(op.int_arg("roi_canonical_level"))
    one = np.float32(1.0 if op.bool_arg("legacy_plus_one") else 0.0)
    w = rois[:, 3] - rois[:, 1] + one
    h = rois[:, 4] - rois[:, 2] + one
    s = np.sqrt(w * h).astype(F32)
    lvls = np.floor(l0 + np.log(s / s0 + np.float32(1e-6)) / np.float32(np.log(2.0))).astype(F32)
    lvls = np.clip(lvls, lo, hi)
    outs: list[np.ndarray] = []
    idx_order: list[np.ndarray] = []
    for lvl in range(lo, hi + 1):
        idx = np.flatnonzero(lvls == lvl)
        outs.append(rois[idx])
        idx_order.append(idx)
    order = np.concatenate(idx_order) if idx_order else np.zeros(0, np.int64)
    restore = np.argsort(order, kind="stable").astype(np.int32)
    return [*outs, restore]


def _levels(op: OpInfo) -> int:
    n = op.int_arg("roi_max_level") - op.int_arg("roi_min_level") + 1
    if n < 1:
        raise ArgumentError(f"{op.label()}: roi_max_level must be >= roi_min_level")
    return n


def _rpn_levels(op: OpInfo) -> int:
    n = op.int_arg("rpn_max_level") - op.int_arg("rpn_min_level") + 1
    if n < 1 or len(op.inputs) != 2 * n:
        raise ArgumentError(f"{op.label()}: expected 2 x {n} inputs (RoIs, then scores, per RPN level)")
    return n


def _dist_infer(first: int) -> Callable[[OpInfo, list[TensorInfo]], list[TensorInfo]]:
    def infer(op: OpInfo, ins: list[TensorInfo]) -> list[TensorInfo]:
        rows = [TensorInfo((None, 5), F32)] * (len(op.outputs) - first - 1)
        return [TensorInfo((None, 5), F32)] * first + rows + [TensorInfo((None,), np.dtype(np.int32))]

    return infer


@register_op(
    "CollectRpnProposals",
    inputs=(2, -1),
    args=_RPN_ARGS,
    infer=lambda op, ins: [TensorInfo((None, 5), F32)],
    doc="Concatenate the RPN levels' RoIs (inputs: RoIs per level, then scores per level) and keep the "
    "rpn_post_nms_topN best by score.",
    output_names=("rois",),
)
def collect_rpn_proposals(op: OpInfo) -> Callable[..., Any]:
    _rpn_levels(op)
    return lambda *ins: (collect(op, ins),)


@register_op(
    "DistributeFpnProposals",
    inputs=1,
    outputs=(2, -1),
    args=_LEVEL_ARGS,
    infer=_dist_infer(0),
    doc="Route each RoI to its FPN level: outputs the RoIs of each level (min to max), then the int32 "
    "permutation restoring the input order.",
    input_names=("rois",),
)
def distribute_fpn_proposals(op: OpInfo) -> Callable[..., Any]:
    if len(op.outputs) != _levels(op) + 1:
        raise ArgumentError(f"{op.label()}: expected {_levels(op) + 1} outputs")
    return lambda rois: tuple(distribute(op, np.asarray(rois, F32).reshape(-1, 5)))


@register_op(
    "CollectAndDistributeFpnRpnProposals",
    inputs=(2, -1),
    outputs=(3, -1),
    args=(*_LEVEL_ARGS, *_RPN_ARGS),
    infer=_dist_infer(1),
    doc="CollectRpnProposals then DistributeFpnProposals: outputs rois, the RoIs of each FPN level, "
    "and the restoring permutation.",
)
def collect_and_distribute(op: OpInfo) -> Callable[..., Any]:
    _rpn_levels(op)
    if len(op.outputs) != _levels(op) + 2:
        raise ArgumentError(f"{op.label()}: expected {_levels(op) + 2} outputs")

    def run(*ins: Any) -> tuple[np.ndarray, ...]:
        rois = collect(op, ins)
        return (rois, *distribute(op, rois))

    return run


@register_op(
    "RMACRegions",
    args=(Arg("scales", 3, "number of region scales"), Arg("overlap", 0.4, "target overlap of neighbouring regions")),
    infer=lambda op, ins: [TensorInfo((None, 5), F32)],
    doc="R-MAC regions of a 4-D NCHW input: square regions of side 2 min(H, W) / (l + 1) on scales l = 1.."
    "scales, laid out with the overlap-optimal step count on the long side; rows (batch index, x1, y1, x2, "
    "y2) repeated for every batch item.",
    input_names=("X",),
    output_names=("RMAC_REGIONS",),
)
def rmac_regions(op: OpInfo) -> Callable[..., Any]:
    scales, overlap = op.int_arg("scales"), op.float_arg("overlap")

    def run(x: Any) -> tuple[np.ndarray]:
        shape = np.shape(x)
        if len(shape) != 4:
            raise ArgumentError(f"{op.label()}: X must be 4-D NCHW, got {shape}")
        n, h, w = shape[0], shape[2], shape[3]
        min_w = min(h, w)
        step = 0
        if w != h:
            best = float("inf")
            for idx in range(1, 7):
                b = (max(h, w) - min_w) / idx
                val = abs((min_w * min_w - min_w * b) / (min_w * min_w) - overlap)
                if val < best:
                    step, best = idx, val
        wd, hd = (step if w > h else 0), (step if h > w else 0)
        rows: list[list[float]] = []
        for lvl in range(1, scales + 1):
            size = 2 * min_w // (lvl + 1)
            if size == 0:
                break
            bw = (w - size) / (lvl + wd - 1) if lvl + wd - 1 > 0 else 0.0
            bh = (h - size) / (lvl + hd - 1) if lvl + hd - 1 > 0 else 0.0
            for i in range(lvl + wd):
                for j in range(lvl + hd):
                    x1, y1 = int(bw * i), int(bh * j)
                    x1 -= max(0, x1 + size - w)
                    y1 -= max(0, y1 + size - h)
                    rows.append([0.0, x1, y1, x1 + size - 1, y1 + size - 1])
        base = np.array(rows, F32).reshape(-1, 5)
        out = (
            np.concatenate([np.concatenate([np.full((len(base), 1), b, F32), base[:, 1:]], axis=1) for b in range(n)])
            if n
            else base[:0]
        )
        return (out.astype(F32),)

    return run
