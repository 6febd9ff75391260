"""What a real model's files say about its inputs: init-net placeholders, data vs. parameters,
user-given parameter shapes.

Many Caffe2 exports make their init net create the data input as a placeholder
(``ConstantFill`` of shape ``[1]``) so that the predict net can be instantiated; its value is
meaningless, and a shape the user gives for that input must win over it. These helpers find
such placeholders, drop them from an init net, tell data inputs from parameters (for messages),
and read parameter-shape files.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path

from asyncnet.errors import ParseError
from asyncnet.proto import caffe2_pb2 as pb
from asyncnet.randinit_rules import RULES, flat_ops
from asyncnet.serde import arguments_to_dict, read_json_file

__all__ = ["classify_inputs", "drop_init_outputs", "init_placeholders", "parse_param_shapes", "read_param_shapes"]

# Fill ops whose output is a constant tensor given by arguments (no inputs).
_FILL_OPS = frozenset(
    {"ConstantFill", "GivenTensorFill", "GivenTensorIntFill", "GivenTensorInt64Fill", "GaussianFill", "UniformFill"}
)


def init_placeholders(init: pb.NetDef | None, predict: pb.NetDef) -> dict[str, str]:
    """Blobs ``init`` creates only as placeholders of ``predict``'s data inputs: name -> what makes it.

    A placeholder is the output of a fill op without inputs whose tensor has at most one element,
    and which ``predict`` reads as a data input (input 0 of an op, or a non-parameter slot).
    """
    if init is None:
        return {}
    data, _ = classify_inputs(predict)
    found: dict[str, str] = {}
    for op in init.op:
        if op.type not in _FILL_OPS or op.input or len(op.output) != 1 or op.output[0] not in data:
            continue
        args = arguments_to_dict(op.arg, owner=f"init net op {op.type}")
        shape = args.get("shape", [])
        values = args.get("values")
        numel = math.prod(shape) if isinstance(shape, list) else 1
        if numel <= 1 and (values is None or len(values) <= 1):
            found[op.output[0]] = f"{op.type} shape {list(shape) if isinstance(shape, list) else shape}"
    return found


def drop_init_outputs(init: pb.NetDef, names: Iterable[str]) -> pb.NetDef:
    """A copy of ``init`` without the ops that only make blobs of ``names``."""
    drop = set(names)
    out = pb.NetDef()
    out.CopyFrom(init)
    del out.op[:]
    out.op.extend(op for op in init.op if not (op.output and set(op.output) <= drop))
    keep = [o for o in init.external_output if o not in drop]
    del out.external_output[:]
    out.external_output.extend(keep)
    return out


def classify_inputs(net: pb.NetDef) -> tuple[list[str], list[str]]:
    """(data inputs, parameters) among the blobs ``net`` reads before producing them.

    A parameter is read only at slots a random-init rule knows as parameters (a Conv's weight and
    bias, a SpatialBN's scale, ...); everything else read from outside is data.
    """
    produced: set[str] = set()
    order: dict[str, None] = {}
    param_slot: dict[str, bool] = {}
    for op in flat_ops(net):
        for i, name in enumerate(op.input):
            if name in produced:
                continue
            order.setdefault(name)
            is_param = i >= 1 and op.type in RULES and op.type not in ("Sum",)
            param_slot[name] = param_slot.get(name, True) and is_param
        produced.update(op.output)
    for name in net.external_input:
        order.setdefault(name)
    data = [n for n in order if not param_slot.get(n, False)]
    params = [n for n in order if param_slot.get(n, False)]
    return data, params


def parse_param_shapes(obj: object, *, source: str) -> dict[str, tuple[int, ...]]:
    """Parameter shapes from a decoded JSON object: ``{"name": [d0, ...]}`` or value_info style
    ``{"name": [dtype, [d0, ...]]}``."""
    if not isinstance(obj, dict):
        raise ParseError(f"{source}: expected an object of blob name -> [d0, d1, ...], found {type(obj).__name__}")
    out: dict[str, tuple[int, ...]] = {}
    for name, entry in obj.items():
        dims = entry
        if isinstance(entry, list) and len(entry) == 2 and isinstance(entry[1], list):
            dims = entry[1]
        if not isinstance(dims, list) or not all(
            isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in dims
        ):
            raise ParseError(f"{source}: entry '{name}' must be [d0, d1, ...] (non-negative integers), found {entry!r}")
        out[str(name)] = tuple(dims)
    return out


def read_param_shapes(path: str | Path) -> dict[str, tuple[int, ...]]:
    """Parameter shapes from a JSON file (see :func:`parse_param_shapes`)."""
    return parse_param_shapes(read_json_file(path), source=str(Path(path)))
