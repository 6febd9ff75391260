"""LastNWindowCollector against a naive 'keep the last N rows' list, CollectTensor's reservoir sampling,
and AtomicFetchAdd64's Caffe2 output order."""

from __future__ import annotations

import numpy as np
import pytest

from asyncnet.errors import ArgumentError, OperatorError
from asyncnet.proto import caffe2_pb2 as pb
from asyncnet.workspace import Workspace
from tests.ops.run_util import make_op


def _collect(ws: Workspace, cap: int, with_count: bool = False) -> None:
    ins = ["buf", "next", "data"] + (["mu", "seen"] if with_count else [])
    outs = ["buf", "next"] + (["seen"] if with_count else [])
    ws.run_operator_once(make_op("LastNWindowCollector", ins, outs, num_to_collect=cap))


@pytest.mark.parametrize("cap", [1, 4, 7])
def test_last_n_window_keeps_the_last_rows(cap: int) -> None:
    rng = np.random.default_rng(cap)
    seen: list[list[float]] = []
    with Workspace() as ws:
        ws.feed("buf", np.zeros((0, 2), np.float32))
        ws.feed("next", np.array(0, np.int32))
        for step in range(8):
            rows = rng.normal(size=(int(rng.integers(0, 6)), 2)).astype(np.float32)
            ws.feed("data", rows)
            _collect(ws, cap)
            seen += rows.tolist()
            buf = ws.fetch("buf")
            # The buffer holds exactly the last min(cap, seen) rows, in ring order.
            want = seen[-cap:]
            assert buf.shape[0] == len(want)
            assert sorted(map(tuple, buf.tolist())) == sorted(map(tuple, want)), f"step {step}"


def test_last_n_window_ring_order_and_counter() -> None:
    rows = np.arange(1, 7, dtype=np.float32).reshape(3, 2)
    with Workspace() as ws:
        ws.feed("buf", None)  # an empty blob, as Caffe2's CreateBlob
        ws.feed("next", np.array(0, np.int32))
        ws.feed("data", rows)
        ws.run_operator_once(make_op("CreateMutex", [], ["mu"]))
        ws.feed("seen", np.array(0, np.int64))
        for _ in range(3):
            _collect(ws, 7, with_count=True)
        # Rows r0 r1 r2 written at 0..2, 3..5, then 6, 0, 1 (wrapping): [r1, r2, r2, r0, r1, r2, r0].
        np.testing.assert_array_equal(ws.fetch("buf"), rows[[1, 2, 2, 0, 1, 2, 0]])
        assert int(ws.fetch("next")) == 2 and int(ws.fetch("seen")) == 9


def test_last_n_window_errors() -> None:
    with Workspace() as ws:
        ws.feed("buf", np.zeros((2, 3), np.float32))
        ws.feed("next", np.array(0, np.int32))
        ws.feed("data", np.zeros((1, 2), np.float32))
        with pytest.raises(OperatorError, match="do not match"):
            _collect(ws, 4)
        with pytest.raises(ArgumentError, match="num_to_collect must be positive"):
            _collect(ws, 0)


def test_collect_tensor_reservoir() -> None:
    cap, runs = 20, 400
    with Workspace() as ws:
        ws.run_operator_once(make_op("CreateTensorVector", [], ["va"]))
        ws.run_operator_once(make_op("CreateTensorVector", [], ["vb"]))
        net = pb.NetDef(name="collect")
        # The count of runs lives in the prepared op, so the op runs inside one net, many times.
        net.op.append(make_op("CollectTensor", ["va", "vb", "a", "b"], ["va", "vb"], num_to_collect=cap))
        net.op[0].device_option.random_seed = 1234  # deterministic draws
        with ws.create_net(net) as n:
            for t in range(runs):
                ws.feed("a", np.array([[float(t)]]))
                ws.feed("b", np.array([-t]))
                n.run()
        ws.run_operator_once(make_op("ConcatTensorVector", ["va"], ["ca"]))
        ws.run_operator_once(make_op("ConcatTensorVector", ["vb"], ["cb"]))
        a, b = ws.fetch("ca").reshape(-1), ws.fetch("cb")
    assert a.size == cap and len(set(a.tolist())) == cap
    # All or none: slot i of both vectors comes from the same run.
    assert (a == -b).all()
    # Later runs must have replaced early ones: a uniform sample of 400 runs is not the first 20.
    assert a.max() >= cap and (a >= runs / 2).sum() >= 3


def test_collect_tensor_must_run_in_place() -> None:
    with Workspace() as ws:
        ws.run_operator_once(make_op("CreateTensorVector", [], ["va"]))
        ws.feed("a", np.ones(1))
        with pytest.raises(ArgumentError, match="in place"):
            ws.run_operator_once(make_op("CollectTensor", ["va", "a"], ["other"], num_to_collect=2))


def test_atomic_fetch_add64_counts() -> None:
    with Workspace() as ws:
        ws.run_operator_once(make_op("CreateMutex", [], ["mu"]))
        ws.feed("acc", np.array(0, np.int64))
        ws.feed("one", np.array(1, np.int64))
        op = make_op("AtomicFetchAdd64", ["mu", "acc", "one"], ["acc", "before"])
        for k in range(5):
            ws.run_operator_once(op)
            assert int(ws.fetch("before")) == k
        assert int(ws.fetch("acc")) == 5 and ws.fetch("acc").dtype == np.int64
