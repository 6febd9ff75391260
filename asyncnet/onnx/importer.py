"""ONNX -> Caffe2 NetDefs.

Initializers and every node whose inputs are all constant (Constant, ConstantOfShape, Unsqueeze of a
weight, ...) are folded at import time by running their Caffe2 translation in a scratch workspace;
the results go to the init net as fill ops (uniform tensors as one ConstantFill). The rest becomes the
predict net. The per-op translations live in :mod:`asyncnet.onnx.import_ops`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from asyncnet.errors import AsyncNetError, FileAccessError, ParseError, UnsupportedError
from asyncnet.onnx import import_shape_ops  # noqa: F401 - registers the shape translators
from asyncnet.onnx._common import CAFFE2_TYPE_OF_NUMPY, require_onnx
from asyncnet.onnx.import_ops import TRANSLATORS, Ctx, _attrs, _ins, _label, _op, _to_array, _unsupported
from asyncnet.proto import caffe2_pb2 as pb

__all__ = ["TRANSLATORS", "import_onnx", "load_onnx"]


def load_onnx(path: str | os.PathLike[str]) -> Any:
    """Read an ONNX model file, with a clear error for anything unreadable.

    Tensors kept in external data files are read only from inside the model's folder: a location
    that escapes it (``..``, an absolute path, a symlink pointing out) raises FileAccessError
    naming the tensor, whatever the installed onnx version checks itself.
    """
    onnx = require_onnx()
    try:
        model = onnx.load(os.fspath(path), load_external_data=False)
    except FileNotFoundError:
        raise ParseError(f"{path}: no such file", source=str(path)) from None
    except Exception as e:  # onnx raises protobuf DecodeError and others on bad bytes
        raise ParseError(f"{path}: not a valid ONNX model: {e}", source=str(path)) from e
    _load_external_data(onnx, model, Path(path))
    return model


def _load_external_data(onnx: Any, model: Any, path: Path) -> None:
    from onnx import external_data_helper as ext

    from asyncnet.iopolicy import IOPolicy

    folder = path.parent
    policy = IOPolicy.restricted(read=[folder], write=[], hint="external data must stay inside the model's folder")
    tensors = [t for t in ext._get_all_tensors(model) if ext.uses_external_data(t)]
    for t in tensors:
        location = next((e.value for e in t.external_data if e.key == "location"), "")
        who = f"{path}: tensor '{t.name}' external data"
        if not location or os.path.isabs(location):
            raise FileAccessError(f"{who}: location '{location}' must be a path relative to the model's folder")
        policy.check_read(folder / location, who=who)
    if tensors:
        try:
            ext.load_external_data_for_model(model, os.fspath(folder))
        except (OSError, ValueError, onnx.checker.ValidationError) as e:
            raise ParseError(f"{path}: cannot read external data: {e}", source=str(path)) from e


def _fill_op(name: str, value: np.ndarray) -> pb.OperatorDef:
    kinds = {
        np.dtype(np.float32): "GivenTensorFill",
        np.dtype(np.float64): "GivenTensorDoubleFill",
        np.dtype(np.int32): "GivenTensorIntFill",
        np.dtype(np.int64): "GivenTensorInt64Fill",
        np.dtype(np.bool_): "GivenTensorBoolFill",
        np.dtype(np.int16): "GivenTensorInt16Fill",
    }
    v = np.asarray(value)
    if v.size >= 64 and v.dtype in CAFFE2_TYPE_OF_NUMPY and v.dtype != np.float16:
        first = v.reshape(-1)[0]
        if (v == first).all():
            # Uniform tensors (ONNX "light" models' ConstantOfShape weights) stay one value, not millions.
            scalar: Any = float(first) if v.dtype.kind == "f" else int(first)
            return _op(
                "ConstantFill", [], [name], shape=list(v.shape), value=scalar, dtype=int(CAFFE2_TYPE_OF_NUMPY[v.dtype])
            )
    kind = kinds.get(v.dtype)
    if kind is None:
        if v.dtype.kind in "iu":
            kind, v = "GivenTensorIntFill", v.astype(np.int32)
        elif v.dtype == np.float16:
            kind, v = "GivenTensorFill", v.astype(np.float32)
        else:
            raise UnsupportedError(f"constant '{name}' of dtype {v.dtype} has no Caffe2 fill op")
    return _op(kind, [], [name], shape=list(v.shape), values=v.reshape(-1))


def _fold(ops: list[pb.OperatorDef], consts: dict[str, np.ndarray]) -> None:
    from asyncnet.workspace import Workspace

    ws = Workspace()
    for op in ops:
        for i in op.input:
            ws.feed(i, consts[i])
        ws.run_operator_once(op)
        for o in op.output:
            consts[o] = ws.fetch(o)


def import_onnx(model: Any, *, name: str = "") -> tuple[pb.NetDef, pb.NetDef]:
    """Translate an ONNX ModelProto (or a path) to (init_net, predict_net)."""
    onnx = require_onnx()
    if isinstance(model, (str, os.PathLike)):
        model = load_onnx(model)
    try:
        onnx.checker.check_model(model)
    except Exception as e:  # the checker's ValidationError and protobuf errors alike
        raise ParseError(f"not a valid ONNX model: {e}") from e
    graph = model.graph
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 1)
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
        value_infos = list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output)
    except Exception:  # inference is only a help for ranks
        value_infos = list(graph.input) + list(graph.output)
    ranks = {
        vi.name: len(vi.type.tensor_type.shape.dim)
        for vi in value_infos
        if vi.type.HasField("tensor_type") and vi.type.tensor_type.HasField("shape")
    }
    consts: dict[str, np.ndarray] = {t.name: _to_array(t, f"initializer '{t.name}'") for t in graph.initializer}
    used = {i for n in graph.node for i in n.input} | {o.name for o in graph.output}
    static = {
        vi.name: tuple(int(d.dim_value) for d in vi.type.tensor_type.shape.dim)
        for vi in value_infos
        if vi.type.HasField("tensor_type")
        and vi.type.tensor_type.HasField("shape")
        and all(d.HasField("dim_value") for d in vi.type.tensor_type.shape.dim)
    }
    ctx = Ctx(consts, ranks, opset, used=used, shapes=static)
    predict = pb.NetDef(name=name or graph.name or "onnx_predict")
    init = pb.NetDef(name=(name or graph.name or "onnx") + "_init")
    for node in graph.node:
        if node.domain not in ("", "ai.onnx"):
            raise UnsupportedError(
                f"ONNX node '{_label(node)}' ({node.domain}.{node.op_type}): custom domains are not supported"
            )
        if node.op_type == "Constant":
            a = _attrs(node)
            if "value" not in a:
                raise _unsupported(node, "only tensor-valued Constant nodes are supported")
            consts[node.output[0]] = _to_array(a["value"], f"Constant node '{_label(node)}'")
            continue
        tr = TRANSLATORS.get(node.op_type)
        if tr is None:
            raise UnsupportedError(f"ONNX node '{_label(node)}' has op type '{node.op_type}' with no Caffe2 mapping")
        try:
            ops = tr(node, _attrs(node), ctx)
        except AsyncNetError:
            raise
        except Exception as e:  # malformed attributes surface as assorted builtin errors
            raise _unsupported(node, f"cannot translate: {type(e).__name__}: {e}") from e
        if all(i in consts for i in _ins(node)) and _ins(node):
            _fold(ops, consts)
        else:
            predict.op.extend(ops)
    used = {i for op in predict.op for i in op.input}
    outputs = [o.name for o in graph.output]
    for n in sorted(c for c in consts if c in used or c in outputs):
        init.op.append(_fill_op(n, consts[n]))
        init.external_output.append(n)
    predict.external_input.extend(i.name for i in graph.input if i.name not in consts)
    predict.external_input.extend(n for n in init.external_output)
    predict.external_output.extend(outputs)
    return init, predict
