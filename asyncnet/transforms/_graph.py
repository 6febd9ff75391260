"""The mutable view of a predict net that the inference rewrites work on.

Rewrites edit a list of OperatorDef copies in place; readers and writers are recomputed from that
list on demand (nets have hundreds of ops, not millions, so clarity wins over incremental indexes).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from asyncnet.proto import caffe2_pb2 as pb
from asyncnet.serde import arguments_to_dict

if TYPE_CHECKING:
    from asyncnet.workspace import Workspace


@dataclass(frozen=True)
class RewriteRecord:
    """One rewrite that ran.

    Attributes:
        rewrite: the rewrite's name (``fold_bn_into_conv``, ``fuse_relu``, ``drop_dropout``, ...).
        ops: labels of the original ops it affected, e.g. ``("op #3 Conv 'conv1'", "op #4 SpatialBN 'bn1'")``.
        result: what they became (``"op ConvRelu -> 'conv1'"``, ``"removed"``, ...).
    """

    rewrite: str
    ops: tuple[str, ...]
    result: str = ""

    def __str__(self) -> str:
        text = f"{self.rewrite}: {' + '.join(self.ops)}"
        return text + (f" -> {self.result}" if self.result else "")


def op_label(index: int, op: pb.OperatorDef) -> str:
    """``op #3 Conv 'conv1'`` (the original index in the predict net)."""
    return f"op #{index} {op.type}" + (f" '{op.name}'" if op.name else "")


@dataclass
class Graph:
    """Ops of a predict net being rewritten, with its constants.

    Attributes:
        ops: OperatorDef copies, edited in place by the rewrites.
        labels: per op, the label(s) of the original op(s) it stands for.
        params: constant blobs by name (values are never mutated; rewrites add new blobs).
        new_params: blobs the rewrites created (a subset of ``params``' keys).
        external_inputs / external_outputs: the net's declared names, never renamed.
    """

    ops: list[pb.OperatorDef]
    labels: list[str]
    params: dict[str, np.ndarray]
    external_inputs: list[str]
    external_outputs: list[str]
    new_params: list[str] = field(default_factory=list)
    nested: set[str] = field(default_factory=set)  # names used inside nested nets (If branches, ...)
    records: list[RewriteRecord] = field(default_factory=list)

    @classmethod
    def of(cls, net: pb.NetDef, params: Mapping[str, Any]) -> Graph:
        ops = []
        for op in net.op:
            c = pb.OperatorDef()
            c.CopyFrom(op)
            ops.append(c)
        return cls(
            ops=ops,
            labels=[op_label(i, op) for i, op in enumerate(net.op)],
            params={k: np.asarray(v) for k, v in params.items()},
            external_inputs=list(net.external_input),
            external_outputs=list(net.external_output),
        )

    # -- queries -------------------------------------------------------------

    def readers(self, name: str) -> list[int]:
        """Indices of ops that read ``name`` (as input or control input)."""
        return [i for i, op in enumerate(self.ops) if name in op.input or name in op.control_input]

    def writers(self, name: str) -> list[int]:
        return [i for i, op in enumerate(self.ops) if name in op.output]

    def value_readers(self, index: int, name: str) -> list[int]:
        """Ops reading the value that op ``index`` writes to ``name`` (up to the next write of it)."""
        out = []
        for j in range(index + 1, len(self.ops)):
            op = self.ops[j]
            if name in op.input or name in op.control_input:
                out.append(j)
            if name in op.output:
                break
        return out

    def is_final_write(self, index: int, name: str) -> bool:
        """Whether no op after ``index`` writes ``name`` (so the caller sees this op's value)."""
        return not any(name in op.output for op in self.ops[index + 1 :])

    def touched_between(self, name: str, lo: int, hi: int) -> bool:
        """Whether an op strictly between ``lo`` and ``hi`` reads or writes ``name``."""
        for op in self.ops[lo + 1 : hi]:
            if name in op.input or name in op.output or name in op.control_input:
                return True
        return False

    def is_const(self, name: str) -> bool:
        """A parameter: known before the net runs and never written by it."""
        return name in self.params and not self.writers(name)

    def args(self, index: int) -> dict[str, Any]:
        return arguments_to_dict(self.ops[index].arg, owner=self.labels[index])

    def all_names(self) -> set[str]:
        names = set(self.params) | set(self.external_inputs) | set(self.external_outputs)
        for op in self.ops:
            names.update(op.input)
            names.update(op.output)
        return names

    def fresh_name(self, base: str) -> str:
        """A blob name not used anywhere yet, derived from ``base``."""
        taken = self.all_names()
        name, k = base, 1
        while name in taken:
            k += 1
            name = f"{base}_{k}"
        return name

    # -- edits ---------------------------------------------------------------

    def add_param(self, base: str, value: np.ndarray) -> str:
        name = self.fresh_name(base)
        self.params[name] = value
        self.new_params.append(name)
        return name

    def remove_op(self, index: int) -> None:
        del self.ops[index]
        del self.labels[index]

    def rename_reads(self, old: str, new: str, start: int) -> None:
        """Make every op from ``start`` on read ``new`` where it read ``old``."""
        for op in self.ops[start:]:
            for k, n in enumerate(op.input):
                if n == old:
                    op.input[k] = new
            for k, n in enumerate(op.control_input):
                if n == old:
                    op.control_input[k] = new

    def record(self, rewrite: str, labels: Iterable[str], result: str = "") -> None:
        self.records.append(RewriteRecord(rewrite, tuple(labels), result))

    def to_net(self, original: pb.NetDef) -> pb.NetDef:
        """A copy of ``original`` with the rewritten ops; params no longer read leave external_input."""
        out = pb.NetDef()
        out.CopyFrom(original)
        del out.op[:]
        out.op.extend(self.ops)
        read = {n for op in self.ops for n in (*op.input, *op.control_input)}
        declared = list(original.external_input)
        lists_params = any(n in self.params for n in declared)
        keep = [n for n in declared if not (n in self.params and n not in read and n not in self.external_outputs)]
        if lists_params:
            keep += [n for n in self.new_params if n in read and n not in keep]
        del out.external_input[:]
        out.external_input.extend(keep)
        return out


