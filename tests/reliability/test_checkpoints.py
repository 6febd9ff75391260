"""Save/Load operators and the minidb/protodb checkpoint formats."""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from asyncnet.db import load_checkpoint, save_checkpoint
from asyncnet.db.minidb import iter_records
from asyncnet.errors import ArgumentError, AsyncNetError, CheckpointError, OperatorError, UnsupportedError
from asyncnet.proto import caffe2_pb2 as pb
from asyncnet.serde import make_argument
from asyncnet.workspace import Workspace


def _op(op_type: str, inputs: list[str], outputs: list[str], **args: Any) -> pb.OperatorDef:
    return pb.OperatorDef(
        type=op_type, input=inputs, output=outputs, arg=[make_argument(k, v) for k, v in args.items()]
    )


def _hand_record(key: bytes, value: bytes) -> bytes:
    # Written from the layout in caffe2/core/db.cc, independently of asyncnet.db.minidb.
    return struct.pack("<i", len(key)) + struct.pack("<i", len(value)) + key + value


def _hand_tensor_blob(name: str, dims: list[int], floats: list[float], begin: int, end: int) -> bytes:
    b = pb.BlobProto()
    b.name = name
    b.type = "Tensor"
    b.tensor.name = name
    b.tensor.dims.extend(dims)
    b.tensor.data_type = pb.TensorProto.FLOAT
    b.tensor.float_data.extend(floats)
    b.tensor.device_detail.device_type = 0
    b.tensor.segment.begin = begin
    b.tensor.segment.end = end
    return b.SerializeToString()


def test_reads_hand_written_minidb_with_chunks_out_of_order(tmp_path: Path) -> None:
    s = pb.BlobProto(name="msg", type="std::string", content=b"\x00\xffbytes")
    data = (
        _hand_record(b"w#%1", _hand_tensor_blob("w", [2, 3], [3.0, 4.0, 5.0], 3, 6))
        + _hand_record(b"msg", s.SerializeToString())
        + _hand_record(b"w#%0", _hand_tensor_blob("w", [2, 3], [0.0, 1.0, 2.0], 0, 3))
    )
    path = tmp_path / "hand.minidb"
    path.write_bytes(data)
    out = load_checkpoint(path)
    np.testing.assert_array_equal(out["w"], np.arange(6, dtype=np.float32).reshape(2, 3))
    assert out["w"].dtype == np.float32
    assert out["msg"] == b"\x00\xffbytes"


def test_written_minidb_is_byte_exact_caffe2_layout(tmp_path: Path) -> None:
    path = tmp_path / "w.minidb"
    save_checkpoint(path, {"w": np.arange(6, dtype=np.float32).reshape(2, 3)}, chunk_size=3)
    expected = _hand_record(b"w#%0", _hand_tensor_blob("w", [2, 3], [0.0, 1.0, 2.0], 0, 3)) + _hand_record(
        b"w#%1", _hand_tensor_blob("w", [2, 3], [3.0, 4.0, 5.0], 3, 6)
    )
    assert path.read_bytes() == expected


@pytest.mark.parametrize("db_type", ["minidb", "protodb"])
def test_round_trip_all_dtypes(tmp_path: Path, db_type: str) -> None:
    rng = np.random.default_rng(0)
    blobs: dict[str, Any] = {
        "f32": rng.standard_normal((3, 4)).astype(np.float32),
        "f64": rng.standard_normal(5),
        "f16": rng.standard_normal(7).astype(np.float16),
        "i32": rng.integers(-(2**31), 2**31 - 1, 9, dtype=np.int32),
        "i64": rng.integers(-(2**62), 2**62, 4, dtype=np.int64),
        "i8": np.array([-128, 0, 127], np.int8),
        "u8": np.array([0, 255], np.uint8),
        "i16": np.array([-32768, 32767], np.int16),
        "u16": np.array([0, 65535], np.uint16),
        "bool": np.array([[True, False], [False, True]]),
        "empty": np.zeros((0, 5), np.float32),
        "scalar": np.array(2.5, np.float32),
        "str": np.array([b"a", b"bc", b""], dtype=object),
    }
    path = tmp_path / f"all.{db_type}"
    save_checkpoint(path, blobs, db_type, chunk_size=2)
    out = load_checkpoint(path, db_type)
    assert list(out) == list(blobs)
    for name, value in blobs.items():
        assert out[name].dtype == value.dtype, name
        assert out[name].shape == value.shape, name
        np.testing.assert_array_equal(out[name], value)


