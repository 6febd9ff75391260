"""ONNX node -> Caffe2 operator translations, one function per ONNX op family.

Each translator gets the node, its attributes and a :class:`Ctx` (constants, ranks and static shapes
known at import time) and returns Caffe2 OperatorDefs; anything Caffe2 cannot express raises
UnsupportedError naming the node.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from asyncnet.errors import ParseError, UnsupportedError
from asyncnet.onnx._common import BINARY_OPS, ELEMENTWISE_OPS, require_onnx
from asyncnet.proto import caffe2_pb2 as pb
from asyncnet.serde import make_argument

INT_MAX = 2**62


@dataclass
class Ctx:
    """What a node translator sees: constants, ranks, opset and a name generator."""

    consts: dict[str, np.ndarray]
    ranks: dict[str, int]
    opset: int
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    used: set[str] = field(default_factory=set)
    counter: list[int] = field(default_factory=lambda: [0])

    def fresh(self, base: str) -> str:
        self.counter[0] += 1
        return f"{base}__onnx{self.counter[0]}"

    def const(self, node: Any, i: int) -> np.ndarray | None:
        if i >= len(node.input) or not node.input[i]:
            return None
        return self.consts.get(node.input[i])

    def need_const(self, node: Any, i: int, what: str) -> np.ndarray:
        v = self.const(node, i)
        if v is None:
            raise UnsupportedError(
                f"ONNX node '{_label(node)}' ({node.op_type}): input {i} ({what}) must be a "
                "constant (initializer) for the Caffe2 translation"
            )
        return v

    def rank(self, name: str) -> int | None:
        if name in self.consts:
            return int(self.consts[name].ndim)
        return self.ranks.get(name)


def _op(op_type: str, inputs: Sequence[str], outputs: Sequence[str], name: str = "", **args: Any) -> pb.OperatorDef:
    op = pb.OperatorDef(type=op_type, input=list(inputs), output=list(outputs), name=name)
    for k, v in args.items():
        if v is not None:
            op.arg.append(make_argument(k, v))
    return op


def _attrs(node: Any) -> dict[str, Any]:
    onnx = require_onnx()
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _dec(v: Any) -> Any:
    return v.decode("utf-8") if isinstance(v, bytes) else v


def _label(node: Any) -> str:
    """A node's name, else its first output (hostile models may have neither)."""
    return str(node.name or (node.output[0] if len(node.output) else "<unnamed>"))


def _unsupported(node: Any, why: str) -> UnsupportedError:
    return UnsupportedError(f"ONNX node '{_label(node)}' ({node.op_type}): {why}")


def _to_array(tensor: Any, what: str) -> np.ndarray:
    """An ONNX TensorProto as an array; malformed tensors become ParseError."""
    onnx = require_onnx()
    try:
        return np.asarray(onnx.numpy_helper.to_array(tensor))
    except Exception as e:  # onnx raises TypeError/ValueError/others on malformed tensors
        raise ParseError(f"ONNX {what}: malformed tensor: {e}") from e


Translator = Callable[[Any, dict[str, Any], Ctx], list[pb.OperatorDef]]
TRANSLATORS: dict[str, Translator] = {}


def translates(*op_types: str) -> Callable[[Translator], Translator]:
    def deco(fn: Translator) -> Translator:
        for t in op_types:
            TRANSLATORS[t] = fn
        return fn

    return deco


def _ins(node: Any) -> list[str]:
    return [i for i in node.input if i]


# -- vision ------------------------------------------------------------------


def _spatial_args(node: Any, a: dict[str, Any], kernel: Sequence[int] | None) -> dict[str, Any]:
    n = (
        len(kernel)
        if kernel is not None
        else len(a.get("strides", a.get("pads", [])) or [0, 0]) // (1 if "strides" in a else 2)
    )
    args: dict[str, Any] = {}
    if kernel is not None:
        args["kernels"] = list(kernel)
    args["strides"] = list(a.get("strides", [1] * n))
    pads = list(a.get("pads", [0] * (2 * n)))
    auto_pad = _dec(a.get("auto_pad", "NOTSET"))
    if auto_pad == "VALID":
        pads = [0] * (2 * n)
    elif auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        raise _unsupported(node, f"auto_pad {auto_pad} needs static input sizes; export with explicit pads")
    args["pads"] = pads
    dil = list(a.get("dilations", [1] * n))
    if any(d != 1 for d in dil):
        args["dilations"] = dil
    return args


