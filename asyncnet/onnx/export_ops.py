"""Caffe2 operator -> ONNX node translations, one function per Caffe2 op family.

Each exporter gets the op (info, SSA input/output names, inferred input/output infos) and the
export context, appends ONNX nodes and initializers, and raises UnsupportedError naming the op when
ONNX cannot express it. The driver is :mod:`asyncnet.onnx.export`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from asyncnet.errors import UnsupportedError
from asyncnet.onnx._common import BINARY_OPS, ELEMENTWISE_OPS, onnx_elem_type, require_onnx
from asyncnet.opinfo import OpInfo
from asyncnet.ops._conv_util import NOTSET, WindowArgs
from asyncnet.schema import TensorInfo
from asyncnet.serde import numpy_dtype

DEFAULT_OPSET = 17
MIN_OPSET = 11
MAX_OPSET = 21


@dataclass
class _Ctx:
    opset: int
    shapes: Mapping[str, TensorInfo]
    consts: dict[str, np.ndarray]
    nodes: list[Any] = field(default_factory=list)
    initializers: dict[str, np.ndarray] = field(default_factory=dict)
    reads: set[str] = field(default_factory=set)
    n: int = 0

    def fresh(self, base: str) -> str:
        self.n += 1
        return f"{base}__x{self.n}"

    def const(self, value: Any, base: str = "const", dtype: Any = None) -> str:
        name = self.fresh(base)
        self.initializers[name] = np.asarray(value, dtype=dtype)
        return name

    def node(self, op_type: str, inputs: Sequence[str], outputs: Sequence[str], **attrs: Any) -> None:
        onnx = require_onnx()
        clean = {k: v for k, v in attrs.items() if v is not None}
        self.nodes.append(onnx.helper.make_node(op_type, list(inputs), list(outputs), **clean))


@dataclass
class _Op:
    """One Caffe2 op as the exporter sees it: its info, SSA input/output names and input shapes."""

    info: OpInfo
    ins: list[str]
    outs: list[str]
    in_infos: list[TensorInfo]
    out_infos: list[TensorInfo]

    def shape(self, i: int) -> tuple[int, ...] | None:
        s = self.in_infos[i].shape if i < len(self.in_infos) else None
        if s is None or any(d is None for d in s):
            return None
        return tuple(int(d) for d in s)  # type: ignore[arg-type]

    def rank(self, i: int) -> int | None:
        s = self.in_infos[i].shape if i < len(self.in_infos) else None
        return None if s is None else len(s)

    def extra_outputs_used(self, ctx: _Ctx) -> bool:
        """Whether any output after the first is read later (or is a net output)."""
        return any(name in ctx.reads for name in self.info.outputs[1:])

    def fail(self, why: str) -> UnsupportedError:
        return UnsupportedError(f"{self.info.label()}: cannot export to ONNX: {why}")


Exporter = Callable[[_Op, _Ctx], None]
EXPORTERS: dict[str, Exporter] = {}


def exports(*types: str) -> Callable[[Exporter], Exporter]:
    def deco(fn: Exporter) -> Exporter:
        for t in types:
            EXPORTERS[t] = fn
        return fn

    return deco


def _nchw(o: _Op) -> None:
    if str(o.info.arg("order", "NCHW")).upper() != "NCHW":
        raise o.fail("only NCHW order is exported")


def _window(o: _Op, *, pooling: bool) -> tuple[list[int], list[int], list[int], list[int]]:
    """(kernel, strides, pads head+tail, dilations) with Caffe2's legacy padding resolved."""
    wa = WindowArgs.parse(o.info, dilation=True, pooling=pooling)
    x = o.shape(0)
    filt = None
    if not pooling and len(o.ins) > 1:
        w = o.shape(1)
        filt = None if w is None else w[2:]
    if x is None:
        if wa.legacy_pad != NOTSET:
            raise o.fail("legacy_pad needs the input shape (give --input-shape)")
        nd = wa.n_spatial() or (len(filt) if filt else 2)
        win = wa.resolve([1 << 20] * nd, filt)
    else:
        win = wa.resolve(wa.spatial_shape(x), filt)
    return list(win.kernel), list(win.stride), list(win.pad_head) + list(win.pad_tail), list(win.dilation)


