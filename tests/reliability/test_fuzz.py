"""Hostile inputs: every loader raises only AsyncNetError (bounded, derandomized fuzz sample + named cases)."""

from __future__ import annotations

import importlib.util
import sys
import time
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from asyncnet.commands._common import load_npz
from asyncnet.errors import AsyncNetError, ParseError, TensorError
from asyncnet.net import Net
from asyncnet.proto import caffe2_pb2 as pb
from asyncnet.serde import parse_message, tensor_to_numpy
from asyncnet.workspace import Workspace
from tests.conftest import realnets_path

BENCH = Path(__file__).resolve().parents[2] / "bench" / "fuzz_loaders.py"
CORE_TARGETS = [
    "netdef",
    "net_prepare",
    "plandef",
    "tensorproto",
    "tensorprotos",
    "blobproto",
    "npz",
    "minidb",
    "protodb",
    "op_def",
    "check_and_run",
]


def _bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("asyncnet_bench_fuzz_loaders", BENCH)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.timeout(240)
def test_fuzz_sample_raises_only_library_errors() -> None:
    realnets_path()  # the seeds are the real files: skip cleanly without the corpus
    bench = _bench()
    reports = bench.run_fuzz(cases=200, seed=0, only=CORE_TARGETS, limit=10.0)
    problems = {n: r.crashes[:3] + r.hangs[:3] for n, r in reports.items() if r.crashes or r.hangs}
    assert not problems, problems
    for name, r in reports.items():
        assert r.cases == 200
        # The mutations must actually break things, and not only at the parser.
        assert sum(r.errors.values()) > 40, (name, r.errors)
    assert reports["net_prepare"].errors.keys() - {"ParseError"}, "no mutated net got past parsing"


@pytest.mark.timeout(120)
def test_fuzz_sample_of_the_caffe_importer() -> None:
    realnets_path()
    bench = _bench()
    reports = bench.run_fuzz(cases=100, seed=0, only=["caffe_prototxt", "caffemodel"], limit=10.0)
    problems = {n: r.crashes[:3] + r.hangs[:3] for n, r in reports.items() if r.crashes or r.hangs}
    assert not problems, problems
    assert all(sum(r.errors.values()) > 20 for r in reports.values()), {n: r.errors for n, r in reports.items()}


def _tensor(dims: list[int], data_type: int = pb.TensorProto.FLOAT) -> bytes:
    t = pb.TensorProto(name="t", dims=dims)
    t.data_type = data_type  # type: ignore[assignment]
    return t.SerializeToString()


@pytest.mark.parametrize(
    ("dims", "match"),
    [
        ([10**12], "refusing to allocate"),
        ([2**40, 2**40], "refusing to allocate"),
        ([0, 2**62, 2**62], "refusing to allocate"),
        ([3, -1], "negative dimension"),
    ],
)
def test_absurd_tensor_dims_are_refused_before_allocating(dims: list[int], match: str) -> None:
    t0 = time.perf_counter()
    with pytest.raises(TensorError, match=match):
        tensor_to_numpy(parse_message(_tensor(dims), pb.TensorProto))
    assert time.perf_counter() - t0 < 0.5


def test_unknown_enum_value_and_wrong_message_type() -> None:
    bad_enum = _tensor([1]).replace(b"\x10\x01", b"\x10\x63")  # data_type = 99
    with pytest.raises(ParseError):
        tensor_to_numpy(parse_message(bad_enum, pb.TensorProto))
    tensor_bytes = pb.TensorProto(name="t", dims=[2, 3], float_data=[1.0] * 6).SerializeToString()
    with pytest.raises(ParseError, match="not a valid NetDef"):
        parse_message(tensor_bytes, pb.NetDef)


def test_invalid_utf8_names_are_refused() -> None:
    net = pb.NetDef(name="n")
    net.op.add(type="Relu", input=["AAAA"], output=["y"])
    data = net.SerializeToString().replace(b"AAAA", b"\xff\xfe\xfd\xfc")
    with pytest.raises(ParseError, match="not valid UTF-8"):
        parse_message(data, pb.NetDef)


@pytest.mark.parametrize("depth", [50, 400])
def test_deeply_nested_if_nets(depth: int) -> None:
    bench = _bench()
    net = bench._deep_net(depth)
    # Binary: protobuf's own recursion limit or ours; never a RecursionError.
    try:
        data = net.SerializeToString()
    except Exception:  # noqa: BLE001 - some protobuf builds refuse to serialize this deep
        data = b""
    if data:
        try:
            parsed = parse_message(data, pb.NetDef)
            Net(parsed, Workspace()).close()
        except AsyncNetError:
            pass
    text = ("op { type: 'If' arg { name: 'then_net' n { " * depth + "}}}" * depth).encode()
    try:
        parse_message(text, pb.NetDef)
    except AsyncNetError:
        pass


def test_duplicate_arguments_are_refused_at_preparation() -> None:
    net = pb.NetDef(name="dup")
    op = net.op.add(type="Softmax", input=["x"], output=["y"])
    op.arg.add(name="axis", i=1)
    op.arg.add(name="axis", i=0)
    ws = Workspace()
    ws.feed("x", np.ones((2, 2), np.float32))
    with pytest.raises(AsyncNetError, match="twice"):
        Net(net, ws)


@pytest.mark.parametrize(
    "content",
    [b"", b"PK\x03\x04garbage", b"\x93NUMPY\x01\x00v\x00{'descr': '<f4', 'fortran_order': False, 'shape': (3,), }"],
)
def test_bad_npz_files(tmp_path: Path, content: bytes) -> None:
    p = tmp_path / "in.npz"
    p.write_bytes(content)
    with pytest.raises(ParseError):
        load_npz(p)


def test_npz_claiming_a_huge_array_is_refused(tmp_path: Path) -> None:
    import io
    import zipfile

    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False, "shape": (10**9,)})
    p = tmp_path / "huge.npz"
    with zipfile.ZipFile(p, "w") as zf:
        zf.writestr("x.npy", header.getvalue() + b"\x00" * 16)
    with pytest.raises(ParseError, match="claims"):
        load_npz(p)
