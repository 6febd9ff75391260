"""Caffe2's ``minidb`` file layout: a flat sequence of key/value records.

Layout (from Caffe2's reference implementation, ``caffe2/core/db.cc``, classes
``MiniDBTransaction::Put`` and ``MiniDBCursor::Next`` in pytorch/pytorch):

    record := key_len:int32  value_len:int32  key:bytes[key_len]  value:bytes[value_len]
    file   := record*

Both lengths are written with ``fwrite(&len, sizeof(int), 1, f)`` — native
``int``, i.e. 4-byte little-endian on every platform Caffe2 shipped for — and
both come *before* the key (not interleaved with it). The reader insists on
``key_len > 0`` and ``value_len > 0``. There is no header, no index and no
checksum; the file ends after the last record. Written by Save, each value is a
serialized ``BlobProto`` and each key is the blob name plus ``"#%<chunk>"``
for tensors (see :mod:`asyncnet.db.blobs`).

Since nothing guards a minidb against truncation, the reader here refuses a
record that runs past the end of the file, and the blob layer refuses tensors
whose chunks do not cover them: a truncated file is always an error, never a
shorter checkpoint.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator

from asyncnet.errors import CheckpointError

_LENGTHS = struct.Struct("<ii")
# A key is a blob name; anything longer is corruption, not a name.
MAX_KEY_BYTES = 1 << 20


def encode_record(key: bytes, value: bytes) -> bytes:
    """One minidb record."""
    if not key or not value:
        raise CheckpointError(f"minidb records need a non-empty key and value (key {key[:60]!r})")
    if len(key) > MAX_KEY_BYTES or len(value) >= 1 << 31:
        raise CheckpointError(f"minidb record '{key[:60]!r}' is too large for 32-bit lengths")
    return _LENGTHS.pack(len(key), len(value)) + key + value


def encode_records(records: Iterable[tuple[bytes, bytes]]) -> bytes:
    """A whole minidb file."""
    return b"".join(encode_record(k, v) for k, v in records)


def iter_records(data: bytes | memoryview, source: str = "<minidb>") -> Iterator[tuple[int, bytes, bytes]]:
    """Yield ``(record index, key, value)``; raise CheckpointError on any damage.

    The error names ``source``, the record index and its byte offset.
    """
    view = memoryview(data)
    pos = 0
    index = 0
    end = len(view)
    while pos < end:
        if end - pos < _LENGTHS.size:
            raise CheckpointError(
                f"{source}: record #{index} at byte {pos}: truncated header ({end - pos} of {_LENGTHS.size} bytes)"
            )
        key_len, value_len = _LENGTHS.unpack_from(view, pos)
        if key_len <= 0 or value_len <= 0 or key_len > MAX_KEY_BYTES:
            raise CheckpointError(
                f"{source}: record #{index} at byte {pos}: invalid lengths key {key_len}, value {value_len} "
                "(corrupt file or not a minidb)"
            )
        body = pos + _LENGTHS.size
        if body + key_len + value_len > end:
            raise CheckpointError(
                f"{source}: record #{index} at byte {pos}: truncated (needs {key_len + value_len} bytes, "
                f"{end - body} left)"
            )
        key = bytes(view[body : body + key_len])
        value = bytes(view[body + key_len : body + key_len + value_len])
        yield index, key, value
        pos = body + key_len + value_len
        index += 1
