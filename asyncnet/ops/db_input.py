"""Training input from example databases: Caffe2's ``CreateDB`` and ``TensorProtosDBInput``.

``CreateDB`` opens a reader (minidb, or LMDB with the ``lmdb`` extra) on this rank's shard;
``TensorProtosDBInput`` reads ``batch_size`` records per run and stacks tensor i of every
record into output i (ReadNextBatch-style batching), wrapping around at the end of the shard.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

import numpy as np

from asyncnet.errors import ArgumentError, CheckpointError
from asyncnet.fileaccess import file_op, reads
from asyncnet.iopolicy import op_read_path
from asyncnet.opinfo import OpInfo
from asyncnet.registry import register_op
from asyncnet.schema import UNKNOWN, Arg


@register_op(
    "CreateDB",
    inputs=0,
    outputs=1,
    args=(
        Arg("db", None, "path of the database (required)"),
        Arg("db_type", "minidb", "minidb or lmdb (Caffe2's default leveldb is not supported)"),
        Arg("num_shards", 1, "number of shards the records are split into (one per rank)"),
        Arg("shard_id", 0, "the shard this reader sees: records with index % num_shards == shard_id"),
    ),
    infer=lambda op, ins: [UNKNOWN],
    output_names=("db_reader",),
    doc="Opens a database of TensorProtos records for TensorProtosDBInput, reading only this shard.",
)
def create_db(op: OpInfo) -> Callable[..., Any]:
    from asyncnet.db.records import DBReader, canonical_record_db_type

    if not op.has("db"):
        raise ArgumentError(f"{op.label()}: required argument 'db' is missing")
    path = op_read_path(op, op.str_arg("db"))
    db_type = canonical_record_db_type(op.str_arg("db_type"))
    num_shards, shard_id = op.int_arg("num_shards"), op.int_arg("shard_id")
    if num_shards < 1 or not 0 <= shard_id < num_shards:
        raise ArgumentError(
            f"{op.label()}: need 0 <= shard_id < num_shards, got shard_id {shard_id}, num_shards {num_shards}"
        )

    def run() -> list[Any]:
        return [DBReader(path, db_type, num_shards=num_shards, shard_id=shard_id)]

    return run


file_op("CreateDB", reads("db"))


@register_op(
    "TensorProtosDBInput",
    inputs=1,
    outputs=(1, -1),
    args=(Arg("batch_size", 0, "records per run, stacked along a new first axis (0: one record, no batch axis)"),),
    infer=lambda op, ins: [UNKNOWN] * len(op.outputs),
    input_names=("db_reader",),
    is_async=True,
    doc="Reads the next `batch_size` TensorProtos records of the reader's shard; output i stacks tensor i "
    "of each record. Wraps around at the end of the shard. A reader over a blobs queue (CreateBlobsQueueDB) "
    "waits for records without holding a thread.",
)
def tensor_protos_db_input(op: OpInfo) -> Callable[..., Any]:
    from asyncnet.db.records import DBReader, decode_example
    from asyncnet.ops.queue_db import QueueDBReader, then

    batch = op.int_arg("batch_size")
    if batch < 0:
        raise ArgumentError(f"{op.label()}: argument 'batch_size' must be >= 0, got {batch}")
    n_out = len(op.outputs)

    def outputs(values: list[bytes], source: str) -> list[Any]:
        examples = [decode_example(v, source) for v in values]
        for ex in examples:
            if len(ex) < n_out:
                raise CheckpointError(f"{op.label()}: a record of {source} holds {len(ex)} tensors, need {n_out}")
        if batch == 0:
            return examples[0][:n_out]
        outs = []
        for i in range(n_out):
            parts = [ex[i] for ex in examples]
            shapes = {p.shape for p in parts}
            if len(shapes) != 1:
                raise CheckpointError(f"{op.label()}: tensor {i} has differing shapes in one batch: {sorted(shapes)}")
            outs.append(np.stack(parts))
        return outs

    def run(reader: Any) -> Future[list[Any]]:
        if isinstance(reader, QueueDBReader):
            return then(reader.read_values(max(batch, 1)), lambda values: outputs(values, reader.path))
        if not isinstance(reader, DBReader):
            raise ArgumentError(
                f"{op.label()}: input must be a DB reader (from CreateDB or CreateBlobsQueueDB), "
                f"got {type(reader).__name__}"
            )
        done: Future[list[Any]] = Future()
        done.set_result(outputs(list(reader.records(max(batch, 1))), f"'{reader.path}'"))
        return done

    return run
