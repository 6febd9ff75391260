"""Saving and loading the handle blobs Caffe2 could serialize: counters and indexes (BlobCodec)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from asyncnet.db.blobs import BlobAssembler, serialize_blob
from asyncnet.errors import CheckpointError
from asyncnet.proto import caffe2_pb2 as pb
from asyncnet.workspace import Workspace
from tests.ops.run_util import make_op


def _roundtrip(name: str, value: object) -> object:
    ((key, data),) = serialize_blob(name, value)
    asm = BlobAssembler("test")
    asm.add(key, asm.parse(data, "r"), "r")
    return asm.result()[name]


def test_counter_saves_its_count_as_caffe2() -> None:
    with Workspace() as ws:
        ws.run_operator_once(make_op("CreateCounter", [], ["c"], init_count=4))
        ws.run_operator_once(make_op("CountDown", ["c"], ["d"]))
        ((_, data),) = serialize_blob("c", ws.fetch("c"))
        proto = pb.BlobProto()
        proto.ParseFromString(data)
        assert proto.type == "std::unique_ptr<Counter<int64_t>>"
        assert list(proto.tensor.int64_data) == [3] and proto.tensor.data_type == pb.TensorProto.INT64
        ws.feed("c2", _roundtrip("c", ws.fetch("c")))
        ws.run_operator_once(make_op("RetrieveCount", ["c2"], ["n"]))
        assert int(ws.fetch("n")) == 3


@pytest.mark.parametrize(
    ("create", "keys"),
    [("StringIndexCreate", np.array([b"a", b"b"], dtype=object)), ("IntIndexCreate", np.array([7, 9], np.int32))],
)
def test_index_saves_keys_limit_and_frozen(create: str, keys: np.ndarray) -> None:
    with Workspace() as ws:
        ws.run_operator_once(make_op(create, [], ["i"], max_elements=5))
        ws.feed("k", keys)
        ws.run_operator_once(make_op("IndexGet", ["i", "k"], ["ids"]))
        ws.run_operator_once(make_op("IndexFreeze", ["i"], ["i"]))
        ((_, data),) = serialize_blob("i", ws.fetch("i"))
        proto = pb.BlobProto()
        proto.ParseFromString(data)
        assert proto.type == "std::unique_ptr<caffe2::IndexBase>" and proto.content == b"5 1"
        ws.feed("j", _roundtrip("i", ws.fetch("i")))
        ws.feed("q", keys[::-1])
        ws.run_operator_once(make_op("IndexGet", ["j", "q"], ["got"]))
        assert ws.fetch("got").tolist() == [2, 1]
        ws.feed("new", keys[:1] if keys.dtype == object else np.array([1], np.int32))
        if keys.dtype != object:
            ws.run_operator_once(make_op("IndexGet", ["j", "new"], ["miss"]))
            assert ws.fetch("miss").tolist() == [0]  # frozen: unknown keys map to 0


def test_unsavable_values_name_what_is_savable(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="Counter, Index"):
        serialize_blob("x", object())
