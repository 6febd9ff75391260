"""Shared pieces of the ONNX bridge: the optional import, dtype tables, errors."""

from __future__ import annotations

from typing import Any

import numpy as np

from asyncnet.errors import UnsupportedError
from asyncnet.proto import caffe2_pb2 as pb


def require_onnx() -> Any:
    """The ``onnx`` module, or a clear error telling how to install it."""
    try:
        import onnx
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise UnsupportedError("the ONNX tools need the 'onnx' package: pip install 'asyncnet[onnx]'") from e
    return onnx


# numpy dtype -> Caffe2 TensorProto.DataType, for Cast and fills.
CAFFE2_TYPE_OF_NUMPY: dict[np.dtype[Any], int] = {
    np.dtype(np.float32): pb.TensorProto.FLOAT,
    np.dtype(np.float64): pb.TensorProto.DOUBLE,
    np.dtype(np.float16): pb.TensorProto.FLOAT16,
    np.dtype(np.int32): pb.TensorProto.INT32,
    np.dtype(np.int64): pb.TensorProto.INT64,
    np.dtype(np.int16): pb.TensorProto.INT16,
    np.dtype(np.int8): pb.TensorProto.INT8,
    np.dtype(np.uint8): pb.TensorProto.UINT8,
    np.dtype(np.uint16): pb.TensorProto.UINT16,
    np.dtype(np.bool_): pb.TensorProto.BOOL,
}


def onnx_elem_type(dtype: np.dtype[Any]) -> int:
    """ONNX TensorProto elem_type for a numpy dtype."""
    onnx = require_onnx()
    return int(onnx.helper.np_dtype_to_tensor_dtype(np.dtype(dtype)))


def numpy_of_onnx(elem_type: int) -> np.dtype[Any]:
    """numpy dtype of an ONNX elem_type."""
    onnx = require_onnx()
    dt: np.dtype[Any] = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(elem_type))
    return dt


# Caffe2 op type -> ONNX op type for ops that map one to one with no attributes (used both ways).
ELEMENTWISE_OPS: dict[str, str] = {
    name: name
    for name in (
        "Relu",
        "Sigmoid",
        "Tanh",
        "Exp",
        "Log",
        "Sqrt",
        "Abs",
        "Floor",
        "Ceil",
        "Reciprocal",
        "Sin",
        "Cos",
        "Tan",
        "Asin",
        "Acos",
        "Atan",
        "Sinh",
        "Cosh",
        "Erf",
        "Sign",
        "Not",
        "Softsign",
        "Size",
    )
} | {"Negative": "Neg", "Copy": "Identity"}

# Binary ops with numpy broadcasting in both (Caffe2's legacy `broadcast=1` is handled by the callers).
BINARY_OPS: dict[str, str] = {
    "Add": "Add",
    "Sub": "Sub",
    "Mul": "Mul",
    "Div": "Div",
    "Pow": "Pow",
    "EQ": "Equal",
    "LT": "Less",
    "GT": "Greater",
    "LE": "LessOrEqual",
    "GE": "GreaterOrEqual",
    "And": "And",
    "Or": "Or",
    "Xor": "Xor",
}
