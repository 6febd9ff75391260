"""EstimateAllBlobSizes against Caffe2's documented estimate, and against the bytes Save really writes."""

from __future__ import annotations

import numpy as np

from asyncnet.db.blobs import serialize_blob
from asyncnet.proto import caffe2_pb2 as pb
from asyncnet.workspace import Workspace
from tests.ops.run_util import make_op


def test_estimates_follow_caffe2_rules() -> None:
    rng = np.random.default_rng(0)
    blobs = {
        "float1": rng.random(4000).astype(np.float32),
        "float3": rng.random(2).astype(np.float32),
        "ui16": rng.integers(0, 0xFFFF, 1024).astype(np.uint16),
        "ids": np.arange(10, dtype=np.int64),
        "flags": np.ones(7, bool),
        "text": b"hello",
    }
    options = pb.SerializationOptions(options=[pb.BlobSerializationOptions(blob_name_regex="float1", chunk_size=500)])
    with Workspace() as ws:
        for k, v in blobs.items():
            ws.feed(k, v)
        ws.run_operator_once(make_op("EstimateAllBlobSizes", [], ["names", "sizes"], options=options))
        got = dict(zip([n.decode() for n in ws.fetch("names")], ws.fetch("sizes").tolist()))
    per = {"float1": 4, "float3": 4, "ui16": 3, "ids": 8, "flags": 1}
    for name, value in blobs.items():
        if name == "text":
            assert got[name] == len(name) + 5 + 20
            continue
        assert isinstance(value, np.ndarray)
        chunks = 8 if name == "float1" else 1  # 4000 elements in chunks of 500
        assert got[name] == chunks * (len(name) + 50) + value.size * per[name], name
    # The outputs are listed too, sized as they are about to be written.
    n = len(got)
    assert got["names"] == len("names") + 50 + 50 * n and got["sizes"] == len("sizes") + 50 + 8 * n


def test_estimates_are_close_to_what_save_writes() -> None:
    rng = np.random.default_rng(1)
    for value in (rng.random(3000).astype(np.float32), rng.integers(0, 0xFFFF, 800).astype(np.uint16)):
        with Workspace() as ws:
            ws.feed("blob", value)
            ws.run_operator_once(make_op("EstimateAllBlobSizes", [], ["names", "sizes"]))
            estimate = dict(zip(ws.fetch("names").tolist(), ws.fetch("sizes").tolist()))[b"blob"]
        written = sum(len(data) for _, data in serialize_blob("blob", value))
        assert abs(estimate - written) <= max(100, 0.25 * written)
