"""Caffe2 NetDefs -> ONNX.

The init net is run once (any fill op works) and every blob it makes becomes an initializer.
Shapes come from asyncnet's shape inference, given the data inputs' shapes; they settle Caffe2's
padding modes (``legacy_pad``) into explicit ONNX pads. In-place Caffe2 ops are renamed into SSA
form: the last write of a blob keeps its name, earlier versions get ``<blob>__<k>``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import Any

import numpy as np

from asyncnet.errors import AsyncNetError, UnsupportedError
from asyncnet.iopolicy import IOPolicy
from asyncnet.net import net_inputs, op_info
from asyncnet.onnx._common import onnx_elem_type, require_onnx
from asyncnet.onnx.export_ops import DEFAULT_OPSET, EXPORTERS, MAX_OPSET, MIN_OPSET, _Ctx, _Op
from asyncnet.proto import caffe2_pb2 as pb
from asyncnet.schema import TensorInfo


def _run_init(init: pb.NetDef | None, io_policy: IOPolicy | None = None) -> dict[str, np.ndarray]:
    from asyncnet.workspace import Workspace

    if init is None:
        return {}
    with Workspace(io_policy=io_policy) as ws:
        ws.run_net_once(init, executor="simple")
        return {n: np.asarray(ws.fetch(n)) for n in ws.blobs()}


def export_onnx(
    predict: pb.NetDef,
    init: pb.NetDef | None = None,
    *,
    input_infos: Mapping[str, TensorInfo] | None = None,
    params: Mapping[str, np.ndarray] | None = None,
    opset: int = DEFAULT_OPSET,
    io_policy: IOPolicy | None = None,
) -> Any:
    """Translate ``predict`` (with parameters from ``init`` and/or ``params``) to an ONNX model.

    Args:
        predict: the net to export.
        init: an init net; every blob it makes becomes an initializer.
        input_infos: shapes/dtypes of the data inputs (needed where Caffe2's semantics depend on
            shapes, e.g. ``legacy_pad``); unknown inputs become float32 of unknown shape.
        params: further initializer values (override the init net's).
        opset: ONNX opset to target (11 to 21).
        io_policy: which files the init net's ops may touch (default: any, as in Caffe2).

    Raises:
        UnsupportedError: an op has no ONNX mapping (the message names the op).
    """
    onnx = require_onnx()
    from asyncnet.shapes import infer_shapes, info_of

    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise UnsupportedError(f"opset {opset} is not supported; choose {MIN_OPSET} to {MAX_OPSET}")
    consts = _run_init(init, io_policy)
    consts.update({k: np.asarray(v) for k, v in (params or {}).items()})
    inputs = [n for n in net_inputs(predict) if n not in consts]
    given = dict(input_infos or {})
    known = {n: info_of(v) for n, v in consts.items()}
    known.update({n: given.get(n, TensorInfo(None, np.dtype(np.float32))) for n in inputs})
    try:
        shapes = infer_shapes(predict, known)
    except AsyncNetError as e:
        raise UnsupportedError(f"cannot export net '{predict.name}': shape inference failed: {e}") from e
    ctx = _Ctx(opset, shapes.blobs, consts)
    ctx.reads = {i for op in predict.op for i in op.input} | set(predict.external_output)

    writes = Counter(o for op in predict.op for o in op.output)
    initial = set(inputs) | set(consts)
    current = {n: n for n in initial}
    seen: Counter[str] = Counter()
    net_device = predict.device_option if predict.HasField("device_option") else None
    for i, op_def in enumerate(predict.op):
        info = op_info(op_def, index=i, net_device=net_device, net_name=predict.name)
        exporter = EXPORTERS.get(info.type)
        if exporter is None:
            raise UnsupportedError(f"{info.label()} in net '{predict.name}': op type '{info.type}' has no ONNX mapping")
        ins = []
        for name in info.inputs:
            if name not in current:
                raise UnsupportedError(f"{info.label()}: reads blob '{name}' that nothing produced")
            ins.append(current[name])
        outs = []
        for name in info.outputs:
            seen[name] += 1
            final = seen[name] == writes[name] and name not in initial
            outs.append(name if final else f"{name}__{seen[name]}")
            current[name] = outs[-1]
        in_infos = shapes.op_inputs[i] if i < len(shapes.op_inputs) else [TensorInfo()] * len(ins)
        out_infos = shapes.op_outputs[i] if i < len(shapes.op_outputs) else [TensorInfo()] * len(outs)
        exporter(_Op(info, ins, outs, list(in_infos), list(out_infos)), ctx)

    used = {i for n in ctx.nodes for i in n.input}
    initializers = [onnx.numpy_helper.from_array(np.asarray(v), name=k) for k, v in consts.items() if k in used]
    initializers += [onnx.numpy_helper.from_array(v, name=k) for k, v in ctx.initializers.items()]

    def value_info(name: str, onnx_name: str) -> Any:
        ti = shapes.blobs.get(name, TensorInfo())
        dt = ti.dtype if ti.dtype is not None else np.dtype(np.float32)
        shape = None if ti.shape is None else [d if d is not None else f"{name}_d{j}" for j, d in enumerate(ti.shape)]
        return onnx.helper.make_tensor_value_info(onnx_name, onnx_elem_type(dt), shape)

    graph_inputs = [value_info(n, n) for n in inputs if n in used]
    outputs = list(predict.external_output) or list(predict.op[-1].output)
    graph_outputs = []
    for name in outputs:
        last = current.get(name)
        if last is None:
            raise UnsupportedError(f"net '{predict.name}': external output '{name}' is never produced")
        if last != name:
            ctx.node("Identity", [last], [name + "__out"])
            last = name + "__out"
        graph_outputs.append(value_info(name, last))
    graph = onnx.helper.make_graph(ctx.nodes, predict.name or "asyncnet", graph_inputs, graph_outputs, initializers)
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", opset)], producer_name="asyncnet")
    model.ir_version = min(model.ir_version, 10)
    onnx.checker.check_model(model)
    return model