@translates("Conv")
def _conv(node: Any, a: dict[str, Any], ctx: Ctx) -> list[pb.OperatorDef]:
    w = ctx.const(node, 1)
    kernel = a.get("kernel_shape") or (list(w.shape[2:]) if w is not None else None)
    if kernel is None:
        raise _unsupported(node, "kernel_shape is needed when the weight is not constant")
    args = _spatial_args(node, a, kernel)
    args["group"] = int(a.get("group", 1))
    return [_op("Conv", _ins(node), node.output[:1], node.name, **args)]


@translates("ConvTranspose")
def _conv_t(node: Any, a: dict[str, Any], ctx: Ctx) -> list[pb.OperatorDef]:
    if "output_shape" in a:
        raise _unsupported(node, "output_shape is not supported; give pads/output_padding")
    w = ctx.const(node, 1)
    kernel = a.get("kernel_shape") or (list(w.shape[2:]) if w is not None else None)
    if kernel is None:
        raise _unsupported(node, "kernel_shape is needed when the weight is not constant")
    args = _spatial_args(node, a, kernel)
    if "dilations" in args:
        raise _unsupported(node, "Caffe2 ConvTranspose has no dilations")
    adj = list(a.get("output_padding", [0] * len(kernel)))
    if any(adj):
        args["adjs"] = adj
    args["group"] = int(a.get("group", 1))
    return [_op("ConvTranspose", _ins(node), node.output[:1], node.name, **args)]


