"""SumReduceLike and the gradients Caffe2 had for Pow, Gather, BatchGather, Cast, BooleanMask, LengthsTile, LengthsTopK,
Moments, BatchMoments, FCTransposed, SquareRootDivide and NanCheck.

Gather's gradient is dense here (asyncnet has no GradientSlice): the output gradient's slices are
added into a zero tensor shaped like DATA, repeated indices accumulating.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from asyncnet.errors import ArgumentError
from asyncnet.opinfo import OpInfo
from asyncnet.ops._util import canonical_axis
from asyncnet.ops.arithmetic import legacy_shape
from asyncnet.ops.grad_arithmetic import reduce_to_shape
from asyncnet.proto import caffe2_pb2 as pb
from asyncnet.registry import register_op
from asyncnet.schema import Arg, TensorInfo
from asyncnet.training.gradients import GradientContext, GradientSpec, register_gradient

# -- Pow --------------------------------------------------------------------------------------


@register_gradient("Pow", copy_arguments=False)
def _pow_grad(op: pb.OperatorDef, g_out: list[str | None]) -> GradientSpec:
    # Caffe2 builds Pow's gradient from plain ops: dX = dZ * Y * X^(Y-1) (or e * X^(e-1) * dZ for
    # the exponent argument), dY = SumReduceLike(ln(X) * Z * dZ, Y) (a Copy without `broadcast`).
    g = GradientContext(op, g_out)
    x, dz = g.I(0), g.GO(0)
    if len(op.input) == 1:
        e = float(g.arg("exponent", 0.0))
        if op.input[0] != op.output[0]:
            pow_e = e - 1.0
        else:
            if abs(e) <= 1e-12:
                raise ArgumentError("Pow in place with exponent 0 has no gradient")
            pow_e = (e - 1.0) / e
        dx = g.GI(0)
        return g.spec(
            [
                g.op_def("Pow", [x], [dx], {"exponent": pow_e}),
                g.op_def("Mul", [dx, dz], [dx]),
                g.op_def("Scale", [dx], [dx], {"scale": e}),
            ]
        )
    if op.output[0] in (op.input[0], op.input[1]):
        raise ArgumentError(f"Pow op '{op.name or op.output[0]}': no gradient when computed in place")
    y, z = g.I(1), g.O(0)
    dx, dy = g.GI(0), g.GI(1)
    bflag = g.has_arg("broadcast")
    bargs: dict[str, Any] = {}
    if bflag:
        bargs = {
            "broadcast": g.arg("broadcast", 0),
            "axis": g.arg("axis", -1),
            "axis_str": g.arg("axis_str", ""),
            "order": g.arg("order", "NCHW"),
        }
    red = f"{dy}_autogen_pre_red"
    ops = [
        g.op_def("ConstantFill", [y], [dy], {"value": 1.0}),
        g.op_def("Sub", [y, dy], [dy]),
        g.op_def("Pow", [x, dy], [dx], bargs),
        g.op_def("Mul", [dx, dz], [dx]),
        g.op_def("Mul", [dx, y], [dx], bargs),
        g.op_def("Log", [x], [red]),
        g.op_def("Mul", [red, z], [red]),
        g.op_def("Mul", [red, dz], [red]),
    ]
    if bflag:
        ops.append(g.op_def("SumReduceLike", [red, y], [dy], {k: bargs[k] for k in ("axis", "axis_str", "order")}))
    else:
        ops.append(g.op_def("Copy", [red], [dy]))
    return g.spec(ops)


@register_op(
    "SumReduceLike",
    inputs=2,
    args=(
        Arg("axis", -1, "where B's dims start in A (-1: aligned to the end)"),
        Arg("axis_str", "", "axis as a letter of `order`"),
        Arg("order", "NCHW", "used with axis_str"),
    ),
    infer=lambda op, ins: [TensorInfo(ins[1].shape, ins[0].dtype)],
    doc="C = A summed over the dims that legacy broadcasting of B (aligned at `axis`) would stretch: C has B's shape.",
    input_names=("A", "B"),
    output_names=("C",),
)
def sum_reduce_like(op: OpInfo) -> Callable[..., Any]:
    def run(a: Any, b: Any) -> tuple[np.ndarray]:
        a, bs = np.asarray(a), np.shape(b)
        view = legacy_shape(op, a.shape, bs)
        return (reduce_to_shape(a, tuple(int(d) for d in view)).reshape(bs).astype(a.dtype, copy=False),)

    return run


# -- Gather / BatchGather -------------------------------------------------------------------------


def _gather_maker(default_axis: int) -> Callable[[pb.OperatorDef, list[str | None]], GradientSpec]:
    def maker(op: pb.OperatorDef, g_out: list[str | None]) -> GradientSpec:
        g = GradientContext(op, g_out)
        # BatchGatherGradient defaults to axis 1 (BatchGather's); Gather's default 0 is spelled out.
        args = {} if g.has_arg("axis") or default_axis == 1 else {"axis": default_axis}
        return g.spec([g.op_def("BatchGatherGradient", [g.I(0), g.I(1), g.GO(0)], [g.GI(0)], args)])

    return maker


register_gradient("Gather")(_gather_maker(0))
register_gradient("BatchGather")(_gather_maker(1))


@register_op(
    "BatchGatherGradient",
    inputs=3,
    args=(
        Arg("axis", 1, "the forward axis"),
        Arg("match_outer", 0, "the forward match_outer"),
        Arg("wrap_indices", 0, "the forward wrap_indices (negative indices count from the end)"),
    ),
    infer=lambda op, ins: [TensorInfo(ins[0].shape, ins[2].dtype)],
    doc="Gradient of Gather/BatchGather: inputs DATA, INDICES, dOUTPUT; dDATA is zero except the "
    "gathered slices, which accumulate dOUTPUT (repeated indices add up).",
    input_names=("DATA", "INDICES", "dOUTPUT"),
    output_names=("dDATA",),
)
def batch_gather_gradient(op: OpInfo) -> Callable[..., Any]:
    axis_arg, match_outer = op.int_arg("axis"), op.bool_arg("match_outer")

    def run(data: Any, indices: Any, dout: Any) -> tuple[np.ndarray]:
        d, ii, dy = np.asarray(data), np.asarray(indices).astype(np.int64), np.asarray(dout)
        axis = canonical_axis(axis_arg, d.ndim, op)
        dim = d.shape[axis]
        ii = np.where(ii < 0, ii + dim, ii)
        if np.any(ii < 0) or np.any(ii >= dim):
            raise ArgumentError(f"{op.label()}: an index is out of range [0, {dim})")
        outer = int(np.prod(d.shape[:axis], dtype=np.int64))
        inner = int(np.prod(d.shape[axis + 1 :], dtype=np.int64))
        dx = np.zeros((outer, dim, inner), dy.dtype)
        if match_outer:
            per = ii.reshape(outer, -1)
            g = dy.reshape(outer, per.shape[1], inner)
            for b in range(outer):
                np.add.at(dx[b], per[b], g[b])
        else:
            flat = ii.reshape(-1)
            # Indices on the middle axis: move it first so add.at takes a plain index array.
            np.add.at(dx.transpose(1, 0, 2), flat, dy.reshape(outer, flat.size, inner).transpose(1, 0, 2))
        return (dx.reshape(d.shape),)

    return run


# -- Cast -----------------------------------------------------------------------------------------


@register_gradient("Cast", copy_arguments=False)
def _cast_grad(op: pb.OperatorDef, g_out: list[str | None]) -> GradientSpec:
    g = GradientContext(op, g_out)
    if not g.has_arg("from_type"):
        raise ArgumentError(
            f"Cast op '{op.name or op.output[0]}': its gradient needs the 'from_type' argument (as in Caffe2)"
        )
    args = {"to": g.arg("from_type"), "from_type": g.arg("to")}
    return g.spec([g.op_def("Cast", [g.GO(0)], [g.GI(0)], args)])


# -- BooleanMask ----------------------------------------------------------------------------------


@register_gradient("BooleanMask")
def _boolean_mask_grad(op: pb.OperatorDef, g_out: list[str | None]) -> GradientSpec:
    g = GradientContext(op, g_out)
    return g.spec([g.op_def("BooleanMaskGradient", [g.I(1), g.GO(0)], [g.GI(0)])])


@register_op(
    "BooleanMaskGradient",
    inputs=2,
    infer=lambda op, ins: [TensorInfo(None, ins[1].dtype)],
    doc="Gradient of BooleanMask: inputs mask, dmasked_data; the rows where mask is true get "
    "dmasked_data in order, the others 0.",
    input_names=("mask", "dmasked_data"),
    output_names=("ddata",),
)
def boolean_mask_gradient(op: OpInfo) -> Callable[..., Any]:
    def run(mask: Any, dy: Any) -> tuple[np.ndarray]:
        m, g = np.asarray(mask).astype(bool).reshape(-1), np.asarray(dy)
        if g.ndim == 0 or g.shape[0] != int(m.sum()):
            raise ArgumentError(f"{op.label()}: dmasked_data {g.shape} must have one row per true mask entry")
        out = np.zeros((m.size,) + g.shape[1:], g.dtype)
        out[m] = g
        return (out,)

    return run


# -- LengthsTile / LengthsTopK ---------------------------------------------------------------------


@register_gradient("LengthsTile")
def _lengths_tile_grad(op: pb.OperatorDef, g_out: list[str | None]) -> GradientSpec:
    g = GradientContext(op, g_out)
    return g.spec([g.op_def("LengthsSum", [g.GO(0), g.I(1)], [g.GI(0)])])


@register_gradient("LengthsTopK")
def _lengths_top_k_grad(op: pb.OperatorDef, g_out: list[str | None]) -> GradientSpec:
    g = GradientContext(op, g_out)
    return g.spec([g.op_def("LengthsTopKGradient", [g.I(1), g.O(1), g.GO(0)], [g.GI(0)])])


@register_op(
    "LengthsTopKGradient",
    inputs=3,
    args=(Arg("k", 0, "the forward k"),),
    infer=lambda op, ins: [TensorInfo((None,), ins[2].dtype)],
    doc="Gradient of LengthsTopK: inputs LENGTHS, TopKIndices, dTopKValue; each picked position of "
    "its segment gets its gradient, the rest 0 (padding indices -1 are skipped).",
    input_names=("LENGTHS", "TopKIndices", "dTopKValue"),
    output_names=("dDATA",),
)
def lengths_top_k_gradient(op: OpInfo) -> Callable[..., Any]:
    def run(lengths: Any, indices: Any, dv: Any) -> tuple[np.ndarray]:
        lens = np.asarray(lengths).reshape(-1).astype(np.int64)
        ii, g = np.asarray(indices).astype(np.int64), np.asarray(dv)
        if ii.shape != g.shape or ii.ndim != 2 or ii.shape[0] != lens.size:
            raise ArgumentError(f"{op.label()}: indices {ii.shape} and gradient {g.shape} must be (N, k)")
        starts = np.concatenate([[0], np.cumsum(lens)[:-1]]).astype(np.int64) if lens.size else lens
        out = np.zeros(int(lens.sum()), g.dtype)
        keep = ii >= 0
        rows = np.broadcast_to(starts[:, None], ii.shape)
        out[(rows + ii)[keep]] = g[keep]
        return (out,)

    return run


# -- Moments / BatchMoments ------------------------------------------------------------------------


@register_gradient("Moments")
def _moments_grad(op: pb.OperatorDef, g_out: list[str | None]) -> GradientSpec:
    g = GradientContext(op, g_out)
    return g.spec([g.op_def("MomentsGradient", [g.GO(0), g.GO(1), g.I(0), g.O(0)], [g.GI(0)])])


@register_op(
    "MomentsGradient",
    inputs=4,
    args=(Arg("axes", [], "the forward axes (default: all)"), Arg("keepdims", 1, "the forward keepdims")),
    infer=lambda op, ins: [TensorInfo(ins[2].shape, ins[0].dtype)],
    doc="Gradient of Moments: inputs dmean, dvariance, X, mean; dX = dmean / n + dvariance * 2 (X - mean) / n, "
    "n the number of reduced elements.",
    input_names=("dmean", "dvariance", "X", "mean"),
    output_names=("dX",),
)
def moments_gradient(op: OpInfo) -> Callable[..., Any]:
    def run(dmean: Any, dvar: Any, x: Any, mean: Any) -> tuple[np.ndarray]:
        x = np.asarray(x)
        raw = op.ints_arg("axes")
        axes = tuple(sorted({canonical_axis(a, x.ndim, op) for a in raw})) if raw else tuple(range(x.ndim))
        kept = tuple(1 if i in axes else d for i, d in enumerate(x.shape))
        n = max(int(np.prod([x.shape[a] for a in axes], dtype=np.int64)), 1)
        dm = np.asarray(dmean).reshape(kept)
        dv = np.asarray(dvar).reshape(kept)
        mu = np.asarray(mean).reshape(kept)
        dx = dm / n + dv * 2.0 * (x - mu) / n
        return (np.broadcast_to(dx, x.shape).astype(np.asarray(dmean).dtype),)

    return run


@register_gradient("BatchMoments")
def _batch_moments_grad(op: pb.OperatorDef, g_out: list[str | None]) -> GradientSpec:
    g = GradientContext(op, g_out)
    return g.spec([g.op_def("BatchMomentsGradient", [g.GO(0), g.GO(1), g.I(0)], [g.GI(0)])])


@register_op(
    "BatchMomentsGradient",
    inputs=3,
    args=(Arg("order", "NCHW", "where the channel dim is"),),
    infer=lambda op, ins: [TensorInfo(ins[2].shape, ins[0].dtype)],
    doc="Gradient of BatchMoments: inputs dmu, dvar, X; per channel dX = dmu / n + dvar * 2 X / n, "
    "n the elements per channel.",
    input_names=("dmu", "dvar", "X"),
    output_names=("dX",),
)
def batch_moments_gradient(op: OpInfo) -> Callable[..., Any]:
    order = str(op.arg("order", "NCHW")).upper()

    def run(dmu: Any, dvar: Any, x: Any) -> tuple[np.ndarray]:
        x = np.asarray(x)
        c_axis = 1 if order == "NCHW" else x.ndim - 1
        shape = [1] * x.ndim
        shape[c_axis] = -1
        n = max(x.size // max(x.shape[c_axis], 1), 1)
        dx = np.asarray(dmu).reshape(shape) / n + np.asarray(dvar).reshape(shape) * 2.0 * x / n
        return (dx.astype(np.asarray(dmu).dtype),)

    return run


# -- FCTransposed ---------------------------------------------------------------------------------


@register_gradient("FCTransposed")
def _fc_transposed_grad(op: pb.OperatorDef, g_out: list[str | None]) -> GradientSpec:
    g = GradientContext(op, g_out)
    ins = [g.I(0), g.I(1), g.GO(0)]
    return g.spec([g.op_def("FCTransposedGradient", ins, [g.GI(1), g.GI(2), g.GI(0)])])


@register_op(
    "FCTransposedGradient",
    inputs=3,
    outputs=(2, 3),
    args=(Arg("axis", 1, "the forward axis"), Arg("axis_w", 1, "the forward axis_w")),
    infer=lambda op, ins: [ins[1], TensorInfo(None, ins[1].dtype), ins[0]][: len(op.outputs)],
    doc="Gradient of FCTransposed (Y = X W + b, W as [K, N]): inputs X, W, dY; outputs dW = X^T dY, "
    "db = column sums of dY, [dX = dY W^T].",
    input_names=("X", "W", "dY"),
    output_names=("dW", "db", "dX"),
)
def fc_transposed_gradient(op: OpInfo) -> Callable[..., Any]:
    axis_arg, axis_w_arg = op.int_arg("axis"), op.int_arg("axis_w")

    def run(x: Any, w: Any, dy: Any) -> tuple[np.ndarray, ...]:
        x, w, dy = np.asarray(x), np.asarray(w), np.asarray(dy)
        axis = canonical_axis(axis_arg, x.ndim, op)
        axis_w = canonical_axis(axis_w_arg, w.ndim, op)
        m, k = int(np.prod(x.shape[:axis], dtype=np.int64)), int(np.prod(x.shape[axis:], dtype=np.int64))
        n = int(np.prod(w.shape[axis_w:], dtype=np.int64))
        x2, w2, g2 = x.reshape(m, k), w.reshape(k, n), dy.reshape(m, n)
        dw = (x2.T @ g2).reshape(w.shape).astype(w.dtype, copy=False)
        db = g2.sum(axis=0).astype(w.dtype)
        dx = (g2 @ w2.T).reshape(x.shape).astype(x.dtype, copy=False)
        return dw, db, dx

    return run


# -- SquareRootDivide / NanCheck --------------------------------------------------------------------


@register_gradient("SquareRootDivide")
def _square_root_divide_grad(op: pb.OperatorDef, g_out: list[str | None]) -> GradientSpec:
    # Linear in data: the gradient is the same division applied to dY (scale gets none).
    g = GradientContext(op, g_out)
    return g.spec([g.op_def("SquareRootDivide", [g.GO(0), g.I(1)], [g.GI(0)])])


@register_gradient("NanCheck")
def _nan_check_grad(op: pb.OperatorDef, g_out: list[str | None]) -> GradientSpec:
    g = GradientContext(op, g_out)
    return g.spec([g.op_def("NanCheck", [g.GO(0)], [g.GI(0)])])
