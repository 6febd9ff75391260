"""BatchDenseToSparse (the inverse of BatchSparseToDense) and the gradients of both, as Caffe2: each
op's gradient is the other one applied to the output gradient."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from asyncnet.errors import ArgumentError
from asyncnet.opinfo import OpInfo
from asyncnet.ops._util import info
from asyncnet.ops.segments import check_lengths
from asyncnet.proto import caffe2_pb2 as pb
from asyncnet.registry import register_op
from asyncnet.schema import Arg
from asyncnet.training.gradients import GradientContext, GradientSpec, register_gradient


@register_op(
    "BatchDenseToSparse",
    inputs=3,
    args=(
        Arg("dense_last_dim", -1, "accepted (copied from BatchSparseToDense when this op is its gradient)"),
        Arg("default_value", 0.0, "accepted (copied from BatchSparseToDense when this op is its gradient)"),
    ),
    infer=lambda op, ins: [info(ins[1].shape, ins[2].dtype)],
    doc="Gather the sparse values of dense rows: for batch row b with LENGTHS[b] indices, output j is "
    "DENSE[b, INDICES[j]] (the inverse of BatchSparseToDense).",
    input_names=("LENGTHS", "INDICES", "DENSE"),
    output_names=("VALUES",),
)
def batch_dense_to_sparse(op: OpInfo) -> Callable[..., Any]:
    def run(lengths: Any, indices: Any, dense: Any) -> tuple[np.ndarray]:
        lens = check_lengths(op, lengths)
        idx = np.asarray(indices)
        flat = idx.reshape(-1).astype(np.int64)
        d = np.asarray(dense)
        if d.ndim != 2 or d.shape[0] != lens.size:
            raise ArgumentError(f"{op.label()}: DENSE must be ({lens.size}, D), got {d.shape}")
        if flat.size != int(lens.sum()):
            raise ArgumentError(f"{op.label()}: INDICES must hold sum(LENGTHS) = {int(lens.sum())} values")
        if np.any(flat < 0) or np.any(flat >= d.shape[1]):
            raise ArgumentError(f"{op.label()}: INDICES must lie in [0, {d.shape[1]})")
        rows = np.repeat(np.arange(lens.size), lens)
        return (d[rows, flat].reshape(idx.shape),)

    return run


@register_gradient("BatchDenseToSparse")
def _dense_to_sparse_grad(op: pb.OperatorDef, g_out: list[str | None]) -> GradientSpec:
    g = GradientContext(op, g_out)
    return g.spec([g.op_def("BatchSparseToDense", [g.I(0), g.I(1), g.GO(0), g.I(2)], [g.GI(2)])])


@register_gradient("BatchSparseToDense")
def _sparse_to_dense_grad(op: pb.OperatorDef, g_out: list[str | None]) -> GradientSpec:
    g = GradientContext(op, g_out)
    return g.spec([g.op_def("BatchDenseToSparse", [g.I(0), g.I(1), g.GO(0)], [g.GI(2)])])
