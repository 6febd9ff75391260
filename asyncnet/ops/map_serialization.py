"""Save / Load of map blobs (CreateMap, KeyValueToMap) in Caffe2's record format (``map_ops.h``).

A map is saved as ``BlobProto{type: "(std::unordered_map<K, V>)", content}`` with K, V ``int32_t`` or
``int64_t`` and ``content`` a serialized ``TensorProtos`` holding the keys tensor, then the values
tensor (both 1-D, named after the blob). On load the first of repeated keys wins (Caffe2 emplaces).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from google.protobuf.message import DecodeError

from asyncnet.db.blobs import BlobCodec, register_blob_codec
from asyncnet.errors import AsyncNetError, CheckpointError
from asyncnet.ops.data_pipeline import BlobMap
from asyncnet.proto import caffe2_pb2 as pb
from asyncnet.serde import numpy_to_tensor, tensor_data

_C_INT: dict[np.dtype[Any], str] = {np.dtype(np.int32): "int32_t", np.dtype(np.int64): "int64_t"}


def _type_name(key: np.dtype[Any], value: np.dtype[Any]) -> str:
    return f"(std::unordered_map<{_C_INT[key]}, {_C_INT[value]}>)"


def _tensor(name: str, values: np.ndarray) -> pb.TensorProto:
    t = numpy_to_tensor(values, name=name)
    t.segment.begin, t.segment.end = 0, int(values.size)
    t.device_detail.device_type = 0
    return t


def _encode(m: BlobMap, proto: pb.BlobProto) -> None:
    kd, vd = np.dtype(m.key_dtype), np.dtype(m.value_dtype)
    if kd not in _C_INT or vd not in _C_INT:
        raise CheckpointError(
            f"blob '{proto.name}': a map of {kd} -> {vd} cannot be saved (Caffe2's maps are int32/int64 to int32/int64)"
        )
    proto.type = _type_name(kd, vd)
    keys = np.array(list(m.keys()), kd)
    values = np.array(list(m.values()), vd)
    protos = pb.TensorProtos(protos=[_tensor(proto.name, keys), _tensor(proto.name, values)])
    proto.content = protos.SerializeToString()


def _decode_with(key: np.dtype[Any], value: np.dtype[Any]) -> Any:
    def decode(proto: pb.BlobProto) -> BlobMap:
        protos = pb.TensorProtos()
        try:
            protos.ParseFromString(proto.content)
        except DecodeError as e:
            raise CheckpointError(f"map content is not a TensorProtos: {e}") from e
        if len(protos.protos) != 2:
            raise CheckpointError(f"map content must hold 2 tensors (keys, values), got {len(protos.protos)}")
        try:
            keys, values = (tensor_data(t).reshape(-1) for t in protos.protos)
        except AsyncNetError as e:
            raise CheckpointError(f"map tensors: {e}") from e
        if keys.size != values.size:
            raise CheckpointError(f"map has {keys.size} keys but {values.size} values")
        m = BlobMap(key, value)
        for k, v in zip(keys.tolist(), values.tolist(), strict=True):
            m.setdefault(k, v)
        return m

    return decode


# One codec per Caffe2 map type (decoding knows the dtypes from the type name); encoding picks the
# type name from the map's dtypes, so every registration shares it.
for _k in _C_INT:
    for _v in _C_INT:
        register_blob_codec(BlobCodec(BlobMap, _type_name(_k, _v), _encode, _decode_with(_k, _v)))