@exports("Conv", "Conv1D", "Conv2D", "Conv3D")
def _conv(o: _Op, ctx: _Ctx) -> None:
    _nchw(o)
    k, s, p, d = _window(o, pooling=False)
    ctx.node(
        "Conv", o.ins, o.outs[:1], kernel_shape=k, strides=s, pads=p, dilations=d, group=o.info.int_arg("group", 1)
    )


@exports("ConvTranspose")
def _conv_t(o: _Op, ctx: _Ctx) -> None:
    _nchw(o)
    k, s, p, _ = _window(o, pooling=False)
    adj = o.info.first_of(("adjs",), None) or ([o.info.int_arg("adj")] * len(k) if o.info.has("adj") else None)
    ctx.node(
        "ConvTranspose",
        o.ins,
        o.outs[:1],
        kernel_shape=k,
        strides=s,
        pads=p,
        output_padding=list(adj) if adj else None,
        group=o.info.int_arg("group", 1),
    )


@exports(
    "MaxPool", "AveragePool", "MaxPool1D", "MaxPool2D", "MaxPool3D", "AveragePool1D", "AveragePool2D", "AveragePool3D"
)
def _pool(o: _Op, ctx: _Ctx) -> None:
    _nchw(o)
    kind = "MaxPool" if o.info.type.startswith("MaxPool") else "AveragePool"
    if o.info.bool_arg("global_pooling", False):
        ctx.node("Global" + kind, o.ins[:1], o.outs[:1])
        return
    k, s, p, d = _window(o, pooling=True)
    if any(v != 1 for v in d):
        raise o.fail("dilated pooling is not exported")
    extra = {"count_include_pad": int(o.info.bool_arg("count_include_pad", False))} if kind == "AveragePool" else {}
    ctx.node(kind, o.ins[:1], o.outs[:1], kernel_shape=k, strides=s, pads=p, **extra)


_SAME = {
    **ELEMENTWISE_OPS,
    "Alias": "Identity",
    "Where": "Where",
    "Sum": "Sum",
    "Mean": "Mean",
    "Max": "Max",
    "Min": "Min",
}


def _same(o: _Op, ctx: _Ctx) -> None:
    ctx.node(_SAME[o.info.type], o.ins, o.outs[:1])


for _t in _SAME:
    EXPORTERS[_t] = _same


@exports("Dropout")
def _dropout(o: _Op, ctx: _Ctx) -> None:
    if not o.info.bool_arg("is_test", False):
        raise o.fail("only is_test=1 Dropout is exported (training dropout is random)")
    ctx.node("Identity", o.ins[:1], o.outs[:1])


@exports("Sqr")
def _sqr(o: _Op, ctx: _Ctx) -> None:
    ctx.node("Mul", [o.ins[0], o.ins[0]], o.outs[:1])


@exports("LeakyRelu", "Elu", "ThresholdedRelu")
def _alpha(o: _Op, ctx: _Ctx) -> None:
    default = {"LeakyRelu": 0.01, "Elu": 1.0, "ThresholdedRelu": 1.0}[o.info.type]
    ctx.node(o.info.type, o.ins, o.outs[:1], alpha=o.info.float_arg("alpha", default))


@exports("Selu")
def _selu(o: _Op, ctx: _Ctx) -> None:
    ctx.node(
        "Selu",
        o.ins,
        o.outs[:1],
        alpha=o.info.float_arg("alpha", 1.6732632423543772),
        gamma=o.info.float_arg("scale", 1.0507009873554805),
    )


@exports("Clip")
def _clip(o: _Op, ctx: _Ctx) -> None:
    dt = o.in_infos[0].dtype or np.dtype(np.float32)
    lo = (
        ctx.const(o.info.float_arg("min", float(np.finfo(np.float32).min)), "clip_min", dt) if o.info.has("min") else ""
    )
    hi = ctx.const(o.info.float_arg("max", 0.0), "clip_max", dt) if o.info.has("max") else ""
    ctx.node("Clip", [o.ins[0], lo, hi], o.outs[:1])


@exports("Softmax")
def _softmax(o: _Op, ctx: _Ctx) -> None:
    axis = o.info.int_arg("axis", 1)
    rank = o.rank(0)
    if rank is not None and axis < 0:
        axis += rank
    if rank is not None and axis == rank - 1 or axis == -1:
        ctx.node("Softmax", o.ins, o.outs[:1], axis=-1)
        return
    # Caffe2 normalizes over all dims from `axis` on: flatten, softmax rows, restore the shape.
    flat, sm, shape = ctx.fresh(o.outs[0] + "_2d"), ctx.fresh(o.outs[0] + "_sm"), ctx.fresh(o.outs[0] + "_shape")
    ctx.node("Flatten", o.ins[:1], [flat], axis=axis)
    ctx.node("Softmax", [flat], [sm], axis=1)
    ctx.node("Shape", o.ins[:1], [shape])
    ctx.node("Reshape", [sm, shape], o.outs[:1])


