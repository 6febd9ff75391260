"""Sparse-feature helpers: NGramFromCategorical (an n-gram id from categorical columns), GatherByKey (the
inverse of Partition's sharding), RowWiseCounter (a decayed per-row update counter) and
DenseVectorToIdList (the ids of the nonzero entries of each row)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from asyncnet.errors import ArgumentError, TensorError
from asyncnet.opinfo import OpInfo
from asyncnet.ops._util import info
from asyncnet.registry import register_op
from asyncnet.schema import Arg


@register_op(
    "NGramFromCategorical",
    args=(
        Arg("col_ids", [], "the columns of FLOATS holding categorical values"),
        Arg("categorical_limits", [], "number of categories of each column"),
        Arg("vals", [], "the category values of every column, concatenated (categorical_limits[k] each)"),
        Arg("max_categorical_limit", 0, "accepted for compatibility"),
    ),
    infer=lambda op, ins: [info(None if ins[0].shape is None else ins[0].shape[:1], np.int32)],
    doc="For every row of FLOATS (N, D): id = sum_k base_k * c_k, where c_k is the position of round(FLOATS[row, "
    "col_ids[k]]) among column k's `vals` (0 when it is not one of them) and base_k = prod(categorical_limits[:k]).",
    input_names=("floats",),
    output_names=("output",),
)
def ngram_from_categorical(op: OpInfo) -> Callable[..., Any]:
    cols, limits, vals = op.ints_arg("col_ids"), op.ints_arg("categorical_limits"), op.ints_arg("vals")
    if len(cols) != len(limits) or sum(limits) != len(vals) or any(n <= 0 for n in limits):
        raise ArgumentError(
            f"{op.label()}: need one positive categorical limit per column and sum(limits) vals; got "
            f"{len(cols)} columns, limits {limits}, {len(vals)} vals"
        )
    tables, start, base = [], 0, 1
    for n in limits:
        tables.append(({v: k for k, v in enumerate(vals[start : start + n])}, base))
        start, base = start + n, base * n

    def run(floats: Any) -> tuple[np.ndarray]:
        f = np.asarray(floats)
        if f.ndim != 2 or (cols and max(cols) >= f.shape[1]):
            raise TensorError(f"{op.label()}: floats must be (N, D) with D > max(col_ids), got {f.shape}")
        out = np.zeros(f.shape[0], np.int64)
        for (table, b), c in zip(tables, cols):
            codes = np.array([table.get(int(v), 0) for v in np.rint(f[:, c]).tolist()], np.int64)
            out += b * codes
        return (out.astype(np.int32),)

    return run


@register_op(
    "GatherByKey",
    inputs=(2, -1),
    infer=lambda op, ins: [
        info(
            None if ins[0].shape is None or ins[1].shape is None else (ins[0].shape[0], *ins[1].shape[1:]), ins[1].dtype
        )
    ],
    doc="The inverse of Partition for 1-D keys: output row i is the next unused row of shard (KEYS[i] mod "
    "number of shards), shards given as inputs 1...",
    input_names=("keys",),
    output_names=("output",),
)
def gather_by_key(op: OpInfo) -> Callable[..., Any]:
    def run(keys: Any, *shards: Any) -> tuple[np.ndarray]:
        k = np.asarray(keys)
        if k.ndim != 1:
            raise TensorError(f"{op.label()}: keys must be 1-D, got {k.shape}")
        parts = [np.asarray(s) for s in shards]
        which = np.mod(k.astype(np.int64), len(parts))
        counts = np.bincount(which, minlength=len(parts))
        for p, (s, n) in enumerate(zip(parts, counts.tolist())):
            if s.ndim == 0 or s.shape[0] != n or s.shape[1:] != parts[0].shape[1:]:
                raise TensorError(f"{op.label()}: shard {p} must have {n} rows shaped like shard 0's, got {s.shape}")
        out = np.empty((k.size, *parts[0].shape[1:]), parts[0].dtype)
        for p, s in enumerate(parts):
            out[which == p] = s
        return (out,)

    return run


@register_op(
    "RowWiseCounter",
    inputs=4,
    outputs=2,
    enforce_inplace=[(0, 0), (1, 1)],
    args=(Arg("counter_halflife", -1, "iterations for a count to halve (<= 0: the op does nothing)"),),
    infer=lambda op, ins: [ins[0], ins[1]],
    doc="For every index i: counter[i] = 1 + exp(-(iter - prev_iter[i]) * ln 2 / halflife) * counter[i] "
    "(the gap clamped at 0), then prev_iter[i] = max(iter, prev_iter[i]).",
    input_names=("prev_iter", "update_counter", "indices", "iter"),
    output_names=("output_prev_iter", "output_update_counter"),
)
def rowwise_counter(op: OpInfo) -> Callable[..., Any]:
    halflife = op.int_arg("counter_halflife")
    rho = math.log(2.0) / halflife if halflife > 0 else 0.0

    def run(prev: Any, counter: Any, indices: Any, it: Any) -> tuple[np.ndarray, np.ndarray]:
        p, c = np.array(prev, copy=True), np.array(counter, copy=True)
        if p.size != c.size or np.size(it) != 1:
            raise TensorError(
                f"{op.label()}: prev_iter and counter must match, iter one value; got {p.shape}, {c.shape}"
            )
        idx = np.asarray(indices).reshape(-1).astype(np.int64)
        if halflife <= 0 or idx.size == 0:
            return p, c
        if idx.min() < 0 or idx.max() >= c.size:
            raise TensorError(f"{op.label()}: indices must lie in [0, {c.size})")
        now = int(np.asarray(it).reshape(-1)[0])
        pf, cf = p.reshape(-1), c.reshape(-1)
        for i in idx.tolist():
            gap = max(0, now - int(pf[i]))
            cf[i] = 1.0 + math.exp(-gap * rho) * float(cf[i])
            pf[i] = max(now, int(pf[i]))
        return p, c

    return run


@register_op(
    "DenseVectorToIdList",
    outputs=2,
    infer=lambda op, ins: [info(None if ins[0].shape is None else ins[0].shape[:1], np.int32), info((None,), np.int64)],
    doc="For every row of the 2-D input: its nonzero positions (int64), concatenated, and their count per row (int32).",
    input_names=("values",),
    output_names=("out_lengths", "out_values"),
)
def dense_vector_to_id_list(op: OpInfo) -> Callable[..., Any]:
    def run(values: Any) -> tuple[np.ndarray, np.ndarray]:
        v = np.asarray(values)
        if v.ndim != 2:
            raise TensorError(f"{op.label()}: input must be 2-D (batch, width), got {v.shape}")
        rows, cols = np.nonzero(v)
        return np.bincount(rows, minlength=v.shape[0]).astype(np.int32), cols.astype(np.int64)

    return run
