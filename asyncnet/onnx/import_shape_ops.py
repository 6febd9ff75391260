"""ONNX shape and data-movement nodes -> Caffe2 operators (registered into import_ops.TRANSLATORS)."""

from __future__ import annotations

from typing import Any

import numpy as np

from asyncnet.onnx._common import CAFFE2_TYPE_OF_NUMPY, numpy_of_onnx
from asyncnet.onnx.import_ops import INT_MAX, Ctx, _ins, _label, _op, _to_array, _unsupported, translates
from asyncnet.proto import caffe2_pb2 as pb


@translates("Reshape")
def _reshape(node: Any, a: dict[str, Any], ctx: Ctx) -> list[pb.OperatorDef]:
    if int(a.get("allowzero", 0)):
        raise _unsupported(node, "allowzero=1 has no Caffe2 equivalent")
    shape = ctx.const(node, 1) if len(node.input) > 1 else np.asarray(a.get("shape", []))
    if shape is None:
        return [_op("Reshape", _ins(node), node.output[:1] + [ctx.fresh(node.output[0] + "_old_shape")], node.name)]
    return [
        _op(
            "Reshape",
            node.input[:1],
            node.output[:1] + [ctx.fresh(node.output[0] + "_old_shape")],
            node.name,
            shape=[int(v) for v in np.asarray(shape).reshape(-1)],
        )
    ]


@translates("Flatten")
def _flatten(node: Any, a: dict[str, Any], ctx: Ctx) -> list[pb.OperatorDef]:
    axis = int(a.get("axis", 1))
    if axis < 0:
        rank = ctx.rank(node.input[0])
        if rank is None:
            raise _unsupported(node, "a negative axis needs the input rank")
        axis += rank
    return [_op("Flatten", _ins(node), node.output, node.name, axis=axis)]


@translates("Concat")
def _concat(node: Any, a: dict[str, Any], ctx: Ctx) -> list[pb.OperatorDef]:
    return [
        _op(
            "Concat",
            _ins(node),
            [node.output[0], ctx.fresh(node.output[0] + "_split_info")],
            node.name,
            axis=int(a["axis"]),
        )
    ]


@translates("Transpose")
def _transpose(node: Any, a: dict[str, Any], ctx: Ctx) -> list[pb.OperatorDef]:
    return [_op("Transpose", _ins(node), node.output, node.name, axes=list(a["perm"]) if "perm" in a else None)]


def _axes(node: Any, a: dict[str, Any], ctx: Ctx, input_index: int) -> list[int] | None:
    if "axes" in a:
        return [int(v) for v in a["axes"]]
    c = ctx.const(node, input_index)
    if c is not None:
        return [int(v) for v in c.reshape(-1)]
    if len(node.input) > input_index and node.input[input_index]:
        raise _unsupported(node, "axes must be constant")
    return None


@translates("Unsqueeze")
def _unsqueeze(node: Any, a: dict[str, Any], ctx: Ctx) -> list[pb.OperatorDef]:
    axes = _axes(node, a, ctx, 1) or []
    if any(x < 0 for x in axes):
        rank = ctx.rank(node.input[0])
        if rank is None:
            raise _unsupported(node, "negative axes need the input rank")
        axes = [x + rank + len(axes) if x < 0 else x for x in axes]
    return [_op("ExpandDims", node.input[:1], node.output, node.name, dims=sorted(axes))]


@translates("Squeeze")
def _squeeze(node: Any, a: dict[str, Any], ctx: Ctx) -> list[pb.OperatorDef]:
    axes = _axes(node, a, ctx, 1)
    if axes is None:
        raise _unsupported(node, "Squeeze without axes needs static shapes")
    if any(x < 0 for x in axes):
        rank = ctx.rank(node.input[0])
        if rank is None:
            raise _unsupported(node, "negative axes need the input rank")
        axes = [x + rank if x < 0 else x for x in axes]
    return [_op("Squeeze", node.input[:1], node.output, node.name, dims=sorted(axes))]


@translates("Cast")
def _cast(node: Any, a: dict[str, Any], ctx: Ctx) -> list[pb.OperatorDef]:
    dt = numpy_of_onnx(int(a["to"]))
    if dt not in CAFFE2_TYPE_OF_NUMPY:
        raise _unsupported(node, f"cast to {dt} has no Caffe2 type")
    return [_op("Cast", _ins(node), node.output, node.name, to=int(CAFFE2_TYPE_OF_NUMPY[dt]))]


@translates("ConstantOfShape")
def _const_of_shape(node: Any, a: dict[str, Any], ctx: Ctx) -> list[pb.OperatorDef]:
    value = (
        _to_array(a["value"], f"node '{_label(node)}' value").reshape(-1) if "value" in a else np.zeros(1, np.float32)
    )
    dt = value.dtype
    if dt not in CAFFE2_TYPE_OF_NUMPY:
        raise _unsupported(node, f"fill dtype {dt} has no Caffe2 type")
    v: Any = value[0].item()
    return [
        _op(
            "ConstantFill",
            _ins(node),
            node.output,
            node.name,
            input_as_shape=1,
            dtype=int(CAFFE2_TYPE_OF_NUMPY[dt]),
            value=v,
        )
    ]


