"""The schema: Caffe2's field facts, legacy spellings, and freshness of the generated code."""

from __future__ import annotations

import importlib.util
import sys

import pytest

from asyncnet.proto import caffe2_pb2 as pb
from asyncnet.serde import parse_message
from tests.conftest import ROOT


def _field(msg: type, name: str) -> object:
    return msg.DESCRIPTOR.fields_by_name[name]  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("message", "field", "number"),
    [
        (pb.TensorProto, "dims", 1),
        (pb.TensorProto, "data_type", 2),
        (pb.TensorProto, "float_data", 3),
        (pb.TensorProto, "raw_data", 13),
        (pb.TensorProto, "data_format", 15),
        (pb.TensorProto, "segment", 11),
        (pb.Argument, "t", 10),
        (pb.Argument, "n", 8),
        (pb.Argument, "nets", 9),
        (pb.Argument, "qtensors", 12),
        (pb.DeviceOption, "device_id", 2),
        (pb.DeviceOption, "numa_node_id", 5),
        (pb.OperatorDef, "control_input", 8),
        (pb.OperatorDef, "debug_info", 10),
        (pb.OperatorDef, "op_version", 12),
        (pb.NetDef, "partition_info", 9),
        (pb.ExecutionStep, "run_every_ms", 11),
        (pb.ExecutionStep, "num_concurrent_instances", 13),
        (pb.BlobProto, "content_chunk_id", 7),
    ],
)
def test_field_numbers_match_caffe2(message: type, field: str, number: int) -> None:
    assert _field(message, field).number == number  # type: ignore[attr-defined]


def test_proto2_defaults() -> None:
    # proto2 matters: an unset data_type reads as FLOAT, not UNDEFINED.
    assert pb.TensorProto().data_type == pb.TensorProto.FLOAT
    assert pb.QTensorProto.DESCRIPTOR.fields_by_name["data_type"].default_value == pb.TensorProto.INT32
    assert pb.TensorShape().data_type == pb.TensorProto.FLOAT
    assert pb.OperatorDef().is_gradient_op is False


def test_packed_flags() -> None:
    t = pb.TensorProto(float_data=[1.0, 2.0])
    # packed: one length-delimited record (tag 0x1a) instead of a tag per value (0x1d).
    assert t.SerializeToString().startswith(b"\x1a\x08")
    a = pb.Argument(ints=[1, 2])
    assert a.SerializeToString() == b"\x30\x01\x30\x02"  # Argument.ints is not packed in Caffe2


def test_legacy_cuda_gpu_id_loads() -> None:
    text = b'name: "n" device_option { device_type: 1 cuda_gpu_id: 3 }\nop { type: "Relu" input: "cuda_gpu_id" output: "y" }'
    net = parse_message(text, pb.NetDef)
    assert net.device_option.device_id == 3
    assert net.op[0].input[0] == "cuda_gpu_id"  # strings are left alone


def test_generated_code_is_fresh() -> None:
    if importlib.util.find_spec("grpc_tools") is None:
        pytest.fail("grpcio-tools is a test dependency and must be installed")
    sys.path.insert(0, str(ROOT / "tools"))
    try:
        import gen_proto
    finally:
        sys.path.pop(0)
    assert gen_proto.check() == [], "run `python tools/gen_proto.py` and commit the result"


def test_service_code_is_generated_and_imports_within_the_package() -> None:
    sys.path.insert(0, str(ROOT / "tools"))
    try:
        import gen_proto
    finally:
        sys.path.pop(0)
    files = gen_proto.generate()
    assert {"serving_pb2.py", "serving_pb2.pyi", "serving_pb2_grpc.py"} <= set(files)
    # protoc's bare `import caffe2_pb2` would fail inside the asyncnet.proto package.
    assert b"from asyncnet.proto import caffe2_pb2 as caffe2__pb2" in files["serving_pb2.py"]
    assert b"from asyncnet.proto import serving_pb2 as serving__pb2" in files["serving_pb2_grpc.py"]
