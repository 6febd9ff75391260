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
