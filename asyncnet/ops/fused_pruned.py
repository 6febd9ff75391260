"""Embedding bags over pruned fused tables: SparseLengths{Sum,WeightedSum,Mean}{2,4,8}BitRowwiseSparse and
SparseLengthsSumSparseLookup.

A pruned table keeps only some rows of the original one; COMPRESSED_INDICES_MAPPING maps an original
row index to its row in the pruned table, or to -1 for a pruned row, which then contributes nothing
(a mean still divides by the full length). A mapping of exactly [0] means "not pruned": indices address
DATA directly.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from asyncnet.errors import ArgumentError
from asyncnet.opinfo import OpInfo
from asyncnet.ops._util import info
from asyncnet.ops.fused_rowwise import bag_infer, reduce_rows
from asyncnet.registry import register_op

U8 = np.dtype(np.uint8)


def _checked(op: OpInfo, idx: Any, lens: Any, w: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    i = np.asarray(idx).reshape(-1)
    n = np.asarray(lens).reshape(-1).astype(np.int64)
    if i.dtype.kind not in "iu":
        raise ArgumentError(f"{op.label()}: INDICES must be integers, got {i.dtype}")
    if np.any(n < 0) or int(n.sum()) != i.size:
        raise ArgumentError(f"{op.label()}: LENGTHS must be nonnegative and sum to the {i.size} indices")
    ww = None if w is None else np.asarray(w).reshape(-1)
    if ww is not None and ww.size != i.size:
        raise ArgumentError(f"{op.label()}: WEIGHTS has {ww.size} values for {i.size} indices")
    return i.astype(np.int64), n, ww


def lookup(op: OpInfo, idx: np.ndarray, mapping: Any) -> np.ndarray:
    """Each index's row in the pruned table (-1: pruned)."""
    m = np.asarray(mapping).reshape(-1).astype(np.int64)
    if np.any(idx < 0) or np.any(idx >= m.size):
        raise ArgumentError(f"{op.label()}: INDICES must lie in [0, {m.size}) (the mapping's size)")
    return np.asarray(m[idx])


def _bag(bits: int, kind: str) -> Callable[[OpInfo], Callable[..., Any]]:
    weighted = kind == "WeightedSum"

    def factory(op: OpInfo) -> Callable[..., Any]:
        def run(*ins: Any) -> tuple[np.ndarray]:
            data = np.asarray(ins[0])
            if data.dtype != U8 or data.ndim != 2:
                raise ArgumentError(f"{op.label()}: DATA must be 2-D uint8 fused rows, got {data.dtype} {data.shape}")
            idx, lens, w = _checked(op, ins[-3], ins[-2], ins[1] if weighted else None)
            mapping = np.asarray(ins[-1]).reshape(-1)
            seg = np.repeat(np.arange(lens.size), lens)
            if mapping.size == 1 and int(mapping[0]) == 0:
                rows = idx
            else:
                rows = lookup(op, idx, mapping)
                keep = rows >= 0
                rows, seg = rows[keep], seg[keep]
                w = None if w is None else w[keep]
            if np.any(rows >= data.shape[0]):
                raise ArgumentError(f"{op.label()}: a mapped index falls outside DATA's {data.shape[0]} rows")
            return (reduce_rows(data, rows, w, seg, lens, kind == "Mean", bits),)

        return run

    return factory


for _bits in (8, 4, 2):
    for _kind in ("Sum", "WeightedSum", "Mean"):
        _w = ("WEIGHTS",) if _kind == "WeightedSum" else ()
        _names = ("DATA", *_w, "INDICES", "LENGTHS", "COMPRESSED_INDICES_MAPPING")
        register_op(
            f"SparseLengths{_kind}{_bits}BitRowwiseSparse",
            inputs=len(_names),
            infer=bag_infer(_bits, lengths_input=-2),
            doc=f"SparseLengths{_kind}Fused{_bits}BitRowwise over a pruned table: each index goes through "
            "COMPRESSED_INDICES_MAPPING to its DATA row; pruned rows (-1) add nothing"
            + (" (the mean still divides by the full length)" if _kind == "Mean" else "")
            + "; the mapping [0] means the table is not pruned.",
            input_names=_names,
            output_names=("output",),
        )(_bag(_bits, _kind))


@register_op(
    "SparseLengthsSumSparseLookup",
    inputs=(3, 4),
    outputs=(2, 3),
    arity=lambda i, o: o == i - 1,
    arity_doc="weights in, weights out",
    infer=lambda op, ins: [info((None,), ins[0].dtype), info(ins[1].shape, np.int32), info((None,), np.float32)][
        : len(op.outputs)
    ],
    doc="Rewrite (INDICES, LENGTHS[, WEIGHTS]) for a pruned table: map each index through "
    "COMPRESSED_INDICES_MAPPING, drop the pruned ones (-1) and shorten the lengths accordingly.",
    input_names=("INDICES", "LENGTHS", "COMPRESSED_INDICES_MAPPING", "WEIGHTS"),
    output_names=("indices", "lengths", "weights"),
)
def sparse_lengths_sum_sparse_lookup(op: OpInfo) -> Callable[..., Any]:
    def run(indices: Any, lengths: Any, mapping: Any, weights: Any = None) -> tuple[np.ndarray, ...]:
        idx, lens, w = _checked(op, indices, lengths, weights)
        rows = lookup(op, idx, mapping)
        keep = rows >= 0
        seg = np.repeat(np.arange(lens.size), lens)
        new_lens = np.bincount(seg[keep], minlength=lens.size).astype(np.int32)
        out = (rows[keep].astype(np.asarray(indices).dtype), new_lens)
        return out + ((w[keep].astype(np.float32),) if w is not None else ())

    return run
