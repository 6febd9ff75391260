"""Tensor vectors, maps and the text file reader."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from asyncnet.errors import OperatorError
from asyncnet.proto import caffe2_pb2 as pb
from asyncnet.workspace import Workspace
from tests.ops.run_util import make_op


def test_tensor_vector_and_maps() -> None:
    with Workspace() as ws:
        ws.run_operator_once(make_op("CreateTensorVector", [], ["tv"]))
        ws.fetch("tv").extend([np.array([1, 2]), np.array([3])])
        ws.run_operator_once(make_op("TensorVectorSize", ["tv"], ["n"]))
        ws.run_operator_once(make_op("ConcatTensorVector", ["tv"], ["cat"]))
        assert int(ws.fetch("n")) == 2 and ws.fetch("cat").tolist() == [1, 2, 3]
        ws.feed("k", np.array([5, 7, 5], np.int64))
        ws.feed("v", np.array([1.0, 2.0, 3.0], np.float32))
        ws.run_operator_once(make_op("KeyValueToMap", ["k", "v"], ["m"]))
        ws.run_operator_once(make_op("MapToKeyValue", ["m"], ["k2", "v2"]))
        assert ws.fetch("k2").tolist() == [5, 7] and ws.fetch("v2").tolist() == [3.0, 2.0]
        ws.run_operator_once(make_op("CreateMap", [], ["empty"], key_dtype=pb.TensorProto.INT64))
        ws.run_operator_once(make_op("MapToKeyValue", ["empty"], ["k3", "v3"]))
        assert ws.fetch("k3").dtype == np.int64 and ws.fetch("k3").size == 0


@pytest.mark.timeout(30)
def test_text_file_reader_batches_and_passes(
    tmp_path: Path, no_thread_leak: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    f = tmp_path / "data.tsv"
    f.write_text("a\t1\t0.5\nb\t2\t1.5\nc\t3\t2.5\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    types = [pb.TensorProto.STRING, pb.TensorProto.INT32, pb.TensorProto.FLOAT]
    with Workspace() as ws:
        ws.run_operator_once(
            make_op("CreateTextFileReader", [], ["r"], filename=str(f), num_passes=2, field_types=types)
        )
        read = make_op("TextFileReaderRead", ["r"], ["s", "i", "x"], batch_size=4)
        ws.run_operator_once(read)
        assert ws.fetch("s").tolist() == [b"a", b"b", b"c", b"a"] and ws.fetch("i").tolist() == [1, 2, 3, 1]
        assert ws.fetch("x").dtype == np.float32
        ws.run_operator_once(read)
        assert ws.fetch("i").tolist() == [2, 3]
        ws.run_operator_once(read)
        assert ws.fetch("i").size == 0
        with pytest.raises(OperatorError, match="outputs"):
            ws.run_operator_once(make_op("TextFileReaderRead", ["r"], ["s"]))


def test_pack_and_unpack_records_nested() -> None:
    fields = [
        "label",
        "feat:lengths",
        "feat:values:keys",
        "feat:values:vals",
        "feat:values:w:lengths",
        "feat:values:w:x",
    ]
    label = np.array([1.0, 0.0, 1.0], np.float32)
    lengths = np.array([2, 0, 1], np.int32)
    keys = np.array([10, 11, 12], np.int64)
    vals = np.array([[1.0], [2.0], [3.0]])
    wl = np.array([1, 2, 0], np.int32)
    wx = np.array([7, 8, 9], np.int64)
    ins = [label, lengths, keys, vals, wl, wx]
    names = [f"f{i}" for i in range(6)]
    with Workspace() as ws:
        for n_, v in zip(names, ins):
            ws.feed(n_, v)
        ws.run_operator_once(make_op("PackRecords", names, ["packed"], fields=fields))
        packed = ws.fetch("packed")
        assert packed.shape == (3,)
        r0, r1, r2 = packed
        assert r0[0].tolist() == [1.0] and r0[2].tolist() == [10, 11] and r0[5].tolist() == [7, 8, 9]
        assert r1[2].size == 0 and r1[5].size == 0
        assert r2[2].tolist() == [12] and r2[4].tolist() == [0] and r2[5].size == 0
        outs = [f"u{i}" for i in range(6)]
        ws.run_operator_once(make_op("UnPackRecords", ["packed"], outs, fields=fields))
        for o, v in zip(outs, ins):
            np.testing.assert_array_equal(ws.fetch(o), v)
