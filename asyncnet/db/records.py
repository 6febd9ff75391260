"""Example databases for training input: records of serialized ``TensorProtos``, one per example.

Caffe2 fed training from key/value databases (``CreateDB`` + ``TensorProtosDBInput``): each
value is a ``TensorProtos`` holding one tensor per output (e.g. an image and its label).
Two kinds here:

* ``minidb``: the record file of :mod:`asyncnet.db.minidb` (the layout ``Save`` writes),
  read whole into memory;
* ``lmdb``: an LMDB environment through the optional ``lmdb`` package (``asyncnet[lmdb]``),
  read with a cursor in key order.

A reader with ``num_shards`` > 1 sees the records whose index is ``shard_id`` modulo
``num_shards`` (Caffe2's DBReader skipped the others the same way), and wraps around at
the end, as an epoch loop does.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from asyncnet.db.minidb import encode_record, iter_records
from asyncnet.errors import AsyncNetError, CheckpointError, UnsupportedError
from asyncnet.proto import caffe2_pb2 as pb
from asyncnet.serde import atomic_output, numpy_to_tensor, parse_message, tensor_to_numpy

RECORD_DB_TYPES = ("minidb", "lmdb")
LMDB_HINT = "install the 'lmdb' extra: pip install 'asyncnet[lmdb]'"
_MAP_SIZE = 1 << 40


def canonical_record_db_type(db_type: str) -> str:
    kind = db_type.lower()
    if kind not in RECORD_DB_TYPES:
        raise UnsupportedError(
            f"db_type '{db_type}' is not supported for example databases; use one of {RECORD_DB_TYPES}"
        )
    return kind


def _lmdb() -> Any:
    try:
        import lmdb
    except ImportError as e:
        raise UnsupportedError(f"LMDB databases need the lmdb package ({LMDB_HINT}): {e}") from e
    return lmdb


def encode_example(tensors: Iterable[np.ndarray]) -> bytes:
    """One record value: a serialized ``TensorProtos`` of ``tensors``."""
    protos = pb.TensorProtos()
    for t in tensors:
        protos.protos.append(numpy_to_tensor(np.asarray(t)))
    return protos.SerializeToString()


def decode_example(value: bytes, source: str) -> list[np.ndarray]:
    """The tensors of one record value."""
    try:
        protos = parse_message(value, pb.TensorProtos, source=source, text=False)
        return [tensor_to_numpy(t) for t in protos.protos]
    except AsyncNetError as e:
        raise CheckpointError(f"{source}: not a TensorProtos record: {e}") from e


def write_examples(path: str | Path, db_type: str, examples: Iterable[tuple[str, bytes]]) -> int:
    """Write ``(key, value)`` records; returns how many. minidb files are replaced atomically."""
    kind = canonical_record_db_type(db_type)
    count = 0
    if kind == "minidb":
        with atomic_output(Path(path)) as f:
            for key, value in examples:
                f.write(encode_record(key.encode("utf-8"), value))
                count += 1
        return count
    env = _lmdb().open(str(path), map_size=_MAP_SIZE, subdir=True, lock=True)
    try:
        with env.begin(write=True) as txn:
            for key, value in examples:
                txn.put(key.encode("utf-8"), value)
                count += 1
    finally:
        env.close()
    return count


class DBReader:
    """Sequential, sharded, wrapping reads of an example database (thread-safe)."""

    def __init__(self, path: str, db_type: str = "minidb", *, num_shards: int = 1, shard_id: int = 0) -> None:
        if num_shards < 1 or not 0 <= shard_id < num_shards:
            raise UnsupportedError(f"db '{path}': need 0 <= shard_id < num_shards, got {shard_id} of {num_shards}")
        self.path, self.db_type = path, canonical_record_db_type(db_type)
        self.num_shards, self.shard_id = num_shards, shard_id
        self._lock = threading.Lock()
        self._values: list[bytes] | None = None
        self._env: Any = None
        self._cursor: Any = None
        self._txn: Any = None
        self._index = 0  # records of this shard read so far
        if self.db_type == "minidb":
            try:
                data = Path(path).read_bytes()
            except OSError as e:
                raise CheckpointError(f"db '{path}': cannot read: {e.strerror or e}") from e
            values = [v for i, _, v in iter_records(data, path) if i % num_shards == shard_id]
            self._values = values
            if not values:
                raise CheckpointError(f"db '{path}': shard {shard_id} of {num_shards} holds no records")
        else:
            lmdb = _lmdb()
            try:
                self._env = lmdb.open(path, readonly=True, lock=False, subdir=True)
            except lmdb.Error as e:
                raise CheckpointError(f"db '{path}': cannot open LMDB: {e}") from e
            self._txn = self._env.begin(buffers=False)
            self._cursor = self._txn.cursor()
            self._lmdb_rewind()

    def _lmdb_rewind(self) -> None:
        if not self._cursor.first():
            raise CheckpointError(f"db '{self.path}': LMDB holds no records")
        for _ in range(self.shard_id):
            if not self._cursor.next():
                raise CheckpointError(f"db '{self.path}': shard {self.shard_id} of {self.num_shards} holds no records")

    def _next_lmdb(self) -> bytes:
        value = bytes(self._cursor.value())
        for _ in range(self.num_shards):
            if not self._cursor.next():
                self._lmdb_rewind()
                break
        return value

    def read(self) -> tuple[int, bytes]:
        """(record index in the whole db, value) of the next record of this shard."""
        with self._lock:
            k = self._index
            self._index += 1
            if self._values is not None:
                value = self._values[k % len(self._values)]
                return (k % len(self._values)) * self.num_shards + self.shard_id, value
            return -1, self._next_lmdb()

    def records(self, n: int) -> Iterator[bytes]:
        for _ in range(n):
            yield self.read()[1]

    def close(self) -> None:
        if self._env is not None:
            self._txn.abort()
            self._env.close()
            self._env = None

    def __repr__(self) -> str:
        return f"<DBReader {self.db_type} '{self.path}' shard {self.shard_id} of {self.num_shards}>"
