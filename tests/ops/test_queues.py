"""Blob queues and the rebatching queue: FIFO semantics, Safe* status on close, timeouts, and that a
waiting enqueue/dequeue holds no worker (producer and consumer on a one-thread pool do not deadlock)."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from asyncnet.errors import OperatorError
from asyncnet.executors import ExecutorOptions
from asyncnet.proto import caffe2_pb2 as pb
from asyncnet.workspace import Workspace
from tests.ops.run_util import make_op


def _net(ops: list[pb.OperatorDef], kind: str = "async_scheduling", name: str = "q") -> pb.NetDef:
    n = pb.NetDef(name=name, type=kind)
    n.op.extend(ops)
    return n


def _run(ws: Workspace, *ops: pb.OperatorDef) -> None:
    for o in ops:
        ws.run_operator_once(o)


@pytest.mark.timeout(30)
def test_fifo_safe_status_and_close(no_thread_leak: None) -> None:
    with Workspace() as ws:
        _run(ws, make_op("CreateBlobsQueue", [], ["q"], capacity=3, num_blobs=2))
        for i in range(3):
            ws.feed("a", np.array([i], np.int32))
            ws.feed("b", np.full((1, 2), float(i)))
            _run(ws, make_op("EnqueueBlobs", ["q", "a", "b"], ["a", "b"]))
        _run(ws, make_op("DequeueBlobs", ["q"], ["x", "y"]))
        assert ws.fetch("x").tolist() == [0] and ws.fetch("y").tolist() == [[0.0, 0.0]]
        _run(ws, make_op("DequeueBlobs", ["q"], ["x", "y"], num_records=2))
        assert ws.fetch("x").tolist() == [1, 2] and ws.fetch("y").shape == (2, 2)
        _run(ws, make_op("SafeEnqueueBlobs", ["q", "a", "b"], ["a", "b", "st"]))
        assert not bool(ws.fetch("st"))
        _run(ws, make_op("CloseBlobsQueue", ["q"], []))
        _run(ws, make_op("SafeDequeueBlobs", ["q"], ["x", "y", "st"]))
        assert not bool(ws.fetch("st")) and ws.fetch("x").tolist() == [2]  # data left before the close
        _run(ws, make_op("SafeDequeueBlobs", ["q"], ["x", "y", "st"]))
        assert bool(ws.fetch("st"))
        with pytest.raises(OperatorError, match="closed"):
            _run(ws, make_op("DequeueBlobs", ["q"], ["x", "y"]))
        _run(ws, make_op("SafeEnqueueBlobs", ["q", "a", "b"], ["a", "b", "st"]))
        assert bool(ws.fetch("st"))
        with pytest.raises(OperatorError, match="closed"):
            _run(ws, make_op("EnqueueBlobs", ["q", "a", "b"], ["a", "b"]))


@pytest.mark.timeout(30)
def test_dequeue_timeout_fails(no_thread_leak: None) -> None:
    with Workspace() as ws:
        _run(ws, make_op("CreateBlobsQueue", [], ["q"], capacity=1, num_blobs=1))
        with pytest.raises(OperatorError, match="timed out"):
            _run(ws, make_op("DequeueBlobs", ["q"], ["x"], timeout_secs=0.05))


@pytest.mark.timeout(30)
@pytest.mark.parametrize("order", ["consumer_first", "producer_first"])
def test_producer_and_consumer_share_one_worker(order: str, no_thread_leak: None) -> None:
    # Capacity 1, 4 records: the producer must wait for the consumer and vice versa. On one worker
    # thread this only finishes if a waiting queue op holds no thread.
    prod = [make_op("Relu", ["x"], [f"p{i}"]) for i in range(4)]
    prod += [make_op("EnqueueBlobs", ["q", f"p{i}"], [f"p{i}"]) for i in range(4)]
    cons = [make_op("DequeueBlobs", ["q"], [f"c{i}"]) for i in range(4)]
    ops = cons + prod if order == "consumer_first" else prod + cons
    with Workspace() as ws:
        ws.feed("x", np.array([1.0, -1.0]))
        _run(ws, make_op("CreateBlobsQueue", [], ["q"], capacity=1, num_blobs=1))
        opts = ExecutorOptions(threads=1, shared_pools=False)
        with ws.create_net(_net(ops), options=opts) as n:
            n.run(timeout=10)
        for i in range(4):
            assert ws.fetch(f"c{i}").tolist() == [1.0, 0.0]


@pytest.mark.timeout(30)
def test_close_wakes_a_waiting_consumer_in_another_run(no_thread_leak: None) -> None:
    with Workspace() as ws:
        _run(ws, make_op("CreateBlobsQueue", [], ["q"], capacity=2, num_blobs=1))
        consumer = ws.create_net(_net([make_op("SafeDequeueBlobs", ["q"], ["x", "done"])], name="consumer"))
        errors: list[BaseException] = []

        def consume() -> None:
            try:
                consumer.run(timeout=10)
            except BaseException as e:  # noqa: BLE001 - reported below
                errors.append(e)

        t = threading.Thread(target=consume)
        t.start()
        _run(ws, make_op("CloseBlobsQueue", ["q"], []))
        t.join(10)
        consumer.close()
        assert not t.is_alive() and not errors and bool(ws.fetch("done"))


def test_rebatching_queue() -> None:
    with Workspace() as ws:
        _run(ws, make_op("CreateRebatchingQueue", [], ["rq"], capacity=10, num_blobs=2))
        ws.feed("a", np.arange(6).reshape(3, 2))
        ws.feed("b", np.array([10, 11, 12]))
        _run(ws, make_op("EnqueueRebatchingQueue", ["rq", "a", "b"], [], enqueue_batch=1))
        ws.feed("c", np.array([6, 7]))
        ws.feed("d", np.array(13))
        _run(ws, make_op("EnqueueRebatchingQueue", ["rq", "c", "d"], []))
        _run(ws, make_op("DequeueRebatchingQueue", ["rq"], ["u", "v"], num_elements=4))
        assert ws.fetch("u").tolist() == [[0, 1], [2, 3], [4, 5], [6, 7]]
        assert ws.fetch("v").tolist() == [10, 11, 12, 13]
        _run(ws, make_op("CloseRebatchingQueue", ["rq"], []))
        with pytest.raises(OperatorError, match="closed"):
            _run(ws, make_op("DequeueRebatchingQueue", ["rq"], ["u", "v"]))


def test_queue_ops_refuse_wrong_handles() -> None:
    with Workspace() as ws:
        ws.feed("notq", np.zeros(1))
        with pytest.raises(OperatorError, match="queue"):
            _run(ws, make_op("DequeueBlobs", ["notq"], ["x"]))
        _run(ws, make_op("CreateBlobsQueue", [], ["q"], capacity=1, num_blobs=2))
        ws.feed("a", np.zeros(1))
        with pytest.raises(OperatorError, match="2 blobs per record"):
            _run(ws, make_op("EnqueueBlobs", ["q", "a"], ["a"]))


@pytest.mark.timeout(30)
def test_dequeue_of_more_records_than_the_capacity_takes_them_as_they_come(no_thread_leak: None) -> None:
    """Caffe2 read records one at a time: a consumer asking for 6 records of a capacity-2 queue gets
    them while a producer keeps refilling it (waiting for all 6 at once would deadlock both)."""
    from asyncnet.compat import core, workspace

    workspace.ResetWorkspace()
    init = core.Net("init")
    q = init.CreateRebatchingQueue([], 1, capacity=2, num_blobs=1)
    prod = core.Net("producer")
    t = prod.GivenTensorIntFill([], 1, shape=[3], values=[1, 2, 3])
    prod.EnqueueRebatchingQueue([q, t], [], enqueue_batch=True)
    cons = core.Net("consumer")
    cons.DequeueRebatchingQueue([q], ["got"], num_elements=6)
    plan = core.Plan("p")
    plan.AddStep(core.execution_step("init", init))
    plan.AddStep(
        core.execution_step(
            "work",
            [core.execution_step("c", cons, num_iter=1), core.execution_step("p", prod, num_iter=2)],
            concurrent_substeps=True,
        )
    )
    workspace.RunPlan(plan)
    assert workspace.FetchBlob("got").tolist() == [1, 2, 3, 1, 2, 3]
    workspace.ResetWorkspace()


def test_a_closed_queue_ends_a_long_dequeue_with_what_it_took() -> None:
    from asyncnet.ops.queues import BlobsQueue

    q = BlobsQueue("q", capacity=4, num_blobs=1)
    q.put([(np.array([1]),), (np.array([2]),)], None).result(timeout=5)
    fut = q.get(5, lambda b: [int(r[0][0]) for r in b])
    assert not fut.done()
    q.close()
    assert fut.result(timeout=5) == [1, 2]
    with pytest.raises(Exception, match="closed and empty"):
        q.get(1, lambda b: b).result(timeout=5)


@pytest.mark.timeout(30)
def test_a_timed_out_dequeue_puts_back_what_it_took(no_thread_leak: None) -> None:
    from asyncnet.ops.queues import BlobsQueue

    q = BlobsQueue("q", capacity=2, num_blobs=1)
    q.put([(np.array([1]),), (np.array([2]),)], None).result(timeout=5)
    fut = q.get(3, lambda b: b, timeout=0.05)
    with pytest.raises(Exception, match="timed out"):
        fut.result(timeout=5)
    assert q.size() == 2  # nothing lost
    assert q.get(2, lambda b: [int(r[0][0]) for r in b]).result(timeout=5) == [1, 2]
