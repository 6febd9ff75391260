"""Random-init rules: parameter shapes derived from how each op uses them.

``channel_demands`` pushes channel counts that detection ops and grouped convs fix back
to the ops producing them; ``RULES`` maps an op type to a function giving the
:class:`ParamSpec` of each still-unknown input from the op's arguments and the data
flowing in. Used by :mod:`asyncnet.randinit`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np

from asyncnet.opinfo import OpInfo
from asyncnet.proto import caffe2_pb2 as pb
from asyncnet.schema import TensorInfo
from asyncnet.serde import nested_nets

F32 = np.dtype(np.float32)

# Detectron's default RPN anchors: 5 sizes x 3 aspect ratios.
ANCHOR_SIZES = (32.0, 64.0, 128.0, 256.0, 512.0)
ANCHOR_RATIOS = (0.5, 1.0, 2.0)


@dataclass(frozen=True)
class ParamSpec:
    """How to make one random input: its info, the kind of values and the fan-in.

    ``kind`` is one of: data, weight, bias, scale, shift, variance, slope, anchors,
    im_info, zeros.
    """

    info: TensorInfo
    kind: str
    fan_in: int = 1
    stride: float = 16.0
    image_hw: tuple[float, float] = (0.0, 0.0)


# ---------------------------------------------------------------------------
# Channel demands: counts fixed by detection ops, pushed back to the producers.

# Ops that keep the channel count of input 0 in output 0 (so a demand passes through).
_KEEP_CHANNELS = frozenset(
    {
        "Relu",
        "Sigmoid",
        "Softmax",
        "Tanh",
        "LeakyRelu",
        "PRelu",
        "SpatialBN",
        "AffineChannel",
        "Dropout",
        "Copy",
        "Add",
        "Mul",
        "Sub",
        "Div",
        "Sum",
        "NCHW2NHWC",
        "NHWC2NCHW",
        "Int8Quantize",
        "Int8Dequantize",
        "Int8Relu",
        "Int8Sum",
        "Int8SumRelu",
        "Int8Softmax",
        "ResizeNearest",
        "Int8ResizeNearest",
        "MaxPool",
        "AveragePool",
        "Int8MaxPool",
        "Int8AveragePool",
        "LRN",
        "PadImage",
        "Clip",
        "Scale",
        "RoIAlign",
    }
)


def flat_ops(net: pb.NetDef) -> Iterator[pb.OperatorDef]:
    for op in net.op:
        yield op
        for _, sub in nested_nets(op):
            yield from flat_ops(sub)


def _arg_int(op: pb.OperatorDef, name: str, default: int) -> int:
    for a in op.arg:
        if a.name == name and a.HasField("i"):
            return int(a.i)
    return default


def channel_demands(
    net: pb.NetDef, *, num_anchors: int, num_classes: int, guessed: dict[str, str] | None = None
) -> dict[str, int]:
    """Blob -> channel count that a later detection op requires of it.

    ``guessed``, when given, receives blob -> what the count stands for, for the counts that come
    from the assumed ``num_anchors``/``num_classes`` rather than from the net itself.
    """
    ops = list(flat_ops(net))
    demands: dict[str, int] = {}
    why: dict[str, str] = {}

    def demand(name: str, count: int, reason: str) -> None:
        if name not in demands:
            demands[name] = count
            if reason:
                why[name] = reason

    anchors = f"for {num_anchors} anchors, assumed"
    classes = f"for {num_classes} classes, assumed"
    for op in reversed(ops):
        box = 5 if _arg_int(op, "rotated", 0) else 4
        if op.type == "GenerateProposals" and len(op.input) >= 2:
            demand(op.input[0], num_anchors, anchors)
            demand(op.input[1], box * num_anchors, anchors)
        elif op.type == "BBoxTransform" and len(op.input) >= 2:
            demand(op.input[1], box * num_classes, classes)
        elif op.type == "BoxWithNMSLimit" and len(op.input) >= 2:
            demand(op.input[0], num_classes, classes)
            agnostic = _arg_int(op, "cls_agnostic_bbox_reg", 0)
            demand(op.input[1], box * (1 if agnostic else num_classes), classes)
        elif op.type in ("Conv", "ConvRelu", "Int8Conv", "Int8ConvRelu") and _arg_int(op, "group", 1) > 1 and op.input:
            # Grouped (usually depthwise) convs fix their input's channel count.
            demand(op.input[0], _arg_int(op, "group", 1), "")
        elif op.type in _KEEP_CHANNELS and op.output and op.output[0] in demands:
            want = demands[op.output[0]]
            feeds = op.input if op.type in ("Sum", "Int8Sum", "Int8SumRelu") else op.input[:1]
            for name in feeds:
                demand(name, want, why.get(op.output[0], ""))
    if guessed is not None:
        guessed.update(why)
    return demands


# ---------------------------------------------------------------------------
# Per-op rules: (context, op, input infos, indices of free inputs) -> specs


@dataclass
class RuleContext:
    """What the rules share: the assumed width, channel demands, and where guesses are recorded.

    ``guessed`` maps a parameter blob to the dimension a rule had to assume (nothing in the net or
    the given shapes fixes it); ``demand_guesses`` says which demands are themselves assumptions.
    """

    width: int
    demands: dict[str, int]
    num_anchors: int
    demand_guesses: dict[str, str] = field(default_factory=dict)
    guessed: dict[str, str] = field(default_factory=dict)

    def out_count(self, op: OpInfo, fallback: int | None = None) -> int:
        """Output channels of ``op`` when its parameters do not say: a later op's demand, else
        ``fallback`` (default: the width). Assumed counts are recorded against the op's weight (input 1)."""
        out = op.outputs[0] if op.outputs else ""
        if out in self.demands:
            count = self.demands[out]
            reason = self.demand_guesses.get(out)
        else:
            count = self.width if fallback is None else fallback
            reason = "assumed"
        if reason and len(op.inputs) > 1:
            self.guessed.setdefault(op.inputs[1], f"{count} output channels of {op.label()} ({reason})")
        return count


