"""CreateBlobsQueueDB: a DB reader whose records come from a blobs queue (Caffe2's BlobsQueueDB).

Each record is one queued record; its blob ``value_blob_index`` holds the serialized
``TensorProtos`` (a bytes/str scalar or a one-element string tensor). Readers (TensorProtosDBInput)
take records with a Future from the queue, so no worker thread waits while the queue is empty.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

import numpy as np

from asyncnet.errors import ArgumentError, TensorError
from asyncnet.opinfo import OpInfo
from asyncnet.ops.queues import BlobsQueue
from asyncnet.registry import register_op
from asyncnet.schema import UNKNOWN, Arg

T = TypeVar("T")


def record_string(value: Any, where: str) -> bytes:
    """The bytes of a string blob: bytes/str, or the first element of a string tensor."""
    v = value
    if isinstance(v, np.ndarray):
        if v.size == 0:
            raise TensorError(f"{where}: the record's string tensor is empty")
        v = v.reshape(-1)[0]
    if isinstance(v, (bytes, np.bytes_)):
        return bytes(v)
    if isinstance(v, (str, np.str_)):
        # Strings fed from Python are bytes decoded one code point each; encode them back losslessly.
        return str(v).encode("utf-8", "surrogateescape")
    raise TensorError(f"{where}: expected a string blob (bytes, str or a string tensor), got {type(v).__name__}")


def then(fut: Future[Any], fn: Callable[[Any], T]) -> Future[T]:
    """A Future of ``fn(result)`` (exceptions of either pass through)."""
    out: Future[T] = Future()

    def relay(f: Future[Any]) -> None:
        exc = f.exception()
        if exc is not None:
            out.set_exception(exc)
            return
        try:
            out.set_result(fn(f.result()))
        except Exception as e:  # noqa: BLE001 - handed to the waiting op, which names itself
            out.set_exception(e)

    fut.add_done_callback(relay)
    return out


class QueueDBReader:
    """Reads serialized records from a :class:`BlobsQueue` (what CreateBlobsQueueDB outputs)."""

    def __init__(self, queue: BlobsQueue, key_index: int, value_index: int, timeout: float) -> None:
        self.queue, self.key_index, self.value_index, self.timeout = queue, key_index, value_index, timeout
        self.path = f"blobs queue '{queue.name}'"

    def __repr__(self) -> str:
        return f"QueueDBReader({self.queue!r}, value_blob_index={self.value_index})"

    def read_values(self, n: int) -> Future[list[bytes]]:
        """A Future of the next ``n`` record values, taken one record at a time as Caffe2's cursor did
        (so a batch larger than the queue's capacity still fills); fails when the queue closes empty or
        a record does not come within the timeout."""
        where = self.path
        out: Future[list[bytes]] = Future()
        got: list[bytes] = []

        def value(batch: list[tuple[Any, ...]]) -> bytes:
            return record_string(batch[0][self.value_index], where)

        def collect(f: Future[bytes]) -> bool:
            exc = f.exception()
            if exc is not None:
                out.set_exception(exc)
                return False
            got.append(f.result())
            return True

        def resume(done: Future[bytes]) -> None:
            if collect(done):
                pump()

        def pump() -> None:
            # Loop while records are at hand; park on the queue (no thread) when one is not.
            while len(got) < n:
                f = self.queue.get(1, value, self.timeout)
                if not f.done():
                    f.add_done_callback(resume)
                    return
                if not collect(f):
                    return
            out.set_result(got)

        pump()
        return out


@register_op(
    "CreateBlobsQueueDB",
    inputs=1,
    outputs=1,
    args=(
        Arg("key_blob_index", -1, "blob of each record holding its key (-1: no key)"),
        Arg("value_blob_index", 0, "blob of each record holding the serialized TensorProtos"),
        Arg("timeout_secs", 0.0, "fail a read after waiting this long for a record (0: wait for data or close)"),
    ),
    infer=lambda op, ins: [UNKNOWN],
    input_names=("queue",),
    output_names=("reader",),
    doc="A DB reader over a blobs queue: each read takes the next queued record (waiting without holding "
    "a thread) and returns its blob `value_blob_index`, a serialized TensorProtos, for TensorProtosDBInput.",
)
def create_blobs_queue_db(op: OpInfo) -> Callable[..., Any]:
    key_index, value_index = op.int_arg("key_blob_index"), op.int_arg("value_blob_index")
    timeout = op.float_arg("timeout_secs")
    if value_index < 0:
        raise ArgumentError(f"{op.label()}: value_blob_index must be >= 0, got {value_index}")
    if timeout < 0:
        raise ArgumentError(f"{op.label()}: timeout_secs must be >= 0, got {timeout}")

    def run(queue: Any) -> tuple[QueueDBReader]:
        if not isinstance(queue, BlobsQueue):
            raise ArgumentError(
                f"{op.label()}: input must be a queue (from CreateBlobsQueue), got {type(queue).__name__}"
            )
        for name, idx in (("key_blob_index", key_index), ("value_blob_index", value_index)):
            if idx >= queue.num_blobs:
                raise ArgumentError(
                    f"{op.label()}: {name} {idx} is outside the queue's {queue.num_blobs} blobs per record"
                )
        return (QueueDBReader(queue, key_index, value_index, timeout),)

    return run