def _check_ceil(node: Any, a: dict[str, Any], ctx: Ctx) -> None:
    """Refuse ceil_mode pools whose ONNX output size differs from Caffe's legacy rounding.

    Both round up, then drop a last window that would start outside the input; Caffe
    drops it only when there is padding, ONNX always. With static shapes we can tell.
    """
    shape = ctx.shapes.get(node.input[0])
    if shape is None:
        return
    kernel, n = list(a["kernel_shape"]), len(a["kernel_shape"])
    strides = list(a.get("strides", [1] * n))
    pads = list(a.get("pads", [0] * (2 * n)))
    for i, size in enumerate(shape[2:]):
        k, s, head, tail = kernel[i], strides[i], pads[i], pads[n + i]
        out = -(-(size + head + tail - k) // s) + 1
        onnx_out = out - 1 if (out - 1) * s >= size + head else out
        caffe_out = out - 1 if head > 0 and (out - 1) * s >= size + head else out
        if onnx_out != caffe_out or head != tail:
            raise _unsupported(node, "ceil_mode with these sizes/pads rounds differently from Caffe2's legacy pooling")


@translates("MaxPool", "AveragePool")
def _pool(node: Any, a: dict[str, Any], ctx: Ctx) -> list[pb.OperatorDef]:
    if len(node.output) > 1 and node.output[1] in ctx.used:
        raise _unsupported(node, "the indices output of MaxPool is not supported")
    args = _spatial_args(node, a, a["kernel_shape"])
    if "dilations" in args:
        raise _unsupported(node, "Caffe2 pools have no dilations")
    if int(a.get("ceil_mode", 0)):
        _check_ceil(node, a, ctx)
        args["legacy_pad"] = 3  # CAFFE_LEGACY_POOLING rounds the output size up, like ceil_mode
    if node.op_type == "AveragePool":
        args["count_include_pad"] = int(a.get("count_include_pad", 0))
    return [_op(node.op_type, _ins(node), node.output[:1], node.name, **args)]


@translates("GlobalAveragePool", "GlobalMaxPool")
def _gpool(node: Any, a: dict[str, Any], ctx: Ctx) -> list[pb.OperatorDef]:
    t = "AveragePool" if node.op_type == "GlobalAveragePool" else "MaxPool"
    return [_op(t, _ins(node), node.output, node.name, global_pooling=1)]


@translates("LRN")
def _lrn(node: Any, a: dict[str, Any], ctx: Ctx) -> list[pb.OperatorDef]:
    return [
        _op(
            "LRN",
            _ins(node),
            node.output[:1],
            node.name,
            size=int(a["size"]),
            alpha=float(a.get("alpha", 1e-4)),
            beta=float(a.get("beta", 0.75)),
            bias=float(a.get("bias", 1.0)),
        )
    ]


@translates("BatchNormalization")
def _bn(node: Any, a: dict[str, Any], ctx: Ctx) -> list[pb.OperatorDef]:
    if int(a.get("training_mode", 0)) or (len(node.output) > 1 and any(node.output[1:])):
        raise _unsupported(node, "only inference-mode BatchNormalization is translated")
    return [_op("SpatialBN", _ins(node), node.output[:1], node.name, is_test=1, epsilon=float(a.get("epsilon", 1e-5)))]


@translates("InstanceNormalization")
def _inorm(node: Any, a: dict[str, Any], ctx: Ctx) -> list[pb.OperatorDef]:
    return [_op("InstanceNorm", _ins(node), node.output, node.name, epsilon=float(a.get("epsilon", 1e-5)))]


@translates("Dropout")
def _dropout(node: Any, a: dict[str, Any], ctx: Ctx) -> list[pb.OperatorDef]:
    if len(node.output) > 1 and node.output[1] in ctx.used:
        raise _unsupported(node, "the mask output of Dropout is not supported at inference")
    if len(node.input) > 2 and node.input[2]:
        mode = ctx.const(node, 2)
        if mode is None or bool(mode):
            raise _unsupported(node, "training-mode Dropout is random; only inference is translated")
    return [_op("Dropout", node.input[:1], node.output[:1], node.name, is_test=1)]


@translates("Upsample", "Resize")
def _resize(node: Any, a: dict[str, Any], ctx: Ctx) -> list[pb.OperatorDef]:
    mode = _dec(a.get("mode", "nearest"))
    if node.op_type == "Resize":
        ctm = _dec(a.get("coordinate_transformation_mode", "half_pixel"))
        if mode != "nearest" or ctm != "asymmetric" or _dec(a.get("nearest_mode", "round_prefer_floor")) != "floor":
            raise _unsupported(node, "only nearest/asymmetric/floor Resize maps to Caffe2's ResizeNearest")
        scales = ctx.const(node, 2)
    else:
        if mode != "nearest":
            raise _unsupported(node, f"Upsample mode '{mode}' is not supported")
        scales = np.asarray(a["scales"]) if "scales" in a else ctx.const(node, 1)
    if scales is None or scales.size != 4 or scales[0] != 1 or scales[1] != 1:
        raise _unsupported(node, "needs constant scales [1, 1, h, w] on an NCHW tensor")
    return [
        _op(
            "ResizeNearest",
            node.input[:1],
            node.output,
            node.name,
            height_scale=float(scales[2]),
            width_scale=float(scales[3]),
        )
    ]


# -- math ------------------------------------------------------------------


@translates("Shape")
def _shape(node: Any, a: dict[str, Any], ctx: Ctx) -> list[pb.OperatorDef]:
    if "start" in a or "end" in a:
        raise _unsupported(node, "start/end are not supported by Caffe2's Shape")
    return [_op("Shape", _ins(node), node.output, node.name)]


@translates("Where")
def _where(node: Any, a: dict[str, Any], ctx: Ctx) -> list[pb.OperatorDef]:
    shapes = [ctx.consts[i].shape if i in ctx.consts else ctx.shapes.get(i) for i in node.input]
    if any(s is None for s in shapes) or len(set(shapes)) != 1:
        raise _unsupported(node, "Caffe2's Where needs inputs of one static shape (no broadcasting)")
    return [_op("Where", _ins(node), node.output, node.name)]


_SAME = {onnx_type: caffe2_type for caffe2_type, onnx_type in ELEMENTWISE_OPS.items()}


def _same(node: Any, a: dict[str, Any], ctx: Ctx) -> list[pb.OperatorDef]:
    return [_op(_SAME[node.op_type], _ins(node), node.output, node.name)]


for _t in _SAME:
    TRANSLATORS[_t] = _same

_BINARY = {onnx_type: caffe2_type for caffe2_type, onnx_type in BINARY_OPS.items()}


@translates(*_BINARY)
def _binary(node: Any, a: dict[str, Any], ctx: Ctx) -> list[pb.OperatorDef]:
    args: dict[str, Any] = {}
    if int(a.get("broadcast", 0)):  # opset < 7 used Caffe2's legacy rule verbatim
        args["broadcast"] = 1
        if "axis" in a:
            args["axis"] = int(a["axis"])
    return [_op(_BINARY[node.op_type], _ins(node), node.output, node.name, **args)]


@translates("Sum", "Mean", "Max", "Min")
def _nary(node: Any, a: dict[str, Any], ctx: Ctx) -> list[pb.OperatorDef]:
    return [_op(node.op_type, _ins(node), node.output, node.name)]


@translates("LeakyRelu", "Elu", "ThresholdedRelu")
def _alpha_act(node: Any, a: dict[str, Any], ctx: Ctx) -> list[pb.OperatorDef]:
    default = {"LeakyRelu": 0.01, "Elu": 1.0, "ThresholdedRelu": 1.0}[node.op_type]
    return [_op(node.op_type, _ins(node), node.output, node.name, alpha=float(a.get("alpha", default)))]


@translates("Selu")
def _selu(node: Any, a: dict[str, Any], ctx: Ctx) -> list[pb.OperatorDef]:
    return [
        _op(
            "Selu",
            _ins(node),
            node.output,
            node.name,
            alpha=float(a.get("alpha", 1.67326319217681884765625)),
            scale=float(a.get("gamma", 1.05070102214813232421875)),
        )
    ]


@translates("HardSigmoid")
def _hsig(node: Any, a: dict[str, Any], ctx: Ctx) -> list[pb.OperatorDef]:
    return [
        _op(
            "HardSigmoid",
            _ins(node),
            node.output,
            node.name,
            alpha=float(a.get("alpha", 0.2)),
            beta=float(a.get("beta", 0.5)),
        )
    ]


@translates("PRelu")
def _prelu(node: Any, a: dict[str, Any], ctx: Ctx) -> list[pb.OperatorDef]:
    # ONNX broadcasts the slope; Caffe2 takes one value, or one per channel (dim 1).
    slope = ctx.const(node, 1)
    if slope is None:
        raise _unsupported(node, "the slope must be a constant (Caffe2 takes one value per channel)")
    rank = ctx.rank(node.input[0])
    if slope.size != 1:
        per_channel = rank is not None and slope.ndim == rank - 1 and all(d == 1 for d in slope.shape[1:])
        if not per_channel:
            raise _unsupported(node, f"slope of shape {slope.shape} is not per-channel")
        name = ctx.fresh(node.input[1] + "_c")
        ctx.consts[name] = slope.reshape(-1).copy()
        return [_op("PRelu", [node.input[0], name], node.output, node.name)]
    return [_op("PRelu", _ins(node), node.output, node.name)]


@translates("Clip")
def _clip(node: Any, a: dict[str, Any], ctx: Ctx) -> list[pb.OperatorDef]:
    lo = a.get("min")
    hi = a.get("max")
    if ctx.opset >= 11:
        c_lo, c_hi = ctx.const(node, 1), ctx.const(node, 2)
        if (len(node.input) > 1 and node.input[1] and c_lo is None) or (
            len(node.input) > 2 and node.input[2] and c_hi is None
        ):
            raise _unsupported(node, "min/max inputs must be constant")
        lo = None if c_lo is None else float(c_lo)
        hi = None if c_hi is None else float(c_hi)
    return [
        _op(
            "Clip",
            node.input[:1],
            node.output,
            node.name,
            min=None if lo is None else float(lo),
            max=None if hi is None else float(hi),
        )
    ]


@translates("Gemm")
def _gemm(node: Any, a: dict[str, Any], ctx: Ctx) -> list[pb.OperatorDef]:
    alpha, beta = float(a.get("alpha", 1.0)), float(a.get("beta", 1.0))
    ta, tb = int(a.get("transA", 0)), int(a.get("transB", 0))
    ins = list(node.input)
    out = node.output[0]
    b = ctx.const(node, 1)
    c = ctx.const(node, 2)
    if (
        alpha == 1.0
        and beta == 1.0
        and not ta
        and len(ins) == 3
        and ins[2]
        and b is not None
        and c is not None
        and c.ndim <= 1
    ):
        w_name = ins[1]
        if not tb:  # FC wants W as [N, K]
            w_name = ctx.fresh(ins[1] + "_T")
            ctx.consts[w_name] = np.ascontiguousarray(b.T)
        n = ctx.consts[w_name].shape[0]
        bias = ins[2]
        if c.size != n:
            bias = ctx.fresh(ins[2] + "_full")
            ctx.consts[bias] = np.broadcast_to(c.reshape(-1), (n,)).astype(c.dtype).copy()
        return [_op("FC", [ins[0], w_name, bias], [out], node.name)]
    ops: list[pb.OperatorDef] = []
    prod = ctx.fresh(out + "_ab")
    ops.append(_op("MatMul", ins[:2], [prod], node.name, trans_a=ta, trans_b=tb))
    if alpha != 1.0:
        scaled = ctx.fresh(out + "_alpha")
        ops.append(_op("Scale", [prod], [scaled], scale=alpha))
        prod = scaled
    if len(ins) > 2 and ins[2]:
        cin = ins[2]
        if beta != 1.0:
            cin = ctx.fresh(out + "_beta")
            ops.append(_op("Scale", [ins[2]], [cin], scale=beta))
        ops.append(_op("Add", [prod, cin], [out]))
    else:
        ops.append(_op("Copy", [prod], [out]))
    return ops


@translates("MatMul")
def _matmul(node: Any, a: dict[str, Any], ctx: Ctx) -> list[pb.OperatorDef]:
    ra, rb = ctx.rank(node.input[0]), ctx.rank(node.input[1])
    if ra == 1 or rb == 1 or ra is None or rb is None:
        raise _unsupported(node, "MatMul with 1-D or unknown-rank operands has no Caffe2 equivalent")
    if ra == 2 and rb == 2:
        return [_op("MatMul", _ins(node), node.output, node.name)]
    return [_op("BatchMatMul", _ins(node), node.output, node.name, broadcast=1)]


def _softmax_like(caffe2_type: str) -> Translator:
    def tr(node: Any, a: dict[str, Any], ctx: Ctx) -> list[pb.OperatorDef]:
        x, y = node.input[0], node.output[0]
        if ctx.opset < 13:
            axis = int(a.get("axis", 1))
            ops = [_op("Softmax", [x], [y] if caffe2_type == "Softmax" else [ctx.fresh(y)], node.name, axis=axis)]
        else:
            axis = int(a.get("axis", -1))
            rank = ctx.rank(x)
            if axis == -1 or (rank is not None and axis == rank - 1):
                ops = [_op("Softmax", [x], [y] if caffe2_type == "Softmax" else [ctx.fresh(y)], node.name, axis=-1)]
            else:
                if rank is None:
                    raise _unsupported(node, "softmax over a middle axis needs the input rank")
                axis %= rank
                perm = [i for i in range(rank) if i != axis] + [axis]
                inv = [perm.index(i) for i in range(rank)]
                t1, t2 = ctx.fresh(x + "_t"), ctx.fresh(y + "_t")
                last = y if caffe2_type == "Softmax" else ctx.fresh(y)
                ops = [
                    _op("Transpose", [x], [t1], axes=perm),
                    _op("Softmax", [t1], [t2], node.name, axis=-1),
                    _op("Transpose", [t2], [last], axes=inv),
                ]
        if caffe2_type == "LogSoftmax":
            ops.append(_op("Log", [ops[-1].output[0]], [y]))
        return ops

    return tr


TRANSLATORS["Softmax"] = _softmax_like("Softmax")
TRANSLATORS["LogSoftmax"] = _softmax_like("LogSoftmax")
