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
        return np.dtype(object)
    try:
        return numpy_dtype(code)
    except TensorError as e:
        raise ArgumentError(f"{op.label()}: `to` {to!r}: {e}") from None


def _to_strings(x: np.ndarray) -> np.ndarray:
    """Each value printed as C++ std::to_string does (floats with six decimals, bools as 1/0)."""
    out = np.empty(x.shape, dtype=object)
    flat = out.reshape(-1)
    for i, v in enumerate(x.reshape(-1).tolist()):
        if isinstance(v, (bytes, str)):
            flat[i] = v if isinstance(v, bytes) else v.encode("utf-8")
        elif isinstance(v, bool):
            flat[i] = b"1" if v else b"0"
        elif isinstance(v, float):
            flat[i] = f"{v:f}".encode()
        else:
            flat[i] = str(v).encode()
    return out


def _from_strings(op: OpInfo, x: np.ndarray, dt: np.dtype[Any]) -> np.ndarray:
    """Parse each string as a number of type ``dt`` (bool: a nonzero integer is true)."""
    out = np.empty(x.shape, dtype=dt)
    flat = out.reshape(-1)
    for i, v in enumerate(x.reshape(-1).tolist()):
        text = v.decode("utf-8") if isinstance(v, bytes) else str(v)
        try:
            if dt.kind == "f":
                flat[i] = float(text)
            elif dt.kind == "b":
                flat[i] = int(text) != 0
            else:
                flat[i] = int(text)
        except ValueError:
            raise ArgumentError(f"{op.label()}: cannot parse {text!r} as {dt}") from None
    return out


@register_op(
    "Cast",
    allow_inplace=[(0, 0)],
    args=(
        Arg("to", REQUIRED, "target TensorProto.DataType, as its number or its name"),
        Arg("from_type", 0, "ignored (the input's own type is used)"),
    ),
    infer=lambda op, ins: [TensorInfo(ins[0].shape, cast_dtype(op))],
    doc="Convert X to the data type `to` (floats to integers truncate toward zero, nonzero to bool is true); "
    "to STRING prints each value as C++ std::to_string does, from STRING parses numbers.",
    input_names=("input",),
    output_names=("output",),
)
def cast(op: OpInfo) -> Callable[..., Any]:
    dt = cast_dtype(op)

    def run(x: Any) -> tuple[np.ndarray]:
        x = np.asarray(x)
        if dt.kind == "O":
            return (_to_strings(x),)
        if x.dtype.kind in "OSU":
            return (_from_strings(op, x, dt),)
        with np.errstate(invalid="ignore", over="ignore"):
            return (x.astype(dt),)

    return run