@exports("LRN")
def _lrn(o: _Op, ctx: _Ctx) -> None:
    _nchw(o)
    if o.extra_outputs_used(ctx):
        raise o.fail("LRN's scale output is not exported")
    i = o.info
    ctx.node(
        "LRN",
        o.ins,
        o.outs[:1],
        size=i.int_arg("size"),
        alpha=i.float_arg("alpha"),
        beta=i.float_arg("beta"),
        bias=i.float_arg("bias", 1.0),
    )


@exports("SpatialBN")
def _bn(o: _Op, ctx: _Ctx) -> None:
    _nchw(o)
    if not o.info.bool_arg("is_test", False) or o.extra_outputs_used(ctx):
        raise o.fail("only test-mode SpatialBN (is_test=1) is exported")
    ctx.node("BatchNormalization", o.ins, o.outs[:1], epsilon=o.info.float_arg("epsilon", 1e-5))


def _legacy_b(o: _Op, ctx: _Ctx) -> str:
    """B reshaped for Caffe2's legacy broadcast (B's dims start at `axis` of A)."""
    from asyncnet.ops.arithmetic import legacy_axis

    ra, rb = o.rank(0), o.rank(1)
    if ra is None or rb is None:
        raise o.fail("legacy broadcast needs the ranks of A and B")
    axis = legacy_axis(o.info, ra, rb)
    trailing = ra - axis - rb
    if trailing == 0:
        return o.ins[1]
    out = ctx.fresh(o.ins[1] + "_bcast")
    axes = list(range(rb, rb + trailing))
    ctx.node("Unsqueeze", [o.ins[1], ctx.const(axes, "axes", np.int64)], [out])
    return out


_BINARY = BINARY_OPS


@exports(*_BINARY)
def _binary(o: _Op, ctx: _Ctx) -> None:
    if len(o.ins) < 2:
        raise o.fail("the exponent argument form is not exported")
    b = _legacy_b(o, ctx) if o.info.bool_arg("broadcast", False) else o.ins[1]
    ctx.node(_BINARY[o.info.type], [o.ins[0], b], o.outs[:1])


@exports("Scale")
def _scale(o: _Op, ctx: _Ctx) -> None:
    dt = o.in_infos[0].dtype or np.dtype(np.float32)
    ctx.node("Mul", [o.ins[0], ctx.const(o.info.float_arg("scale", 1.0), "scale", dt)], o.outs[:1])


@exports("FC")
def _fc(o: _Op, ctx: _Ctx) -> None:
    axis, axis_w = o.info.int_arg("axis", 1), o.info.int_arg("axis_w", 1)
    x_shape = o.shape(0)
    rank = o.rank(0)
    if axis < 0:
        if rank is None:
            raise o.fail("a negative axis needs the input rank")
        axis += rank
    x2 = o.ins[0]
    if rank != 2 or axis != 1:
        x2 = ctx.fresh(o.ins[0] + "_2d")
        ctx.node("Flatten", o.ins[:1], [x2], axis=axis)
    w = o.ins[1]
    if o.rank(1) != 2 or axis_w != 1:
        w = ctx.fresh(o.ins[1] + "_2d")
        ctx.node("Flatten", o.ins[1:2], [w], axis=axis_w)
    if axis == 1:
        ctx.node("Gemm", [x2, w, o.ins[2]], o.outs[:1], transB=1)
        return
    if x_shape is None or o.out_infos[0].shape is None or any(d is None for d in o.out_infos[0].shape):
        raise o.fail(f"FC with axis={axis} needs static shapes")
    y2 = ctx.fresh(o.outs[0] + "_2d")
    ctx.node("Gemm", [x2, w, o.ins[2]], [y2], transB=1)
    ctx.node("Reshape", [y2, ctx.const(list(o.out_infos[0].shape), "shape", np.int64)], o.outs[:1])