@translates("Gather")
def _gather(node: Any, a: dict[str, Any], ctx: Ctx) -> list[pb.OperatorDef]:
    return [_op("Gather", _ins(node), node.output, node.name, axis=int(a.get("axis", 0)))]


@translates("Split")
def _split(node: Any, a: dict[str, Any], ctx: Ctx) -> list[pb.OperatorDef]:
    split = a.get("split")
    if "num_outputs" in a:
        raise _unsupported(node, "num_outputs (possibly uneven parts) needs static shapes; give `split`")
    if split is None and len(node.input) > 1 and node.input[1]:
        split = [int(v) for v in ctx.need_const(node, 1, "split").reshape(-1)]
    return [
        _op(
            "Split",
            node.input[:1],
            node.output,
            node.name,
            axis=int(a.get("axis", 0)),
            split=list(split) if split else None,
        )
    ]


@translates("Slice")
def _slice(node: Any, a: dict[str, Any], ctx: Ctx) -> list[pb.OperatorDef]:
    x = node.input[0]
    if ctx.opset < 10:
        starts, ends, axes, steps = a["starts"], a["ends"], a.get("axes"), None
    else:
        starts = ctx.need_const(node, 1, "starts")
        ends = ctx.need_const(node, 2, "ends")
        axes = ctx.const(node, 3)
        steps = ctx.const(node, 4)
    if steps is not None and any(int(s) != 1 for s in np.asarray(steps).reshape(-1)):
        raise _unsupported(node, "steps other than 1 are not supported by Caffe2's Slice")
    rank = ctx.rank(x)
    if rank is None:
        raise _unsupported(node, "needs the input rank")
    axes_l = list(range(len(starts))) if axes is None else [int(v) % rank for v in np.asarray(axes).reshape(-1)]
    c_starts, c_ends = [0] * rank, [-1] * rank
    for ax, s, e in zip(axes_l, np.asarray(starts).reshape(-1), np.asarray(ends).reshape(-1)):
        s, e = int(s), int(e)
        # Caffe2 counts negative positions from one past the end (-1 = the end itself).
        c_starts[ax] = s - 1 if s < 0 else s
        c_ends[ax] = -1 if e >= INT_MAX // 2 else (e - 1 if e < 0 else e)
    return [_op("Slice", [x], node.output, node.name, starts=c_starts, ends=c_ends)]


@translates("Tile")
def _tile(node: Any, a: dict[str, Any], ctx: Ctx) -> list[pb.OperatorDef]:
    return [_op("NumpyTile", _ins(node), node.output, node.name)]


@translates("Expand")
def _expand(node: Any, a: dict[str, Any], ctx: Ctx) -> list[pb.OperatorDef]:
    return [_op("Expand", _ins(node), node.output, node.name)]


_REDUCE = {
    "ReduceSum": "ReduceSum",
    "ReduceMean": "ReduceMean",
    "ReduceMax": "ReduceMax",
    "ReduceMin": "ReduceMin",
    "ReduceL1": "ReduceL1",
    "ReduceL2": "ReduceL2",
}


@translates(*_REDUCE)
def _reduce(node: Any, a: dict[str, Any], ctx: Ctx) -> list[pb.OperatorDef]:
    axes = _axes(node, a, ctx, 1)
    if int(a.get("noop_with_empty_axes", 0)) and not axes:
        return [_op("Copy", node.input[:1], node.output, node.name)]
    return [
        _op(
            _REDUCE[node.op_type], node.input[:1], node.output, node.name, axes=axes, keepdims=int(a.get("keepdims", 1))
        )
    ]


@translates("ArgMax", "ArgMin")
def _arg(node: Any, a: dict[str, Any], ctx: Ctx) -> list[pb.OperatorDef]:
    if int(a.get("select_last_index", 0)):
        raise _unsupported(node, "select_last_index=1 is not supported")
    return [
        _op(
            node.op_type,
            _ins(node),
            node.output,
            node.name,
            axis=int(a.get("axis", 0)),
            keepdims=int(a.get("keepdims", 1)),
        )
    ]


@translates("TopK")
def _topk(node: Any, a: dict[str, Any], ctx: Ctx) -> list[pb.OperatorDef]:
    if not int(a.get("largest", 1)):
        raise _unsupported(node, "largest=0 is not supported by Caffe2's TopK")
    k = a.get("k")
    if k is None:
        k = int(ctx.need_const(node, 1, "k").reshape(-1)[0])
    return [_op("TopK", node.input[:1], node.output, node.name, k=int(k), axis=int(a.get("axis", -1)))]
