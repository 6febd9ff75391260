"""Converting Caffe2 protobuf files between binary, text and JSON, and init nets <-> .npz.

* :func:`read_any` detects the message type (NetDef, PlanDef, TensorProtos) and the
  encoding (binary, text, JSON); :func:`write_as` writes one of the three encodings.
* :func:`init_net_to_arrays` folds an init net's GivenTensor*Fill ops (and static
  ConstantFills) into name -> array, keeping each op's dtype; :func:`arrays_to_init_net`
  goes back. GivenTensorDoubleFill stores its values in the float ``floats`` argument,
  as Caffe2 does, so float64 values keep their dtype but float32 precision.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from google.protobuf import json_format
from google.protobuf.message import Message

from asyncnet.errors import ParseError, UnsupportedError
from asyncnet.proto import caffe2_pb2 as pb
from asyncnet.serde import (
    arguments_to_dict,
    atomic_write_bytes,
    make_argument,
    parse_message,
    read_file_bytes,
    serialize_message,
)

MESSAGE_TYPES: dict[str, type[Message]] = {"net": pb.NetDef, "plan": pb.PlanDef, "tensors": pb.TensorProtos}
FORMATS = ("pb", "pbtxt", "json")
_EXT_FORMAT = {".pbtxt": "pbtxt", ".prototxt": "pbtxt", ".txt": "pbtxt", ".json": "json", ".pb": "pb"}
_FORMAT_EXT = {"pb": ".pb", "pbtxt": ".pbtxt", "json": ".json"}

# Fill op -> numpy dtype of its output, for --merge.
GIVEN_FILLS: dict[str, np.dtype[Any]] = {
    "GivenTensorFill": np.dtype(np.float32),
    "GivenTensorDoubleFill": np.dtype(np.float64),
    "GivenTensorIntFill": np.dtype(np.int32),
    "GivenTensorInt64Fill": np.dtype(np.int64),
    "GivenTensorInt16Fill": np.dtype(np.int16),
    "GivenTensorBoolFill": np.dtype(np.bool_),
}
_FILL_OF = {dt: op for op, dt in GIVEN_FILLS.items()}


def format_of(path: str | os.PathLike[str], override: str | None = None) -> str:
    """``pb``, ``pbtxt`` or ``json`` for a path (by extension; unknown extensions are binary)."""
    if override:
        if override not in FORMATS:
            raise UnsupportedError(f"format '{override}' is not one of {', '.join(FORMATS)}")
        return override
    name = str(path).lower()
    if name.endswith(".pb.txt"):
        return "pbtxt"
    return _EXT_FORMAT.get(Path(name).suffix, "pb")


def extension_of(fmt: str) -> str:
    """The file extension written for a format."""
    return _FORMAT_EXT[fmt]


def _plausible(msg: Message) -> bool:
    """Reject a binary parse that 'succeeded' as the wrong message type."""
    if isinstance(msg, pb.NetDef):
        # Other messages' bytes can decode as a NetDef whose strings are binary junk.
        texts = [msg.name, *msg.external_input, *msg.external_output]
        texts += [t for op in msg.op for t in (op.type, *op.input, *op.output)]
        return all(op.type for op in msg.op) and all(t.isprintable() for t in texts)
    if isinstance(msg, pb.PlanDef):
        return bool(msg.network or msg.execution_step)
    if isinstance(msg, pb.TensorProtos):
        return bool(msg.protos) and all(t.HasField("data_type") or t.dims for t in msg.protos)
    return True


def parse_json(data: bytes, cls: type[Message], source: str) -> Message:
    """Parse protobuf JSON (``json_format``) as ``cls``."""
    msg = cls()
    try:
        json_format.Parse(data.decode("utf-8"), msg)
    except (json_format.ParseError, UnicodeDecodeError, RecursionError) as e:
        raise ParseError(f"{source}: not a valid JSON {cls.DESCRIPTOR.name}: {e}", source=source) from e
    return msg


def read_any(path: str | os.PathLike[str], kind: str | None = None) -> Message:
    """Read a NetDef, PlanDef or TensorProtos file in any of the three encodings.

    Args:
        path: the file.
        kind: "net", "plan" or "tensors" to force the message type; detected otherwise
            (first of NetDef, PlanDef, TensorProtos that parses and looks like one).

    Raises:
        ParseError: unreadable, or not any of the candidate types.
    """
    p = Path(path)
    data = read_file_bytes(p, "a protobuf file")
    if kind is not None and kind not in MESSAGE_TYPES:
        raise UnsupportedError(f"--type must be one of {', '.join(MESSAGE_TYPES)}, got '{kind}'")
    candidates = [MESSAGE_TYPES[kind]] if kind else list(MESSAGE_TYPES.values())
    is_json = format_of(p) == "json" or data.lstrip()[:1] == b"{"
    errors: list[str] = []
    for cls in candidates:
        try:
            msg = parse_json(data, cls, str(p)) if is_json else parse_message(data, cls, source=str(p))
        except ParseError as e:
            errors.append(f"{cls.DESCRIPTOR.name}: {e}")
            continue
        if kind or _plausible(msg):
            return msg
        errors.append(f"{cls.DESCRIPTOR.name}: parses but holds nothing of one")
    if len(errors) == 1:
        raise ParseError(errors[0].split(": ", 1)[1], source=str(p))
    raise ParseError(
        f"{p}: not a NetDef, PlanDef or TensorProtos file ({'JSON' if is_json else 'protobuf'}); " + "; ".join(errors),
        source=str(p),
    )


def serialize_as(msg: Message, fmt: str) -> bytes:
    """Bytes of ``msg`` in ``fmt``."""
    if fmt == "json":
        return (json_format.MessageToJson(msg, preserving_proto_field_name=True, indent=1) + "\n").encode("utf-8")
    return serialize_message(msg, text=fmt == "pbtxt")


def write_as(msg: Message, path: str | os.PathLike[str], fmt: str | None = None) -> str:
    """Write ``msg`` atomically in ``fmt`` (default: from the extension); returns the format."""
    fmt = format_of(path, fmt)
    atomic_write_bytes(Path(path), serialize_as(msg, fmt))
    return fmt


def _static_shape(op: pb.OperatorDef, args: Mapping[str, Any], where: str) -> list[int]:
    if op.input or args.get("input_as_shape"):
        raise UnsupportedError(f"{where}: shape comes from an input, so the value is not static")
    shape = args.get("shape", [])
    return [int(d) for d in (shape if isinstance(shape, list) else [shape])]


def init_net_to_arrays(net: pb.NetDef) -> dict[str, np.ndarray]:
    """Blob -> array for every op of an init net (GivenTensor*Fill, or ConstantFill with a static shape).

    Raises:
        UnsupportedError: an op that is not a foldable fill (names the op and its type).
    """
    out: dict[str, np.ndarray] = {}
    for i, op in enumerate(net.op):
        where = f"init net '{net.name}' op #{i} {op.type}" + (f" '{op.name}'" if op.name else "")
        if len(op.output) != 1:
            raise UnsupportedError(f"{where}: has {len(op.output)} outputs; only single-output fills fold into .npz")
        args = arguments_to_dict(op.arg, where)
        if op.type in GIVEN_FILLS:
            dtype = GIVEN_FILLS[op.type]
            if op.type == "GivenTensorFill" and "dtype" in args:
                from asyncnet.serde import numpy_dtype

                dtype = numpy_dtype(int(args["dtype"]))
            shape = _static_shape(op, args, where)
            values = args.get("values", [])
            arr = np.asarray(values if isinstance(values, list) else [values], dtype=dtype)
            if arr.size != int(np.prod(shape, dtype=np.int64)):
                raise UnsupportedError(f"{where}: {arr.size} values do not fill shape {shape}")
            out[op.output[0]] = arr.reshape(shape)
        elif op.type == "ConstantFill":
            shape = _static_shape(op, args, where)
            value = args.get("value", 0.0)
            if "dtype" in args:
                from asyncnet.serde import numpy_dtype

                dtype = numpy_dtype(int(args["dtype"]))
            else:
                dtype = np.dtype(np.float32) if isinstance(value, float) else np.dtype(np.int64)
            out[op.output[0]] = np.full(shape, value, dtype=dtype)
        else:
            raise UnsupportedError(
                f"{where}: cannot fold into .npz (supported: {', '.join(GIVEN_FILLS)}, ConstantFill)"
            )
    return out


def arrays_to_init_net(arrays: Mapping[str, np.ndarray], name: str = "init") -> pb.NetDef:
    """An init net of GivenTensor*Fill ops, one per array, choosing the op by dtype."""
    net = pb.NetDef(name=name)
    for key, value in arrays.items():
        arr = np.asarray(value)
        op_type = _FILL_OF.get(arr.dtype)
        if op_type is None:
            raise UnsupportedError(
                f"array '{key}' has dtype {arr.dtype}; supported: {', '.join(str(d) for d in _FILL_OF)}"
            )
        op = net.op.add(type=op_type, output=[key])
        op.arg.append(make_argument("shape", [int(d) for d in arr.shape]))
        flat = arr.reshape(-1)
        values: list[Any] = [bool(v) for v in flat] if arr.dtype == np.bool_ else flat.tolist()
        if arr.dtype.kind == "f":
            values = [float(v) for v in values]
        op.arg.append(make_argument("values", values) if values else pb.Argument(name="values"))
    net.external_output.extend(arrays)
    return net
