"""Net-level shape and dtype inference: each op's schema ``infer`` hook run in net order.

``infer_shapes(net_def, inputs)`` walks the operators once, feeding each schema's
``infer`` the :class:`~asyncnet.schema.TensorInfo` of its inputs and recording one
TensorInfo per blob (later writes overwrite earlier ones, so in-place ops simply
update their blob). Ops whose schema has no ``infer`` hook give unknown outputs and
are listed in :attr:`NetShapes.unknown_ops`. ``If`` ops are followed into both
branches and the two results are joined.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from asyncnet.errors import AsyncNetError, ParseError, ShapeInferenceError
from asyncnet.opinfo import OpInfo
from asyncnet.proto import caffe2_pb2 as pb
from asyncnet.registry import OpRegistry, default_registry
from asyncnet.schema import UNKNOWN, TensorInfo
from asyncnet.serde import nested_nets, numpy_dtype, read_json_file

log = logging.getLogger(__name__)

# A hook run before each op's own inference. It may return infos for blobs the op
# reads that are still unknown (random init derives parameter shapes this way).
Resolver = Callable[[OpInfo, list[TensorInfo]], Mapping[str, TensorInfo] | None]


@dataclass
class NetShapes:
    """The result of :func:`infer_shapes`.

    Attributes:
        blobs: blob name -> what is known about it after the whole net ran.
        op_outputs: per op index, the infos of its outputs as that op wrote them.
        op_inputs: per op index, the infos of its inputs as that op read them.
        unknown_ops: indices of ops whose outputs are unknown because their type has
            no ``infer`` hook (or, outside strict mode, no schema at all).
        missing: blobs read before anything produced them and not given as inputs.
    """

    blobs: dict[str, TensorInfo] = field(default_factory=dict)
    op_outputs: list[list[TensorInfo]] = field(default_factory=list)
    op_inputs: list[list[TensorInfo]] = field(default_factory=list)
    unknown_ops: list[int] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)

    def __getitem__(self, name: str) -> TensorInfo:
        return self.blobs[name]

    def get(self, name: str) -> TensorInfo:
        """Info of ``name``; unknown when the net never mentions it."""
        return self.blobs.get(name, UNKNOWN)


# ---------------------------------------------------------------------------
# Building input infos


def info_of(value: Any) -> TensorInfo:
    """The TensorInfo of a concrete value (array, scalar, or quantized tensor).

    Objects with ``shape`` and ``dtype`` attributes (e.g. ``Int8Tensor``) are
    described by those; anything else goes through ``np.asarray``.
    """
    if isinstance(value, np.ndarray):
        return TensorInfo(tuple(int(d) for d in value.shape), value.dtype)
    shape = getattr(value, "shape", None)
    dtype = getattr(value, "dtype", None)
    if shape is not None and dtype is not None:
        return TensorInfo(tuple(int(d) for d in shape), np.dtype(dtype))
    arr = np.asarray(value)
    return TensorInfo(tuple(int(d) for d in arr.shape), arr.dtype)


def infos_of(values: Mapping[str, Any]) -> dict[str, TensorInfo]:
    """:func:`info_of` for every value of a mapping (e.g. arrays to feed)."""
    return {k: info_of(v) for k, v in values.items()}


def parse_value_info(obj: Any, *, source: str = "value_info") -> dict[str, TensorInfo]:
    """Input infos from a decoded model-zoo ``value_info.json`` object.

    The format is ``{"data": [1, [1, 3, 224, 224]]}``: blob name -> [TensorProto
    data type, shape].
    """
    if not isinstance(obj, dict):
        raise ParseError(f"{source}: expected an object of blob name -> [dtype, shape], found {type(obj).__name__}")
    out: dict[str, TensorInfo] = {}
    for name, entry in obj.items():
        ok = (
            isinstance(entry, (list, tuple))
            and len(entry) == 2
            and isinstance(entry[0], int)
            and isinstance(entry[1], (list, tuple))
            and all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in entry[1])
        )
        if not ok:
            raise ParseError(f"{source}: entry '{name}' must be [dtype, [d0, d1, ...]], found {entry!r}")
        try:
            dtype = numpy_dtype(entry[0])
        except AsyncNetError as e:
            raise ParseError(f"{source}: entry '{name}': {e}") from e
        out[str(name)] = TensorInfo(tuple(entry[1]), dtype)
    return out


def read_value_info(path: str | Path) -> dict[str, TensorInfo]:
    """Input infos from a model-zoo ``value_info.json`` file (see :func:`parse_value_info`)."""
    return parse_value_info(read_json_file(path), source=str(Path(path)))


# ---------------------------------------------------------------------------
# Comparing infos


def join(a: TensorInfo, b: TensorInfo) -> TensorInfo:
    """What is known for sure when a blob is either ``a`` or ``b`` (e.g. after an If)."""
    dtype = a.dtype if a.dtype == b.dtype else None
    if a.shape is None or b.shape is None or len(a.shape) != len(b.shape):
        return TensorInfo(None, dtype)
    return TensorInfo(tuple(x if x == y else None for x, y in zip(a.shape, b.shape)), dtype)


def agrees(inferred: TensorInfo, actual: TensorInfo) -> bool:
    """Whether a (possibly partial) inferred info is consistent with an actual one."""
    if inferred.dtype is not None and actual.dtype is not None and inferred.dtype != actual.dtype:
        return False
    if inferred.shape is None or actual.shape is None:
        return True
    if len(inferred.shape) != len(actual.shape):
        return False
    return all(x is None or y is None or x == y for x, y in zip(inferred.shape, actual.shape))


# ---------------------------------------------------------------------------
# The walk


class _Walker:
    def __init__(self, registry: OpRegistry, strict: bool, resolve: Resolver | None) -> None:
        self.registry = registry
        self.strict = strict
        self.resolve = resolve

    def op_info(self, op: pb.OperatorDef, index: int, net_device: pb.DeviceOption | None, net_name: str) -> OpInfo:
        from asyncnet.net import op_info

        return op_info(op, index=index, registry=self.registry, net_device=net_device, net_name=net_name)

    def walk(self, net_def: pb.NetDef, blobs: dict[str, TensorInfo], result: NetShapes, top: bool) -> None:
        net_device = net_def.device_option if net_def.HasField("device_option") else None
        net_name = net_def.name
        for i, op in enumerate(net_def.op):
            where = (
                f"op #{i} {op.type}"
                + (f" '{op.name}'" if op.name else "")
                + (f" in net '{net_name}'" if net_name else "")
            )
            if not self.registry.has(op.type) and not self.strict:
                read = [self._read(name, blobs, result, where) for name in op.input]
                if top:
                    result.op_inputs.append(read)
                self._unknown(op, i, blobs, result, top, reason="has no schema")
                continue
            info = self.op_info(op, i, net_device, net_name)
            ins = [self._read(name, blobs, result, where) for name in op.input]
            if self.resolve is not None:
                extra = self.resolve(info, ins)
                if extra:
                    for name, ti in extra.items():
                        blobs[name] = ti
                    ins = [blobs.get(name, UNKNOWN) for name in op.input]
            if top:
                result.op_inputs.append(ins)
            if op.type == "If":
                outs = self._infer_if(op, info, blobs, result, where)
            elif op.type == "While":
                outs = self._infer_while(op, blobs, result)
            elif op.type == "RecurrentNetwork":
                outs = self._infer_recurrent(info, ins, blobs, result, where)
            elif info.schema.infer is None:
                self._unknown(op, i, blobs, result, top, reason="has no infer hook")
                continue
            else:
                outs = self._infer(info, ins, where)
            for name, ti in zip(op.output, outs):
                blobs[name] = ti
            if top:
                result.op_outputs.append(outs)

    def _read(self, name: str, blobs: dict[str, TensorInfo], result: NetShapes, where: str) -> TensorInfo:
        got = blobs.get(name)
        if got is not None:
            return got
        if self.strict:
            raise ShapeInferenceError(f"{where}: reads blob '{name}', which is neither an input nor produced earlier")
        if name not in result.missing:
            result.missing.append(name)
        blobs[name] = UNKNOWN
        return UNKNOWN

    def _unknown(
        self,
        op: pb.OperatorDef,
        index: int,
        blobs: dict[str, TensorInfo],
        result: NetShapes,
        top: bool,
        *,
        reason: str,
    ) -> None:
        log.debug("op #%d %s %s; its outputs are unknown", index, op.type, reason)
        if top:
            result.unknown_ops.append(index)
            result.op_outputs.append([UNKNOWN] * len(op.output))
        for name in op.output:
            blobs[name] = UNKNOWN

    def _infer(self, info: OpInfo, ins: list[TensorInfo], where: str) -> list[TensorInfo]:
        assert info.schema.infer is not None
        try:
            outs = list(info.schema.infer(info, ins))
        except (AsyncNetError, ValueError, TypeError, IndexError, KeyError, ZeroDivisionError) as e:
            msg = str(e)
            for prefix in (where, info.label()):
                if msg.startswith(prefix + ": "):
                    msg = msg[len(prefix) + 2 :]
            shown = ", ".join(f"'{n}' {t}" for n, t in zip(info.inputs, ins)) or "no inputs"
            raise ShapeInferenceError(f"{where}: {msg} (inputs: {shown})") from e
        if len(outs) < len(info.outputs):
            raise ShapeInferenceError(
                f"{where}: shape inference gave {len(outs)} output info(s), expected {len(info.outputs)}"
            )
        for o, t in zip(info.outputs, outs):
            if not isinstance(t, TensorInfo):
                raise ShapeInferenceError(
                    f"{where}: shape inference for output '{o}' returned {type(t).__name__}, expected TensorInfo"
                )
        return outs[: len(info.outputs)]

    def _infer_if(
        self, op: pb.OperatorDef, info: OpInfo, blobs: dict[str, TensorInfo], result: NetShapes, where: str
    ) -> list[TensorInfo]:
        branches = {name: net for name, net in nested_nets(op) if name in ("then_net", "else_net")}
        before = dict(blobs)
        outcomes: list[dict[str, TensorInfo]] = []
        for name in ("then_net", "else_net"):
            branch = dict(before)
            sub = branches.get(name)
            if sub is not None:
                self.walk(sub, branch, result, top=False)
            outcomes.append(branch)
        # A blob written by one branch only keeps its old info on the other path;
        # when it had none, the written info is the only value it can ever hold.
        for name in set(outcomes[0]) | set(outcomes[1]):
            a = outcomes[0].get(name)
            b = outcomes[1].get(name)
            if a is not None and b is not None:
                blobs[name] = a if a == b else join(a, b)
            elif a is not None:
                blobs[name] = a
            elif b is not None:
                blobs[name] = b
        return [blobs.get(o, UNKNOWN) for o in op.output]

    def _infer_while(self, op: pb.OperatorDef, blobs: dict[str, TensorInfo], result: NetShapes) -> list[TensorInfo]:
        # The body runs zero or more times: a blob it writes is either its old info or the body's.
        nets = dict(nested_nets(op))
        body = dict(blobs)
        for name in ("cond_net", "loop_net", "cond_net"):
            sub = nets.get(name)
            if sub is not None:
                self.walk(sub, body, result, top=False)
        for name, after in body.items():
            old = blobs.get(name)
            blobs[name] = after if old is None or old == after else join(old, after)
        return [blobs.get(o, UNKNOWN) for o in op.output]

    def _infer_recurrent(
        self, info: OpInfo, ins: list[TensorInfo], blobs: dict[str, TensorInfo], result: NetShapes, where: str
    ) -> list[TensorInfo]:
        """Walk the step net with its link blobs' per-timestep infos, then infer the outputs."""
        from asyncnet.recurrent.spec import parse_spec

        spec = parse_spec(info)
        x = ins[0].shape if ins else None
        batch = x[1] if x is not None and len(x) >= 2 else None
        named = dict(zip(info.inputs, ins))
        state_init = {s: ins[i] if i < len(ins) else UNKNOWN for s, i in zip(spec.recurrent_states, spec.initial_ids)}
        step = dict(blobs)
        for link in spec.links:
            if link.external in state_init:
                init = state_init[link.external]
                last = init.shape[-1] if init.shape else None
                step[link.internal] = TensorInfo((link.window, batch, last), init.dtype)
            else:
                ext = named.get(link.external, blobs.get(link.external, UNKNOWN))
                shape = None if ext.shape is None else (link.window, *ext.shape[1:])
                step[link.internal] = TensorInfo(shape, ext.dtype)
        step[spec.timestep] = TensorInfo((1,), np.dtype(np.int32))
        try:
            self.walk(spec.step_net, step, result, top=False)
        except ShapeInferenceError as e:
            raise ShapeInferenceError(f"{where}: in its step net: {e}") from e
        for link in spec.links:
            if link.external not in state_init or link.internal not in {
                o for op in spec.step_net.op for o in op.output
            }:
                continue
            got, want = step.get(link.internal, UNKNOWN), state_init[link.external]
            if got.known and want.shape is not None and want.shape[-1] is not None and batch is not None:
                if got.shape is not None and math.prod(d or 0 for d in got.shape) != link.window * batch * int(
                    want.shape[-1]
                ):
                    raise ShapeInferenceError(
                        f"{where}: step net '{spec.step_net.name}' writes '{link.internal}' {got.shape}, which does "
                        f"not fit {link.window} row(s) of state '{link.external}' ({link.window}, {batch}, "
                        f"{want.shape[-1]})"
                    )
        return self._infer(info, ins, where)


