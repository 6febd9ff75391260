"""Save / Load of counter, index and map blobs in Caffe2's record formats (counter_ops.cc, index_ops.cc,
map_ops.h): hand-built BlobProto records are read, written records parse to the same fields."""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from asyncnet.errors import AsyncNetError
from asyncnet.proto import caffe2_pb2 as pb
from asyncnet.serde import make_argument
from asyncnet.workspace import Workspace


def _op(op_type: str, inputs: list[str], outputs: list[str], **args: Any) -> pb.OperatorDef:
    return pb.OperatorDef(
        type=op_type, input=inputs, output=outputs, arg=[make_argument(k, v) for k, v in args.items()]
    )


def _records(path: Path) -> dict[bytes, pb.BlobProto]:
    # minidb layout (caffe2/core/db.cc), read by hand: int32 key length, int32 value length, key, value.
    data, out, pos = path.read_bytes(), {}, 0
    while pos < len(data):
        klen, vlen = struct.unpack_from("<ii", data, pos)
        pos += 8
        key, value = data[pos : pos + klen], data[pos + klen : pos + klen + vlen]
        pos += klen + vlen
        out[key] = pb.BlobProto.FromString(value)
    return out


def _write(path: Path, protos: dict[bytes, pb.BlobProto]) -> None:
    chunks = []
    for key, proto in protos.items():
        value = proto.SerializeToString()
        chunks.append(struct.pack("<ii", len(key), len(value)) + key + value)
    path.write_bytes(b"".join(chunks))


def _save(ws: Workspace, names: list[str], db: Path) -> None:
    ws.run_operator_once(_op("Save", names, [], db=str(db), db_type="minidb", absolute_path=1))


def _load(ws: Workspace, names: list[str], db: Path) -> None:
    ws.run_operator_once(_op("Load", [], names, db=str(db), db_type="minidb", absolute_path=1))


def test_counter_saves_its_count_and_loads_back(tmp_path: Path) -> None:
    ws = Workspace()
    ws.run_operator_once(_op("CreateCounter", [], ["c"], init_count=22))
    for _ in range(3):
        ws.run_operator_once(_op("CountDown", ["c"], ["done"]))
    db = tmp_path / "c.minidb"
    _save(ws, ["c"], db)
    rec = _records(db)[b"c"]
    assert rec.name == "c" and rec.type == "std::unique_ptr<Counter<int64_t>>"
    assert rec.tensor.data_type == pb.TensorProto.INT64
    assert list(rec.tensor.dims) == [1] and list(rec.tensor.int64_data) == [19]
    ws2 = Workspace()
    _load(ws2, ["c"], db)
    ws2.run_operator_once(_op("RetrieveCount", ["c"], ["n"]))
    assert int(ws2.fetch("n")) == 19


@pytest.mark.parametrize(
    "create,keys,dtype",
    [
        ("IntIndexCreate", [7, 3, 9], pb.TensorProto.INT32),
        ("LongIndexCreate", [2**40, 5, -1], pb.TensorProto.INT64),
        ("StringIndexCreate", ["b", "a", "zz"], pb.TensorProto.STRING),
    ],
)
def test_index_saves_keys_in_id_order_with_max_elements_and_frozen(
    tmp_path: Path, create: str, keys: list[Any], dtype: int
) -> None:
    ws = Workspace()
    ws.run_operator_once(_op(create, [], ["idx"], max_elements=10))
    ws.feed("k", np.array(keys, object if dtype == pb.TensorProto.STRING else None))
    ws.run_operator_once(_op("IndexGet", ["idx", "k"], ["ids"]))
    ws.run_operator_once(_op("IndexFreeze", ["idx"], ["idx"]))
    db = tmp_path / "i.minidb"
    _save(ws, ["idx"], db)
    rec = _records(db)[b"idx"]
    assert rec.type == "std::unique_ptr<caffe2::IndexBase>"
    assert rec.content == b"10 1"
    assert rec.tensor.data_type == dtype and list(rec.tensor.dims) == [3]
    stored = [s.decode() for s in rec.tensor.string_data] if dtype == pb.TensorProto.STRING else None
    stored = stored or list(rec.tensor.int64_data) or list(rec.tensor.int32_data)
    assert stored == keys
    ws2 = Workspace()
    _load(ws2, ["idx"], db)
    query = [keys[2], keys[0], "new" if dtype == pb.TensorProto.STRING else 12345]
    ws2.feed("q", np.array(query, object if dtype == pb.TensorProto.STRING else None))
    ws2.run_operator_once(_op("IndexGet", ["idx", "q"], ["ids"]))
    # Ids follow the stored order; the loaded index is frozen, so an unknown key maps to 0.
    assert ws2.fetch("ids").tolist() == [3, 1, 0]


def test_hand_built_caffe2_index_record_loads(tmp_path: Path) -> None:
    rec = pb.BlobProto(name="ix", type="std::unique_ptr<caffe2::IndexBase>", content=b"4 0")
    rec.tensor.name = "ix"
    rec.tensor.dims.append(2)
    rec.tensor.data_type = pb.TensorProto.INT64
    rec.tensor.int64_data.extend([40, 30])
    db = tmp_path / "hand.minidb"
    _write(db, {b"ix": rec})
    ws = Workspace()
    _load(ws, ["ix"], db)
    ws.feed("q", np.array([30, 50, 40], np.int64))
    ws.run_operator_once(_op("IndexGet", ["ix", "q"], ["ids"]))
    # Not frozen: 50 gets the next id (3).
    assert ws.fetch("ids").tolist() == [2, 3, 1]
    ws.feed("q2", np.array([60, 70], np.int64))
    with pytest.raises(AsyncNetError, match="max_elements"):
        ws.run_operator_once(_op("IndexGet", ["ix", "q2"], ["ids2"]))


def test_map_record_format_and_round_trip(tmp_path: Path) -> None:
    ws = Workspace()
    ws.feed("k", np.array([5, 1, 9], np.int64))
    ws.feed("v", np.array([50, 10, 90], np.int32))
    ws.run_operator_once(_op("KeyValueToMap", ["k", "v"], ["m"]))
    db = tmp_path / "m.minidb"
    _save(ws, ["m"], db)
    rec = _records(db)[b"m"]
    assert rec.type == "(std::unordered_map<int64_t, int32_t>)"
    protos = pb.TensorProtos.FromString(rec.content)
    assert [p.data_type for p in protos.protos] == [pb.TensorProto.INT64, pb.TensorProto.INT32]
    saved = dict(zip(protos.protos[0].int64_data, protos.protos[1].int32_data, strict=True))
    assert saved == {5: 50, 1: 10, 9: 90}
    ws2 = Workspace()
    _load(ws2, ["m"], db)
    ws2.run_operator_once(_op("MapToKeyValue", ["m"], ["k2", "v2"]))
    k2, v2 = ws2.fetch("k2"), ws2.fetch("v2")
    assert k2.dtype == np.int64 and v2.dtype == np.int32
    assert dict(zip(k2.tolist(), v2.tolist(), strict=True)) == {5: 50, 1: 10, 9: 90}


def test_unsaveable_values_name_the_savable_types(tmp_path: Path) -> None:
    ws = Workspace()
    ws.run_operator_once(_op("CreateMutex", [], ["mu"]))
    with pytest.raises(AsyncNetError, match="Counter"):
        _save(ws, ["mu"], tmp_path / "x.minidb")
