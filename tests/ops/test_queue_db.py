"""CreateBlobsQueueDB: TensorProtosDBInput reading serialized records from a blobs queue, waiting for
them without holding a worker, and failing cleanly on close or timeout."""

from __future__ import annotations

import numpy as np
import pytest

from asyncnet.errors import ArgumentError, OperatorError
from asyncnet.executors import ExecutorOptions
from asyncnet.proto import caffe2_pb2 as pb
from asyncnet.workspace import Workspace
from tests.ops.run_util import make_op


def record(i: int) -> bytes:
    protos = pb.TensorProtos()
    data = protos.protos.add(data_type=pb.TensorProto.STRING)
    data.string_data.append(f"foo{i}".encode())
    label = protos.protos.add(data_type=pb.TensorProto.INT32, dims=[2])
    label.int32_data.extend([i, 1])
    return protos.SerializeToString()


def _setup(ws: Workspace, capacity: int, **reader_args: object) -> None:
    ws.run_operator_once(make_op("CreateBlobsQueue", [], ["q"], capacity=capacity, num_blobs=1))
    ws.run_operator_once(make_op("CreateBlobsQueueDB", ["q"], ["reader"], **reader_args))


def _enqueue(ws: Workspace, value: object) -> None:
    ws.feed("blob", value)
    ws.run_operator_once(make_op("EnqueueBlobs", ["q", "blob"], ["blob"]))


@pytest.mark.timeout(30)
def test_batches_come_from_the_queue_in_order(no_thread_leak: None) -> None:
    with Workspace() as ws:
        _setup(ws, 20, value_blob_index=0, timeout_secs=5.0)
        for i in range(12):
            # Both ways Caffe2 users queued records: a bytes scalar, or a one-element string tensor.
            _enqueue(ws, np.array(record(i), dtype=object) if i % 2 else np.array([record(i)], dtype=object))
        read = make_op("TensorProtosDBInput", ["reader"], ["data", "label"], batch_size=4)
        for step in range(3):
            ws.run_operator_once(read)
            assert [bytes(v) for v in ws.fetch("data")] == [f"foo{4 * step + k}".encode() for k in range(4)]
            assert ws.fetch("label").tolist() == [[4 * step + k, 1] for k in range(4)]


@pytest.mark.timeout(30)
def test_str_records_round_trip() -> None:
    with Workspace() as ws:
        _setup(ws, 2)
        # A serialized record fed as a Python str (code points = bytes) still decodes.
        _enqueue(ws, np.array([record(7).decode("latin-1")]))
        ws.run_operator_once(make_op("TensorProtosDBInput", ["reader"], ["data"]))
        assert bytes(ws.fetch("data").reshape(-1)[0]) == b"foo7"


@pytest.mark.timeout(30)
def test_reader_waits_without_holding_the_only_worker(no_thread_leak: None) -> None:
    # The reader is scheduled before the producer on a one-thread pool with capacity-1 queue: the
    # run finishes only if the waiting read holds no thread.
    ops = [make_op("TensorProtosDBInput", ["reader"], ["data", "label"], batch_size=3)]
    ops += [make_op("EnqueueBlobs", ["q", f"r{i}"], [f"r{i}"]) for i in range(3)]
    net = pb.NetDef(name="qdb", type="async_scheduling")
    net.op.extend(ops)
    with Workspace() as ws:
        _setup(ws, 1)
        for i in range(3):
            ws.feed(f"r{i}", np.array([record(i)], dtype=object))
        with ws.create_net(net, options=ExecutorOptions(threads=1, shared_pools=False)) as n:
            n.run(timeout=10)
        assert ws.fetch("label")[:, 0].tolist() == [0, 1, 2]


@pytest.mark.timeout(30)
def test_close_timeout_and_bad_arguments(no_thread_leak: None) -> None:
    with Workspace() as ws:
        _setup(ws, 2, timeout_secs=0.05)
        read = make_op("TensorProtosDBInput", ["reader"], ["data"])
        with pytest.raises(OperatorError, match="timed out"):
            ws.run_operator_once(read)
        _enqueue(ws, np.array([b"not a TensorProtos \xff"], dtype=object))
        with pytest.raises(OperatorError, match="TensorProtos"):
            ws.run_operator_once(read)
        ws.run_operator_once(make_op("CloseBlobsQueue", ["q"], []))
        with pytest.raises(OperatorError, match="closed"):
            ws.run_operator_once(read)
        with pytest.raises((ArgumentError, OperatorError), match="value_blob_index 1 is outside"):
            ws.run_operator_once(make_op("CreateBlobsQueueDB", ["q"], ["r2"], value_blob_index=1))
        ws.feed("x", np.zeros(2))
        with pytest.raises((ArgumentError, OperatorError), match="must be a queue"):
            ws.run_operator_once(make_op("CreateBlobsQueueDB", ["x"], ["r3"]))
