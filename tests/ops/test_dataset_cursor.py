"""The dataset ops (tree cursor, random batches, consistency, trim, append) against a naive per-record
walk of a nested schema written in the test."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from asyncnet.errors import ArgumentError, OperatorError
from asyncnet.proto import caffe2_pb2 as pb
from asyncnet.workspace import Workspace
from tests.ops.run_util import make_op

FIELDS = [
    "dense",
    "floats:lengths",
    "floats:values:keys",
    "floats:values:values",
    "int_lists:lengths",
    "int_lists:values:keys",
    "int_lists:values:values:lengths",
    "int_lists:values:values:values",
    "meta:user_id",
]
DATA: list[np.ndarray] = [
    np.array([[1.1, 1.2], [2.1, 2.2], [3.1, 3.2]], np.float32),
    np.array([1, 2, 3], np.int32),
    np.array([11, 21, 22, 31, 32, 33], np.int32),
    np.array([1.1, 2.1, 2.2, 3.1, 3.2, 3.3], np.float32),
    np.array([2, 0, 1], np.int32),
    np.array([11, 12, 31], np.int32),
    np.array([2, 4, 3], np.int32),
    np.array([111, 112, 121, 122, 123, 124, 311, 312, 313], np.int64),
    np.array([123, 234, 456], np.int64),
]
# Which lengths field (by index) opens the domain of each field (None: top level).
PARENT = [None, None, 1, 1, None, 4, 4, 6, None]


def record_rows(r: int) -> list[list[int]]:
    """Row numbers of every field that belong to top-level record r (a plain walk)."""
    rows: list[list[int]] = []
    for k in range(len(FIELDS)):
        chain = []
        p = PARENT[k]
        while p is not None:
            chain.append(p)
            p = PARENT[p]
        span = [r]
        for lf in reversed(chain):
            lens = DATA[lf].tolist()
            new = []
            for row in span:
                start = sum(lens[:row])
                new += list(range(start, start + lens[row]))
            span = new
        rows.append(span)
    return rows


def naive_batch(records: list[int]) -> list[np.ndarray]:
    outs = []
    for k in range(len(FIELDS)):
        idx = [i for r in records for i in record_rows(r)[k]]
        outs.append(DATA[k][idx])
    return outs


def _feed(ws: Workspace) -> list[str]:
    names = [f"f{k}" for k in range(len(FIELDS))]
    for n, d in zip(names, DATA):
        ws.feed(n, d)
    ws.run_operator_once(make_op("CreateTreeCursor", [], ["cur"], fields=FIELDS))
    return names


def _same(got: list[Any], want: list[np.ndarray]) -> None:
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)


@pytest.mark.parametrize("batch", [1, 2, 3])
def test_read_next_batch_walks_the_records(batch: int) -> None:
    with Workspace() as ws:
        names = _feed(ws)
        outs = [f"o{k}" for k in range(len(FIELDS))]
        read = make_op("ReadNextBatch", ["cur", *names], outs, batch_size=batch)
        for start in range(0, 3, batch):
            ws.run_operator_once(read)
            _same([ws.fetch(o) for o in outs], naive_batch(list(range(start, min(start + batch, 3)))))
        ws.run_operator_once(read)  # past the end: empty fields
        assert all(ws.fetch(o).shape[0] == 0 for o in outs)
        ws.run_operator_once(make_op("GetCursorOffset", ["cur"], ["off"]))
        assert ws.fetch("off").tolist() == [3, 6, 3, 9]
        ws.run_operator_once(make_op("ResetCursor", ["cur"], []))
        ws.run_operator_once(read)
        _same([ws.fetch(o) for o in outs], naive_batch(list(range(min(batch, 3)))))


def test_enforce_batch_size_drops_a_short_batch() -> None:
    with Workspace() as ws:
        names = _feed(ws)
        read = make_op(
            "ReadNextBatch", ["cur", *names], [f"o{k}" for k in range(9)], batch_size=2, enforce_batch_size=1
        )
        ws.run_operator_once(read)
        ws.run_operator_once(read)
        assert ws.fetch("o0").shape == (0, 2)


def test_random_batches_follow_the_order() -> None:
    with Workspace() as ws:
        names = _feed(ws)
        ws.run_operator_once(make_op("ComputeOffset", ["cur", *names], ["offsets"]))
        offsets = ws.fetch("offsets")
        want_rows = [[0, 0, 0, 0]]
        for r in range(3):
            rows = record_rows(r)
            prev = want_rows[-1]
            want_rows.append([prev[0] + 1, prev[1] + len(rows[2]), prev[2] + len(rows[5]), prev[3] + len(rows[7])])
        assert offsets.tolist() == want_rows
        ws.feed("order", np.array([2, 0, 1], np.int64))
        outs = [f"o{k}" for k in range(len(FIELDS))]
        read = make_op("ReadRandomBatch", ["cur", "order", "offsets", *names], outs, batch_size=2, loop_over=1)
        ws.run_operator_once(read)
        _same([ws.fetch(o) for o in outs], naive_batch([2, 0]))
        ws.run_operator_once(read)
        _same([ws.fetch(o) for o in outs], naive_batch([1]))
        ws.run_operator_once(read)  # loop_over: back to the start of the order
        _same([ws.fetch(o) for o in outs], naive_batch([2, 0]))


def test_sort_and_shuffle_is_a_permutation() -> None:
    with Workspace() as ws:
        ws.feed("key", np.array([5, 3, 9, 1, 7, 2, 8], np.int32))
        ws.feed("val", np.arange(7.0))
        ws.run_operator_once(make_op("CreateTreeCursor", [], ["c"], fields=["key", "val"]))
        ws.run_operator_once(make_op("SortAndShuffle", ["c", "key", "val"], ["idx"], sort_by_field_idx=0, batch_size=2))
        idx = ws.fetch("idx")
        assert sorted(idx.tolist()) == list(range(7))
        # Batches of 2 keep sorted neighbours together (in either order); the odd record out stays last.
        sorted_keys = sorted([5, 3, 9, 1, 7, 2, 8])
        pairs = {tuple(sorted_keys[i : i + 2]) for i in range(0, 6, 2)}
        keys = [[5, 3, 9, 1, 7, 2, 8][i] for i in idx]
        assert {tuple(sorted(keys[i : i + 2])) for i in range(0, 6, 2)} == pairs and keys[6] == 9


def test_consistency_trim_and_append() -> None:
    with Workspace() as ws:
        names = _feed(ws)
        ws.run_operator_once(make_op("CheckDatasetConsistency", names, [], fields=FIELDS))
        ws.run_operator_once(make_op("TrimDataset", names, names, fields=FIELDS, multiple_of=2))
        _same([ws.fetch(n) for n in names], naive_batch([0, 1]))
        ws.feed("f3", np.zeros(2, np.float32))  # floats:values:values no longer matches its keys
        with pytest.raises(OperatorError, match="inconsistent sizes"):
            ws.run_operator_once(make_op("CheckDatasetConsistency", names, [], fields=FIELDS))
        ws.feed("a", np.zeros((0, 2), np.float32))
        ws.feed("b", np.ones((2, 2), np.float32))
        ws.run_operator_once(make_op("Append", ["a", "b"], ["a"]))
        ws.run_operator_once(make_op("Append", ["a", "b"], ["a"]))
        assert ws.fetch("a").shape == (4, 2)
        ws.run_operator_once(make_op("CreateMutex", [], ["mu"]))
        ws.feed("c", np.array([1], np.int64))
        ws.feed("d", np.array([2, 3], np.int64))
        ws.run_operator_once(make_op("AtomicAppend", ["mu", "a", "c", "b", "d"], ["a", "c"]))
        assert ws.fetch("a").shape == (6, 2) and ws.fetch("c").tolist() == [1, 2, 3]
        with pytest.raises(OperatorError, match="cannot append"):
            ws.run_operator_once(make_op("Append", ["c", "b"], ["c"]))


def test_field_order_and_cursor_errors() -> None:
    with pytest.raises(ArgumentError, match="defined afterwards"):
        with Workspace() as ws:
            ws.run_operator_once(make_op("CreateTreeCursor", [], ["c"], fields=["a:values", "a:lengths"]))
    net = pb.NetDef(name="n")
    net.op.append(make_op("ReadNextBatch", ["c", "x"], ["y"]))
    with Workspace() as ws:
        ws.feed("c", np.zeros(1))
        ws.feed("x", np.zeros(1))
        with pytest.raises(OperatorError, match="must be a cursor"):
            ws.run_operator_once(net.op[0])
