"""Saving and loading whole checkpoints, atomically.

Two db types, under Caffe2's names (``MiniDB``/``ProtoDB`` are accepted too):

* ``minidb``: the record file of :mod:`asyncnet.db.minidb`; values are
  serialized BlobProtos, tensors chunked as in :mod:`asyncnet.db.blobs`.
* ``protodb``: one binary ``TensorProtos`` message (Caffe2's
  ``caffe2/db/protodb.cc``: key = tensor name, value = the TensorProto); each
  blob is stored as one whole tensor. Text TensorProtos files load too.

A save writes a temporary file in the target's folder, flushes and fsyncs it,
then renames it over the target (and fsyncs the folder): a process killed at
any point leaves either the previous checkpoint or the new one, never a mix.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from asyncnet.db.blobs import DEFAULT_CHUNK_SIZE, BlobAssembler, blob_name_from_key, serialize_blob
from asyncnet.db.minidb import encode_record, iter_records
from asyncnet.errors import AsyncNetError, CheckpointError, UnsupportedError
from asyncnet.proto import caffe2_pb2 as pb
from asyncnet.serde import atomic_output, numpy_to_tensor, parse_message

DB_TYPES = ("minidb", "protodb")
_ALIASES = {"minidb": "minidb", "MiniDB": "minidb", "protodb": "protodb", "ProtoDB": "protodb"}


def canonical_db_type(db_type: str) -> str:
    """``minidb`` or ``protodb`` for any accepted spelling; UnsupportedError otherwise."""
    try:
        return _ALIASES[db_type]
    except KeyError:
        raise UnsupportedError(
            f"db_type '{db_type}' is not supported; supported: {', '.join(DB_TYPES)} "
            "(leveldb, lmdb and rocksdb need native libraries asyncnet does not use)"
        ) from None


def save_checkpoint(
    path: str | os.PathLike[str],
    blobs: Mapping[str, Any],
    db_type: str = "minidb",
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    chunk_sizes: Mapping[str, int] | None = None,
) -> None:
    """Write ``blobs`` (name -> array or string) to ``path`` atomically.

    ``chunk_sizes`` overrides ``chunk_size`` (elements per minidb record; 0 = one record) per blob name.
    """
    kind = canonical_db_type(db_type)
    p = Path(path)
    try:
        if kind == "minidb":
            with atomic_output(p) as f:
                for name, value in blobs.items():
                    size = chunk_size if chunk_sizes is None else chunk_sizes.get(name, chunk_size)
                    for key, data in serialize_blob(name, value, size):
                        f.write(encode_record(key.encode("utf-8"), data))
        else:
            protos = pb.TensorProtos()
            for name, value in blobs.items():
                if not isinstance(value, (np.ndarray, np.generic, int, float, bool)):
                    raise CheckpointError(f"blob '{name}': protodb stores arrays only, got {type(value).__name__}")
                try:
                    protos.protos.append(numpy_to_tensor(value, name=name))
                except AsyncNetError as e:
                    raise CheckpointError(f"blob '{name}': cannot save: {e}") from e
            with atomic_output(p) as f:
                f.write(protos.SerializeToString())
    except OSError as e:
        raise CheckpointError(f"{p}: cannot write checkpoint: {e.strerror or e}") from e


def _read_bytes(p: Path) -> bytes:
    try:
        return p.read_bytes()
    except FileNotFoundError:
        raise CheckpointError(f"{p}: no such checkpoint") from None
    except IsADirectoryError:
        raise CheckpointError(f"{p}: is a directory, expected a checkpoint file") from None
    except OSError as e:
        raise CheckpointError(f"{p}: cannot read checkpoint: {e.strerror or e}") from e


def read_records(path: str | os.PathLike[str], db_type: str = "minidb") -> Iterator[tuple[str, str, bytes]]:
    """Yield ``(where, key, value)`` for each record: ``where`` names the record for messages.

    For protodb the value is a serialized BlobProto wrapping the stored
    TensorProto, so that both types feed the same assembler.
    """
    kind = canonical_db_type(db_type)
    p = Path(path)
    data = _read_bytes(p)
    if kind == "minidb":
        for index, key, value in iter_records(data, str(p)):
            try:
                text = key.decode("utf-8")
            except UnicodeDecodeError:
                raise CheckpointError(f"{p}: record #{index}: key {key[:60]!r} is not UTF-8") from None
            yield f"record #{index} '{text}'", text, value
        return
    try:
        protos = parse_message(data, pb.TensorProtos, source=str(p))
    except AsyncNetError as e:
        raise CheckpointError(f"{p}: not a readable protodb (TensorProtos): {e}") from e
    for index, t in enumerate(protos.protos):
        wrapped = pb.BlobProto(name=t.name, type="Tensor")
        wrapped.tensor.CopyFrom(t)
        yield f"tensor #{index} '{t.name}'", t.name, wrapped.SerializeToString()


def load_checkpoint(
    path: str | os.PathLike[str],
    db_type: str = "minidb",
    *,
    names: Mapping[str, Any] | None = None,
    strip_prefix: str = "",
    add_prefix: str = "",
) -> dict[str, Any]:
    """Every blob in the checkpoint (or only those in ``names``), complete or an error.

    Raises CheckpointError naming the file and the record for truncated,
    corrupt or incomplete data.
    """
    source = str(Path(path))
    asm = BlobAssembler(source)
    for where, key, value in read_records(path, db_type):
        blob = blob_name_from_key(key, strip_prefix, add_prefix)
        if names is not None and blob not in names:
            continue
        asm.add(blob, asm.parse(value, where), where)
    return asm.result()


def db_exists(path: str | os.PathLike[str], db_type: str = "minidb") -> bool:
    """Whether a db of that type exists at ``path`` (a file, for both types here)."""
    canonical_db_type(db_type)
    return Path(path).is_file()
