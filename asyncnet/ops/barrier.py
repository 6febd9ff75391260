"""AsyncNetBarrier: an identity op that orders everything upstream of its blobs before everything downstream."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from asyncnet.opinfo import OpInfo
from asyncnet.registry import register_op
from asyncnet.schema import Arg, TensorInfo


def _barrier_infer(op: OpInfo, ins: list[TensorInfo]) -> list[TensorInfo]:
    return list(ins[: len(op.outputs)])


@register_op(
    "AsyncNetBarrier",
    inputs=(1, -1),
    outputs=(1, -1),
    allow_inplace=lambda i, o: i == o,
    arity=lambda n_in, n_out: n_in == n_out,
    arity_doc="as many outputs as inputs",
    args=(Arg("cross_device", 0, "inputs may live on different devices (no effect on CPU)"),),
    infer=_barrier_infer,
    doc="Identity on 1..N blobs, normally in place (output i = input i). It exists for its dependency "
    "edges: every op that writes an input runs before it, every op that reads or writes an output after it.",
)
def async_net_barrier(op: OpInfo) -> Callable[..., Any]:
    op.bool_arg("cross_device")  # validated once; the barrier does not move data between devices

    def run(*xs: Any) -> tuple[Any, ...]:
        return xs

    return run
