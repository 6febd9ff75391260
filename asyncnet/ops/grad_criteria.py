"""Gradients of CosineEmbeddingCriterion, MarginRankingCriterion, BernoulliJSD and FlexibleTopK.

Gradient op types, inputs and outputs are Caffe2's (its serialized goldens record the gradient
defs); the formulas follow each forward op's definition.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from asyncnet.errors import ArgumentError
from asyncnet.opinfo import OpInfo
from asyncnet.ops.loss import F32, LOG_THRESHOLD
from asyncnet.proto import caffe2_pb2 as pb
from asyncnet.registry import register_op
from asyncnet.schema import Arg
from asyncnet.training.gradients import GradientContext, GradientSpec, register_gradient


@register_gradient("CosineEmbeddingCriterion")
def _cosine_embedding_grad(op: pb.OperatorDef, g_out: list[str | None]) -> GradientSpec:
    g = GradientContext(op, g_out)
    return g.spec([g.op_def("CosineEmbeddingCriterionGradient", [g.I(0), g.I(1), g.GO(0)], [g.GI(0)])])


@register_op(
    "CosineEmbeddingCriterionGradient",
    inputs=3,
    args=(Arg("margin", 0.0, "the forward margin"),),
    infer=lambda op, ins: [ins[0].with_dtype(F32)],
    doc="Gradient of CosineEmbeddingCriterion: inputs S, Y, dloss; dS = -dloss where Y is 1, else dloss "
    "where S >= margin (0 elsewhere).",
    input_names=("S", "Y", "dloss"),
    output_names=("dS",),
)
def cosine_embedding_criterion_gradient(op: OpInfo) -> Callable[..., Any]:
    margin = np.float32(op.float_arg("margin"))

    def run(s: Any, y: Any, dloss: Any) -> tuple[np.ndarray]:
        s, y, d = np.asarray(s, dtype=F32), np.asarray(y), np.asarray(dloss, dtype=F32)
        slope = np.where(y == 1, np.float32(-1), (s >= margin).astype(F32))
        return ((d * slope).astype(F32),)

    return run


@register_gradient("MarginRankingCriterion")
def _margin_ranking_grad(op: pb.OperatorDef, g_out: list[str | None]) -> GradientSpec:
    g = GradientContext(op, g_out)
    ins = [g.I(0), g.I(1), g.I(2), g.GO(0)]
    return g.spec([g.op_def("MarginRankingCriterionGradient", ins, [g.GI(0), g.GI(1)])])


@register_op(
    "MarginRankingCriterionGradient",
    inputs=4,
    outputs=2,
    args=(Arg("margin", 1.0, "the forward margin"),),
    infer=lambda op, ins: [ins[0].with_dtype(F32), ins[1].with_dtype(F32)],
    doc="Gradient of MarginRankingCriterion: inputs X1, X2, Y, dloss; where -Y * (X1 - X2) + margin > 0, "
    "dX1 = -Y * dloss and dX2 = Y * dloss, else 0.",
    input_names=("X1", "X2", "Y", "dloss"),
    output_names=("dX1", "dX2"),
)
def margin_ranking_criterion_gradient(op: OpInfo) -> Callable[..., Any]:
    margin = np.float32(op.float_arg("margin"))

    def run(x1: Any, x2: Any, y: Any, dloss: Any) -> tuple[np.ndarray, np.ndarray]:
        x1, x2 = np.asarray(x1, dtype=F32), np.asarray(x2, dtype=F32)
        yy, d = np.asarray(y).astype(F32), np.asarray(dloss, dtype=F32)
        active = (-yy * (x1 - x2) + margin > 0).astype(F32)
        return (-yy * d * active).astype(F32), (yy * d * active).astype(F32)

    return run


@register_gradient("BernoulliJSD")
def _bernoulli_jsd_grad(op: pb.OperatorDef, g_out: list[str | None]) -> GradientSpec:
    g = GradientContext(op, g_out)
    return g.spec([g.op_def("BernoulliJSDGradient", [g.GO(0), g.I(0), g.I(1)], [g.GI(0)])])


@register_op(
    "BernoulliJSDGradient",
    inputs=3,
    infer=lambda op, ins: [ins[1].with_dtype(F32)],
    doc="Gradient of BernoulliJSD with respect to the prediction: inputs dL, X (p), T (q); "
    "dp = dL * (logit(p) - logit((p + q) / 2)) / 2, p clamped to [1e-20, 1 - 1e-20].",
    input_names=("dL", "X", "T"),
    output_names=("dX",),
)
def bernoulli_jsd_gradient(op: OpInfo) -> Callable[..., Any]:
    def run(dl: Any, p: Any, q: Any) -> tuple[np.ndarray]:
        p64 = np.clip(np.asarray(p, dtype=np.float64), LOG_THRESHOLD, 1 - np.float64(LOG_THRESHOLD))
        m = (p64 + np.asarray(q, dtype=np.float64)) / 2

        def logit(v: np.ndarray) -> np.ndarray:
            with np.errstate(divide="ignore"):
                out: np.ndarray = np.log(v / (1 - v))
            return out

        return ((np.asarray(dl, dtype=np.float64) * (logit(p64) - logit(m)) / 2).astype(F32),)

    return run


@register_gradient("FlexibleTopK")
def _flexible_top_k_grad(op: pb.OperatorDef, g_out: list[str | None]) -> GradientSpec:
    g = GradientContext(op, g_out)
    return g.spec([g.op_def("FlexibleTopKGradient", [g.I(0), g.I(1), g.GO(0), g.O(1)], [g.GI(0)])])


@register_op(
    "FlexibleTopKGradient",
    inputs=4,
    infer=lambda op, ins: [ins[0]],
    doc="Gradient of FlexibleTopK: inputs X, K, dValues, Indices; dX is zero except row r's picked "
    "positions Indices[off_r : off_r + K[r]], which get dValues of the same range.",
    input_names=("X", "K", "dValues", "Indices"),
    output_names=("dX",),
)
def flexible_top_k_gradient(op: OpInfo) -> Callable[..., Any]:
    def run(x: Any, k: Any, dvals: Any, idx: Any) -> tuple[np.ndarray]:
        a, kk = np.asarray(x), np.asarray(k).reshape(-1).astype(np.int64)
        d, ii = np.asarray(dvals).reshape(-1), np.asarray(idx).reshape(-1).astype(np.int64)
        width = a.shape[-1] if a.ndim else 1
        rows = a.size // width if width else 0
        if kk.size != rows or d.size != ii.size or int(kk.sum()) != ii.size:
            raise ArgumentError(
                f"{op.label()}: K {kk.shape} must hold one count per row ({rows}) and sum to the "
                f"{ii.size} indices / {d.size} values"
            )
        out = np.zeros((rows, width), dtype=d.dtype if d.size else a.dtype)
        row_of = np.repeat(np.arange(rows), kk)
        out[row_of, ii] = d
        return (out.reshape(a.shape),)

    return run