def test_save_and_load_ops_with_prefixes_and_overrides(tmp_path: Path) -> None:
    ws = Workspace()
    ws.feed("gpu_0/conv_w", np.arange(12, dtype=np.float32).reshape(3, 4))
    ws.feed("gpu_0/conv_b", np.ones(3, np.float32))
    db = str(tmp_path / "model.minidb")
    ws.run_operator_once(
        _op(
            "Save",
            ["gpu_0/conv_w", "gpu_0/conv_b"],
            [],
            db=db,
            db_type="minidb",
            absolute_path=1,
            strip_prefix="gpu_0/",
        )
    )
    keys = [k for _, k, _ in iter_records(Path(db).read_bytes())]
    assert keys == [b"conv_w#%0", b"conv_b#%0"]
    ws2 = Workspace()
    ws2.run_operator_once(
        _op("Load", [], ["gpu_1/conv_w", "gpu_1/conv_b"], db=db, db_type="minidb", absolute_path=1, add_prefix="gpu_1/")
    )
    np.testing.assert_array_equal(ws2.fetch("gpu_1/conv_w"), ws.fetch("gpu_0/conv_w"))
    ws2.run_operator_once(
        _op("Load", [], ["b"], db=db, db_type="minidb", absolute_path=1, source_blob_names=["conv_b"])
    )
    np.testing.assert_array_equal(ws2.fetch("b"), np.ones(3, np.float32))
    ws3 = Workspace()
    ws3.run_operator_once(_op("Load", [], [], db=db, db_type="minidb", absolute_path=1, load_all=1))
    assert ws3.blobs() == ["conv_b", "conv_w"]
    ws.run_operator_once(
        _op("Save", ["gpu_0/conv_b"], [], db=db, db_type="minidb", absolute_path=1, blob_name_overrides=["renamed"])
    )
    assert load_checkpoint(db).keys() == {"renamed"}


def test_load_missing_blob_fails_unless_allow_incomplete(tmp_path: Path) -> None:
    db = str(tmp_path / "m.minidb")
    save_checkpoint(db, {"a": np.ones(2, np.float32)})
    ws = Workspace()
    with pytest.raises(OperatorError, match=r"lack \['b'\]") as info:
        ws.run_operator_once(_op("Load", [], ["a", "b"], db=db, db_type="minidb", absolute_path=1))
    assert isinstance(info.value.cause, CheckpointError)
    assert not ws.has("a") and not ws.has("b")
    ws.run_operator_once(_op("Load", [], ["a", "b"], db=db, db_type="minidb", absolute_path=1, allow_incomplete=1))
    assert ws.has("a") and not ws.has("b")


def test_load_from_several_dbs_and_duplicate_key(tmp_path: Path) -> None:
    d1, d2 = str(tmp_path / "1.minidb"), str(tmp_path / "2.minidb")
    save_checkpoint(d1, {"a": np.ones(2, np.float32)})
    save_checkpoint(d2, {"b": np.zeros(2, np.float32)})
    ws = Workspace()
    ws.run_operator_once(_op("Load", [], ["a", "b"], dbs=[d1, d2], db_type="minidb", absolute_path=1))
    assert ws.has("a") and ws.has("b")
    save_checkpoint(d2, {"a": np.zeros(2, np.float32)})
    with pytest.raises(OperatorError, match="in both"):
        ws.run_operator_once(_op("Load", [], ["a"], dbs=[d1, d2], db_type="minidb", absolute_path=1))


