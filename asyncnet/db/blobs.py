"""Blobs <-> serialized ``BlobProto`` records, chunked the way Caffe2's Save writes them.

Facts from Caffe2 (``caffe2/core/blob_serialization.{h,cc}``, ``caffe2/operators/load_save_op*.cc``):

* A tensor blob becomes one or more ``BlobProto{name, type: "Tensor", tensor}``
  records; each ``tensor`` carries the full ``dims``, its ``data_type``, its
  ``name``, ``device_detail`` (``device_type: 0`` for CPU) and a ``segment``
  [begin, end) of the flat data. The record key is
  ``name + "#%" + str(begin // chunk_size)`` (``kChunkIdSeparator = "#%"``),
  even for a tensor stored in a single chunk; an empty tensor still gets one
  record ``name#%0`` with segment [0, 0).
* The default chunk size is 1,000,000 elements (``caffe2_tensor_chunk_size``).
* A ``std::string`` blob becomes ``BlobProto{name, type: "std::string", content}``
  under the key ``name`` (no chunk suffix).
* On load the blob name is the key up to the first ``"#%"``, then
  ``strip_prefix`` (everything up to and including its first occurrence is
  dropped) and ``add_prefix`` apply. Every tensor must end up fully covered by
  its segments ("Data size mismatch for blob ...").
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from google.protobuf.message import DecodeError

from asyncnet.errors import AsyncNetError, CheckpointError
from asyncnet.proto import caffe2_pb2 as pb
from asyncnet.serde import checked_numel, numpy_dtype, numpy_to_tensor, parse_message, tensor_data

CHUNK_SEPARATOR = "#%"
DEFAULT_CHUNK_SIZE = 1_000_000
TENSOR_TYPE = "Tensor"
STRING_TYPE = "std::string"


def blob_name_from_key(key: str, strip_prefix: str = "", add_prefix: str = "") -> str:
    """The blob a db key belongs to (Caffe2's ``buildBlobNameFromDbKey``)."""
    name = key.split(CHUNK_SEPARATOR, 1)[0]
    if strip_prefix:
        at = name.find(strip_prefix)
        if at >= 0:
            name = name[at + len(strip_prefix) :]
    return add_prefix + name


@dataclass(frozen=True)
class BlobCodec:
    """How a non-tensor blob type (counters, indexes, ...) is saved: Caffe2's BlobProto ``type`` name,
    ``encode(value, proto)`` filling the proto's tensor / content, ``decode(proto) -> value``."""

    cls: type[Any]
    type_name: str
    encode: Callable[[Any, pb.BlobProto], None]
    decode: Callable[[pb.BlobProto], Any]


_CODECS_BY_CLASS: dict[type[Any], BlobCodec] = {}
_CODECS_BY_TYPE: dict[str, BlobCodec] = {}


def register_blob_codec(codec: BlobCodec) -> None:
    """Make values of ``codec.cls`` savable by Save / checkpoints (ops modules register their handles)."""
    _CODECS_BY_CLASS[codec.cls] = codec
    _CODECS_BY_TYPE[codec.type_name] = codec


def serialize_blob(name: str, value: Any, chunk_size: int = DEFAULT_CHUNK_SIZE) -> list[tuple[str, bytes]]:
    """``(key, serialized BlobProto)`` records for one blob.

    Arrays (any Caffe2 dtype, object arrays of str/bytes as STRING) are chunked
    by ``chunk_size`` elements (<= 0: one chunk); ``str``/``bytes`` values are
    stored as ``std::string`` blobs. Anything else cannot be saved.
    """
    if isinstance(value, (str, bytes)):
        proto = pb.BlobProto(name=name, type=STRING_TYPE)
        proto.content = value.encode("utf-8") if isinstance(value, str) else value
        return [(name, proto.SerializeToString())]
    if isinstance(value, (np.ndarray, np.generic, int, float, bool)):
        arr = np.asarray(value)
        if arr.dtype.kind in "SU":
            arr = arr.astype(object)
        flat = arr.reshape(-1)
        total = int(flat.size)
        step = total + 1 if chunk_size <= 0 else chunk_size
        records = []
        begin = 0
        while True:
            end = min(begin + step, total)
            try:
                tensor = numpy_to_tensor(flat[begin:end], name=name)
            except AsyncNetError as e:
                raise CheckpointError(f"blob '{name}': cannot save: {e}") from e
            del tensor.dims[:]
            tensor.dims.extend(int(d) for d in arr.shape)
            tensor.segment.begin = begin
            tensor.segment.end = end
            # Caffe2's TensorSerializer records the tensor's device: CPU here.
            tensor.device_detail.device_type = 0
            proto = pb.BlobProto(name=name, type=TENSOR_TYPE)
            proto.tensor.CopyFrom(tensor)
            records.append((f"{name}{CHUNK_SEPARATOR}{begin // step}", proto.SerializeToString()))
            begin = end
            if begin >= total:
                break
        return records
    codec = _CODECS_BY_CLASS.get(type(value))
    if codec is not None:
        proto = pb.BlobProto(name=name, type=codec.type_name)
        codec.encode(value, proto)
        return [(name, proto.SerializeToString())]
    kinds = ", ".join(sorted(c.__name__ for c in _CODECS_BY_CLASS))
    raise CheckpointError(
        f"blob '{name}': cannot save a value of type {type(value).__name__} (arrays, strings and {kinds} only)"
    )


@dataclass
class _Partial:
    dims: tuple[int, ...]
    data_type: int
    data: np.ndarray
    spans: list[tuple[int, int]] = field(default_factory=list)
    covered: int = 0


class BlobAssembler:
    """Collects BlobProto records (chunks in any order) into complete blobs.

    Every damaged, conflicting or incomplete record raises CheckpointError
    naming ``source``, the record and the blob.
    """

    def __init__(self, source: str) -> None:
        self.source = source
        self._tensors: dict[str, _Partial] = {}
        self._others: dict[str, Any] = {}
        self.order: list[str] = []

    def _fail(self, where: str, blob: str, problem: str) -> CheckpointError:
        return CheckpointError(f"{self.source}: {where}, blob '{blob}': {problem}")

    def parse(self, value: bytes, where: str) -> pb.BlobProto:
        """Parse one record value as BlobProto."""
        try:
            return parse_message(value, pb.BlobProto, source=f"{self.source} {where}", text=False)
        except (AsyncNetError, DecodeError) as e:
            raise CheckpointError(f"{self.source}: {where}: not a BlobProto: {e}") from e

    def add(self, blob: str, proto: pb.BlobProto, where: str) -> None:
        """Add one record's BlobProto under blob name ``blob``."""
        if proto.HasField("content_num_chunks") or proto.HasField("qtensor"):
            raise self._fail(where, blob, "chunked custom-type or quantized blobs are not supported")
        if blob in self._others:
            raise self._fail(where, blob, "appears twice")
        if proto.type == TENSOR_TYPE or (not proto.type and proto.HasField("tensor")):
            self.add_tensor(blob, proto.tensor, where)
        elif proto.type == STRING_TYPE:
            if blob in self._tensors:
                raise self._fail(where, blob, "is both a tensor and a string")
            self._others[blob] = bytes(proto.content)
            self.order.append(blob)
        elif proto.type in _CODECS_BY_TYPE:
            if blob in self._tensors:
                raise self._fail(where, blob, f"is both a tensor and a {proto.type}")
            try:
                self._others[blob] = _CODECS_BY_TYPE[proto.type].decode(proto)
            except (AsyncNetError, ValueError) as e:
                raise self._fail(where, blob, f"bad {proto.type}: {e}") from e
            self.order.append(blob)
        else:
            raise self._fail(where, blob, f"unsupported blob type '{proto.type}'")

    def add_tensor(self, blob: str, t: pb.TensorProto, where: str) -> None:
        """Add one (possibly partial) TensorProto of ``blob``."""
        try:
            dims = tuple(int(d) for d in t.dims)
            total = checked_numel(dims, f"tensor '{blob}'")
            chunk = tensor_data(t)
            dtype = numpy_dtype(t.data_type)
        except AsyncNetError as e:
            raise self._fail(where, blob, str(e)) from e
        begin = t.segment.begin if t.HasField("segment") else 0
        end = begin + int(chunk.size)
        part = self._tensors.get(blob)
        if part is None:
            if blob in self._others:
                raise self._fail(where, blob, "is both a tensor and a string")
            part = _Partial(dims, int(t.data_type), np.empty(total, dtype=dtype))
            self._tensors[blob] = part
            self.order.append(blob)
        elif part.dims != dims or part.data_type != t.data_type:
            raise self._fail(
                where,
                blob,
                f"chunk has dims {list(dims)} type {t.data_type}, earlier chunks had {list(part.dims)} "
                f"type {part.data_type}",
            )
        if not t.HasField("segment") and part.spans:
            raise self._fail(where, blob, "appears twice")
        for lo, hi in part.spans:
            if begin < hi and lo < end or (begin == end == lo == hi):
                raise self._fail(where, blob, f"chunk [{begin}, {end}) overlaps an earlier chunk [{lo}, {hi})")
        part.spans.append((begin, end))
        part.data[begin:end] = chunk
        part.covered += end - begin

    def result(self) -> dict[str, Any]:
        """Name -> value; raises when a tensor's chunks do not cover it."""
        out: dict[str, Any] = {}
        for name in self.order:
            if name in self._others:
                out[name] = self._others[name]
                continue
            part = self._tensors[name]
            if part.covered != part.data.size:
                raise CheckpointError(
                    f"{self.source}: blob '{name}' is incomplete: chunks cover {part.covered} of "
                    f"{part.data.size} elements (truncated or damaged checkpoint)"
                )
            out[name] = part.data.reshape(part.dims)
        return out
