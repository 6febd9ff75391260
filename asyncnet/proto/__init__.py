"""Caffe2's protobuf messages (generated from proto/caffe2.proto) under short names."""

from __future__ import annotations

from asyncnet.proto import caffe2_pb2
from asyncnet.proto.caffe2_pb2 import (
    Argument,
    BlobProto,
    DBReaderProto,
    DeviceOption,
    ExecutionStep,
    NetDef,
    OperatorDef,
    PlanDef,
    QTensorProto,
    TensorProto,
    TensorProtos,
    TensorShape,
    TensorShapes,
)

DataType = TensorProto.DataType

__all__ = [
    "Argument",
    "BlobProto",
    "DBReaderProto",
    "DataType",
    "DeviceOption",
    "ExecutionStep",
    "NetDef",
    "OperatorDef",
    "PlanDef",
    "QTensorProto",
    "TensorProto",
    "TensorProtos",
    "TensorShape",
    "TensorShapes",
    "caffe2_pb2",
]
