"""asyncnet: run, check, convert and train Caffe2-style nets in pure Python."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from asyncnet.errors import AsyncNetError
from asyncnet.executors import ExecutorOptions
from asyncnet.net import Net
from asyncnet.proto import NetDef, OperatorDef, PlanDef, TensorProto, TensorProtos
from asyncnet.registry import default_registry, register_op
from asyncnet.serde import (
    make_argument,
    numpy_to_tensor,
    read_net,
    read_plan,
    read_tensors,
    tensor_to_numpy,
    write_message,
)
from asyncnet.workspace import Workspace

if TYPE_CHECKING:
    from asyncnet.serving.predictor import Predictor

__version__ = "0.1.0"

__all__ = [
    "AsyncNetError",
    "ExecutorOptions",
    "Net",
    "NetDef",
    "OperatorDef",
    "PlanDef",
    "Predictor",
    "TensorProto",
    "TensorProtos",
    "Workspace",
    "default_registry",
    "make_argument",
    "numpy_to_tensor",
    "read_net",
    "read_plan",
    "read_tensors",
    "register_op",
    "tensor_to_numpy",
    "write_message",
]


def __getattr__(name: str) -> Any:
    # Serving is imported on first use: `import asyncnet` stays as light as the core.
    if name == "Predictor":
        from asyncnet.serving.predictor import Predictor

        return Predictor
    raise AttributeError(f"module 'asyncnet' has no attribute '{name}'")
