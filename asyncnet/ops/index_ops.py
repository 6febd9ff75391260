"""Key -> id indices held in a blob: IntIndexCreate, LongIndexCreate, StringIndexCreate, IndexGet,
IndexLoad, IndexStore, IndexFreeze, IndexSize.

Ids start at 1 (0 means "unknown"); an unfrozen index gives each new key the next id, a frozen one
answers 0 for keys it does not hold. The index object is shared by every op reading its blob and
is guarded by a lock, so concurrent IndexGet ops are safe.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import numpy as np

from asyncnet.db.blobs import BlobCodec, register_blob_codec
from asyncnet.errors import ArgumentError
from asyncnet.opinfo import OpInfo
from asyncnet.proto import caffe2_pb2 as pb
from asyncnet.registry import register_op
from asyncnet.schema import Arg, TensorInfo
from asyncnet.serde import numpy_to_tensor, tensor_to_numpy

INT64 = np.dtype(np.int64)
_INT_MAX = 2**31 - 1


class Index:
    """A growing key -> id map (Caffe2's Index<T>)."""

    def __init__(self, key_kind: str, max_elements: int) -> None:
        self.key_kind = key_kind
        self.max_elements = max_elements
        self.frozen = False
        self._ids: dict[Any, int] = {}
        self._next = 1
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"Index({self.key_kind}, size={self._next}, frozen={self.frozen})"

    def key(self, v: Any) -> Any:
        if self.key_kind == "string":
            return v.decode("utf-8") if isinstance(v, bytes) else str(v)
        return int(v)

    def get(self, keys: list[Any]) -> list[int]:
        with self._lock:
            out = []
            for k in map(self.key, keys):
                got = self._ids.get(k)
                if got is None and not self.frozen:
                    if self._next >= self.max_elements:
                        raise ArgumentError(f"index is full: max_elements {self.max_elements} reached")
                    got = self._ids[k] = self._next
                    self._next += 1
                out.append(0 if got is None else got)
            return out

    def load(self, keys: list[Any]) -> None:
        with self._lock:
            if len(keys) > self.max_elements:
                raise ArgumentError(f"cannot load {len(keys)} keys into an index of max_elements {self.max_elements}")
            for k in map(self.key, keys):
                if k in self._ids:
                    raise ArgumentError(f"cannot load the index: key {k!r} is repeated or already present")
                self._ids[k] = self._next
                self._next += 1

    def store(self) -> list[Any]:
        with self._lock:
            out: list[Any] = [None] * (self._next - 1)
            for k, i in self._ids.items():
                out[i - 1] = k
            return out

    def size(self) -> int:
        with self._lock:
            return self._next


_KIND_OF_TYPE = {pb.TensorProto.STRING: "string", pb.TensorProto.INT32: "int", pb.TensorProto.INT64: "long"}


def _encode_index(index: Index, proto: pb.BlobProto) -> None:
    # Caffe2's IndexSerializer: the stored keys as a tensor (entry i has id i + 1) and the content
    # "<max_elements> <frozen>".
    proto.tensor.CopyFrom(numpy_to_tensor(_keys_array(index, index.store())))
    proto.content = f"{index.max_elements} {int(index.frozen)}".encode()


def _decode_index(proto: pb.BlobProto) -> Index:
    kind = _KIND_OF_TYPE.get(proto.tensor.data_type)
    fields = proto.content.decode("utf-8", "replace").split()
    if kind is None or len(fields) != 2:
        raise ArgumentError(
            f"a saved index needs a STRING/INT32/INT64 key tensor and content '<max_elements> <frozen>', "
            f"got data_type {proto.tensor.data_type} and content {proto.content[:40]!r}"
        )
    index = Index(kind, int(fields[0]))
    index.load(list(tensor_to_numpy(proto.tensor).reshape(-1)))
    index.frozen = fields[1] not in ("0", "false")
    return index


register_blob_codec(BlobCodec(Index, "std::unique_ptr<caffe2::IndexBase>", _encode_index, _decode_index))


def _handle(op: OpInfo, v: Any) -> Index:
    if not isinstance(v, Index):
        raise ArgumentError(
            f"{op.label()}: input 0 must be an index handle (from *IndexCreate), got {type(v).__name__}"
        )
    return v


def _keys_array(index: Index, keys: list[Any]) -> np.ndarray:
    if index.key_kind == "string":
        return np.array(keys, dtype=object)
    return np.array(keys, dtype=np.int32 if index.key_kind == "int" else np.int64)


for _name, _kind in (("IntIndexCreate", "int"), ("LongIndexCreate", "long"), ("StringIndexCreate", "string")):

    def _create(op: OpInfo, kind: str = _kind) -> Callable[..., Any]:
        max_elements = op.int_arg("max_elements")
        if max_elements < 1:
            raise ArgumentError(f"{op.label()}: max_elements must be positive, got {max_elements}")
        return lambda: (Index(kind, max_elements),)

    register_op(
        _name,
        inputs=0,
        args=(Arg("max_elements", _INT_MAX, "the most keys the index may hold"),),
        infer=lambda op, ins: [TensorInfo(None, None)],
        doc=f"Create an empty {_kind}-keyed index (a handle blob); ids start at 1, 0 means unknown.",
        output_names=("handle",),
    )(_create)


@register_op(
    "IndexGet",
    inputs=2,
    infer=lambda op, ins: [TensorInfo(ins[1].shape, INT64)],
    doc="The id of each key (int64, keys' shape): new keys get the next id unless the index is frozen, "
    "in which case unknown keys give 0.",
    input_names=("handle", "keys"),
    output_names=("indices",),
)
def index_get(op: OpInfo) -> Callable[..., Any]:
    def run(handle: Any, keys: Any) -> tuple[np.ndarray]:
        index = _handle(op, handle)
        k = np.asarray(keys)
        ids = index.get(k.reshape(-1).tolist())
        return (np.array(ids, dtype=np.int64).reshape(k.shape),)

    return run


@register_op(
    "IndexLoad",
    inputs=2,
    enforce_inplace=[(0, 0)],
    args=(Arg("skip_first_entry", 0, "ignore items[0] (a stored index's unknown-key slot)"),),
    infer=lambda op, ins: [ins[0]],
    doc="Load keys into an empty part of the index, giving them consecutive ids in order.",
    input_names=("handle", "items"),
    output_names=("handle",),
)
def index_load(op: OpInfo) -> Callable[..., Any]:
    skip = op.bool_arg("skip_first_entry")

    def run(handle: Any, items: Any) -> tuple[Index]:
        index = _handle(op, handle)
        keys = np.asarray(items).reshape(-1).tolist()
        index.load(keys[1:] if skip else keys)
        return (index,)

    return run


@register_op(
    "IndexStore",
    infer=lambda op, ins: [TensorInfo((None,), None)],
    doc="The index's keys in id order (id 1 first).",
    input_names=("handle",),
    output_names=("items",),
)
def index_store(op: OpInfo) -> Callable[..., Any]:
    def run(handle: Any) -> tuple[np.ndarray]:
        index = _handle(op, handle)
        return (_keys_array(index, index.store()),)

    return run


@register_op(
    "IndexFreeze",
    enforce_inplace=[(0, 0)],
    infer=lambda op, ins: [ins[0]],
    doc="Freeze the index: from now on unknown keys get id 0 and nothing is added.",
    input_names=("handle",),
    output_names=("handle",),
)
def index_freeze(op: OpInfo) -> Callable[..., Any]:
    def run(handle: Any) -> tuple[Index]:
        index = _handle(op, handle)
        index.frozen = True
        return (index,)

    return run


@register_op(
    "IndexSize",
    infer=lambda op, ins: [TensorInfo((), INT64)],
    doc="The index's size as Caffe2 counts it: the number of keys plus one (the unknown id 0).",
    input_names=("handle",),
    output_names=("items",),
)
def index_size(op: OpInfo) -> Callable[..., Any]:
    return lambda handle: (np.array(_handle(op, handle).size(), dtype=np.int64),)
