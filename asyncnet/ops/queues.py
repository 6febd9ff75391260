"""Blob queues: CreateBlobsQueue, EnqueueBlobs, DequeueBlobs, SafeEnqueueBlobs, SafeDequeueBlobs,
CloseBlobsQueue, and the rebatching queue (CreateRebatchingQueue, EnqueueRebatchingQueue,
DequeueRebatchingQueue, CloseRebatchingQueue).

Enqueue and dequeue are async ops: when they cannot proceed (queue full / empty) their kernel
returns a pending Future kept by the queue, and no thread waits; the enqueue or dequeue (or close)
that makes room or data completes it. So a producer and a consumer on the same one-worker pool
cannot deadlock. Futures are completed outside the queue's lock.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

import numpy as np

from asyncnet.errors import ArgumentError
from asyncnet.executors.pools import shared_timer
from asyncnet.opinfo import OpInfo
from asyncnet.registry import register_op
from asyncnet.schema import Arg, TensorInfo


class QueueClosedError(ArgumentError):
    """Dequeue from a closed, empty queue (or enqueue into a closed one)."""


class BlobsQueue:
    """A bounded FIFO of records (tuples of arrays) with future-based waiting."""

    def __init__(self, name: str, capacity: int, num_blobs: int) -> None:
        self.name, self.capacity, self.num_blobs = name, capacity, num_blobs
        self._items: deque[tuple[Any, ...]] = deque()
        # (future, records wanted, how to build the result, records taken so far)
        self._getters: deque[tuple[Future[Any], int, Callable[[list[tuple[Any, ...]]], Any], list[tuple[Any, ...]]]] = (
            deque()
        )
        self._putters: deque[tuple[Future[Any], list[tuple[Any, ...]], Any]] = deque()
        self._closed = False
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"BlobsQueue({self.name!r}, size={len(self._items)}/{self.capacity}, closed={self._closed})"

    @property
    def closed(self) -> bool:
        return self._closed

    def _pump(self) -> list[tuple[Future[Any], Any, BaseException | None]]:
        """Move data between waiting putters, the buffer and waiting getters (lock held)."""
        done: list[tuple[Future[Any], Any, BaseException | None]] = []
        progress = True
        while progress:
            progress = False
            while self._putters and self._putters[0][0].done():
                self._putters.popleft()
            if self._putters and len(self._items) < self.capacity:
                fut, records, result = self._putters[0]
                while records and len(self._items) < self.capacity:
                    self._items.append(records.pop(0))
                if not records:
                    self._putters.popleft()
                    done.append((fut, result, None))
                progress = True
            while self._getters and self._getters[0][0].done():
                # Cancelled (its run stopped): the records it had taken go back to the front, in order.
                self._items.extendleft(reversed(self._getters.popleft()[3]))
            if self._getters:
                fut, n, make, taken = self._getters[0]
                # Records move one at a time, as Caffe2's blocking reads: a dequeue of more records than
                # the capacity takes what is there and waits for the rest (waiting for n at once could
                # never finish, with producers blocked on the full queue).
                while self._items and len(taken) < n:
                    taken.append(self._items.popleft())
                    progress = True
                if len(taken) == n:
                    self._getters.popleft()
                    done.append((fut, make(taken), None))
                    progress = True
                elif self._closed and not self._putters and not self._items:
                    self._getters.popleft()
                    if taken:  # Caffe2: a closed queue ends the read early with what it had
                        done.append((fut, make(taken), None))
                    else:
                        done.append((fut, None, QueueClosedError(f"queue '{self.name}' is closed and empty")))
                    progress = True
        return done

    @staticmethod
    def _finish(done: list[tuple[Future[Any], Any, BaseException | None]]) -> None:
        for fut, value, exc in done:
            if not fut.set_running_or_notify_cancel():
                continue
            if exc is None:
                fut.set_result(value)
            else:
                fut.set_exception(exc)

    def put(self, records: list[tuple[Any, ...]], result: Any) -> Future[Any]:
        fut: Future[Any] = Future()
        done: list[tuple[Future[Any], Any, BaseException | None]]
        with self._lock:
            if self._closed:
                done = [(fut, None, QueueClosedError(f"queue '{self.name}' is closed"))]
            else:
                self._putters.append((fut, list(records), result))
                done = self._pump()
        self._finish(done)
        return fut

    def get(self, n: int, make: Callable[[list[tuple[Any, ...]]], Any], timeout: float = 0.0) -> Future[Any]:
        fut: Future[Any] = Future()
        with self._lock:
            self._getters.append((fut, n, make, []))
            done = self._pump()
        self._finish(done)
        if timeout > 0 and not fut.done():
            handle = shared_timer().call_later(timeout, lambda: self._expire(fut, timeout))
            fut.add_done_callback(lambda f: shared_timer().cancel(handle))
        return fut

    def _expire(self, fut: Future[Any], timeout: float) -> None:
        done: list[tuple[Future[Any], Any, BaseException | None]] = []
        with self._lock:
            for g in self._getters:
                if g[0] is fut and not fut.done():
                    self._getters.remove(g)
                    self._items.extendleft(reversed(g[3]))  # nothing taken is lost: back to the front
                    err = ArgumentError(f"queue '{self.name}': dequeue timed out after {timeout} s")
                    done = [(fut, None, err), *self._pump()]
                    break
        self._finish(done)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            done = self._pump()
            # Producers still waiting for room can never finish once the queue is closed.
            done += [(f, None, QueueClosedError(f"queue '{self.name}' was closed")) for f, _, _ in self._putters]
            self._putters.clear()
        self._finish(done)

    def size(self) -> int:
        with self._lock:
            return len(self._items)


def _queue(op: OpInfo, v: Any) -> BlobsQueue:
    if not isinstance(v, BlobsQueue):
        raise ArgumentError(f"{op.label()}: input 0 must be a queue (from CreateBlobsQueue), got {type(v).__name__}")
    return v


def _unknown(op: OpInfo, ins: list[TensorInfo]) -> list[TensorInfo]:
    return [TensorInfo(None, None)] * len(op.outputs)


def _create(kind: str) -> Callable[[OpInfo], Callable[..., Any]]:
    def factory(op: OpInfo) -> Callable[..., Any]:
        capacity, num_blobs = op.int_arg("capacity"), op.int_arg("num_blobs")
        if capacity < 1 or num_blobs < 1:
            raise ArgumentError(f"{op.label()}: capacity and num_blobs must be positive, got {capacity}, {num_blobs}")
        name = str(op.arg("name", "")) or op.outputs[0]
        return lambda *ins: (BlobsQueue(name, capacity, num_blobs),)

    return factory


for _name, _kind in (("CreateBlobsQueue", "blobs"), ("CreateRebatchingQueue", "rebatching")):
    register_op(
        _name,
        inputs=(0, 1),
        args=(
            Arg("capacity", 1, "records the queue holds"),
            Arg("num_blobs", 1, "blobs per record"),
            Arg("name", "", "the queue's name (default: the output blob's)"),
            Arg("enforce_unique_name", 0, "accepted for compatibility"),
            Arg("field_names", [], "accepted for compatibility"),
        ),
        infer=_unknown,
        doc=f"Create a bounded {_kind} queue handle (capacity records of num_blobs blobs).",
        output_names=("queue",),
    )(_create(_kind))


def _check_record(op: OpInfo, q: BlobsQueue, blobs: tuple[Any, ...]) -> tuple[Any, ...]:
    if len(blobs) != q.num_blobs:
        raise ArgumentError(f"{op.label()}: queue '{q.name}' holds {q.num_blobs} blobs per record, got {len(blobs)}")
    return tuple(np.array(b, copy=True) if isinstance(b, np.ndarray) else b for b in blobs)


def _closed_as_status(fut: Future[Any], closed_outputs: tuple[Any, ...]) -> Future[Any]:
    """The Safe* ops' result: a closed queue gives ``closed_outputs`` and a true status instead of failing."""
    out: Future[Any] = Future()

    def relay(f: Future[Any]) -> None:
        exc = f.exception()
        if isinstance(exc, QueueClosedError):
            out.set_result(closed_outputs + (np.array(True),))
        elif exc is not None:
            out.set_exception(exc)
        else:
            out.set_result(f.result())

    fut.add_done_callback(relay)
    return out