def infer_shapes(
    net_def: pb.NetDef,
    inputs: Mapping[str, TensorInfo],
    *,
    registry: OpRegistry | None = None,
    strict: bool = False,
    resolve: Resolver | None = None,
) -> NetShapes:
    """Infer the shape and dtype of every blob of ``net_def``.

    Args:
        net_def: the net; its ops are visited in order.
        inputs: infos of the blobs that exist before the net runs (fed inputs,
            parameters from an init net). Use :func:`info_of`, :func:`read_value_info`
            or the ``blobs`` of an init net's result.
        registry: where schemas come from (default: the process registry).
        strict: raise on a blob read before anything produced it, and on op types
            without a schema, instead of treating them as unknown.
        resolve: hook called before each op with its OpInfo and input infos; it may
            return infos for blobs that are still unknown (used by random init).

    Returns:
        A :class:`NetShapes`.

    Raises:
        ShapeInferenceError: an op's inputs do not fit it (the message names the op
            index, type, blobs, expected and found), or strict mode found a gap.
        SchemaError / UnknownOperatorError: an op breaks its schema.
    """
    reg = registry or default_registry()
    result = NetShapes()
    blobs = dict(inputs)
    _Walker(reg, strict, resolve).walk(net_def, blobs, result, top=True)
    result.blobs = blobs
    return result


def infer_with_init(
    init_net: pb.NetDef | None,
    predict_net: pb.NetDef,
    inputs: Mapping[str, TensorInfo],
    *,
    registry: OpRegistry | None = None,
    strict: bool = False,
) -> NetShapes:
    """Infer the init net (parameters) and then the predict net given ``inputs``.

    The returned blobs hold both nets' blobs, predict-net writes winning.
    """
    params: dict[str, TensorInfo] = {}
    if init_net is not None:
        params = infer_shapes(init_net, {}, registry=registry, strict=strict).blobs
    return infer_shapes(predict_net, {**params, **inputs}, registry=registry, strict=strict)


def describe(shapes: NetShapes, names: Sequence[str] | None = None) -> list[str]:
    """One ``name: info`` line per blob (all blobs, or ``names``), for reports."""
    keys = list(shapes.blobs) if names is None else list(names)
    return [f"{n}: {shapes.get(n)}" for n in keys]