@exports("MatMul")
def _matmul(o: _Op, ctx: _Ctx) -> None:
    if o.rank(0) != 2 or o.rank(1) != 2 or o.info.int_arg("axis_a", 1) != 1 or o.info.int_arg("axis_b", 1) != 1:
        raise o.fail("only 2-D MatMul is exported")
    ins = list(o.ins)
    for i, flag in ((0, "trans_a"), (1, "trans_b")):
        if o.info.bool_arg(flag, False):
            t = ctx.fresh(ins[i] + "_T")
            ctx.node("Transpose", [ins[i]], [t], perm=[1, 0])
            ins[i] = t
    ctx.node("MatMul", ins, o.outs[:1])


@exports("BatchMatMul")
def _bmm(o: _Op, ctx: _Ctx) -> None:
    ins = list(o.ins)
    for i, flag in ((0, "trans_a"), (1, "trans_b")):
        if o.info.bool_arg(flag, False):
            r = o.rank(i)
            if r is None:
                raise o.fail("transposes need the input rank")
            t = ctx.fresh(ins[i] + "_T")
            ctx.node("Transpose", [ins[i]], [t], perm=[*range(r - 2), r - 1, r - 2])
            ins[i] = t
    ctx.node("MatMul", ins, o.outs[:1])


@exports("Concat")
def _concat(o: _Op, ctx: _Ctx) -> None:
    from asyncnet.ops.shape import concat_axis

    rank = o.rank(0)
    if rank is None:
        raise o.fail("needs the input rank")
    axis, add_axis = concat_axis(o.info, rank)
    ins = o.ins
    if add_axis:
        ins = []
        for name in o.ins:
            u = ctx.fresh(name + "_u")
            ctx.node("Unsqueeze", [name, ctx.const([axis], "axes", np.int64)], [u])
            ins.append(u)
    ctx.node("Concat", ins, o.outs[:1], axis=axis)
    if o.extra_outputs_used(ctx):
        sizes = [1 if add_axis else (s[axis] if (s := o.shape(i)) else None) for i in range(len(o.ins))]
        if any(v is None for v in sizes):
            raise o.fail("the split_info output needs static shapes")
        ctx.node("Constant", [], o.outs[1:2], value=_tensor(np.asarray(sizes, np.int32)))


def _tensor(a: np.ndarray) -> Any:
    return require_onnx().numpy_helper.from_array(a)


@exports("Reshape")
def _reshape(o: _Op, ctx: _Ctx) -> None:
    if len(o.ins) > 1:
        shape_in = ctx.fresh(o.ins[1] + "_i64")
        ctx.node("Cast", [o.ins[1]], [shape_in], to=7)
    else:
        shape_in = ctx.const(o.info.ints_arg("shape"), "shape", np.int64)
    ctx.node("Reshape", [o.ins[0], shape_in], o.outs[:1])
    if o.extra_outputs_used(ctx):
        ctx.node("Shape", o.ins[:1], o.outs[1:2])


@exports("Flatten")
def _flatten(o: _Op, ctx: _Ctx) -> None:
    ctx.node("Flatten", o.ins, o.outs[:1], axis=o.info.int_arg("axis", 1))


@exports("FlattenToVec")
def _flatten_vec(o: _Op, ctx: _Ctx) -> None:
    ctx.node("Reshape", [o.ins[0], ctx.const([-1], "shape", np.int64)], o.outs[:1])


@exports("Transpose")
def _transpose(o: _Op, ctx: _Ctx) -> None:
    axes = o.info.arg("axes", None)
    ctx.node("Transpose", o.ins, o.outs[:1], perm=list(axes) if axes else None)


@exports("NCHW2NHWC", "NHWC2NCHW")
def _layout(o: _Op, ctx: _Ctx) -> None:
    r = o.rank(0)
    if r is None:
        raise o.fail("needs the input rank")
    perm = [0, *range(2, r), 1] if o.info.type == "NCHW2NHWC" else [0, r - 1, *range(1, r - 1)]
    ctx.node("Transpose", o.ins, o.outs[:1], perm=perm)


@exports("ExpandDims", "Squeeze")
def _dims(o: _Op, ctx: _Ctx) -> None:
    dims = o.info.ints_arg("dims")
    onnx_type = "Unsqueeze" if o.info.type == "ExpandDims" else "Squeeze"
    ctx.node(onnx_type, [o.ins[0], ctx.const(sorted(dims), "axes", np.int64)], o.outs[:1])