def nested_names(net: pb.NetDef) -> set[str]:
    """Blob names used inside nets nested in op arguments (If/While/Do branches, step nets).

    Those nets read and write the parent's blobs without listing them as op inputs, so the rewrites
    treat every such name like an external output: never renamed, never folded away.
    """
    from asyncnet.serde import nested_nets

    names: set[str] = set()
    for op in net.op:
        for _, sub in nested_nets(op):
            names.update(sub.external_input)
            names.update(sub.external_output)
            for inner in sub.op:
                names.update(inner.input)
                names.update(inner.output)
                names.update(inner.control_input)
            names |= nested_names(sub)
    return names


def collect_params(
    predict: pb.NetDef,
    init: pb.NetDef | None,
    workspace: Workspace | None,
    params: Mapping[str, Any] | None,
    data_inputs: Collection[str],
) -> dict[str, np.ndarray]:
    """Parameter values the predict net reads: from ``init`` (run in a scratch workspace), then
    ``workspace``, then ``params``; ``data_inputs`` and non-array blobs are left out."""
    from asyncnet.net import net_inputs
    from asyncnet.workspace import Workspace

    reads = set(net_inputs(predict))
    found: dict[str, np.ndarray] = {}
    if init is not None:
        with Workspace() as tmp:
            tmp.run_net_once(init, executor="simple")
            found.update({n: tmp.fetch(n) for n in tmp.blobs() if n in reads})
    if workspace is not None:
        found.update({n: workspace.fetch(n) for n in reads if workspace.has(n)})
    found.update(params or {})
    return {k: v for k, v in found.items() if k not in data_inputs and isinstance(v, np.ndarray)}
