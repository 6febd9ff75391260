"""Control flow: If, While (sub-nets in the op's workspace), Do (a child workspace), scopes, IsEmpty.

Every sub-net runs through :mod:`asyncnet.subnet`, prepared once with the op.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from asyncnet.cancellation import check_stopped, register_subnet_op
from asyncnet.errors import ArgumentError, TensorError
from asyncnet.net import EMPTY, Blob
from asyncnet.opinfo import OpInfo
from asyncnet.ops._util import info
from asyncnet.ops.control_grad import FORWARD_INPUT, read_then_written
from asyncnet.registry import register_op
from asyncnet.schema import Arg, TensorInfo
from asyncnet.subnet import Subnet, WorkspaceStack, net_argument

if TYPE_CHECKING:
    from asyncnet.proto import caffe2_pb2 as pb
    from asyncnet.workspace import Workspace

for _type in ("If", "While", "Do"):
    register_subnet_op(_type)


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


def _if_infer(op: OpInfo, ins: list[TensorInfo]) -> list[TensorInfo]:
    # Alone, an If cannot know what its branches write; asyncnet.shapes follows both
    # branches with the whole net's blob infos instead of calling this.
    return [TensorInfo()] * len(op.outputs)


def _workspace(op: OpInfo) -> Workspace:
    ws = op.workspace
    if ws is None:
        raise ArgumentError(f"{op.label()}: {op.type} needs a workspace to run its sub-nets in")
    return ws


def _condition(op: OpInfo, value: Any) -> bool:
    if value is EMPTY:
        raise TensorError(f"{op.label()}: condition blob '{op.inputs[0]}' holds no value")
    c = np.asarray(value)
    if c.size != 1:
        raise TensorError(
            f"{op.label()}: the condition must be a scalar, got shape {c.shape} ({c.dtype}) in '{op.inputs[0]}'"
        )
    return bool(c.reshape(()))


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
    ws = _workspace(op)
    then_def = net_argument(op, "then_net", required=True)
    assert then_def is not None
    else_def = net_argument(op, "else_net")
    # Prepared once, so a branch's kernels are built (and validated) with the op.
    then_net = Subnet(then_def, ws, owner=op.label(), role="then_net")
    else_net = Subnet(else_def, ws, owner=op.label(), role="else_net") if else_def is not None else None
    out_cells = [ws.cell(n) for n in op.outputs]

    def run(cond: Any, *rest: Any) -> list[Any]:
        branch = then_net if _condition(op, cond) else else_net
        if branch is not None:
            branch.run()
        return [cell.value for cell in out_cells]

    return run


@register_op(
    "While",
    inputs=(1, -1),
    outputs=(0, -1),
    allow_inplace=True,
    infer=_if_infer,
    args=(
        Arg("loop_net", None, "NetDef run while the condition blob (input 0) holds true"),
        Arg("cond_net", None, "NetDef run before every check of the condition; it computes input 0 (optional)"),
        Arg(
            "max_trip_count",
            -1,
            "stop after this many iterations even while the condition holds (asyncnet extension, as "
            "ONNX Loop / Caffe2's ONNXWhile bound their loops; negative: no bound)",
        ),
    ),
    doc="Caffe2's While: repeat {run cond_net (if any); stop unless input 0 is true; run loop_net}, "
    "all in this op's workspace. Further inputs/outputs declare the blobs the nets read and write.",
)
def while_op(op: OpInfo) -> Callable[..., Any]:
    ws = _workspace(op)
    loop_def = net_argument(op, "loop_net", required=True)
    assert loop_def is not None
    cond_def = net_argument(op, "cond_net")
    loop_net = Subnet(loop_def, ws, owner=op.label(), role="loop_net")
    cond_net = Subnet(cond_def, ws, owner=op.label(), role="cond_net") if cond_def is not None else None
    cond_cell = ws.cell(op.inputs[0])
    out_cells = [ws.cell(n) for n in op.outputs]

    max_trips = int(op.arg("max_trip_count", -1))

    def run(*_ins: Any) -> list[Any]:
        trips = 0
        while max_trips < 0 or trips < max_trips:
            trips += 1
            check_stopped(f"in {op.label()} after {trips - 1} iteration(s)")
            if cond_net is not None:
                cond_net.run()
            # Read the cell, not the argument: the loop body (or cond_net) rewrites it.
            if not _condition(op, cond_cell.value):
                break
            loop_net.run()
        return [cell.value for cell in out_cells]

    return run


def _scope_infer(op: OpInfo, ins: list[TensorInfo]) -> list[TensorInfo]:
    return [TensorInfo()]


@register_op(
    "CreateScope",
    inputs=0,
    outputs=1,
    infer=_scope_infer,
    doc="Y = a new, empty workspace scope (a stack of child workspaces) for Do ops.",
)
def create_scope(op: OpInfo) -> Callable[..., Any]:
    def run() -> tuple[WorkspaceStack]:
        return (WorkspaceStack(),)

    return run


@register_op(
    "HasScope",
    inputs=1,
    outputs=1,
    infer=_is_empty_infer,
    doc="Y = a bool scalar, true when the scope blob X holds at least one workspace.",
)
def has_scope(op: OpInfo) -> Callable[..., Any]:
    def run(scope: Any) -> tuple[np.ndarray]:
        if not isinstance(scope, WorkspaceStack):
            raise TensorError(f"{op.label()}: '{op.inputs[0]}' is not a scope (made by CreateScope)")
        return (np.asarray(len(scope) > 0),)

    return run


def _do_infer(op: OpInfo, ins: list[TensorInfo]) -> list[TensorInfo]:
    return [TensorInfo()] * len(op.outputs)


@register_op(
    "Do",
    inputs=(1, -1),
    outputs=(1, -1),
    allow_inplace=True,
    infer=_do_infer,
    args=(
        Arg("net", None, "NetDef run in the scope's child workspace"),
        Arg("inner_blobs", (), "inner blob names bound to outer blobs"),
        Arg(
            "outer_blobs_idx",
            (),
            "per inner blob, the index of its outer blob among inputs then outputs (the scope blobs excluded)",
        ),
        Arg(
            "saved_fwd_blobs",
            (),
            "gradient Do: local blobs of the forward run its net reads (they must exist in the forward workspace)",
        ),
        Arg("reuse_workspace", False, "run in the scope's last workspace instead of pushing a new one"),
        Arg(
            "copy_external_blobs",
            False,
            "after the run, keep in the pushed workspace a copy of every bound blob the net wrote (a While "
            "body's gradient reads each iteration's values from there)",
        ),
    ),
    doc="Caffe2's Do: run `net` in a child workspace of the scope blob (the last input and the last "
    "output, made by CreateScope). The child sees only the bound blobs: inner_blobs[i] is the outer "
    "blob (inputs[:-1] + outputs[:-1])[outer_blobs_idx[i]], the same cell (no copy). A gradient Do "
    "(is_gradient_op) takes the newest forward workspace off the scope's stack and runs its net there.",
)
def do_op(op: OpInfo) -> Callable[..., Any]:
    ws = _workspace(op)
    net_def = net_argument(op, "net", required=True)
    assert net_def is not None
    if op.inputs[-1] != op.outputs[-1]:
        raise ArgumentError(
            f"{op.label()}: the last input and the last output must be the same scope blob, "
            f"got '{op.inputs[-1]}' and '{op.outputs[-1]}'"
        )
    inner = [str(n) for n in op.arg("inner_blobs", ())]
    idx = [int(i) for i in op.arg("outer_blobs_idx", ())]
    if len(inner) != len(idx):
        raise ArgumentError(
            f"{op.label()}: inner_blobs has {len(inner)} name(s) but outer_blobs_idx {len(idx)} index(es)"
        )
    outer = [*op.inputs[:-1], *op.outputs[:-1]]
    for name, i in zip(inner, idx):
        if not 0 <= i < len(outer):
            raise ArgumentError(
                f"{op.label()}: outer_blobs_idx {i} (for inner blob '{name}') is out of range; "
                f"outer blobs: {', '.join(outer) or 'none'}"
            )
    bindings = {name: ws.cell(outer[i]) for name, i in zip(inner, idx)}
    reuse = bool(op.arg("reuse_workspace", False))
    out_cells = [ws.cell(n) for n in op.outputs[:-1]]
    written = set(op.outputs[:-1])
    keep = bool(op.arg("copy_external_blobs", False)) and not reuse
    snapshot = [(name, ws.cell(outer[i])) for name, i in zip(inner, idx) if outer[i] in written] if keep else []
    # The gradient of a net that reads a bound blob and then overwrites it needs the incoming value.
    carried = read_then_written(net_def)
    incoming = [(name, cell) for name, cell in bindings.items() if name in carried]
    if op.is_gradient_op:
        return _gradient_do(op, net_def, bindings, out_cells)

    def run(*ins: Any) -> list[Any]:
        scope = _scope(op, ins[-1])
        frame = scope.forward(ws, bindings, reuse=reuse)
        child = frame.workspace
        for name, cell in incoming:
            child.cell(name + FORWARD_INPUT).value = _kept(cell.value)
        sub = frame.nets.get(net_def.name) if net_def.name else None
        if sub is None:
            sub = Subnet(net_def, child, owner=op.label(), role="net")
            frame.nets[sub.name] = sub
        sub.run()
        for name, cell in snapshot:
            # Later iterations overwrite the outer blob; the gradient needs this iteration's value.
            kept = Blob(name)
            kept.value = _kept(cell.value)
            frame.keep(name, kept)
        return [*(cell.value for cell in out_cells), scope]

    return run


def _kept(value: Any) -> Any:
    return np.array(value, copy=True) if isinstance(value, np.ndarray) else value


def _scope(op: OpInfo, value: Any) -> WorkspaceStack:
    if not isinstance(value, WorkspaceStack):
        raise TensorError(
            f"{op.label()}: scope blob '{op.inputs[-1]}' holds {type(value).__name__}, "
            "expected a scope made by CreateScope"
        )
    return value


def _gradient_do(
    op: OpInfo, net_def: pb.NetDef, bindings: dict[str, Blob], out_cells: list[Blob]
) -> Callable[..., Any]:
    saved = [str(n) for n in op.arg("saved_fwd_blobs", ())]

    def run(*ins: Any) -> list[Any]:
        scope = _scope(op, ins[-1])
        frame = scope.backward(bindings)
        if frame is None:
            raise TensorError(
                f"{op.label()}: scope blob '{op.inputs[-1]}' holds no forward workspace; a gradient Do "
                "runs once after each run of its forward Do"
            )
        child = frame.workspace
        try:
            missing = [n for n in saved if not child.has(n)]
            if missing:
                raise TensorError(
                    f"{op.label()}: the forward workspace lacks the saved blob(s) {missing}; "
                    f"it holds {child.local_blobs()}"
                )
            sub = Subnet(net_def, child, owner=op.label(), role="net")
            try:
                sub.run()
            finally:
                sub.close()
        finally:
            for n in frame.nets.values():
                n.close()
        return [*(cell.value for cell in out_cells), scope]

    return run
