"""More of Caffe2's ``workspace`` module: the CPU-build device queries, blob (de)serialization,
``GetNetName`` and ``GetOperatorCost``. Re-exported by :mod:`asyncnet.compat.workspace`."""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from asyncnet.errors import CheckpointError, UnsupportedError
from asyncnet.proto import caffe2_pb2 as pb

__all__ = [
    "DeserializeBlob",
    "GetCUDAVersion",
    "GetCuDNNVersion",
    "GetDeviceProperties",
    "GetGPUMemoryInfo",
    "GetGpuPeerAccessPattern",
    "GetNetName",
    "GetOperatorCost",
    "IsNUMAEnabled",
    "SerializeBlob",
    "StringifyProto",
    "has_fbgemm",
    "is_asan",
]

# What a CPU-only Caffe2 build reported.
is_asan = False
has_fbgemm = False


def GetCUDAVersion() -> int:
    return 0


def GetCuDNNVersion() -> int:
    return 0


def GetDeviceProperties(device_id: int) -> None:
    return None


def GetGpuPeerAccessPattern() -> np.ndarray:
    return np.array([])


def GetGPUMemoryInfo() -> None:
    return None


def IsNUMAEnabled() -> bool:
    return False


def StringifyProto(obj: Any) -> bytes:
    """A protobuf message (or a core object with Proto()) serialized; bytes and str pass through."""
    if isinstance(obj, (bytes, str)):
        return obj.encode("utf-8") if isinstance(obj, str) else obj
    if hasattr(obj, "SerializeToString"):
        return bytes(obj.SerializeToString())
    if hasattr(obj, "Proto"):
        return bytes(obj.Proto().SerializeToString())
    raise UnsupportedError(f"StringifyProto takes a protobuf message or a core Net/Plan, got {type(obj).__name__}")


def GetNetName(net: Any) -> str:
    """The name of a net given as a name, a core.Net or a NetDef."""
    from asyncnet.compat.workspace import _net_name

    return _net_name(net)


def SerializeBlob(name: Any) -> bytes:
    """Blob ``name`` of the current workspace as one serialized BlobProto (tensors and strings)."""
    from asyncnet.compat.workspace import FetchBlob, _name
    from asyncnet.db.blobs import serialize_blob

    key = _name(name)
    records = serialize_blob(key, FetchBlob(key), chunk_size=0)
    return records[0][1]


def DeserializeBlob(name: Any, serialized: bytes) -> None:
    """Store a serialized BlobProto (as SerializeBlob makes) as blob ``name``."""
    from asyncnet.compat.workspace import FeedBlob
    from asyncnet.db.blobs import BlobAssembler

    key = str(name)
    asm = BlobAssembler("DeserializeBlob")
    proto = asm.parse(bytes(serialized), "value")
    asm.add(key, proto, "value")
    values = asm.result()
    if len(values) != 1:
        raise CheckpointError(f"DeserializeBlob '{name}': expected one blob, got {sorted(values)}")
    FeedBlob(name, next(iter(values.values())))


class OperatorCost(NamedTuple):
    """Caffe2's cost estimate of one op run: (flops, bytes_written, bytes_read)."""

    flops: int
    bytes_written: int
    bytes_read: int


# Ops that only move data: no arithmetic (Caffe2's cost functions for them report 0 flops).
_DATA_MOVEMENT = {
    "Concat",
    "Copy",
    "Split",
    "SplitByLengths",
    "Reshape",
    "Flatten",
    "FlattenToVec",
    "ExpandDims",
    "Squeeze",
    "Transpose",
    "Alias",
    "Gather",
    "Slice",
}
# Pointwise ops: one flop per output element.
_POINTWISE = {"Add", "Sub", "Mul", "Div", "Relu", "Sigmoid", "Tanh", "Exp", "Log", "Abs", "Neg", "Negative", "Sqr"}


def GetOperatorCost(operator: pb.OperatorDef, blobs: Any) -> OperatorCost:
    """Estimated flops and bytes written / read of one run of ``operator`` on the current workspace.

    Input shapes come from the named ``blobs`` of the current workspace, output shapes from
    shape inference (or, where they depend on input values, from the existing output blobs). Data-movement ops cost 0 flops, pointwise ops one flop per output
    element, FC 2*M*N*K; other op types raise UnsupportedError (Caffe2 had no cost function
    for most ops either).
    """
    from asyncnet.compat.workspace import FetchBlob, _name
    from asyncnet.shapes import infer_shapes, info_of

    known = {}
    for b in blobs:
        key = _name(b)
        known[key] = info_of(FetchBlob(key))
    net = pb.NetDef(name="cost")
    net.op.append(operator)
    result = infer_shapes(net, known)
    bytes_read = sum(_nbytes(known[_name(b)]) for b in operator.input if _name(b) in known)
    from asyncnet.compat.workspace import HasBlob

    outs = []
    for o in operator.output:
        info = result.blobs.get(o)
        if info is None or info.shape is None or any(d is None for d in info.shape) or info.dtype is None:
            # Sizes that depend on input values (e.g. Split's split blob): the output's current
            # value, when the op has already run.
            if not HasBlob(o):
                raise UnsupportedError(
                    f"GetOperatorCost: op {operator.type}: the shape of output '{o}' depends on input "
                    "values and the blob does not exist yet"
                )
            info = info_of(FetchBlob(o))
        outs.append(info)
    bytes_written = sum(_nbytes(o) for o in outs)
    if operator.type in _DATA_MOVEMENT:
        flops = 0
    elif operator.type in _POINTWISE:
        flops = sum(_numel(o) for o in outs)
    elif operator.type == "FC":
        x, w = known[_name(operator.input[0])], known[_name(operator.input[1])]
        w_shape = [int(d or 0) for d in w.shape or ()]
        n, k = w_shape[0], w_shape[1]
        m = _numel(x) // k
        flops = 2 * m * n * k
    else:
        raise UnsupportedError(
            f"GetOperatorCost: no cost function for op type '{operator.type}' "
            f"(available: {', '.join(sorted(_DATA_MOVEMENT | _POINTWISE | {'FC'}))})"
        )
    return OperatorCost(int(flops), int(bytes_written), int(bytes_read))


def _numel(info: Any) -> int:
    return int(np.prod(info.shape, dtype=np.int64))


def _nbytes(info: Any) -> int:
    return _numel(info) * int(np.dtype(info.dtype).itemsize)
