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
* Other blob types (counters, indices, maps) had their own registered serializers; the op modules
  that own those types register a :class:`BlobCodec` here. They are keyed by the bare name too.
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


@dataclass(frozen=True)
class BlobCodec:
    """How one non-tensor blob type is saved, as Caffe2's registered blob serializers did.

    ``encode(name, value)`` fills a ``BlobProto`` (its ``type`` is set by the codec); ``decode(proto)``
    rebuilds the value. ``kind`` is the Python class the codec saves (instances of subclasses too).
    """

    kind: type
    type_name: str | Callable[[str], bool]
    encode: Callable[[str, Any], pb.BlobProto]
    decode: Callable[[pb.BlobProto], Any]

    def reads(self, type_name: str) -> bool:
        """Whether this codec decodes BlobProto records of ``type_name``."""
        return self.type_name(type_name) if callable(self.type_name) else self.type_name == type_name


_CODECS: list[BlobCodec] = []


def register_blob_codec(codec: BlobCodec) -> None:
    """Make :func:`serialize_blob` and :class:`BlobAssembler` handle ``codec.kind`` values."""
    _CODECS[:] = [c for c in _CODECS if c.kind is not codec.kind]
    _CODECS.append(codec)


def tensor_record(name: str, value: Any) -> pb.TensorProto:
    """One whole-tensor ``TensorProto`` (segment [0, n), CPU device), as Caffe2's TensorSerializer."""
    arr = np.asarray(value)
    if arr.dtype.kind in "SU":
        arr = arr.astype(object)
    try:
        tensor = numpy_to_tensor(arr.reshape(-1), name=name)
    except AsyncNetError as e:
        raise CheckpointError(f"blob '{name}': cannot save: {e}") from e
    del tensor.dims[:]
    tensor.dims.extend(int(d) for d in arr.shape)
    tensor.segment.begin, tensor.segment.end = 0, int(arr.size)
    tensor.device_detail.device_type = 0
    return tensor


def tensor_from_record(t: pb.TensorProto, what: str) -> np.ndarray:
    """The array one whole-tensor ``TensorProto`` holds."""
    try:
        dims = tuple(int(d) for d in t.dims)
        checked_numel(dims, what)
        return tensor_data(t).reshape(dims)
    except (AsyncNetError, ValueError) as e:
        raise CheckpointError(f"{what}: {e}") from e


def blob_name_from_key(key: str, strip_prefix: str = "", add_prefix: str = "") -> str:
    """The blob a db key belongs to (Caffe2's ``buildBlobNameFromDbKey``)."""
    name = key.split(CHUNK_SEPARATOR, 1)[0]
    if strip_prefix:
        at = name.find(strip_prefix)
        if at >= 0:
            name = name[at + len(strip_prefix) :]
    return add_prefix + name


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
    for codec in _CODECS:
        if isinstance(value, codec.kind):
            proto = codec.encode(name, value)
            proto.name = name
            # Caffe2 keys custom-type blobs by the bare name (no chunk suffix).
            return [(name, proto.SerializeToString())]
    kinds = ", ".join(sorted(c.kind.__name__ for c in _CODECS))
    raise CheckpointError(
        f"blob '{name}': cannot save a value of type {type(value).__name__} (arrays, strings"
        + (f" and {kinds}" if kinds else "")
        + " only)"
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
        else:
            codec = next((c for c in _CODECS if c.reads(proto.type)), None)
            if codec is None:
                known = [TENSOR_TYPE, STRING_TYPE] + [c.type_name for c in _CODECS if isinstance(c.type_name, str)]
                raise self._fail(where, blob, f"unsupported blob type '{proto.type}' (known: {', '.join(known)})")
            if blob in self._tensors:
                raise self._fail(where, blob, f"is both a tensor and a {proto.type}")
            try:
                self._others[blob] = codec.decode(proto)
            except AsyncNetError as e:
                raise self._fail(where, blob, str(e)) from e
            self.order.append(blob)

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
