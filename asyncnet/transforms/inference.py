"""The driver of the inference rewrites: :func:`optimize_for_inference`.

Parameters are the blobs an init net makes (or a workspace holds) that the predict net only reads.
The rewrites run in order: drop identities (Dropout in test mode, Alias, Copy, ...), fold affine ops
into Conv/FC weights, fuse Relu into its producer. External input and output names, and the values
of the external outputs, stay the same (up to float rounding of the folded weights).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from asyncnet.errors import ArgumentError
from asyncnet.proto import caffe2_pb2 as pb
from asyncnet.serde import make_argument
from asyncnet.transforms._graph import Graph, RewriteRecord, collect_params, nested_names
from asyncnet.transforms.fold import fold_affine
from asyncnet.transforms.fuse import fuse_relu
from asyncnet.transforms.prune import drop_identities

if TYPE_CHECKING:
    from asyncnet.workspace import Workspace

#: rewrite family name -> function, in the order they run.
REWRITES: dict[str, Callable[[Graph], None]] = {
    "drop_identity": drop_identities,
    "fold_affine": fold_affine,
    "fuse_relu": fuse_relu,
}


@dataclass
class OptimizeResult:
    """What :func:`optimize_for_inference` returns.

    Attributes:
        predict_net: the rewritten predict net (a new NetDef).
        params: the blobs the rewrites created (name -> value); feed them, or run ``init_net``.
        init_net: the given init net with fills of ``params`` appended and the ops making parameters
            that no longer have readers removed; None when no init net was given.
        report: the rewrites that ran, in order.
        original_ops: op count before the rewrites.
    """

    predict_net: pb.NetDef
    params: dict[str, np.ndarray]
    init_net: pb.NetDef | None
    report: list[RewriteRecord] = field(default_factory=list)
    original_ops: int = 0

    def apply(self, workspace: Workspace) -> None:
        """Feed the new parameter blobs into ``workspace`` (the original ones stay)."""
        for name, value in self.params.items():
            workspace.feed(name, value)

    def summary_lines(self) -> list[str]:
        """Readable lines: op counts and one line per rewrite."""
        counts: dict[str, int] = {}
        for r in self.report:
            counts[r.rewrite] = counts.get(r.rewrite, 0) + 1
        kinds = ", ".join(f"{k} x{v}" for k, v in counts.items()) or "none applied"
        lines = [f"rewrites: {self.original_ops} -> {len(self.predict_net.op)} ops ({kinds})"]
        lines.extend(f"  {r}" for r in self.report)
        return lines


def _fill_op(name: str, value: np.ndarray) -> pb.OperatorDef:
    kinds = {np.dtype(np.float32): "GivenTensorFill", np.dtype(np.float64): "GivenTensorDoubleFill"}
    op_type = kinds.get(value.dtype)
    if op_type is None:
        raise ArgumentError(f"folded parameter '{name}' has dtype {value.dtype}; expected float32 or float64")
    op = pb.OperatorDef(type=op_type, output=[name])
    op.arg.append(make_argument("shape", list(value.shape)))
    op.arg.append(make_argument("values", np.ascontiguousarray(value)))
    return op


def _rewrite_init(init: pb.NetDef, new_params: Mapping[str, np.ndarray], dropped: set[str]) -> pb.NetDef:
    out = pb.NetDef()
    out.CopyFrom(init)
    # Drop ops whose every output is a parameter nothing reads any more (walk backwards so that
    # producers of their inputs can go too).
    needed: set[str] = set()
    kept: list[pb.OperatorDef] = []
    for op in reversed(list(init.op)):
        if op.output and all(o in dropped and o not in needed for o in op.output):
            continue
        kept.append(op)
        needed.update(op.input)
    del out.op[:]
    out.op.extend(reversed(kept))
    out.op.extend(_fill_op(n, v) for n, v in new_params.items())
    if out.external_output:
        outs = [n for n in out.external_output if n not in dropped] + list(new_params)
        del out.external_output[:]
        out.external_output.extend(outs)
    return out


def optimize_for_inference(
    predict_net: pb.NetDef,
    init_net: pb.NetDef | None = None,
    *,
    workspace: Workspace | None = None,
    params: Mapping[str, Any] | None = None,
    data_inputs: Iterable[str] = (),
    rewrites: Sequence[str] | None = None,
    keep: Iterable[str] = (),
) -> OptimizeResult:
    """Rewrite ``predict_net`` for inference with constant parameters.

    Parameters come from ``init_net`` (run once in a scratch workspace), from the blobs of
    ``workspace`` that the net reads, and from ``params``; names in ``data_inputs`` are data, never
    constants. A blob the predict net writes is never treated as a constant.

    Args:
        predict_net: the net to rewrite (not modified).
        init_net: its init net; the result then has a rewritten ``init_net``.
        workspace: a workspace already holding the parameters (and data).
        params: further parameter values.
        data_inputs: names fed per run (never folded).
        rewrites: families to run, a subset of ``drop_identity``, ``fold_affine``, ``fuse_relu``
            (default: all, in that order).
        keep: blobs whose values the caller fetches, preserved like external outputs.

    Raises:
        ArgumentError: an unknown rewrite name.
    """
    chosen = list(REWRITES) if rewrites is None else list(rewrites)
    unknown = [r for r in chosen if r not in REWRITES]
    if unknown:
        raise ArgumentError(f"unknown rewrite(s) {unknown}; available: {', '.join(REWRITES)}")
    values = collect_params(predict_net, init_net, workspace, params, set(data_inputs))
    g = Graph.of(predict_net, values)
    g.nested = nested_names(predict_net)
    protected = [*keep, *sorted(g.nested)]
    g.external_outputs += [n for n in protected if n not in g.external_outputs]
    for name in REWRITES:
        if name in chosen:
            REWRITES[name](g)
    new_net = g.to_net(predict_net)
    read = {n for op in new_net.op for n in (*op.input, *op.control_input)}
    new_params = {n: g.params[n] for n in g.new_params if n in read}
    new_init = None
    if init_net is not None:
        dropped = {n for n in values if n not in read and n not in g.external_outputs}
        new_init = _rewrite_init(init_net, new_params, dropped)
    return OptimizeResult(new_net, new_params, new_init, list(g.records), len(predict_net.op))