def test_checkpoint_op_pattern_and_every(tmp_path: Path) -> None:
    ws = Workspace()
    ws.feed("w", np.arange(3, dtype=np.float32))
    pattern = str(tmp_path / "ckpt_%04d.minidb")
    op = _op("Checkpoint", ["iter", "w"], [], db=pattern, db_type="minidb", absolute_path=1, every=2)
    for i in range(5):
        ws.feed("iter", np.array([i], np.int64))
        ws.run_operator_once(op)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt_0000.minidb", "ckpt_0002.minidb", "ckpt_0004.minidb"]
    # "Snapshot" is Caffe2's old name for the same operator.
    old_name = _op(
        "Snapshot", ["iter", "w"], [], db=str(tmp_path / "snap_%d.minidb"), db_type="minidb", absolute_path=1
    )
    ws.run_operator_once(old_name)
    np.testing.assert_array_equal(load_checkpoint(tmp_path / "snap_4.minidb")["w"], np.arange(3, dtype=np.float32))


def test_db_exists(tmp_path: Path) -> None:
    ws = Workspace()
    db = str(tmp_path / "x.minidb")
    op = _op("DBExists", [], ["e"], db_name=db, db_type="minidb", absolute_path=1)
    ws.run_operator_once(op)
    assert not ws.fetch("e")
    save_checkpoint(db, {"a": np.ones(1, np.float32)})
    ws.run_operator_once(op)
    assert ws.fetch("e")


@pytest.mark.parametrize(
    ("op_def", "error", "match"),
    [
        (_op("Save", ["x"], [], db="a"), ArgumentError, "db_type"),
        (_op("Save", ["x"], [], db="a", db_type="leveldb"), UnsupportedError, "leveldb"),
        (_op("Save", ["x"], [], db_type="minidb"), ArgumentError, "'db'"),
        (_op("Save", ["x", "y"], [], db="a", db_type="minidb", blob_name_overrides=["z"]), ArgumentError, "1 names"),
        (_op("Load", [], ["x", "x2"], db="a", db_type="minidb", source_blob_names=["q", "q"]), ArgumentError, "'q'"),
        (_op("Load", ["reader"], ["x"], db_type="minidb"), UnsupportedError, "DBReader"),
        (_op("Checkpoint", ["it", "x"], [], db="no_field", db_type="minidb"), ArgumentError, "integer field"),
    ],
)
def test_bad_arguments_refused_at_preparation(op_def: pb.OperatorDef, error: type[Exception], match: str) -> None:
    ws = Workspace()
    ws.feed("x", np.ones(1, np.float32))
    ws.feed("y", np.ones(1, np.float32))
    with pytest.raises(error, match=match):
        ws.run_operator_once(op_def)


def _sample_file(tmp_path: Path) -> Path:
    path = tmp_path / "sample.minidb"
    blobs = {"w": np.arange(10, dtype=np.float32), "b": np.arange(4, dtype=np.int64), "s": "text"}
    save_checkpoint(path, blobs, chunk_size=4)
    return path


def test_every_truncation_is_an_error_or_a_record_boundary(tmp_path: Path) -> None:
    path = _sample_file(tmp_path)
    data = path.read_bytes()
    boundaries = {0}
    pos = 0
    while pos < len(data):
        k, v = struct.unpack_from("<ii", data, pos)
        pos += 8 + k + v
        boundaries.add(pos)
    cut_file = tmp_path / "cut.minidb"
    for cut in range(1, len(data)):
        cut_file.write_bytes(data[:cut])
        if cut in boundaries:
            # Whole records: blobs may be missing, but a Load asking for them all must fail.
            ws = Workspace()
            with pytest.raises(OperatorError) as info:
                ws.run_operator_once(
                    _op("Load", [], ["w", "b", "s"], db=str(cut_file), db_type="minidb", absolute_path=1)
                )
            assert isinstance(info.value.cause, CheckpointError)
            continue
        with pytest.raises(CheckpointError, match=r"cut\.minidb.*record #\d+"):
            load_checkpoint(cut_file)


def test_bit_flips_never_escape_as_foreign_errors(tmp_path: Path) -> None:
    path = _sample_file(tmp_path)
    data = path.read_bytes()
    rng = np.random.default_rng(7)
    bad = tmp_path / "flip.minidb"
    errors = 0
    for _ in range(400):
        buf = bytearray(data)
        for pos in rng.integers(0, len(buf), int(rng.integers(1, 4))):
            buf[pos] ^= 1 << int(rng.integers(0, 8))
        bad.write_bytes(bytes(buf))
        try:
            load_checkpoint(bad)
        except CheckpointError as e:
            assert "flip.minidb" in str(e)
            errors += 1
    assert errors > 100


