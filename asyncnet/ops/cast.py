"""Type conversion: Cast."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from asyncnet.errors import ArgumentError, TensorError
from asyncnet.opinfo import OpInfo
from asyncnet.proto import caffe2_pb2 as pb
from asyncnet.registry import register_op
from asyncnet.schema import REQUIRED, Arg, TensorInfo
from asyncnet.serde import numpy_dtype


def cast_dtype(op: OpInfo) -> np.dtype[Any]:
    """The numpy dtype named by `to`: a TensorProto.DataType number or its name ("FLOAT", "int32")."""
    to = op.arg("to")
    if isinstance(to, str):
        try:
            code = pb.TensorProto.DataType.Value(to.upper())
        except ValueError:
            names = ", ".join(pb.TensorProto.DataType.keys())
            raise ArgumentError(f"{op.label()}: unknown data type '{to}' for `to`; known: {names}") from None
    else:
        code = op.int_arg("to")
    if code == pb.TensorProto.STRING:
        raise ArgumentError(f"{op.label()}: Cast cannot convert to STRING")
    try:
        return numpy_dtype(code)
    except TensorError as e:
        raise ArgumentError(f"{op.label()}: `to` {to!r}: {e}") from None


@register_op(
    "Cast",
    allow_inplace=[(0, 0)],
    args=(
        Arg("to", REQUIRED, "target TensorProto.DataType, as its number or its name"),
        Arg("from_type", 0, "ignored (the input's own type is used)"),
    ),
    infer=lambda op, ins: [TensorInfo(ins[0].shape, cast_dtype(op))],
    doc="Convert X to the data type `to` (floats to integers truncate toward zero, nonzero to bool is true).",
    input_names=("input",),
    output_names=("output",),
)
def cast(op: OpInfo) -> Callable[..., Any]:
    dt = cast_dtype(op)

    def run(x: Any) -> tuple[np.ndarray]:
        x = np.asarray(x)
        if x.dtype.kind in "OSU":
            raise ArgumentError(f"{op.label()}: cannot cast a {x.dtype} tensor")
        with np.errstate(invalid="ignore", over="ignore"):
            return (x.astype(dt),)

    return run
