"""Offloading to onnxruntime: maximal runs of ONNX-exportable ops become ``Onnxifi`` ops.

Ops are taken in net order; each maximal run of consecutive ops that the exporter of
:mod:`asyncnet.onnx` can translate (with the parameters as initializers) is replaced, at the position
of the run, by one ``Onnxifi`` op whose inputs are the blobs the run reads from outside and whose
outputs are the blobs it writes that later ops or the caller (external outputs) read. Everything
else stays a numpy op, so an unexportable op in the middle just splits the run. Needs the ``onnx``
extra.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from asyncnet.errors import AsyncNetError, UnsupportedError
from asyncnet.proto import caffe2_pb2 as pb
from asyncnet.schema import TensorInfo
from asyncnet.serde import make_argument
from asyncnet.transforms._graph import RewriteRecord, op_label

if TYPE_CHECKING:
    from asyncnet.workspace import Workspace


@dataclass
class OffloadResult:
    """What :func:`offload_to_onnxruntime` returns.

    Attributes:
        predict_net: the net with ``Onnxifi`` ops in place of the offloaded runs.
        report: one ``offload_onnxruntime`` record per Onnxifi op (the original ops it replaced).
        kept: labels of the ops that stayed numpy ops.
    """

    predict_net: pb.NetDef
    report: list[RewriteRecord] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)

    def summary_lines(self) -> list[str]:
        n = sum(len(r.ops) for r in self.report)
        lines = [f"offload: {n} op(s) in {len(self.report)} Onnxifi op(s), {len(self.kept)} op(s) stay numpy"]
        lines.extend(f"  {r.result}: {len(r.ops)} op(s), {r.ops[0]} .. {r.ops[-1]}" for r in self.report)
        if self.kept:
            shown = ", ".join(self.kept[:8]) + (" ..." if len(self.kept) > 8 else "")
            lines.append(f"  numpy: {shown}")
        return lines


def _require() -> None:
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise UnsupportedError(
            "offloading to onnxruntime needs the 'onnx' extra (onnx and onnxruntime): pip install 'asyncnet[onnx]'"
        ) from e


@dataclass
class _Run:
    ops: list[pb.OperatorDef]
    labels: list[str]
    infos: dict[str, TensorInfo]


def _export(run: _Run, outputs: list[str], params: Mapping[str, np.ndarray], name: str) -> Any:
    from asyncnet.onnx import export_onnx

    sub = pb.NetDef(name=name)
    sub.op.extend(run.ops)
    sub.external_output.extend(outputs)
    reads = {n for op in run.ops for n in op.input}
    used = {k: v for k, v in params.items() if k in reads}
    return export_onnx(sub, None, input_infos=run.infos, params=used)


def _exportable(op: pb.OperatorDef, infos: dict[str, TensorInfo], params: Mapping[str, np.ndarray]) -> bool:
    from asyncnet.onnx.export_ops import EXPORTERS

    if op.type not in EXPORTERS or op.control_input or not op.output:
        return False
    try:
        _export(_Run([op], [""], infos), list(op.output[:1]), params, "probe")
    except (AsyncNetError, ValueError, TypeError, KeyError):
        return False
    except Exception:  # noqa: BLE001 - the onnx checker raises its own ValidationError type
        return False
    return True


def _split(flags: list[bool], offset: int) -> list[tuple[int, int]]:
    """Spans [a, b) (shifted by ``offset``) of consecutive True flags."""
    spans: list[tuple[int, int]] = []
    i = 0
    while i < len(flags):
        if not flags[i]:
            i += 1
            continue
        j = i
        while j < len(flags) and flags[j]:
            j += 1
        spans.append((offset + i, offset + j))
        i = j
    return spans


def offload_to_onnxruntime(
    predict_net: pb.NetDef,
    *,
    workspace: Workspace | None = None,
    params: Mapping[str, Any] | None = None,
    init_net: pb.NetDef | None = None,
    data_inputs: Iterable[str] = (),
    input_infos: Mapping[str, TensorInfo] | None = None,
    min_ops: int = 1,
) -> OffloadResult:
    """Replace maximal runs of ONNX-exportable ops of ``predict_net`` with ``Onnxifi`` ops.

    Parameters (from ``init_net``, ``workspace`` or ``params``) are embedded in the ONNX subgraphs
    as initializers; data shapes come from ``input_infos`` or the data blobs in ``workspace``
    (onnxruntime sessions are built for those shapes).

    Args:
        predict_net: the net (not modified).
        workspace: holds parameters and data inputs.
        params: further parameter values.
        init_net: an init net making the parameters.
        data_inputs: names fed per run (never embedded).
        input_infos: shapes/dtypes of data inputs not in ``workspace``.
        min_ops: runs shorter than this stay numpy ops.

    Raises:
        UnsupportedError: the ``onnx`` extra is not installed.
    """
    _require()
    from asyncnet.net import net_inputs
    from asyncnet.onnx.export_ops import EXPORTERS
    from asyncnet.shapes import infer_shapes, info_of
    from asyncnet.transforms._graph import collect_params, nested_names

    data = set(data_inputs)
    written = {o for op in predict_net.op for o in op.output}
    # A blob the net writes changes from run to run: it is never baked into a subgraph.
    values = {
        k: v for k, v in collect_params(predict_net, init_net, workspace, params, data).items() if k not in written
    }
    known: dict[str, TensorInfo] = {n: info_of(v) for n, v in values.items()}
    if workspace is not None:
        known.update({n: info_of(workspace.fetch(n)) for n in data if workspace.has(n)})
    known.update(input_infos or {})
    unknown = [n for n in net_inputs(predict_net) if n not in values and (n not in known or known[n].shape is None)]
    if unknown:
        raise UnsupportedError(
            f"offloading net '{predict_net.name}' to onnxruntime needs the shapes of its data inputs {unknown}: "
            "feed them into the workspace first or pass input_infos (sessions are built for those shapes)"
        )
    shapes = infer_shapes(predict_net, known)

    def op_infos(i: int) -> dict[str, TensorInfo]:
        ins = shapes.op_inputs[i] if i < len(shapes.op_inputs) else []
        return {n: t for n, t in zip(predict_net.op[i].input, ins) if n not in values}

    def run_infos(a: int, b: int) -> dict[str, TensorInfo]:
        infos: dict[str, TensorInfo] = {}
        for i in range(a, b):
            for n, t in op_infos(i).items():
                infos.setdefault(n, t)
        return infos

    nested = nested_names(predict_net)  # branch nets read parent blobs without declaring them
    # A net that declares no external outputs (hand-built ones often do not) is read through the
    # blobs nothing in it reads: those leave the subgraphs, or offloading would drop every result.
    sinks: set[str] = set()
    if not predict_net.external_output:
        read = {n for op in predict_net.op for n in (*op.input, *op.control_input)}
        sinks = {o for op in predict_net.op for o in op.output if o not in read}

    def outputs_of(a: int, b: int) -> list[str]:
        later = {n for op in predict_net.op[b:] for n in (*op.input, *op.control_input)}
        later |= set(predict_net.external_output) | nested | sinks
        written = dict.fromkeys(o for op in predict_net.op[a:b] for o in op.output)
        return [n for n in written if n in later]

    def export_span(a: int, b: int) -> Any:
        return _export(_Run(list(predict_net.op[a:b]), [], run_infos(a, b)), outputs_of(a, b), values, "subgraph")

    # Candidate runs by op type; one that does not export whole is probed op by op and split.
    models: dict[tuple[int, int], Any] = {}
    for a, b in _split([op.type in EXPORTERS and not op.control_input for op in predict_net.op], 0):
        if b - a < min_ops or not outputs_of(a, b):
            continue
        try:
            models[(a, b)] = export_span(a, b)
        except Exception:  # noqa: BLE001 - exporter, shape inference and the onnx checker raise various types
            flags = [_exportable(predict_net.op[i], op_infos(i), values) for i in range(a, b)]
            for c, d in _split(flags, a):
                if d - c >= min_ops and outputs_of(c, d):
                    models[(c, d)] = export_span(c, d)

    result = OffloadResult(pb.NetDef())
    out = pb.NetDef()
    out.CopyFrom(predict_net)
    del out.op[:]
    labels = [op_label(i, op) for i, op in enumerate(predict_net.op)]
    cursor = 0
    for k, ((a, b), model) in enumerate(sorted(models.items())):
        for i in range(cursor, a):
            out.op.append(predict_net.op[i])
            result.kept.append(labels[i])
        cursor = b
        name = f"onnxifi_{k}"
        model.graph.name = name
        out.op.append(_onnxifi_op(name, model, outputs_of(a, b), labels[a:b], predict_net.op[a]))
        result.report.append(RewriteRecord("offload_onnxruntime", tuple(labels[a:b]), f"Onnxifi '{name}'"))
    for i in range(cursor, len(predict_net.op)):
        out.op.append(predict_net.op[i])
        result.kept.append(labels[i])
    result.predict_net = out
    return result


def _onnxifi_op(name: str, model: Any, outputs: list[str], labels: list[str], first: pb.OperatorDef) -> pb.OperatorDef:
    in_names = [v.name for v in model.graph.input]
    out_names = [v.name for v in model.graph.output]
    op = pb.OperatorDef(type="Onnxifi", name=name, input=in_names, output=outputs)
    if first.HasField("device_option"):
        op.device_option.CopyFrom(first.device_option)
    op.debug_info = first.debug_info
    op.arg.append(make_argument("onnx_model", model.SerializeToString()))
    op.arg.append(make_argument("input_names", in_names))
    op.arg.append(make_argument("output_names", out_names))
    op.arg.append(make_argument("backend", "onnxruntime"))
    op.arg.append(make_argument("replaced_ops", labels))
    return op
