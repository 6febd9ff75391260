"""Sparse feature helpers: SparseToDenseMask (+ gradient), SparseNormalize, SparseLpRegularizer."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from asyncnet.errors import ArgumentError
from asyncnet.opinfo import OpInfo
from asyncnet.proto import caffe2_pb2 as pb
from asyncnet.registry import register_op
from asyncnet.schema import Arg, TensorInfo
from asyncnet.training.gradients import GradientContext, GradientSpec, register_gradient


def _mask_infer(op: OpInfo, ins: list[TensorInfo]) -> list[TensorInfo]:
    v = ins[1]
    cols = len(op.ints_arg("mask"))
    block = None if v.shape is None else tuple(v.shape[1:])
    if len(ins) > 3:
        rows = None if ins[3].shape is None or not ins[3].shape else ins[3].shape[0]
        out = TensorInfo(None if block is None else (rows, cols) + block, v.dtype)
        mask = TensorInfo((rows, cols), np.dtype(np.bool_))
    else:
        out = TensorInfo(None if block is None else (cols,) + block, v.dtype)
        mask = TensorInfo((cols,), np.dtype(np.bool_))
    return [out, mask][: len(op.outputs)]


@register_op(
    "SparseToDenseMask",
    inputs=(3, 4),
    outputs=(1, 2),
    args=(
        Arg("mask", [], "the ids kept, in output column order"),
        Arg("return_presence_mask", 0, "also output a bool mask of the filled positions (output 1)"),
        Arg("max_skipped_indices", 50, "how many negative (invalid) ids may be skipped"),
    ),
    infer=_mask_infer,
    doc="Scatter VALUES into columns by id: id INDICES[j] found at position c of `mask` puts VALUES[j] "
    "at column c (of row i when LENGTHS cut INDICES into rows); other positions get DEFAULT_VALUE. "
    "A repeated id keeps its last value; ids outside `mask` are ignored.",
    input_names=("indices", "values", "default_value", "lengths"),
    output_names=("output", "presence_mask"),
)
def sparse_to_dense_mask(op: OpInfo) -> Callable[..., Any]:
    ids = op.ints_arg("mask")
    pos = {v: k for k, v in enumerate(ids)}
    if len(pos) != len(ids):
        raise ArgumentError(f"{op.label()}: `mask` holds repeated ids: {ids}")
    max_skipped = op.int_arg("max_skipped_indices")
    # Caffe2 accepted a named second output without return_presence_mask (and left it unset); here
    # the presence mask is written whenever the output exists.

    def run(indices: Any, values: Any, default: Any, lengths: Any = None) -> tuple[np.ndarray, np.ndarray]:
        ii = np.asarray(indices).reshape(-1)
        v = np.asarray(values)
        if v.ndim == 0 or v.shape[0] != ii.size:
            raise ArgumentError(f"{op.label()}: values {v.shape} must have one row per index ({ii.size})")
        block = v.shape[1:]
        d = np.asarray(default, dtype=v.dtype)
        if d.size != int(np.prod(block, dtype=np.int64)):
            raise ArgumentError(f"{op.label()}: default_value {d.shape} must match a value's shape {block}")
        lens = np.array([ii.size]) if lengths is None else np.asarray(lengths).reshape(-1).astype(np.int64)
        if int(lens.sum()) != ii.size:
            raise ArgumentError(f"{op.label()}: lengths sum to {int(lens.sum())}, expected {ii.size}")
        out = np.empty((lens.size, len(ids)) + block, v.dtype)
        out[...] = d.reshape(block)
        present = np.zeros((lens.size, len(ids)), np.bool_)
        skipped, j = 0, 0
        for r, n in enumerate(lens.tolist()):
            for _ in range(n):
                key = int(ii[j])
                if key < 0:
                    skipped += 1
                    if skipped > max_skipped:
                        raise ArgumentError(f"{op.label()}: more than {max_skipped} invalid (negative) ids")
                elif key in pos:
                    out[r, pos[key]] = v[j]
                    present[r, pos[key]] = True
                j += 1
        if lengths is None:
            return out[0], present[0]
        return out, present

    return run


@register_op(
    "SparseNormalize",
    inputs=(2, 3),
    enforce_inplace=[(0, 0)],
    args=(
        Arg("use_max_norm", 1, "only shrink rows whose norm exceeds `norm`"),
        Arg("norm", 1.0, "the target L2 norm"),
    ),
    infer=lambda op, ins: [ins[0]],
    doc="For each row param[indices[i]]: scale it to L2 norm `norm` (x * norm / (|x| + 1e-12)); with "
    "use_max_norm only rows whose norm exceeds `norm` change. Input 2 (grad) is accepted and unused. "
    "Float16SparseNormalize is the spelling for float16 parameters (same kernel, dtype kept).",
    input_names=("param", "indices", "grad"),
    output_names=("output_param",),
    aliases=("Float16SparseNormalize",),
)
def sparse_normalize(op: OpInfo) -> Callable[..., Any]:
    use_max, target = op.bool_arg("use_max_norm"), op.float_arg("norm")
    if target <= 0:
        raise ArgumentError(f"{op.label()}: norm must be positive, got {target}")

    def run(param: Any, indices: Any, grad: Any = None) -> tuple[np.ndarray]:
        p = np.array(param, copy=True)
        ii = np.asarray(indices).reshape(-1).astype(np.int64)
        if p.ndim == 0 or np.any(ii < 0) or np.any(ii >= p.shape[0]):
            raise ArgumentError(f"{op.label()}: indices must lie in [0, {p.shape[0] if p.ndim else 0})")
        for r in ii.tolist():
            n = float(np.sqrt(np.sum(p[r].astype(np.float64) ** 2)))
            if use_max and n <= target:
                continue
            p[r] = p[r] * (target / (n + 1e-12))
        return (p,)

    return run


@register_op(
    "SparseLpRegularizer",
    inputs=(2, 3),
    enforce_inplace=[(0, 0)],
    args=(Arg("p", 2.0, "the norm: 1 (soft threshold) or 2 (decay)"), Arg("reg_lambda", 1e-5, "strength")),
    infer=lambda op, ins: [ins[0]],
    doc="For each row param[indices[i]]: p=2 multiplies it by (1 - reg_lambda); p=1 moves every entry "
    "toward 0 by reg_lambda, setting entries within reg_lambda of 0 to 0.",
    input_names=("param", "indices", "grad"),
    output_names=("output_param",),
)
def sparse_lp_regularizer(op: OpInfo) -> Callable[..., Any]:
    p_norm, lam = op.float_arg("p"), op.float_arg("reg_lambda")
    if p_norm not in (1.0, 2.0):
        raise ArgumentError(f"{op.label()}: p must be 1 or 2, got {p_norm}")
    if lam < 0:
        raise ArgumentError(f"{op.label()}: reg_lambda must be nonnegative, got {lam}")

    def run(param: Any, indices: Any, grad: Any = None) -> tuple[np.ndarray]:
        p = np.array(param, copy=True)
        ii = np.asarray(indices).reshape(-1).astype(np.int64)
        if p.ndim == 0 or np.any(ii < 0) or np.any(ii >= p.shape[0]):
            raise ArgumentError(f"{op.label()}: indices must lie in [0, {p.shape[0] if p.ndim else 0})")
        for r in ii.tolist():
            row = p[r]
            if p_norm == 2.0:
                p[r] = row * (1.0 - lam)
            else:
                p[r] = np.where(np.abs(row) <= lam + 1e-12, 0, np.where(row > 0, row - lam, row + lam))
        return (p,)

    return run


@register_gradient("SparseToDenseMask")
def _sparse_to_dense_mask_grad(op: pb.OperatorDef, g_out: list[str | None]) -> GradientSpec:
    g = GradientContext(op, g_out)
    ins = [g.I(0), g.GO(0)] + ([g.I(3)] if len(op.input) > 3 else [])
    return g.spec([g.op_def("SparseToDenseMaskGradient", ins, [g.GI(1)])])


@register_op(
    "SparseToDenseMaskGradient",
    inputs=(2, 3),
    args=(Arg("mask", [], "the forward mask"), Arg("max_skipped_indices", 50, "the forward limit")),
    infer=lambda op, ins: [TensorInfo(None, ins[1].dtype)],
    doc="Gradient of SparseToDenseMask for the values: inputs indices, doutput, [lengths]; the last "
    "occurrence of an id in a row gets that position's gradient, every other value 0.",
    input_names=("indices", "output_grad", "lengths"),
    output_names=("values_grad",),
)
def sparse_to_dense_mask_gradient(op: OpInfo) -> Callable[..., Any]:
    pos = {v: k for k, v in enumerate(op.ints_arg("mask"))}

    def run(indices: Any, dout: Any, lengths: Any = None) -> tuple[np.ndarray]:
        ii = np.asarray(indices).reshape(-1)
        d = np.asarray(dout)
        lens = [ii.size] if lengths is None else np.asarray(lengths).reshape(-1).astype(np.int64).tolist()
        rows = d[None] if lengths is None else d
        block = rows.shape[2:]
        out = np.zeros((ii.size, *block), d.dtype)
        start = 0
        for r, n in enumerate(lens):
            seen: set[int] = set()
            for j in range(start + n - 1, start - 1, -1):
                c = pos.get(int(ii[j]))
                if c is not None and c not in seen:
                    seen.add(c)
                    out[j] = rows[r, c]
            start += n
        return (out,)

    return run
