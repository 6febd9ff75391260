"""Small in-place utilities: CopyRowsToTensor, DataCouple and UnsafeCoalesce (inputs re-homed as views of
one shared buffer)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from asyncnet.errors import ArgumentError, TensorError, UnsupportedError
from asyncnet.opinfo import OpInfo
from asyncnet.ops._util import info
from asyncnet.registry import register_op
from asyncnet.schema import TensorInfo


@register_op(
    "CopyRowsToTensor",
    inputs=3,
    enforce_inplace=[(0, 0)],
    infer=lambda op, ins: [ins[0]],
    doc="Write ROW (width W) into the rows INDICES of the (H, W) tensor, in place.",
    input_names=("input_tensor", "indices", "row"),
    output_names=("output_tensor",),
)
def copy_rows_to_tensor(op: OpInfo) -> Callable[..., Any]:
    def run(x: Any, indices: Any, row: Any) -> tuple[np.ndarray]:
        a, r = np.asarray(x), np.asarray(row)
        idx = np.asarray(indices).reshape(-1).astype(np.int64)
        if a.ndim != 2 or r.ndim != 1:
            raise TensorError(f"{op.label()}: expected a 2-D tensor and a 1-D row, got {a.shape} and {r.shape}")
        if a.shape[1] != r.size:
            raise TensorError(
                f"{op.label()}: width of input tensor should match lengths of row ({a.shape[1]} vs {r.size})"
            )
        if np.any(idx < 0) or np.any(idx >= a.shape[0]):
            raise TensorError(f"{op.label()}: indices must lie in [0, {a.shape[0]})")
        out = a.copy()
        out[idx] = r.astype(a.dtype)
        return (out,)

    return run


@register_op(
    "DataCouple",
    inputs=(1, -1),
    outputs=(1, -1),
    allow_inplace=lambda i, o: i == o,
    arity=lambda i, o: o <= i,
    arity_doc="outputs are the first inputs, in place",
    infer=lambda op, ins: list(ins[: len(op.outputs)]),
    doc="Pass the first inputs through unchanged (outputs in place); the extra inputs only add "
    "dependencies, coupling the blobs in the graph.",
)
def data_couple(op: OpInfo) -> Callable[..., Any]:
    n = len(op.outputs)
    return lambda *xs: tuple(xs[:n])


def _coalesce_infer(op: OpInfo, ins: list[TensorInfo]) -> list[TensorInfo]:
    sizes = [None if t.shape is None or None in t.shape else int(np.prod(t.shape)) for t in ins]  # type: ignore[arg-type]
    total = None if None in sizes else sum(s for s in sizes if s is not None)
    return [*ins, info((total,), ins[0].dtype)]


@register_op(
    "UnsafeCoalesce",
    inputs=(1, -1),
    outputs=(2, -1),
    allow_inplace=lambda i, o: i == o,
    arity=lambda i, o: o == i + 1,
    arity_doc="the inputs (in place) and the shared buffer",
    infer=_coalesce_infer,
    doc="Copy the inputs (one dtype) into one flat buffer (the last output) and output each input as a view "
    "of its part of that buffer, so they share its memory.",
)
def unsafe_coalesce(op: OpInfo) -> Callable[..., Any]:
    def run(*xs: Any) -> tuple[np.ndarray, ...]:
        arrs = [np.asarray(x) for x in xs]
        kinds = {a.dtype for a in arrs}
        if len(kinds) != 1:
            raise UnsupportedError(
                f"{op.label()}: inputs of different dtypes {sorted(map(str, kinds))} are not supported"
            )
        if arrs[0].dtype == object:
            raise ArgumentError(f"{op.label()}: string tensors cannot share one buffer")
        buf = np.concatenate([a.reshape(-1) for a in arrs]) if arrs else np.zeros(0)
        views, pos = [], 0
        for a in arrs:
            views.append(buf[pos : pos + a.size].reshape(a.shape))
            pos += a.size
        return (*views, buf)

    return run
