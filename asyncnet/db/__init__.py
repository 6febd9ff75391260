"""Checkpoint databases: Caffe2's ``minidb`` record file and a ``protodb`` TensorProtos file.

* :mod:`asyncnet.db.minidb` — the record layout (bytes in, records out).
* :mod:`asyncnet.db.blobs` — blobs <-> serialized ``BlobProto`` records, chunked like Caffe2.
* :mod:`asyncnet.db.store` — whole-checkpoint save/load with atomic replacement.
"""

from __future__ import annotations

from asyncnet.db.store import DB_TYPES, db_exists, load_checkpoint, read_records, save_checkpoint

__all__ = ["DB_TYPES", "db_exists", "load_checkpoint", "read_records", "save_checkpoint"]
