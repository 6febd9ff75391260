"""Onnxifi: run an ONNX subgraph in onnxruntime as one operator (Caffe2's ``Onnxifi`` op).

``asyncnet.transforms.offload_to_onnxruntime`` makes these ops from maximal runs of exportable ops.
The onnxruntime session is built once, when the net is prepared; inputs and outputs map positionally
to ``input_names`` / ``output_names`` of the model. Needs the ``onnx`` extra (onnxruntime).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from asyncnet.errors import ArgumentError, BlobNotFoundError, ExecutorError, UnsupportedError
from asyncnet.opinfo import OpInfo
from asyncnet.registry import register_op
from asyncnet.schema import REQUIRED, Arg, TensorInfo


def _require_ort(op: OpInfo) -> Any:
    try:
        import onnxruntime
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise UnsupportedError(
            f"{op.label()}: Onnxifi needs onnxruntime, from the 'onnx' extra: pip install 'asyncnet[onnx]'"
        ) from e
    return onnxruntime


def _model_bytes(op: OpInfo) -> bytes:
    model = op.arg("onnx_model")
    if isinstance(model, str):
        model = model.encode("utf-8")  # the argument decoder turns valid UTF-8 bytes into str
    if not isinstance(model, bytes) or not model:
        raise ArgumentError(f"{op.label()}: argument 'onnx_model' must hold a serialized ONNX ModelProto")
    return model


def _replaced(op: OpInfo) -> str:
    ops = op.strs_arg("replaced_ops", [])
    return f" (replacing {', '.join(ops)})" if ops else ""


def _with_initializers(op: OpInfo, model: bytes) -> bytes:
    """Add the workspace blobs named by ``initializers`` to the model as ONNX initializers."""
    names = op.strs_arg("initializers", [])
    if not names:
        return model
    try:
        import onnx
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise UnsupportedError(
            f"{op.label()}: 'initializers' need the 'onnx' extra: pip install 'asyncnet[onnx]'"
        ) from e
    proto = onnx.ModelProto()
    proto.ParseFromString(model)
    ws = op.workspace
    for name in names:
        if ws is None or not ws.has(name):
            raise BlobNotFoundError(f"{op.label()}: initializer blob '{name}' is not in the workspace")
        proto.graph.initializer.append(onnx.numpy_helper.from_array(np.asarray(ws.fetch(name)), name=name))
    out: bytes = proto.SerializeToString()
    return out


def _infer(op: OpInfo, ins: list[TensorInfo]) -> list[TensorInfo]:
    unknown = [TensorInfo() for _ in op.outputs]
    try:
        import onnx
    except ImportError:  # pragma: no cover - depends on the environment
        return unknown
    proto = onnx.ModelProto()
    try:
        proto.ParseFromString(_model_bytes(op))
    except Exception:  # noqa: BLE001 - protobuf's DecodeError; the kernel reports it properly at prepare time
        return unknown
    by_name = {v.name: v for v in proto.graph.output}
    out = []
    for name in op.strs_arg("output_names", []):
        v = by_name.get(name)
        if v is None:
            out.append(TensorInfo())
            continue
        t = v.type.tensor_type
        dims = tuple(d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim)
        dt = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(t.elem_type)) if t.elem_type else None
        out.append(TensorInfo(dims if t.HasField("shape") else None, dt))
    return out + unknown[len(out) :]


@register_op(
    "Onnxifi",
    inputs=(0, -1),
    outputs=(1, -1),
    allow_inplace=lambda i, o: True,
    args=(
        Arg("onnx_model", REQUIRED, "the serialized ONNX ModelProto of the subgraph"),
        Arg("input_names", [], "ONNX graph input names, one per op input, in order"),
        Arg("output_names", [], "ONNX graph output names, one per op output, in order"),
        Arg("initializers", [], "workspace blobs added to the model as ONNX initializers at prepare time"),
        Arg("backend", "onnxruntime", "the runtime (only onnxruntime)"),
        Arg("replaced_ops", [], "labels of the original ops this op stands for (for errors and reports)"),
    ),
    infer=_infer,
    doc="Run an ONNX subgraph in an onnxruntime InferenceSession built once at prepare time (Caffe2's "
    "Onnxifi). Made by asyncnet.transforms.offload_to_onnxruntime; needs the 'onnx' extra.",
)
def onnxifi(op: OpInfo) -> Callable[..., Any]:
    ort = _require_ort(op)
    backend = op.str_arg("backend")
    if backend != "onnxruntime":
        raise ArgumentError(f"{op.label()}: backend '{backend}' is not available; available: onnxruntime")
    in_names = op.strs_arg("input_names") or list(op.inputs)
    out_names = op.strs_arg("output_names") or list(op.outputs)
    if len(in_names) != len(op.inputs) or len(out_names) != len(op.outputs):
        raise ArgumentError(
            f"{op.label()}: {len(op.inputs)} input(s) and {len(op.outputs)} output(s) but input_names has "
            f"{len(in_names)} and output_names {len(out_names)}"
        )
    try:
        session = ort.InferenceSession(_with_initializers(op, _model_bytes(op)), providers=["CPUExecutionProvider"])
    except Exception as e:  # noqa: BLE001 - onnxruntime raises its own exception types without a common base
        raise UnsupportedError(
            f"{op.label()}{_replaced(op)}: onnxruntime cannot load the subgraph: {type(e).__name__}: {e}"
        ) from e
    where = _replaced(op)

    def run(*xs: Any) -> list[Any]:
        feeds = {n: np.asarray(x) for n, x in zip(in_names, xs)}
        try:
            out: list[Any] = session.run(out_names, feeds)
        except Exception as e:  # noqa: BLE001 - onnxruntime's run errors have no common base class
            raise ExecutorError(f"onnxruntime failed{where}: {type(e).__name__}: {e}") from e
        return out

    return run