def test_corrupt_chunks_are_named(tmp_path: Path) -> None:
    overlap = _hand_record(b"w#%0", _hand_tensor_blob("w", [4], [0.0, 1.0, 2.0], 0, 3)) + _hand_record(
        b"w#%1", _hand_tensor_blob("w", [4], [2.0, 3.0], 2, 4)
    )
    missing = _hand_record(b"w#%0", _hand_tensor_blob("w", [4], [0.0, 1.0], 0, 2))
    conflict = _hand_record(b"w#%0", _hand_tensor_blob("w", [4], [0.0, 1.0], 0, 2)) + _hand_record(
        b"w#%1", _hand_tensor_blob("w", [5], [2.0, 3.0], 2, 4)
    )
    huge = _hand_record(b"w#%0", _hand_tensor_blob("w", [10**8, 10**8], [0.0], 0, 1))
    not_blob = _hand_record(b"w#%0", b"\xff\xff\xff\xff")
    cases = {
        "overlap": (overlap, "overlaps"),
        "missing": (missing, "cover 2 of 4"),
        "conflict": (conflict, "earlier chunks"),
        "huge": (huge, "refusing to allocate"),
        "not_blob": (not_blob, "not a BlobProto"),
    }
    for name, (data, match) in cases.items():
        p = tmp_path / f"{name}.minidb"
        p.write_bytes(data)
        with pytest.raises(CheckpointError, match=match) as info:
            load_checkpoint(p)
        assert p.name in str(info.value)


def test_missing_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load_checkpoint(tmp_path / "nope.minidb")
    with pytest.raises(CheckpointError, match="directory"):
        load_checkpoint(tmp_path)
    with pytest.raises(AsyncNetError):
        save_checkpoint(tmp_path / "x.minidb", {"bad": object()})
    assert not (tmp_path / "x.minidb").exists()
    assert not list(tmp_path.iterdir())


def test_load_shape_hint_feeds_the_checker() -> None:
    from asyncnet.checker import check_net

    net = pb.NetDef(name="load")
    net.op.extend(
        [
            _op("Load", [], ["w"], db="m.minidb", db_type="minidb", shape=[3, 4], dtype=pb.TensorProto.INT64),
            _op("Relu", ["w"], ["y"]),
        ]
    )
    net.external_output.append("y")
    report = check_net(net)
    assert report.ok, report.lines()
    assert str(report.shapes["y"]) == "(3, 4) int64"


def test_save_options_pick_each_blobs_chunk_size(tmp_path: Path) -> None:
    # Caffe2's SerializationOptions: the first entry whose blob_name_regex fully matches sets the chunk
    # size; -1 is one chunk; names no entry matches keep the op's chunk_size.
    ws = Workspace()
    for name in ("int16_data", "uint16_data", "float16_data", "int64_data", "other"):
        ws.feed(name, np.arange(95, dtype=np.float32))
    opts = pb.SerializationOptions(
        options=[
            pb.BlobSerializationOptions(blob_name_regex="int16_data", chunk_size=10),
            pb.BlobSerializationOptions(blob_name_regex=".*16_data", chunk_size=20),
            pb.BlobSerializationOptions(blob_name_regex="float16_data", chunk_size=30),
            pb.BlobSerializationOptions(blob_name_regex="other", chunk_size=-1),
        ]
    )
    db = str(tmp_path / "opts.minidb")
    names = ["int16_data", "uint16_data", "float16_data", "int64_data", "other"]
    ws.run_operator_once(
        _op(
            "Save", names, [], db=db, db_type="minidb", absolute_path=1, chunk_size=40, options=opts.SerializeToString()
        )
    )
    counts: dict[str, int] = {}
    for _, key, _ in iter_records(Path(db).read_bytes()):
        blob = key.decode().split("#%")[0]
        counts[blob] = counts.get(blob, 0) + 1
    assert counts == {"int16_data": 10, "uint16_data": 5, "float16_data": 5, "int64_data": 3, "other": 1}
    loaded = load_checkpoint(db)
    for name in names:
        np.testing.assert_array_equal(loaded[name], np.arange(95, dtype=np.float32))