@exports("Cast")
def _cast(o: _Op, ctx: _Ctx) -> None:
    ctx.node("Cast", o.ins, o.outs[:1], to=onnx_elem_type(numpy_dtype(o.info.int_arg("to"))))


@exports("PRelu")
def _prelu(o: _Op, ctx: _Ctx) -> None:
    _nchw(o)
    r = o.rank(0)
    if r is None:
        raise o.fail("needs the input rank")
    slope = ctx.fresh(o.ins[1] + "_bcast")
    ctx.node("Unsqueeze", [o.ins[1], ctx.const(list(range(1, r - 1)), "axes", np.int64)], [slope])
    ctx.node("PRelu", [o.ins[0], slope], o.outs[:1])


@exports("AffineChannel")
def _affine(o: _Op, ctx: _Ctx) -> None:
    _nchw(o)
    r = o.rank(0)
    if r is None:
        raise o.fail("needs the input rank")
    axes = ctx.const(list(range(1, r - 1)), "axes", np.int64)
    s, b, t = ctx.fresh("scale"), ctx.fresh("bias"), ctx.fresh(o.outs[0] + "_scaled")
    ctx.node("Unsqueeze", [o.ins[1], axes], [s])
    ctx.node("Unsqueeze", [o.ins[2], axes], [b])
    ctx.node("Mul", [o.ins[0], s], [t])
    ctx.node("Add", [t, b], o.outs[:1])


@exports("PadImage")
def _pad(o: _Op, ctx: _Ctx) -> None:
    _nchw(o)
    wa = WindowArgs.parse(o.info, dilation=False)
    x = o.shape(0)
    if x is None:
        raise o.fail("needs the input shape")
    win = wa.resolve(wa.spatial_shape(x), [1] * (len(x) - 2))
    pads = [0, 0, *win.pad_head, 0, 0, *win.pad_tail]
    mode = str(o.info.arg("mode", "constant"))
    dt = o.in_infos[0].dtype or np.dtype(np.float32)
    value = ctx.const(o.info.float_arg("value", 0.0), "pad_value", dt) if mode == "constant" else ""
    ctx.node("Pad", [o.ins[0], ctx.const(pads, "pads", np.int64), value], o.outs[:1], mode=mode)


@exports("ResizeNearest")
def _resize(o: _Op, ctx: _Ctx) -> None:
    _nchw(o)
    if len(o.ins) > 1:
        raise o.fail("the scales input form is not exported")
    scales = [1.0, 1.0, o.info.float_arg("height_scale", 1.0), o.info.float_arg("width_scale", 1.0)]
    ctx.node(
        "Resize",
        [o.ins[0], "", ctx.const(scales, "scales", np.float32)],
        o.outs[:1],
        mode="nearest",
        coordinate_transformation_mode="asymmetric",
        nearest_mode="floor",
    )


_REDUCE = {"ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceL1", "ReduceL2"}


@exports(*_REDUCE)
def _reduce(o: _Op, ctx: _Ctx) -> None:
    axes = o.info.arg("axes", None)
    keep = int(o.info.bool_arg("keepdims", True))
    axes_input_opset = 13 if o.info.type == "ReduceSum" else 18
    if ctx.opset >= axes_input_opset:
        ins = [o.ins[0]] + ([ctx.const(list(axes), "axes", np.int64)] if axes else [])
        ctx.node(o.info.type, ins, o.outs[:1], keepdims=keep)
    else:
        ctx.node(o.info.type, o.ins[:1], o.outs[:1], axes=list(axes) if axes else None, keepdims=keep)


@exports("InstanceNorm")
def _inorm(o: _Op, ctx: _Ctx) -> None:
    _nchw(o)
    if o.extra_outputs_used(ctx):
        raise o.fail("mean/inv_stdev outputs are not exported")
    ctx.node("InstanceNormalization", o.ins, o.outs[:1], epsilon=o.info.float_arg("epsilon", 1e-5))


@exports("ConvRelu", "FCRelu", "SumRelu")
def _fused_relu(o: _Op, ctx: _Ctx) -> None:
    """Fused ops of the inference rewrites: the base op's nodes, then a Relu."""
    from dataclasses import replace

    base = o.info.type[: -len("Relu")]
    pre = ctx.fresh(o.outs[0] + "_pre_relu")
    EXPORTERS[base](_Op(replace(o.info, type=base), o.ins, [pre], o.in_infos, o.out_infos), ctx)
    ctx.node("Relu", [pre], o.outs[:1])
