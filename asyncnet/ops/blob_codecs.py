"""Save / Load formats of the non-tensor blobs some ops hold: counters, key indices and maps.

Caffe2 registered a blob serializer for each (``counter_ops.cc``, ``index_ops.cc``, ``map_ops.h``);
these codecs write and read the same ``BlobProto`` records, so checkpoints move between the two:

* a counter: ``type "std::unique_ptr<Counter<int64_t>>"``, ``tensor`` an INT64 [1] with the count;
* an index: ``type "std::unique_ptr<caffe2::IndexBase>"``, ``tensor`` the keys in id order (what
  IndexStore gives) and ``content`` ``"<max_elements> <frozen 0/1>"``;
* a map: ``type "(std::unordered_map<K, V>)"`` (K, V: ``int32_t`` / ``int64_t``) and ``content`` a
  serialized ``TensorProtos`` holding the keys tensor, then the values tensor.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from google.protobuf.message import DecodeError

from asyncnet.db.blobs import BlobCodec, register_blob_codec, tensor_from_record, tensor_record
from asyncnet.errors import CheckpointError
from asyncnet.ops.data_pipeline import BlobMap
from asyncnet.ops.index_ops import Index
from asyncnet.ops.utility_extra import Counter
from asyncnet.proto import caffe2_pb2 as pb

COUNTER_TYPE = "std::unique_ptr<Counter<int64_t>>"
INDEX_TYPE = "std::unique_ptr<caffe2::IndexBase>"
_C_INT: dict[np.dtype[Any], str] = {np.dtype(np.int32): "int32_t", np.dtype(np.int64): "int64_t"}
_NP_INT: dict[str, np.dtype[Any]] = {v: k for k, v in _C_INT.items()}


def _encode_counter(name: str, c: Counter) -> pb.BlobProto:
    with c.lock:
        count = c.count
    return pb.BlobProto(type=COUNTER_TYPE, tensor=tensor_record(name, np.array([count], np.int64)))


def _decode_counter(proto: pb.BlobProto) -> Counter:
    value = tensor_from_record(proto.tensor, "counter")
    if value.shape != (1,):
        raise CheckpointError(f"a counter record holds one int64, got shape {value.shape}")
    return Counter(int(value[0]))


_INDEX_KEYS = {"int": np.int32, "long": np.int64}


def _encode_index(name: str, index: Index) -> pb.BlobProto:
    keys = index.store()
    if index.key_kind == "string":
        arr = np.array([k.encode("utf-8") for k in keys], object)
    else:
        arr = np.array(keys, _INDEX_KEYS[index.key_kind])
    content = f"{index.max_elements} {int(index.frozen)}".encode()
    return pb.BlobProto(type=INDEX_TYPE, tensor=tensor_record(name, arr), content=content)


def _decode_index(proto: pb.BlobProto) -> Index:
    keys = tensor_from_record(proto.tensor, "index keys").reshape(-1)
    kinds = {pb.TensorProto.INT32: "int", pb.TensorProto.INT64: "long", pb.TensorProto.STRING: "string"}
    kind = kinds.get(proto.tensor.data_type)
    if kind is None:
        raise CheckpointError(f"index keys must be int32, int64 or strings, got data_type {proto.tensor.data_type}")
    fields = proto.content.decode("utf-8", "replace").split()
    try:
        # Caffe2 reads "<max_elements> <frozen>" and keeps its defaults for missing fields.
        max_elements = int(fields[0]) if fields else 2**63 - 1
        frozen = bool(int(fields[1])) if len(fields) > 1 else False
    except ValueError as e:
        raise CheckpointError(f"index content must be '<max_elements> <frozen>', got {proto.content!r}") from e
    index = Index(kind, max_elements)
    index.load(keys.tolist())
    index.frozen = frozen
    return index


def _map_type(m: BlobMap) -> str:
    try:
        return f"(std::unordered_map<{_C_INT[np.dtype(m.key_dtype)]}, {_C_INT[np.dtype(m.value_dtype)]}>)"
    except KeyError:
        raise CheckpointError(
            f"a map of {m.key_dtype} -> {m.value_dtype} cannot be saved: Caffe2's maps are int32/int64 to int32/int64"
        ) from None


def _encode_map(name: str, m: BlobMap) -> pb.BlobProto:
    keys = np.array(list(m.keys()), m.key_dtype)
    values = np.array(list(m.values()), m.value_dtype)
    protos = pb.TensorProtos(protos=[tensor_record(name, keys), tensor_record(name, values)])
    return pb.BlobProto(type=_map_type(m), content=protos.SerializeToString())


def _is_map_type(type_name: str) -> bool:
    return type_name.startswith("(std::unordered_map<") and type_name.endswith(">)")


def _decode_map(proto: pb.BlobProto) -> BlobMap:
    inner = [p.strip() for p in proto.type[len("(std::unordered_map<") : -2].split(",")]
    if len(inner) != 2 or any(t not in _NP_INT for t in inner):
        raise CheckpointError(f"unsupported map type '{proto.type}' (int32_t / int64_t keys and values)")
    protos = pb.TensorProtos()
    try:
        protos.ParseFromString(proto.content)
    except DecodeError as e:
        raise CheckpointError(f"map content is not a TensorProtos: {e}") from e
    if len(protos.protos) != 2:
        raise CheckpointError(f"map content must hold 2 tensors (keys, values), got {len(protos.protos)}")
    keys = tensor_from_record(protos.protos[0], "map keys").reshape(-1)
    values = tensor_from_record(protos.protos[1], "map values").reshape(-1)
    if keys.size != values.size:
        raise CheckpointError(f"map has {keys.size} keys but {values.size} values")
    m = BlobMap(_NP_INT[inner[0]], _NP_INT[inner[1]])
    for k, v in zip(keys.tolist(), values.tolist(), strict=True):
        m.setdefault(k, v)  # Caffe2 emplaces: the first of repeated keys wins
    return m


register_blob_codec(BlobCodec(Counter, COUNTER_TYPE, _encode_counter, _decode_counter))  # type: ignore[arg-type]
register_blob_codec(BlobCodec(Index, INDEX_TYPE, _encode_index, _decode_index))  # type: ignore[arg-type]
register_blob_codec(BlobCodec(BlobMap, _is_map_type, _encode_map, _decode_map))  # type: ignore[arg-type]
