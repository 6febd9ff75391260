"""Fill operators against Caffe2's documented rules (naive expectations written here)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from asyncnet.errors import AsyncNetError
from asyncnet.proto import caffe2_pb2 as pb
from tests.ops.run_util import run1, run_op

DT = pb.TensorProto


def test_constant_fill_dtype_follows_value_or_dtype_arg() -> None:
    assert run1("ConstantFill", shape=[2, 3], value=1.5).dtype == np.float32
    assert run1("ConstantFill", shape=[2], value=7).dtype == np.int64  # Caffe2 infers int64 from an int value
    y = run1("ConstantFill", shape=[2, 2], value=3.0, dtype=DT.INT32)
    assert y.dtype == np.int32 and (y == 3).all()
    assert run1("ConstantFill", shape=[0, 4]).shape == (0, 4)


def test_constant_fill_shape_from_input() -> None:
    x = np.zeros((2, 3), np.float32)
    assert run1("ConstantFill", x, value=2.0).shape == (2, 3)
    assert run1("ConstantFill", x, value=2.0, extra_shape=[4]).shape == (2, 3, 4)
    shape = np.array([4, 1, 2], np.int64)
    y = run1("ConstantFill", shape, value=-1.0, input_as_shape=1)
    assert y.shape == (4, 1, 2) and (y == -1.0).all()


@pytest.mark.parametrize(
    ("op_type", "values", "dtype"),
    [
        ("GivenTensorFill", [1.5, -2.0, 3.25, 0.0], np.float32),
        ("GivenTensorDoubleFill", [1.5, -2.0, 3.25, 0.0], np.float64),
        ("GivenTensorIntFill", [1, -2, 3, 4], np.int32),
        ("GivenTensorInt16Fill", [1, -2, 3, 4], np.int16),
        ("GivenTensorInt64Fill", [1, -2, 3, 2**40], np.int64),
        ("GivenTensorBoolFill", [1, 0, 0, 1], np.bool_),
    ],
)
def test_given_tensor_fills(op_type: str, values: list[float], dtype: type) -> None:
    y = run1(op_type, shape=[2, 2], values=values)
    assert y.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(y, np.array(values, dtype=dtype).reshape(2, 2))


def test_given_tensor_string_fill() -> None:
    y = run1("GivenTensorStringFill", shape=[3], values=["a", "bc", ""], infer=False)
    assert list(y) == [b"a", b"bc", b""]


def test_given_tensor_fill_gives_fresh_arrays() -> None:
    from asyncnet.workspace import Workspace
    from tests.ops.run_util import make_op

    ws = Workspace()
    op = make_op("GivenTensorFill", [], ["w"], shape=[2], values=[1.0, 2.0])
    ws.run_operator_once(op)
    ws.fetch("w")[0] = 99.0  # an in-place consumer must not change the next run's values
    ws.run_operator_once(op)
    np.testing.assert_array_equal(ws.fetch("w"), [1.0, 2.0])


def test_given_tensor_fill_size_mismatch() -> None:
    with pytest.raises(AsyncNetError, match="'values' has 3 values but shape \\[2, 2\\] needs 4"):
        run1("GivenTensorFill", shape=[2, 2], values=[1.0, 2.0, 3.0])


def _seeded(op_type: str, **args: object) -> np.ndarray:
    from asyncnet.workspace import Workspace
    from tests.ops.run_util import make_op

    op = make_op(op_type, [], ["y"], **args)
    op.device_option.random_seed = 1234
    ws = Workspace()
    ws.run_operator_once(op)
    return np.asarray(ws.fetch("y"))


def test_uniform_fill_bounds_and_seed() -> None:
    y = _seeded("UniformFill", shape=[200, 50], min=-3.0, max=5.0)
    assert y.dtype == np.float32 and y.min() >= -3.0 and y.max() <= 5.0
    assert abs(y.mean() - 1.0) < 0.1
    np.testing.assert_array_equal(y, _seeded("UniformFill", shape=[200, 50], min=-3.0, max=5.0))


def test_gaussian_fill_moments() -> None:
    y = _seeded("GaussianFill", shape=[400, 100], mean=2.0, std=0.5)
    assert abs(y.mean() - 2.0) < 0.01 and abs(y.std() - 0.5) < 0.01


def test_xavier_fill_uses_fan_in_of_dim0() -> None:
    shape = [64, 32, 3, 3]
    y = _seeded("XavierFill", shape=shape)
    fan_in = 32 * 3 * 3  # numel / shape[0]
    scale = math.sqrt(3.0 / fan_in)
    assert np.abs(y).max() <= scale + 1e-6
    assert abs(y.std() - scale / math.sqrt(3.0)) < 0.02 * scale


def test_msra_fill_uses_fan_out_of_dim1() -> None:
    shape = [64, 32, 3, 3]
    y = _seeded("MSRAFill", shape=shape)
    fan_out = 64 * 3 * 3  # numel / shape[1], as Caffe2's MSRAFill computes it
    assert abs(y.std() - math.sqrt(2.0 / fan_out)) < 0.05 * math.sqrt(2.0 / fan_out)
    assert abs(y.mean()) < 0.01


def test_fill_shape_must_be_a_list() -> None:
    # Caffe2 read `shape` as a repeated argument: shape=32 is an error, shape=[] a scalar.
    with pytest.raises(AsyncNetError, match="shape must be a list of integers"):
        run_op("GaussianFill", [], shape=32, mean=0.0, std=1.0)
    (out,) = run_op("ConstantFill", [], shape=[], value=2.0)
    assert out.shape == () and out == 2.0
