"""TensorProto/Argument conversion and file reading/writing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from asyncnet.errors import ArgumentError, ParseError, TensorError
from asyncnet.proto import caffe2_pb2 as pb
from asyncnet.serde import (
    argument_value,
    make_argument,
    numpy_to_tensor,
    parse_message,
    read_message,
    read_net,
    tensor_to_numpy,
    write_message,
)

DTYPES = [np.float32, np.float64, np.int32, np.int64, np.int16, np.int8, np.uint8, np.uint16, np.bool_, np.float16]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("raw", [False, True])
@given(data=st.data())
def test_tensor_round_trip_every_dtype(dtype: type, raw: bool, data: st.DataObject) -> None:
    shape = data.draw(hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=4))
    arr = data.draw(hnp.arrays(dtype, shape))
    t = numpy_to_tensor(arr, "x", raw=raw)
    back = tensor_to_numpy(pb.TensorProto.FromString(t.SerializeToString()))
    assert back.dtype == np.dtype(dtype)
    assert back.shape == arr.shape
    np.testing.assert_array_equal(back, arr)  # NaN == NaN here; bit patterns of float16 survive


@given(st.lists(st.binary(max_size=8), max_size=6))
def test_string_tensor_round_trip(values: list[bytes]) -> None:
    arr = np.empty(len(values), dtype=object)
    arr[:] = values
    t = numpy_to_tensor(arr)
    assert t.data_type == pb.TensorProto.STRING
    assert list(tensor_to_numpy(t)) == values


def test_byte_type_reads_byte_data() -> None:
    t = pb.TensorProto(dims=[2, 2], data_type=pb.TensorProto.BYTE, byte_data=b"\x01\x02\x03\xff")
    np.testing.assert_array_equal(tensor_to_numpy(t), np.array([[1, 2], [3, 255]], np.uint8))


def test_float16_stored_as_uint16_bit_patterns() -> None:
    t = pb.TensorProto(dims=[2], data_type=pb.TensorProto.FLOAT16, int32_data=[0x3C00, 0xC000])
    np.testing.assert_array_equal(tensor_to_numpy(t), np.array([1.0, -2.0], np.float16))


def test_bfloat16_format() -> None:
    vals = np.array([1.0, -2.5], np.float32)
    raw = (vals.view(np.uint32) >> 16).astype("<u2").tobytes()
    t = pb.TensorProto(dims=[2], data_type=pb.TensorProto.FLOAT, data_format=1, raw_data=raw)
    np.testing.assert_array_equal(tensor_to_numpy(t), vals)


def test_zero_sized_dims() -> None:
    t = pb.TensorProto(dims=[0, 3], data_type=pb.TensorProto.FLOAT)
    assert tensor_to_numpy(t).shape == (0, 3)


def test_unset_data_type_is_float() -> None:
    t = pb.TensorProto(dims=[2], float_data=[1.5, 2.5])
    assert tensor_to_numpy(t).dtype == np.float32


def test_segment() -> None:
    from asyncnet.serde import tensor_data

    t = pb.TensorProto(dims=[4], float_data=[2.0, 3.0])
    t.segment.begin, t.segment.end = 1, 3
    np.testing.assert_array_equal(tensor_data(t), [2.0, 3.0])
    with pytest.raises(TensorError, match="segment"):
        tensor_to_numpy(t)
    full = pb.TensorProto(dims=[2], float_data=[1.0, 2.0])
    full.segment.begin, full.segment.end = 0, 2
    np.testing.assert_array_equal(tensor_to_numpy(full), [1.0, 2.0])


@pytest.mark.parametrize(
    ("tensor", "match"),
    [
        (pb.TensorProto(dims=[2, 3], float_data=[1.0] * 5), "float_data has 5 values but dims/segment need 6"),
        (pb.TensorProto(dims=[3], data_type=pb.TensorProto.INT64, int64_data=[1]), "int64_data has 1"),
        (pb.TensorProto(dims=[2], data_type=pb.TensorProto.INT32, raw_data=b"\0" * 7), "raw_data holds 7 bytes"),
        (pb.TensorProto(dims=[-1], float_data=[]), "negative dimension"),
        (pb.TensorProto(dims=[10**6, 10**6, 10**6]), "refusing to allocate"),
        (pb.TensorProto(dims=[1], data_type=pb.TensorProto.UNDEFINED), "no array form"),
        (pb.TensorProto(dims=[1], data_type=pb.TensorProto.INT8, int32_data=[300]), "do not fit int8"),
    ],
)
def test_bad_tensors_are_refused(tensor: pb.TensorProto, match: str) -> None:
    with pytest.raises(TensorError, match=match):
        tensor_to_numpy(tensor)


@pytest.mark.parametrize(
    "value",
    [1, -7, 2.5, "NCHW", [1, 2, 3], [1.5, 2.0], ["a", "b"], [], True],
)
def test_argument_round_trip(value: object) -> None:
    arg = pb.Argument.FromString(make_argument("a", value).SerializeToString())
    expect = int(value) if isinstance(value, bool) else value
    assert argument_value(arg) == expect


def test_argument_tensor_and_net() -> None:
    t = numpy_to_tensor(np.arange(6, dtype=np.int64).reshape(2, 3))
    assert argument_value(make_argument("t", t)).shape == (2, 3)
    net = pb.NetDef(name="inner")
    assert argument_value(make_argument("n", net)).name == "inner"
    assert [n.name for n in argument_value(make_argument("nets", [net, net]))] == ["inner", "inner"]
    # numpy arrays flatten to lists, as Caffe2's MakeArgument did
    assert argument_value(make_argument("x", np.array([[1, 2], [3, 4]]))) == [1, 2, 3, 4]
    with pytest.raises(ArgumentError):
        make_argument("bad", object())
    with pytest.raises(ArgumentError):
        make_argument("mixed", [1, "a"])


def test_non_utf8_string_argument_stays_bytes() -> None:
    assert argument_value(pb.Argument(name="s", s=b"\xff\xfe")) == b"\xff\xfe"


def _net() -> pb.NetDef:
    net = pb.NetDef(name="n", external_input=["x"], external_output=["y"])
    op = net.op.add(type="Relu", input=["x"], output=["y"])
    op.arg.append(make_argument("alpha", 0.5))
    return net


@pytest.mark.parametrize("ext", [".pb", ".pbtxt", ".pb.txt"])
def test_write_read_by_extension(tmp_path: Path, ext: str) -> None:
    p = tmp_path / f"net{ext}"
    write_message(_net(), p)
    data = p.read_bytes()
    assert data.startswith(b"name:") == (ext != ".pb")
    assert read_net(p) == _net()


def test_detects_binary_in_pbtxt_named_file(tmp_path: Path) -> None:
    p = tmp_path / "mislabelled.pbtxt"
    p.write_bytes(_net().SerializeToString())
    assert read_net(p) == _net()


def test_truncated_binary(tmp_path: Path) -> None:
    p = tmp_path / "t.pb"
    # Cut inside the last field (a cut exactly between fields is undetectable in protobuf).
    p.write_bytes(_net().SerializeToString()[:-2])
    with pytest.raises(ParseError, match=r"t\.pb.*not a valid binary NetDef"):
        read_net(p)


def test_garbage_bytes(tmp_path: Path) -> None:
    p = tmp_path / "g.pb"
    p.write_bytes(bytes(range(256)) * 3)
    with pytest.raises(ParseError, match="g.pb"):
        read_net(p)


def test_text_syntax_error_names_line(tmp_path: Path) -> None:
    p = tmp_path / "bad.pbtxt"
    p.write_text('name: "n"\nop {\n  type: "Relu"\n  input: x\n}\n')
    with pytest.raises(ParseError, match=r"line 4") as e:
        read_net(p)
    assert e.value.line == 4


def test_wrong_message_type_is_refused() -> None:
    tensor_bytes = numpy_to_tensor(np.ones((2, 2), np.float32), "w").SerializeToString()
    with pytest.raises(ParseError):
        parse_message(tensor_bytes, pb.NetDef)


def test_missing_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(ParseError, match="no such file"):
        read_net(tmp_path / "nope.pb")
    with pytest.raises(ParseError, match="is a directory"):
        read_net(tmp_path)


def test_empty_file(tmp_path: Path) -> None:
    p = tmp_path / "e.pb"
    p.write_bytes(b"")
    with pytest.raises(ParseError, match="empty"):
        read_message(p, pb.NetDef)


def test_deep_text_nesting_is_refused() -> None:
    text = b'name: "x" ' + b'op { type: "If" arg { name: "then_net" n { ' * 200 + b"} } }" * 200
    with pytest.raises(ParseError):
        parse_message(text, pb.NetDef)


def test_written_files_get_normal_permissions(tmp_path: Path) -> None:
    import os
    import stat

    old = os.umask(0o022)
    try:
        p = tmp_path / "net.pb"
        write_message(_net(), p)
        assert stat.S_IMODE(p.stat().st_mode) == 0o644  # not mkstemp's 0600
        p.chmod(0o640)
        write_message(_net(), p)  # replacing keeps the file's mode
        assert stat.S_IMODE(p.stat().st_mode) == 0o640
        assert not [q for q in tmp_path.iterdir() if q.name.endswith(".tmp")]
    finally:
        os.umask(old)