Rule = Callable[[RuleContext, OpInfo, list[TensorInfo], list[int]], dict[int, ParamSpec]]
RULES: dict[str, Rule] = {}


def _rule(*types: str) -> Callable[[Rule], Rule]:
    def deco(fn: Rule) -> Rule:
        for t in types:
            RULES[t] = fn
        return fn

    return deco


def known_shape(t: TensorInfo) -> tuple[int, ...] | None:
    if t.shape is None or any(d is None for d in t.shape):
        return None
    return tuple(int(d) for d in t.shape)  # type: ignore[arg-type]


def _channel_axis(op: OpInfo, rank: int) -> int:
    # The schema default wins (Int8 ops default to NHWC).
    order = str(op.arg("order") if "order" in op.schema.arg_map else op.arg("order", "NCHW")).upper()
    return rank - 1 if order == "NHWC" else 1


def _kernel(op: OpInfo, spatial: int) -> list[int]:
    if op.has("kernels"):
        return op.ints_arg("kernels")
    if op.has("kernel_h") or op.has("kernel_w"):
        return [op.int_arg("kernel_h", 1), op.int_arg("kernel_w", 1)]
    if op.has("kernel"):
        return [op.int_arg("kernel")] * spatial
    return [1] * spatial


def _channel_count(op: OpInfo, ins: list[TensorInfo]) -> int | None:
    """Channels of the first input (rank >= 2), None when unknown."""
    x = ins[0].shape
    if x is None or len(x) < 2:
        return None
    return x[_channel_axis(op, len(x))]


def _conv_input(op: OpInfo, ins: list[TensorInfo]) -> tuple[int, int, int, list[int]] | None:
    """(channel axis, input channels, group, kernel) of a conv-like op, None when the input is too unknown."""
    x = ins[0].shape
    if x is None or len(x) < 3:
        return None
    axis = _channel_axis(op, len(x))
    c_in = x[axis]
    if c_in is None:
        return None
    return axis, c_in, op.int_arg("group", 1), _kernel(op, len(x) - 2)


def _weight_and_bias(free: list[int], w: tuple[int, ...], fan_in: int, m: int) -> dict[int, ParamSpec]:
    """Specs of the free ones of input 1 (weight ``w``) and input 2 (bias of ``m``)."""
    out: dict[int, ParamSpec] = {}
    if 1 in free:
        out[1] = ParamSpec(TensorInfo(w, F32), "weight", fan_in=fan_in)
    if 2 in free:
        out[2] = ParamSpec(TensorInfo((m,), F32), "bias")
    return out