def _enqueue(safe: bool) -> Callable[[OpInfo], Callable[..., Any]]:
    def factory(op: OpInfo) -> Callable[..., Any]:
        def run(queue: Any, *blobs: Any) -> Future[Any]:
            q = _queue(op, queue)
            record = _check_record(op, q, blobs)
            status = (np.array(False),) if safe else ()
            fut = q.put([record], tuple(blobs) + status)
            if not safe:
                return fut
            return _closed_as_status(fut, tuple(blobs))

        return run

    return factory


def _merge(batch: list[tuple[Any, ...]], num_blobs: int) -> tuple[Any, ...]:
    if len(batch) == 1:
        return batch[0]
    return tuple(np.concatenate([np.asarray(r[k]) for r in batch]) for k in range(num_blobs))


def _dequeue(safe: bool) -> Callable[[OpInfo], Callable[..., Any]]:
    def factory(op: OpInfo) -> Callable[..., Any]:
        n = op.int_arg("num_records")
        timeout = op.float_arg("timeout_secs")
        if n < 1:
            raise ArgumentError(f"{op.label()}: num_records must be positive, got {n}")

        n_data = len(op.outputs) - (1 if safe else 0)
        # Closed and empty: outputs keep no data (size-0 arrays, safe to share between runs).
        closed = tuple(np.zeros(0, np.float32) for _ in range(n_data))

        def run(queue: Any) -> Future[Any]:
            q = _queue(op, queue)
            if n_data != q.num_blobs:
                raise ArgumentError(
                    f"{op.label()}: queue '{q.name}' holds {q.num_blobs} blobs, op has {n_data} outputs"
                )
            suffix = (np.array(False),) if safe else ()
            fut = q.get(n, lambda batch: _merge(batch, q.num_blobs) + suffix, timeout)
            if not safe:
                return fut
            return _closed_as_status(fut, closed)

        return run

    return factory


