"""Static checks of a NetDef, without running it.

:func:`check_net` reports, as :class:`Issue` objects:

* errors: unknown op types, schema violations (arity, in-place), arguments the
  kernel factory refuses, blobs read before anything produced them and not
  declared as inputs, external outputs nothing produces, and the first shape or
  dtype inconsistency found by :func:`asyncnet.shapes.infer_shapes` (naming
  the op index, type, blobs, expected and found);
* warnings: ops none of whose outputs is ever read or declared as an output,
  declared inputs that nothing reads.

It also returns every blob's inferred shape and dtype and a per-device summary.
Nested nets (``If``/``While`` arguments) are checked too; their issues name the
outer op and the nested net.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from asyncnet.errors import AsyncNetError, ShapeInferenceError
from asyncnet.opinfo import DeviceKey
from asyncnet.proto import caffe2_pb2 as pb
from asyncnet.registry import OpRegistry, default_registry
from asyncnet.schema import TensorInfo
from asyncnet.serde import nested_nets

Severity = Literal["error", "warning"]

_OP_REF = re.compile(r"op #(\d+) (\S+)")


@dataclass(frozen=True)
class Issue:
    """One finding. ``op_index`` is the index in the top-level net (the outer op for nested nets)."""

    severity: Severity
    code: str
    message: str
    op_index: int | None = None
    op_type: str | None = None
    blob: str | None = None

    def __str__(self) -> str:
        return f"{self.severity}: [{self.code}] {self.message}"


@dataclass
class DeviceSummary:
    """Ops placed on one device."""

    ops: int = 0
    types: Counter[str] = field(default_factory=Counter)
    engines: Counter[str] = field(default_factory=Counter)


@dataclass
class CheckReport:
    """Everything :func:`check_net` found."""

    net_name: str
    num_ops: int
    issues: list[Issue] = field(default_factory=list)
    shapes: dict[str, TensorInfo] = field(default_factory=dict)
    shape_order: list[str] = field(default_factory=list)
    unknown_shape_ops: list[int] = field(default_factory=list)
    unknown_inputs: list[str] = field(default_factory=list)
    devices: dict[str, DeviceSummary] = field(default_factory=dict)
    shapes_checked: bool = False

    @property
    def errors(self) -> list[Issue]:
        return [i for i in self.issues if i.severity == "error"]

    @property
    def warnings(self) -> list[Issue]:
        return [i for i in self.issues if i.severity == "warning"]

    @property
    def ok(self) -> bool:
        """True when there are no errors (warnings allowed)."""
        return not self.errors

    def lines(self) -> list[str]:
        """The human-readable report ``asyncnet check`` prints."""
        out = [
            f"net '{self.net_name}': {self.num_ops} ops, {len(self.errors)} error(s), {len(self.warnings)} warning(s)"
        ]
        for title, items in (("errors", self.errors), ("warnings", self.warnings)):
            if items:
                out.append(f"{title}:")
                out.extend(f"  {i.message}" for i in items)
        if self.shapes_checked:
            out.append("inferred shapes:")
            width = max((len(n) for n in self.shape_order), default=0)
            out.extend(f"  {n:{width}s}  {self.shapes[n]}" for n in self.shape_order)
            if self.unknown_inputs:
                shown = ", ".join(self.unknown_inputs[:8]) + (" ..." if len(self.unknown_inputs) > 8 else "")
                out.append(
                    f"  {len(self.unknown_inputs)} input(s) of unknown shape (give --init or --input-shape): {shown}"
                )
            if self.unknown_shape_ops:
                out.append(f"  ops without shape inference: {', '.join(f'#{i}' for i in self.unknown_shape_ops)}")
        else:
            out.append("inferred shapes: not available (see the errors above)")
        out.append("devices:")
        for dev, s in sorted(self.devices.items()):
            kinds = ", ".join(f"{t} x{n}" for t, n in s.types.most_common())
            line = f"  {dev}: {s.ops} op(s): {kinds}"
            if s.engines:
                line += "; engines " + ", ".join(f"{e} x{n}" for e, n in s.engines.most_common())
            out.append(line)
        return out


class _Checker:
    def __init__(self, registry: OpRegistry, report: CheckReport) -> None:
        self.reg = registry
        self.report = report

    def add(
        self,
        severity: Severity,
        code: str,
        message: str,
        op_index: int | None = None,
        op_type: str | None = None,
        blob: str | None = None,
    ) -> None:
        self.report.issues.append(Issue(severity, code, message, op_index, op_type, blob))

    def schema(self, net: pb.NetDef, top_index: int | None, prefix: str) -> bool:
        """Schema, argument and device checks of every op (recursively); True when all passed."""
        from asyncnet.net import op_info, prepare_op
        from asyncnet.workspace import Workspace

        ok = True
        scratch = Workspace("checker")
        net_device = net.device_option if net.HasField("device_option") else None
        for i, op in enumerate(net.op):
            index = i if top_index is None else top_index
            where = f"{prefix}op #{i} {op.type}" + (f" '{op.name}'" if op.name else "")
            dev_opt = op.device_option if op.HasField("device_option") else net_device
            dev = str(DeviceKey.of(dev_opt))
            summary = self.report.devices.setdefault(dev, DeviceSummary())
            summary.ops += 1
            summary.types[op.type] += 1
            if op.engine:
                summary.engines[op.engine] += 1
            # Nested nets first: when they are broken, preparing the outer op would only repeat it.
            nested_ok = True
            for arg_name, sub in nested_nets(op):
                nested_ok = self.schema(sub, index, f"{where} {arg_name} net '{sub.name}': ") and nested_ok
            ok = ok and nested_ok
            try:
                info = op_info(
                    op, index=i, registry=self.reg, net_device=net_device, net_name=net.name, workspace=scratch
                )
                if nested_ok:
                    prepare_op(info, scratch, self.reg)
            except AsyncNetError as e:
                ok = False
                code = {"UnknownOperatorError": "unknown-op", "SchemaError": "schema"}.get(
                    type(e).__name__, "arguments"
                )
                text = str(e)
                if not text.startswith("op #"):
                    text = f"op #{i} {op.type}: {text}"
                self.add("error", code, prefix + text, index, op.type)
        scratch.reset()
        return ok

    def dataflow(self, net: pb.NetDef, available: set[str], top_index: int | None, prefix: str) -> set[str]:
        """Undefined reads and unused outputs; returns the blobs available after the net."""
        avail = set(available) | set(net.external_input)
        for i, op in enumerate(net.op):
            index = i if top_index is None else top_index
            where = f"{prefix}op #{i} {op.type}" + (f" '{op.name}'" if op.name else "")
            for name in (*op.input, *op.control_input):
                if name not in avail:
                    self.add(
                        "error",
                        "undefined-blob",
                        f"{where} reads blob '{name}', which no earlier operator produces and the net does not "
                        "declare as an external input",
                        index,
                        op.type,
                        name,
                    )
                    avail.add(name)  # report each missing blob once
            inner = set(avail)
            for _, sub in nested_nets(op):
                inner |= self.dataflow(sub, avail, index, f"{where} net '{sub.name}': ")
            avail |= inner
            avail.update(op.output)
        return avail

    def unused(self, net: pb.NetDef) -> None:
        """Ops whose every output is overwritten or dropped unread."""
        outputs = set(net.external_output)
        nested_reads = {
            n for op in net.op for _, sub in nested_nets(op) for o in sub.op for n in (*o.input, *o.control_input)
        }
        for i, op in enumerate(net.op):
            if not op.output:
                continue
            read = False
            for name in op.output:
                if name in outputs or name in nested_reads:
                    read = True
                    break
                for later in net.op[i + 1 :]:
                    if name in later.input or name in later.control_input:
                        read = True
                        break
                    if name in later.output:
                        break
                if read:
                    break
            if not read:
                where = f"op #{i} {op.type}" + (f" '{op.name}'" if op.name else "")
                self.add(
                    "warning",
                    "unused-output",
                    f"{where}: no operator reads its output(s) {list(op.output)} and the net does not declare "
                    "them as external outputs",
                    i,
                    op.type,
                    op.output[0],
                )
        read_any = {n for op in net.op for n in (*op.input, *op.control_input)} | nested_reads
        for name in net.external_input:
            if name not in read_any and name not in outputs:
                self.add("warning", "unused-input", f"external input '{name}' is never read", blob=name)


def check_net(
    net_def: pb.NetDef,
    *,
    inputs: Mapping[str, TensorInfo] | None = None,
    init_net: pb.NetDef | None = None,
    registry: OpRegistry | None = None,
) -> CheckReport:
    """Check ``net_def`` statically.

    Args:
        net_def: the net to check.
        inputs: what is known of blobs present before the net runs (``--input-shape``,
            fed arrays); names here count as declared inputs.
        init_net: a parameter net run before ``net_def``: its outputs count as
            declared inputs and its inferred shapes feed the check.
        registry: schema source (default: the process registry).

    Returns:
        A :class:`CheckReport`; ``report.ok`` is False when it has errors.
    """
    from asyncnet.shapes import infer_shapes

    reg = registry or default_registry()
    report = CheckReport(net_def.name, len(net_def.op))
    checker = _Checker(reg, report)
    known: dict[str, TensorInfo] = {}
    schema_ok = True
    if init_net is not None:
        init_checker = _Checker(reg, CheckReport(init_net.name, len(init_net.op)))
        if init_checker.schema(init_net, None, f"init net '{init_net.name}': "):
            try:
                known.update(infer_shapes(init_net, {}, registry=reg).blobs)
            except AsyncNetError as e:
                checker.add("error", "shape", f"init net '{init_net.name}': {e}")
        else:
            report.issues.extend(init_checker.report.issues)
            schema_ok = False
        known.update({o: known.get(o, TensorInfo()) for op in init_net.op for o in op.output})
    known.update(inputs or {})
    schema_ok = checker.schema(net_def, None, "") and schema_ok
    checker.dataflow(net_def, set(known), None, "")
    produced = {o for op in net_def.op for o in op.output} | set(net_def.external_input) | set(known)
    for name in net_def.external_output:
        if name not in produced:
            checker.add("error", "unproduced-output", f"external output '{name}' is produced by no operator", blob=name)
    checker.unused(net_def)
    if schema_ok:
        _infer(checker, net_def, known, reg)
    return report


def _infer(checker: _Checker, net_def: pb.NetDef, known: dict[str, TensorInfo], reg: OpRegistry) -> None:
    from asyncnet.shapes import infer_shapes

    report = checker.report
    try:
        shapes = infer_shapes(net_def, known, registry=reg)
    except ShapeInferenceError as e:
        m = _OP_REF.search(str(e))
        index = int(m.group(1)) if m else None
        checker.add("error", "shape", str(e), index, m.group(2) if m else None)
        return
    except AsyncNetError as e:
        checker.add("error", "shape", f"shape inference failed: {e}")
        return
    report.shapes_checked = True
    report.shapes = dict(shapes.blobs)
    order: dict[str, None] = {}
    for name in (*net_def.external_input, *known):
        if name in shapes.blobs:
            order.setdefault(name)
    for op in net_def.op:
        for name in (*op.input, *op.output):
            if name in shapes.blobs:
                order.setdefault(name)
    for name in shapes.blobs:
        order.setdefault(name)
    report.shape_order = list(order)
    report.unknown_shape_ops = list(shapes.unknown_ops)
    report.unknown_inputs = [
        n for n in order if n not in known and shapes.blobs[n].shape is None and n not in _produced(net_def)
    ]


def _produced(net: pb.NetDef) -> set[str]:
    return {o for op in net.op for o in op.output}
