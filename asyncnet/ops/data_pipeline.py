"""Data-pipeline helpers: tensor vectors (CreateTensorVector, TensorVectorSize, ConcatTensorVector),
maps (CreateMap, KeyValueToMap, MapToKeyValue) and the text file reader (CreateTextFileReader,
TextFileReaderRead, async on the shared I/O pool; paths go through the workspace's I/O policy)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

import numpy as np

from asyncnet.errors import ArgumentError
from asyncnet.executors.pools import shared_io
from asyncnet.fileaccess import file_op, reads
from asyncnet.iopolicy import op_read_path
from asyncnet.opinfo import OpInfo
from asyncnet.proto import caffe2_pb2 as pb
from asyncnet.registry import register_op
from asyncnet.schema import Arg, TensorInfo
from asyncnet.serde import numpy_dtype


class TensorVector(list[Any]):
    """A vector of tensors held in one blob (Caffe2's std::vector<Tensor>)."""


def _handle_infer(op: OpInfo, ins: list[TensorInfo]) -> list[TensorInfo]:
    return [TensorInfo(None, None)] * len(op.outputs)


@register_op("CreateTensorVector", inputs=0, infer=_handle_infer, doc="Create an empty tensor vector blob.")
def create_tensor_vector(op: OpInfo) -> Callable[..., Any]:
    return lambda: (TensorVector(),)


def _vector(op: OpInfo, v: Any) -> TensorVector:
    if not isinstance(v, TensorVector):
        raise ArgumentError(f"{op.label()}: input 0 must be a tensor vector, got {type(v).__name__}")
    return v


@register_op(
    "TensorVectorSize",
    infer=lambda op, ins: [TensorInfo((), np.dtype(np.int32))],
    doc="The number of tensors in the vector (int32 scalar).",
    input_names=("tensor_vector",),
    output_names=("size",),
)
def tensor_vector_size(op: OpInfo) -> Callable[..., Any]:
    return lambda v: (np.array(len(_vector(op, v)), np.int32),)


@register_op(
    "ConcatTensorVector",
    infer=lambda op, ins: [TensorInfo(None, None)],
    doc="Concatenate the vector's tensors along dim 0.",
    input_names=("vector_of_tensor",),
    output_names=("tensor",),
)
def concat_tensor_vector(op: OpInfo) -> Callable[..., Any]:
    def run(v: Any) -> tuple[np.ndarray]:
        items = [np.asarray(t) for t in _vector(op, v)]
        if not items:
            raise ArgumentError(f"{op.label()}: the tensor vector is empty")
        return (np.concatenate(items),)

    return run


# -- maps ---------------------------------------------------------------------------------------------


class BlobMap(dict[Any, Any]):
    """A key -> value map held in one blob (Caffe2's MapType)."""

    def __init__(self, key_dtype: np.dtype[Any], value_dtype: np.dtype[Any]) -> None:
        super().__init__()
        self.key_dtype, self.value_dtype = key_dtype, value_dtype


@register_op(
    "CreateMap",
    inputs=0,
    args=(
        Arg("key_dtype", pb.TensorProto.INT32, "key data type"),
        Arg("value_dtype", pb.TensorProto.INT32, "value type"),
    ),
    infer=_handle_infer,
    doc="Create an empty map blob (keys and values of the given TensorProto data types).",
    output_names=("map_handle",),
)
def create_map(op: OpInfo) -> Callable[..., Any]:
    kd, vd = numpy_dtype(op.int_arg("key_dtype")), numpy_dtype(op.int_arg("value_dtype"))
    return lambda: (BlobMap(kd, vd),)


@register_op(
    "KeyValueToMap",
    inputs=2,
    infer=_handle_infer,
    doc="A map from the 1-D keys to the 1-D values (later duplicates win).",
    input_names=("keys", "values"),
    output_names=("map",),
)
def key_value_to_map(op: OpInfo) -> Callable[..., Any]:
    def run(keys: Any, values: Any) -> tuple[BlobMap]:
        k, v = np.asarray(keys).reshape(-1), np.asarray(values).reshape(-1)
        if k.size != v.size:
            raise ArgumentError(f"{op.label()}: {k.size} keys for {v.size} values")
        m = BlobMap(k.dtype, v.dtype)
        m.update(zip(k.tolist(), v.tolist()))
        return (m,)

    return run


@register_op(
    "MapToKeyValue",
    outputs=2,
    infer=lambda op, ins: [TensorInfo((None,), None), TensorInfo((None,), None)],
    doc="The map's keys and values as two 1-D tensors (insertion order).",
    input_names=("map",),
    output_names=("keys", "values"),
)
def map_to_key_value(op: OpInfo) -> Callable[..., Any]:
    def run(m: Any) -> tuple[np.ndarray, np.ndarray]:
        if not isinstance(m, BlobMap):
            raise ArgumentError(f"{op.label()}: input must be a map (from CreateMap or KeyValueToMap)")
        return np.array(list(m.keys()), m.key_dtype), np.array(list(m.values()), m.value_dtype)

    return run


# -- text file reader -------------------------------------------------------------------------------------


class TextFileReader:
    """Tab-separated lines of a file, read in batches for num_passes passes."""

    def __init__(self, path: str, num_passes: int, dtypes: list[np.dtype[Any]]) -> None:
        self.path, self.num_passes, self.dtypes = path, num_passes, dtypes
        self._lines: list[str] | None = None
        self._pos = 0
        self._pass = 0
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"TextFileReader({self.path!r}, pass {self._pass}/{self.num_passes})"

    def read(self, batch: int) -> list[np.ndarray]:
        with self._lock:
            if self._lines is None:
                with open(self.path, encoding="utf-8") as f:
                    self._lines = [ln.rstrip("\n") for ln in f if ln.strip("\n")]
            rows: list[list[str]] = []
            while len(rows) < batch and self._pass < self.num_passes and self._lines:
                rows.append(self._lines[self._pos].split("\t"))
                self._pos += 1
                if self._pos == len(self._lines):
                    self._pos, self._pass = 0, self._pass + 1
        cols: list[np.ndarray] = []
        for k, dt in enumerate(self.dtypes):
            if any(len(r) != len(self.dtypes) for r in rows):
                raise ArgumentError(f"{self.path}: a line does not have {len(self.dtypes)} tab-separated fields")
            vals = [r[k] for r in rows]
            cols.append(
                np.array([v.encode("utf-8") for v in vals], dtype=object)
                if dt.kind == "O"
                else np.array(vals, dtype=dt)
            )
        return cols


@register_op(
    "CreateTextFileReader",
    inputs=0,
    args=(
        Arg("filename", "", "the file (checked by the workspace's I/O policy)"),
        Arg("num_passes", 1, "how many times the file is read"),
        Arg("field_types", [], "TensorProto data type of each tab-separated field (STRING for text)"),
    ),
    infer=_handle_infer,
    doc="Create a reader of a tab-separated text file (one record per line).",
    output_names=("handler",),
)
def create_text_file_reader(op: OpInfo) -> Callable[..., Any]:
    path = op_read_path(op, op.str_arg("filename"))
    types = [numpy_dtype(int(t)) for t in op.ints_arg("field_types")]
    if not types:
        raise ArgumentError(f"{op.label()}: field_types must name at least one field type")
    passes = op.int_arg("num_passes")
    return lambda: (TextFileReader(path, passes, types),)


file_op("CreateTextFileReader", reads("filename"))


@register_op(
    "TextFileReaderRead",
    outputs=(1, -1),
    args=(Arg("batch_size", 1, "lines per read"),),
    infer=_handle_infer,
    is_async=True,
    doc="Read up to batch_size lines (on the shared I/O pool): one output per field; outputs are empty "
    "once every pass is done.",
    input_names=("handler",),
)
def text_file_reader_read(op: OpInfo) -> Callable[..., Any]:
    batch = op.int_arg("batch_size")
    if batch < 1:
        raise ArgumentError(f"{op.label()}: batch_size must be positive, got {batch}")

    def run(handler: Any) -> Future[Any]:
        if not isinstance(handler, TextFileReader):
            raise ArgumentError(f"{op.label()}: input must be a reader from CreateTextFileReader")
        if len(op.outputs) != len(handler.dtypes):
            raise ArgumentError(f"{op.label()}: {len(op.outputs)} outputs for {len(handler.dtypes)} fields")
        return shared_io().submit(handler.read, batch)

    return run


# -- PackRecords / UnPackRecords ------------------------------------------------------------------------------


def _chains(fields: list[str]) -> list[list[int]]:
    """For each field, the indices of the ``<prefix>:lengths`` fields that nest it, outermost first."""
    index = {f: k for k, f in enumerate(fields)}
    out = []
    for f in fields:
        parts = f.split(":")
        chain = []
        for depth in range(1, len(parts)):
            lengths_field = ":".join(parts[:depth]) + ":lengths"
            if lengths_field in index and lengths_field != f:
                chain.append(index[lengths_field])
        out.append(chain)
    return out


def _record_ranges(fields: list[str], values: list[np.ndarray], n: int) -> list[list[tuple[int, int]]]:
    """ranges[i][k]: the slice of field k that belongs to record i."""
    chains = _chains(fields)
    cums = {
        k: np.concatenate([[0], np.cumsum(np.asarray(values[k]).reshape(-1).astype(np.int64))])
        for c in chains
        for k in c
    }
    ranges = []
    for i in range(n):
        row = []
        for chain in chains:
            lo, hi = i, i + 1
            for k in chain:
                lo, hi = int(cums[k][lo]), int(cums[k][hi])
            row.append((lo, hi))
        ranges.append(row)
    return ranges


@register_op(
    "PackRecords",
    inputs=(1, -1),
    args=(Arg("fields", [], "the schema's field names (nested fields follow their '<prefix>:lengths' field)"),),
    infer=lambda op, ins: [TensorInfo((None,), np.dtype(object))],
    doc="Pack a dataset given as one tensor per field (schema `fields`) into a 1-D tensor of records; "
    "record i holds, for every field, the slice that belongs to row i (nested through the lengths fields).",
    output_names=("tensor",),
)
def pack_records(op: OpInfo) -> Callable[..., Any]:
    fields = op.strs_arg("fields")
    if len(fields) != len(op.inputs):
        raise ArgumentError(f"{op.label()}: `fields` names {len(fields)} fields for {len(op.inputs)} inputs")

    def run(*xs: Any) -> tuple[np.ndarray]:
        values = [np.asarray(x) for x in xs]
        tops = [k for k, c in enumerate(_chains(fields)) if not c]
        n = values[tops[0]].shape[0] if tops and values[tops[0]].ndim else 0
        out = np.empty(n, dtype=object)
        for i, row in enumerate(_record_ranges(fields, values, n)):
            out[i] = [values[k][lo:hi] for k, (lo, hi) in enumerate(row)]
        return (out,)

    return run


@register_op(
    "UnPackRecords",
    inputs=(1, -1),
    outputs=(1, -1),
    args=(Arg("fields", [], "the schema's field names"),),
    infer=lambda op, ins: [TensorInfo(None, None)] * len(op.outputs),
    doc="Inverse of PackRecords: concatenate each field over the records (optional inputs 1.. give the "
    "fields' dtypes and trailing shapes for an empty input).",
    input_names=("packed_tensor",),
)
def unpack_records(op: OpInfo) -> Callable[..., Any]:
    fields = op.strs_arg("fields")
    if len(fields) != len(op.outputs):
        raise ArgumentError(f"{op.label()}: `fields` names {len(fields)} fields for {len(op.outputs)} outputs")

    def run(packed: Any, *protos: Any) -> list[np.ndarray]:
        recs = list(np.asarray(packed, dtype=object).reshape(-1))
        outs = []
        for k in range(len(fields)):
            parts = [np.asarray(r[k]) for r in recs]
            if parts:
                outs.append(np.concatenate(parts))
            elif k < len(protos):
                p = np.asarray(protos[k])
                outs.append(np.zeros((0, *p.shape[1:]), p.dtype))
            else:
                outs.append(np.zeros(0, np.float32))
        return outs

    return run
