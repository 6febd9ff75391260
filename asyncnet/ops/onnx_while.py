"""ONNXWhile: ONNX's Loop as Caffe2 ran it: a body net with loop-carried values and scan outputs, bounded by
a trip count and/or a condition the body recomputes."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from asyncnet.cancellation import check_stopped
from asyncnet.errors import ArgumentError, TensorError
from asyncnet.opinfo import OpInfo
from asyncnet.registry import register_op
from asyncnet.schema import Arg, TensorInfo
from asyncnet.subnet import Subnet, net_argument


def _scalar(op: OpInfo, value: Any, what: str) -> Any:
    a = np.asarray(value)
    if a.size != 1:
        raise TensorError(f"{op.label()}: {what} must hold one value, got shape {a.shape}")
    return a.reshape(-1)[0]


@register_op(
    "ONNXWhile",
    inputs=(2, -1),
    outputs=(0, -1),
    args=(
        Arg(
            "body",
            None,
            "NetDef: external inputs (iteration, condition, carried...), external outputs "
            "(new condition, new carried..., scan outputs...)",
        ),
        Arg("has_trip_count", 0, "input 0 bounds the iterations"),
        Arg("has_cond", 0, "input 1 (then the body's new condition) must hold for an iteration to run"),
        Arg("save_scopes", 0, "accepted (Caffe2 kept the per-iteration workspaces for the gradient)"),
        Arg("disable_scopes", 0, "accepted (the body always runs in its own child workspace here)"),
    ),
    infer=lambda op, ins: [TensorInfo(None, None)] * len(op.outputs),
    doc="Loop over `body`: inputs are max_trip_count (int64), the first condition (bool) and the initial "
    "loop-carried values; each iteration feeds (iteration number, condition, carried values) to the body and "
    "takes back (condition, carried values, scan values). Outputs: the final carried values, then each scan "
    "output concatenated over the iterations along dim 0 (empty int32 when no iteration ran).",
    input_names=("max_trip_count", "first_iter_condition"),
)
def onnx_while(op: OpInfo) -> Callable[..., Any]:
    from asyncnet.workspace import Workspace

    ws = op.workspace
    if ws is None:
        raise ArgumentError(f"{op.label()}: ONNXWhile needs a workspace to run its body in")
    body = net_argument(op, "body", required=True)
    assert body is not None
    has_trip, has_cond = op.bool_arg("has_trip_count"), op.bool_arg("has_cond")
    carried = len(op.inputs) - 2
    ins, outs = list(body.external_input), list(body.external_output)
    scans = len(outs) - 1 - carried
    if len(ins) != 2 + carried or scans < 0 or len(op.outputs) != carried + scans:
        raise ArgumentError(
            f"{op.label()}: with {carried} carried value(s) the body needs {2 + carried} external inputs and "
            f">= {1 + carried} external outputs, and the op {carried} + scan outputs; got {len(ins)}, "
            f"{len(outs)} and {len(op.outputs)}"
        )
    # The body's own blobs stay in its child workspace; anything else it reads comes from the parent.
    written = {o for b_op in body.op for o in b_op.output}
    child = Workspace(f"{op.label()}/body", parent=ws, private={*ins, *outs, *written})
    net = Subnet(body, child, owner=op.label(), role="body")

    def run(max_trip: Any, cond0: Any, *init: Any) -> list[Any]:
        limit = int(_scalar(op, max_trip, "max_trip_count")) if has_trip else None
        cond = bool(_scalar(op, cond0, "the condition")) if has_cond else True
        values, seen = list(init), [list[Any]() for _ in range(scans)]
        it = 0
        while (limit is None or it < limit) and cond:
            check_stopped(f"in {op.label()} after {it} iteration(s)")
            for name, v in zip(ins, [np.array(it, np.int64), np.array(cond), *values]):
                child.feed(name, v)
            net.run()
            got = [child.fetch(n) for n in outs]
            cond = bool(_scalar(op, got[0], "the body's condition")) if has_cond else True
            values = got[1 : 1 + carried]
            for k in range(scans):
                seen[k].append(np.asarray(got[1 + carried + k]))
            it += 1
        # With no iteration Caffe2 left each scan output an empty int32 tensor (its golden says so).
        stacked = [np.concatenate(s) if s else np.zeros(0, np.int32) for s in seen]
        return [*values, *stacked]

    return run
