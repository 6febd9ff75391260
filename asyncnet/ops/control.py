"""Control flow: If (then/else sub-nets run in the op's workspace) and IsEmpty."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from asyncnet.errors import ArgumentError, TensorError
from asyncnet.opinfo import OpInfo
from asyncnet.ops._util import info
from asyncnet.proto import caffe2_pb2 as pb
from asyncnet.registry import register_op
from asyncnet.schema import Arg, TensorInfo


def _is_empty_infer(op: OpInfo, ins: list[TensorInfo]) -> list[TensorInfo]:
    return [info((), np.bool_)]


@register_op(
    "IsEmpty",
    inputs=1,
    outputs=1,
    infer=_is_empty_infer,
    doc="Y = a bool scalar, true when X has no elements.",
)
def is_empty(op: OpInfo) -> Callable[..., Any]:
    def run(x: Any) -> tuple[np.ndarray]:
        size = getattr(x, "size", None)
        if size is None:
            size = np.asarray(x).size
        return (np.asarray(int(size) == 0),)

    return run


def _subnet(op: OpInfo, name: str) -> pb.NetDef | None:
    value = op.args.get(name)
    if value is None:
        return None
    if not isinstance(value, pb.NetDef):
        raise ArgumentError(f"{op.label()}: argument '{name}' must be a NetDef, got {type(value).__name__}")
    return value


def _if_infer(op: OpInfo, ins: list[TensorInfo]) -> list[TensorInfo]:
    # Alone, an If cannot know what its branches write; asyncnet.shapes follows both
    # branches with the whole net's blob infos instead of calling this.
    return [TensorInfo()] * len(op.outputs)


@register_op(
    "If",
    inputs=(1, -1),
    outputs=(0, -1),
    allow_inplace=True,
    infer=_if_infer,
    args=(
        Arg("then_net", None, "NetDef run when the condition is true"),
        Arg("else_net", None, "NetDef run when the condition is false (optional)"),
    ),
    doc="Run then_net or else_net in this op's workspace depending on a bool scalar (input 0). "
    "Further inputs/outputs only declare the blobs the branches read and write.",
)
def if_op(op: OpInfo) -> Callable[..., Any]:
    from asyncnet.net import Net

    ws = op.workspace
    if ws is None:
        raise ArgumentError(f"{op.label()}: If needs a workspace to run its branches in")
    then_def = _subnet(op, "then_net")
    if then_def is None:
        raise ArgumentError(f"{op.label()}: required argument 'then_net' is missing")
    else_def = _subnet(op, "else_net")
    # Prepared once, so a branch's kernels are built (and validated) with the op.
    then_net = Net(then_def, ws, executor="simple")
    else_net = Net(else_def, ws, executor="simple") if else_def is not None else None
    out_cells = [ws.cell(n) for n in op.outputs]

    def run(cond: Any, *rest: Any) -> list[Any]:
        c = np.asarray(cond)
        if c.size != 1:
            raise TensorError(f"{op.label()}: the condition must be a scalar, got shape {c.shape}")
        branch = then_net if bool(c.reshape(())) else else_net
        if branch is not None:
            branch.run()
        return [cell.value for cell in out_cells]

    return run
