"""Example databases: ``asyncnet make-db``, then ``CreateDB`` + ``TensorProtosDBInput`` per shard."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from asyncnet.cli import main
from asyncnet.db.minidb import iter_records
from asyncnet.errors import ArgumentError, FileAccessError, OperatorError, UnsupportedError
from asyncnet.iopolicy import IOPolicy
from asyncnet.proto import caffe2_pb2 as pb
from asyncnet.serde import make_argument
from asyncnet.workspace import Workspace

N = 10


def _dataset(tmp_path: Path) -> tuple[Path, np.ndarray, np.ndarray]:
    images = np.arange(N * 2 * 3, dtype=np.float32).reshape(N, 2, 3)
    labels = np.arange(N, dtype=np.int32) * 7
    path = tmp_path / "data.npz"
    np.savez(path, data=images, label=labels)
    return path, images, labels


def _reader_net(db: Path, db_type: str, batch: int, shards: int = 1, shard: int = 0) -> pb.NetDef:
    net = pb.NetDef(name="read")
    op = net.op.add(type="CreateDB", output=["reader"])
    for k, v in {"db": str(db), "db_type": db_type, "num_shards": shards, "shard_id": shard}.items():
        op.arg.append(make_argument(k, v))
    return net


def _batches(db: Path, db_type: str, batch: int, runs: int, shards: int = 1, shard: int = 0) -> list[list[np.ndarray]]:
    read = pb.NetDef(name="batch")
    op = read.op.add(type="TensorProtosDBInput", input=["reader"], output=["data", "label"])
    op.arg.append(make_argument("batch_size", batch))
    out = []
    with Workspace() as ws:
        ws.run_net_once(_reader_net(db, db_type, batch, shards, shard))
        net = ws.create_net(read)
        for _ in range(runs):
            net.run()
            out.append([np.asarray(ws.fetch("data")), np.asarray(ws.fetch("label"))])
        ws.fetch("reader").close()
    return out


@pytest.mark.parametrize("db_type", ["minidb", "lmdb"])
def test_make_db_then_sharded_batches(tmp_path: Path, db_type: str, capsys: pytest.CaptureFixture[str]) -> None:
    if db_type == "lmdb":
        pytest.importorskip("lmdb", reason="needs the 'lmdb' extra")
    npz, images, labels = _dataset(tmp_path)
    db = tmp_path / f"train.{db_type}"
    assert main(["make-db", str(npz), str(db), "--db-type", db_type, "--fields", "data", "label"]) == 0
    assert f"wrote {N} records" in capsys.readouterr().out
    for shard in range(2):
        mine = np.arange(shard, N, 2)  # records index % 2 == shard, in key order
        # 5 records per shard, batches of 3: the second batch wraps around to the shard's start.
        got = _batches(db, db_type, 3, 2, shards=2, shard=shard)
        want_idx = [mine[:3], np.concatenate([mine[3:], mine[:1]])]
        for (data, label), idx in zip(got, want_idx):
            np.testing.assert_array_equal(data, images[idx])
            np.testing.assert_array_equal(label, labels[idx])
            assert data.dtype == np.float32 and label.dtype == np.int32


def test_minidb_layout_and_single_record_reads(tmp_path: Path) -> None:
    npz, images, labels = _dataset(tmp_path)
    db = tmp_path / "train.minidb"
    assert main(["make-db", str(npz), str(db), "--no-progress"]) == 0
    keys = [k for _, k, _ in iter_records(db.read_bytes())]
    assert keys == [f"{i}".encode() for i in range(N)]
    (data, label), _ = _batches(db, "minidb", 0, 2)
    np.testing.assert_array_equal(data, images[0])  # batch_size 0: one record, no batch axis
    assert int(label) == labels[0]


def test_db_errors_are_clear(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    np.savez(tmp_path / "bad.npz", a=np.zeros(3), b=np.zeros(4))
    assert main(["make-db", str(tmp_path / "bad.npz"), str(tmp_path / "x")]) == 1
    assert "share a non-zero first dimension" in capsys.readouterr().err
    with Workspace() as ws, pytest.raises(ArgumentError, match="shard_id 2, num_shards 2"):
        ws.run_net_once(_reader_net(tmp_path / "x", "minidb", 1, 2, 2))
    with Workspace() as ws, pytest.raises(OperatorError, match="cannot read"):
        ws.run_net_once(_reader_net(tmp_path / "missing", "minidb", 1))
    with Workspace() as ws, pytest.raises(UnsupportedError, match="not supported"):
        ws.run_net_once(_reader_net(tmp_path / "x", "leveldb", 1))


def test_create_db_goes_through_the_io_policy(tmp_path: Path) -> None:
    npz, _, _ = _dataset(tmp_path)
    db = tmp_path / "train.minidb"
    assert main(["make-db", str(npz), str(db), "--no-progress"]) == 0
    policy = IOPolicy.restricted([tmp_path / "elsewhere"], [tmp_path / "elsewhere"])
    with Workspace(io_policy=policy) as ws, pytest.raises(FileAccessError, match="CreateDB.*outside"):
        ws.run_net_once(_reader_net(db, "minidb", 1))
    # The file store of a rendezvous is written there: the write policy applies.
    net = pb.NetDef(name="store", op=[pb.OperatorDef(type="FileStoreHandlerCreate", output=["h"])])
    net.op[0].arg.append(make_argument("path", str(tmp_path / "store")))
    with Workspace(io_policy=policy) as ws, pytest.raises(FileAccessError, match="FileStoreHandlerCreate.*outside"):
        ws.run_net_once(net)
