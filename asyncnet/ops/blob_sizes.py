"""EstimateAllBlobSizes: Caffe2's estimate of how many bytes Save would write for every blob of the
workspace (per chunk: blob name + 50 bytes of protobuf overhead; per element: a size by data type)."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import numpy as np

from asyncnet.errors import ArgumentError
from asyncnet.opinfo import OpInfo
from asyncnet.ops._util import info
from asyncnet.proto import caffe2_pb2 as pb
from asyncnet.registry import register_op
from asyncnet.schema import Arg

DEFAULT_CHUNK = 1_000_000
CHUNK_OVERHEAD = 50
# Bytes per element as Caffe2 estimated them: varint-encoded small integers and halves take ~3 bytes,
# strings are guessed at 50 (the serializer here writes floats plainly: no bfloat16).
_PER_ELEMENT = {"f": {2: 3, 4: 4, 8: 8}, "i": {1: 2, 2: 3, 4: 4, 8: 8}, "u": {1: 2, 2: 3, 4: 4, 8: 8}, "b": {1: 1}}


def element_size(dtype: np.dtype[Any]) -> int:
    """Caffe2's estimated serialized bytes per element of ``dtype``."""
    if dtype.kind in "OSU":
        return 50
    return _PER_ELEMENT.get(dtype.kind, {}).get(dtype.itemsize, dtype.itemsize)


def serialization_options(op: OpInfo) -> list[pb.BlobSerializationOptions]:
    """The entries of the op's `options` argument (a SerializationOptions, or its serialized bytes)."""
    raw = op.arg("options", None)
    if raw is None:
        return []
    msg = pb.SerializationOptions()
    if isinstance(raw, pb.SerializationOptions):
        msg.CopyFrom(raw)
    elif isinstance(raw, (bytes, str)):
        try:
            msg.ParseFromString(raw.encode("latin-1") if isinstance(raw, str) else raw)
        except Exception as e:  # noqa: BLE001 - any parse failure is a bad argument
            raise ArgumentError(f"{op.label()}: argument 'options' is not a SerializationOptions: {e}") from e
    else:
        raise ArgumentError(
            f"{op.label()}: argument 'options' must be a SerializationOptions, got {type(raw).__name__}"
        )
    return list(msg.options)


def estimate(name: str, value: Any, opts: list[pb.BlobSerializationOptions]) -> int:
    """The estimated serialized size of one blob."""
    if isinstance(value, (bytes, str)):
        return len(name) + len(value) + 20
    if not isinstance(value, np.ndarray):
        return 0  # Caffe2 had no estimate for other blob types either
    chunk = DEFAULT_CHUNK
    for o in opts:
        if not o.blob_name_regex or re.fullmatch(o.blob_name_regex, name):
            chunk = value.size + 1 if o.chunk_size == -1 else (o.chunk_size or DEFAULT_CHUNK)
            break
    chunks = (value.size + chunk - 1) // chunk
    return chunks * (len(name) + CHUNK_OVERHEAD) + value.size * element_size(value.dtype)


@register_op(
    "EstimateAllBlobSizes",
    inputs=0,
    outputs=2,
    args=(
        Arg("include_shared", 1, "also list the blobs of parent workspaces"),
        Arg("options", None, "SerializationOptions: per blob-name regex, the chunk_size Save would use"),
    ),
    infer=lambda op, ins: [info((None,), object), info((None,), np.int64)],
    doc="Names (strings) and estimated serialized sizes (int64 bytes) of every blob in the workspace, this "
    "op's outputs included: per chunk the name plus 50 bytes, per element 4 (float32), 8 (int64/double), "
    "~3 (16-bit types), ~2 (8-bit), 1 (bool), 50 (string).",
    output_names=("blob_names", "blob_sizes"),
)
def estimate_all_blob_sizes(op: OpInfo) -> Callable[..., Any]:
    ws = op.workspace
    if ws is None:
        raise ArgumentError(f"{op.label()}: EstimateAllBlobSizes needs a workspace")
    shared = op.bool_arg("include_shared")
    opts = serialization_options(op)

    def run() -> tuple[np.ndarray, np.ndarray]:
        names = ws.blobs() if shared else ws.local_blobs()
        names = sorted({*names, *op.outputs})
        n = len(names)
        sizes = []
        for name in names:
            if name == op.outputs[0]:
                value: Any = np.empty(n, dtype=object)  # as Caffe2 sized its outputs before estimating
            elif name == op.outputs[1]:
                value = np.zeros(n, np.int64)
            else:
                value = ws.fetch(name)
            sizes.append(estimate(name, value, opts))
        return np.array([s.encode("utf-8") for s in names], dtype=object), np.array(sizes, np.int64)

    return run
