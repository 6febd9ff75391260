"""Caffe weight blobs -> numpy, and the Caffe2 init net that creates every parameter."""

from __future__ import annotations

import math

import numpy as np

from asyncnet.caffe.context import Param
from asyncnet.errors import TensorError
from asyncnet.proto import caffe2_pb2 as pb
from asyncnet.proto import caffe_pb2 as cpb
from asyncnet.serde import checked_numel, make_argument


def blob_to_numpy(blob: cpb.BlobProto, what: str = "BlobProto") -> np.ndarray:
    """A BlobProto's values shaped by ``shape`` (or the legacy num/channels/height/width)."""
    if blob.HasField("shape"):
        shape = tuple(int(d) for d in blob.shape.dim)
    else:
        shape = (int(blob.num), int(blob.channels), int(blob.height), int(blob.width))
        if not any(blob.HasField(f) for f in ("num", "channels", "height", "width")):
            shape = (len(blob.data) or len(blob.double_data),)
    count = checked_numel(shape, what)
    if blob.double_data:
        data = np.asarray(blob.double_data, dtype=np.float64)
    else:
        data = np.asarray(blob.data, dtype=np.float32)
    if data.size != count:
        raise TensorError(f"{what} has {data.size} values but its shape {list(shape)} needs {count}")
    return data.reshape(shape)


def pretrained_blobs(weights: cpb.NetParameter, source: str = "caffemodel") -> dict[str, list[np.ndarray]]:
    """Layer name -> its blobs, from V2 ``layer`` and V1 ``layers`` entries."""
    out: dict[str, list[np.ndarray]] = {}
    entries: list[tuple[str, list[cpb.BlobProto]]] = [(lay.name, list(lay.blobs)) for lay in weights.layer]
    entries += [(lay.name, list(lay.blobs)) for lay in weights.layers]
    for name, blobs in entries:
        if not blobs:
            continue
        if name in out:
            raise TensorError(f"{source}: two layers named '{name}' carry weights")
        out[name] = [blob_to_numpy(b, f"{source}: blob {i} of layer '{name}'") for i, b in enumerate(blobs)]
    return out


def param_op(p: Param, seed: int | None) -> pb.OperatorDef:
    """The init-net op that creates ``p``: GivenTensorFill for known values, else a seeded fill."""
    op = pb.OperatorDef(output=[p.name])
    op.arg.append(make_argument("shape", list(p.shape)))
    if p.value is not None:
        values = np.asarray(p.value, dtype=np.float32).reshape(-1)
        if values.size != math.prod(p.shape):
            raise TensorError(f"parameter '{p.name}' has {values.size} values for shape {list(p.shape)}")
        op.type = "GivenTensorFill"
        op.arg.append(make_argument("values", values))
        return op
    op.type = p.filler.op_type
    for k, v in p.filler.args:
        op.arg.append(make_argument(k, v))
    if seed is not None:
        op.device_option.random_seed = seed
    return op


def build_init_net(params: list[Param], name: str, seed: int = 0) -> pb.NetDef:
    """An init net creating every parameter (random ones seeded ``seed``, ``seed + 1``, ...)."""
    net = pb.NetDef(name=name)
    for i, p in enumerate(params):
        net.op.append(param_op(p, seed + i))
    net.external_output.extend(p.name for p in params)
    return net