_ENQ_DOC = "Put the blobs (inputs 1..N) into the queue as one record; outputs are the inputs (in place). "
_DEQ_DOC = "Take `num_records` records (concatenated along dim 0) from the queue into outputs 1..N. "
register_op(
    "EnqueueBlobs",
    inputs=(2, -1),
    outputs=(1, -1),
    allow_inplace=lambda i, o: i == o + 1,
    arity=lambda i, o: o == i - 1,
    infer=lambda op, ins: list(ins[1:]),
    is_async=True,
    doc=_ENQ_DOC + "Waits (holding no thread) while the queue is full; fails if it is closed.",
)(_enqueue(False))
register_op(
    "SafeEnqueueBlobs",
    inputs=(2, -1),
    outputs=(2, -1),
    allow_inplace=lambda i, o: i == o + 1,
    arity=lambda i, o: o == i,
    infer=lambda op, ins: list(ins[1:]) + [TensorInfo((), np.dtype(np.bool_))],
    is_async=True,
    doc=_ENQ_DOC + "The last output is a bool status: true when the queue is closed (nothing enqueued).",
)(_enqueue(True))
_DEQ_ARGS = (
    Arg("num_records", 1, "records taken and concatenated"),
    Arg("timeout_secs", 0.0, "fail after this many seconds of waiting (0: wait until data or close)"),
)
register_op(
    "DequeueBlobs",
    outputs=(1, -1),
    args=_DEQ_ARGS,
    infer=_unknown,
    is_async=True,
    doc=_DEQ_DOC + "Waits (holding no thread) while the queue is empty; fails once it is closed and empty.",
)(_dequeue(False))
register_op(
    "SafeDequeueBlobs",
    outputs=(2, -1),
    args=_DEQ_ARGS,
    infer=lambda op, ins: [TensorInfo(None, None)] * (len(op.outputs) - 1) + [TensorInfo((), np.dtype(np.bool_))],
    is_async=True,
    doc=_DEQ_DOC + "The last output is a bool status: true when the queue is closed and empty.",
)(_dequeue(True))


def _close(op: OpInfo) -> Callable[..., Any]:
    def run(queue: Any) -> tuple[()]:
        _queue(op, queue).close()
        return ()

    return run


for _name in ("CloseBlobsQueue", "CloseRebatchingQueue"):
    register_op(
        _name,
        outputs=0,
        infer=lambda op, ins: [],
        doc="Close the queue: waiting and later dequeues of an empty queue fail (Safe* ops report status), "
        "waiting enqueues fail.",
        input_names=("queue",),
    )(_close)


@register_op(
    "EnqueueRebatchingQueue",
    inputs=(2, -1),
    outputs=0,
    args=(Arg("enqueue_batch", 0, "split the tensors along dim 0 into one record per row"),),
    infer=lambda op, ins: [],
    is_async=True,
    doc="Put the tensors into the rebatching queue as one record (or, with enqueue_batch, one record per "
    "row of dim 0); waits without a thread while the queue is full.",
    input_names=("queue",),
)
def enqueue_rebatching(op: OpInfo) -> Callable[..., Any]:
    batch = op.bool_arg("enqueue_batch")

    def run(queue: Any, *tensors: Any) -> Future[Any]:
        q = _queue(op, queue)
        arrays = [np.asarray(t) for t in tensors]
        if batch:
            rows = {a.shape[0] if a.ndim else -1 for a in arrays}
            if len(rows) != 1 or -1 in rows:
                raise ArgumentError(f"{op.label()}: enqueue_batch needs tensors with one common first dim")
            n = rows.pop()
            records = [_check_record(op, q, tuple(a[i : i + 1] for a in arrays)) for i in range(n)]
        else:
            records = [_check_record(op, q, tuple(a[None] for a in arrays))]
        return q.put(records, ())

    return run


@register_op(
    "DequeueRebatchingQueue",
    outputs=(1, -1),
    args=(Arg("num_elements", 1, "records taken and stacked along a new dim 0"),),
    infer=_unknown,
    is_async=True,
    doc="Take num_elements records from the rebatching queue, stacked along dim 0; waits without a thread.",
    input_names=("queue",),
)
def dequeue_rebatching(op: OpInfo) -> Callable[..., Any]:
    n = op.int_arg("num_elements")
    if n < 1:
        raise ArgumentError(f"{op.label()}: num_elements must be positive, got {n}")

    def run(queue: Any) -> Future[Any]:
        q = _queue(op, queue)
        return q.get(n, lambda b: tuple(np.concatenate([np.asarray(r[k]) for r in b]) for k in range(q.num_blobs)))

    return run