def _out_channels(ctx: RuleContext, op: OpInfo, c_in: int, group: int) -> int:
    if group > 1 and not (op.outputs and op.outputs[0] in ctx.demands):
        # Depthwise-style: keep the channel count (fixed by the net); otherwise the next multiple of group.
        if c_in % group == 0 and c_in // group <= 1:
            return c_in
        return ctx.out_count(op, group * max(1, -(-ctx.width // group)))
    return ctx.out_count(op)


@_rule("Conv", "ConvRelu")
def _conv(ctx: RuleContext, op: OpInfo, ins: list[TensorInfo], free: list[int]) -> dict[int, ParamSpec]:
    found = _conv_input(op, ins)
    if found is None:
        return {}
    axis, c_in, group, k = found
    w_known = known_shape(ins[1]) if len(ins) > 1 else None
    # A known (or user-given) weight fixes the output channels; only otherwise are they assumed.
    m = w_known[0] if w_known else _out_channels(ctx, op, c_in, group)
    w = (m, c_in // group, *k) if axis == 1 else (m, *k, c_in // group)
    return _weight_and_bias(free, w, (c_in // group) * math.prod(k), m)


@_rule("ConvTranspose")
def _conv_transpose(ctx: RuleContext, op: OpInfo, ins: list[TensorInfo], free: list[int]) -> dict[int, ParamSpec]:
    found = _conv_input(op, ins)
    if found is None:
        return {}
    axis, c_in, group, k = found
    w_known = known_shape(ins[1]) if len(ins) > 1 else None
    if w_known and len(w_known) >= 2:
        m = (w_known[1] if axis == 1 else w_known[-1]) * group
    else:
        m = _out_channels(ctx, op, c_in, 1)
    w = (c_in, m // group, *k) if axis == 1 else (c_in, *k, m // group)
    # Each output pixel sums over about c_in * prod(k) / prod(stride) inputs; c_in is a safe bound.
    return _weight_and_bias(free, w, c_in * max(1, math.prod(k) // 4), m)


@_rule("FC", "FCTransposed")
def _fc(ctx: RuleContext, op: OpInfo, ins: list[TensorInfo], free: list[int]) -> dict[int, ParamSpec]:
    x = ins[0].shape
    if x is None:
        return {}
    axis = op.int_arg("axis", 1)
    axis = axis + len(x) if axis < 0 else axis
    tail = x[axis:]
    if any(d is None for d in tail):
        return {}
    k = math.prod(int(d) for d in tail if d is not None)
    w_known = known_shape(ins[1]) if len(ins) > 1 else None
    if w_known:
        m = w_known[-1] if op.type == "FCTransposed" else w_known[-2]
    else:
        m = ctx.out_count(op)
    # axis_w > 1 comes from Caffe's old 4-D blobs, e.g. (1, 1, M, K) with axis_w 3.
    axis_w = op.int_arg("axis_w", 1)
    lead = (1,) * max(axis_w - 1, 0)
    w = (*lead, k, m) if op.type == "FCTransposed" else (*lead, m, k)
    return _weight_and_bias(free, w, k, m)


@_rule("SpatialBN")
def _spatial_bn(ctx: RuleContext, op: OpInfo, ins: list[TensorInfo], free: list[int]) -> dict[int, ParamSpec]:
    c = _channel_count(op, ins)
    if c is None:
        return {}
    kinds = {1: "scale", 2: "shift", 3: "shift", 4: "variance"}
    return {i: ParamSpec(TensorInfo((c,), F32), kinds[i]) for i in free if i in kinds}


@_rule("AffineChannel", "PRelu")
def _per_channel(ctx: RuleContext, op: OpInfo, ins: list[TensorInfo], free: list[int]) -> dict[int, ParamSpec]:
    c = _channel_count(op, ins)
    if c is None:
        return {}
    kinds = {1: "slope", 2: "shift"} if op.type == "PRelu" else {1: "scale", 2: "shift"}
    return {i: ParamSpec(TensorInfo((c,), F32), kinds[i]) for i in free if i in kinds}


@_rule("Add", "Sub", "Mul", "Div")
def _binary(ctx: RuleContext, op: OpInfo, ins: list[TensorInfo], free: list[int]) -> dict[int, ParamSpec]:
    if free != [1]:
        return {}
    x = known_shape(ins[0])
    if x is None:
        return {}
    if op.bool_arg("broadcast", 0) and x:
        axis = op.int_arg("axis", -1)
        shape: tuple[int, ...] = (x[axis if axis >= 0 else len(x) - 1],)
    else:
        shape = x
    kind = "scale" if op.type in ("Mul", "Div") else "shift"
    return {1: ParamSpec(TensorInfo(shape, ins[0].dtype or F32), kind)}


@_rule("Sum")
def _sum(ctx: RuleContext, op: OpInfo, ins: list[TensorInfo], free: list[int]) -> dict[int, ParamSpec]:
    known = next((t for t in ins if known_shape(t) is not None), None)
    if known is None:
        return {}
    return {i: ParamSpec(TensorInfo(known.shape, known.dtype or F32), "shift") for i in free}


@_rule("Int8Conv", "Int8ConvRelu", "Int8ConvTranspose", "Int8FC")
def _int8_params(ctx: RuleContext, op: OpInfo, ins: list[TensorInfo], free: list[int]) -> dict[int, ParamSpec]:
    base = {"Int8Conv": _conv, "Int8ConvRelu": _conv, "Int8ConvTranspose": _conv_transpose, "Int8FC": _fc}[op.type]
    out: dict[int, ParamSpec] = {}
    for i, spec in base(ctx, op, ins, free).items():
        if spec.kind == "weight":
            out[i] = ParamSpec(spec.info.with_dtype(np.uint8), "int8_weight", fan_in=spec.fan_in)
        else:
            out[i] = ParamSpec(spec.info.with_dtype(np.int32), "int8_bias")
    return out


@_rule("GenerateProposals")
def _proposals(ctx: RuleContext, op: OpInfo, ins: list[TensorInfo], free: list[int]) -> dict[int, ParamSpec]:
    scores = known_shape(ins[0])
    if scores is None or len(scores) != 4:
        return {}
    stride = 1.0 / op.float_arg("spatial_scale", 1.0 / 16)
    out: dict[int, ParamSpec] = {}
    if 2 in free:
        hw = (scores[2] * stride, scores[3] * stride)
        out[2] = ParamSpec(TensorInfo((scores[0], 3), F32), "im_info", stride=stride, image_hw=hw)
    if 3 in free:
        out[3] = ParamSpec(TensorInfo((scores[1], 4), F32), "anchors", stride=stride)
    return out
