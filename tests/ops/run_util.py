"""Helpers for operator tests: run one Caffe2 op through asyncnet (checking its shape inference on
the way) and run the equivalent ONNX node through onnxruntime as an independent reference."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from asyncnet.net import op_info
from asyncnet.proto import caffe2_pb2 as pb
from asyncnet.schema import TensorInfo
from asyncnet.serde import make_argument
from asyncnet.workspace import Workspace


def make_op(op_type: str, inputs: Sequence[str], outputs: Sequence[str], **args: Any) -> pb.OperatorDef:
    op = pb.OperatorDef(type=op_type, input=list(inputs), output=list(outputs))
    for k, v in args.items():
        op.arg.append(make_argument(k, v))
    return op


def check_inference(op: pb.OperatorDef, ins: Sequence[Any], outs: Sequence[Any]) -> None:
    """The op's infer function must agree with what the kernel produced (None = unknown is fine)."""
    info = op_info(op)
    assert info.schema.infer is not None, f"{op.type} has no shape inference"
    infos = [TensorInfo(np.shape(x), np.asarray(x).dtype) for x in ins]
    inferred = info.schema.infer(info, infos)
    assert len(inferred) >= len(outs), f"{op.type}: inferred {len(inferred)} outputs for {len(outs)}"
    for i, (t, y) in enumerate(zip(inferred, outs)):
        y = np.asarray(y)
        if t.dtype is not None:
            assert t.dtype == y.dtype, f"{op.type} output {i}: inferred dtype {t.dtype}, kernel gave {y.dtype}"
        if t.shape is not None:
            assert len(t.shape) == y.ndim, f"{op.type} output {i}: inferred {t}, kernel gave shape {y.shape}"
            for d, real in zip(t.shape, y.shape):
                assert d is None or d == real, f"{op.type} output {i}: inferred {t}, kernel gave shape {y.shape}"


def run_once(op: pb.OperatorDef, inputs: Mapping[str, Any]) -> list[Any]:
    """Feed ``inputs`` (blob name -> value) into a fresh workspace, run ``op`` once, fetch its outputs."""
    with Workspace() as ws:
        for name, value in inputs.items():
            ws.feed(name, value)
        ws.run_operator_once(op)
        return [ws.fetch(o) for o in op.output]


def run_op(
    op_type: str,
    inputs: Sequence[Any],
    n_out: int = 1,
    *,
    infer: bool = True,
    inplace: Sequence[int] = (),
    **args: Any,
) -> list[Any]:
    """Run ``op_type`` on ``inputs`` (fed as blobs in0, in1, ...) and return its outputs.

    Output k is written over input k for every k in ``inplace``.
    """
    in_names = [f"in{i}" for i in range(len(inputs))]
    out_names = [in_names[i] if i in inplace else f"out{i}" for i in range(n_out)]
    op = make_op(op_type, in_names, out_names, **args)
    outs = run_once(op, dict(zip(in_names, inputs)))
    if infer:
        check_inference(op, inputs, outs)
    return outs


def run1(op_type: str, *inputs: Any, **args: Any) -> np.ndarray:
    """The single output of ``op_type`` (written in place for ops whose schema enforces it)."""
    from asyncnet.registry import default_registry

    forced = [o for i, o in default_registry().schema(op_type).enforce_inplace if i == o]
    return np.asarray(run_op(op_type, inputs, 1, inplace=forced, **args)[0])


_ORT_SESSIONS: dict[Any, Any] = {}


def ort_run(
    op_type: str,
    inputs: Sequence[np.ndarray],
    n_out: int = 1,
    *,
    opset: int = 18,
    **attrs: Any,
) -> list[np.ndarray]:
    """Run one ONNX node in onnxruntime (the independent reference)."""
    import onnx
    import onnxruntime as ort
    from onnx import helper

    in_names = [f"x{i}" for i in range(len(inputs))]
    out_names = [f"y{i}" for i in range(n_out)]
    key = (op_type, tuple((a.dtype.str, a.ndim) for a in inputs), n_out, opset, repr(sorted(attrs.items())))
    sess = _ORT_SESSIONS.get(key)
    if sess is None:
        node = helper.make_node(op_type, in_names, out_names, **attrs)
        graph = helper.make_graph(
            [node],
            "g",
            [
                helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(a.dtype), [None] * a.ndim)
                for n, a in zip(in_names, inputs)
            ],
            [onnx.ValueInfoProto(name=n) for n in out_names],
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
        model.ir_version = 8
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
        _ORT_SESSIONS[key] = sess
    feeds = {n: np.asarray(a) for n, a in zip(in_names, inputs)}
    return [np.asarray(v) for v in sess.run(out_names, feeds)]


def shapes(
    min_dims: int = 0, max_dims: int = 4, min_side: int = 0, max_side: int = 4
) -> st.SearchStrategy[tuple[int, ...]]:
    return hnp.array_shapes(min_dims=min_dims, max_dims=max_dims, min_side=min_side, max_side=max_side)


def floats(shape: Any, lo: float = -4.0, hi: float = 4.0, dtype: Any = np.float32) -> st.SearchStrategy[np.ndarray]:
    width = np.dtype(dtype).itemsize * 8
    # Bounds rounded inward to the dtype so hypothesis accepts them.
    lo_r, hi_r = np.dtype(dtype).type(lo), np.dtype(dtype).type(hi)
    lo_f = float(lo_r if lo_r >= lo else np.nextafter(lo_r, np.inf, dtype=dtype))
    hi_f = float(hi_r if hi_r <= hi else np.nextafter(hi_r, -np.inf, dtype=dtype))
    return hnp.arrays(dtype, shape, elements=st.floats(lo_f, hi_f, width=width))


def ints(shape: Any, lo: int = -5, hi: int = 5, dtype: Any = np.int32) -> st.SearchStrategy[np.ndarray]:
    return hnp.arrays(dtype, shape, elements=st.integers(lo, hi))
