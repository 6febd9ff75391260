"""SortedSegmentRange{Sum,Mean,Max,LogSumExp,LogMeanExp} (+ gradients), which reduce each run of equal
sorted SEGMENT_IDS as one range, and the SparseLengthsIndicesInGradient{Sum,Mean}Gradient ops.

Range ops output last id + 1 rows; a segment id with no rows gives 0.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from asyncnet.errors import ArgumentError
from asyncnet.opinfo import OpInfo
from asyncnet.ops._util import info
from asyncnet.proto import caffe2_pb2 as pb
from asyncnet.registry import register_op
from asyncnet.schema import TensorInfo
from asyncnet.training.gradients import GradientContext, GradientSpec, register_gradient


def _ranges(op: OpInfo, ids: Any, n: int) -> tuple[np.ndarray, int]:
    """(segment id of each row, number of output rows); checks that the ids are sorted."""
    s = np.asarray(ids)
    if s.ndim != 1 or s.dtype.kind not in "iu" or s.size != n:
        raise ArgumentError(f"{op.label()}: SEGMENT_IDS must be 1-D integers, one per DATA row ({n}), got {s.shape}")
    seg = s.astype(np.int64)
    if seg.size and (seg[0] < 0 or np.any(np.diff(seg) < 0)):
        raise ArgumentError(f"{op.label()}: SEGMENT_IDS must be sorted and non-negative")
    return seg, int(seg[-1]) + 1 if seg.size else 0


def _reduce(kind: str, data: np.ndarray, seg: np.ndarray, k: int) -> np.ndarray:
    out = np.zeros((k,) + data.shape[1:], dtype=np.float64)
    counts = np.bincount(seg, minlength=k)
    x = data.astype(np.float64)
    if kind in ("Sum", "Mean"):
        np.add.at(out, seg, x)
        if kind == "Mean":
            out /= np.maximum(counts, 1).reshape((-1,) + (1,) * (x.ndim - 1))
        return out
    top = np.full((k,) + data.shape[1:], -np.inf)
    np.maximum.at(top, seg, x)
    if kind == "Max":
        return np.where(counts.reshape((-1,) + (1,) * (x.ndim - 1)) > 0, top, 0.0)
    # log-sum-exp around each range's max, so exp never overflows.
    shift = np.where(np.isfinite(top), top, 0.0)
    np.add.at(out, seg, np.exp(x - shift[seg]))
    present = counts.reshape((-1,) + (1,) * (x.ndim - 1)) > 0
    with np.errstate(divide="ignore"):
        lse = np.log(out) + shift
    if kind == "LogMeanExp":
        lse -= np.log(np.maximum(counts, 1)).reshape((-1,) + (1,) * (x.ndim - 1))
    return np.where(present, lse, 0.0)


def _grad(kind: str, data: np.ndarray, out: np.ndarray, dout: np.ndarray, seg: np.ndarray) -> np.ndarray:
    k = np.bincount(seg, minlength=out.shape[0]) if seg.size else np.zeros(0, np.int64)
    rows: np.ndarray = dout[seg].astype(np.float64)
    if kind == "Sum":
        return rows
    if kind == "Mean":
        return np.asarray(rows / k[seg].reshape((-1,) + (1,) * (rows.ndim - 1)))
    x, y = data.astype(np.float64), out[seg].astype(np.float64)
    if kind == "Max":
        # Every row equal to its range's max gets the gradient (ties included), as Caffe2.
        return np.where(x == y, rows, 0.0)
    if kind == "LogMeanExp":
        y = y + np.log(k[seg]).reshape((-1,) + (1,) * (rows.ndim - 1))
    return np.asarray(rows * np.exp(x - y))


_KINDS = {
    "Sum": "the sum",
    "Mean": "the mean",
    "Max": "the elementwise max",
    "LogSumExp": "log(sum(exp(x)))",
    "LogMeanExp": "log(mean(exp(x)))",
}


def _forward(kind: str) -> Callable[[OpInfo], Callable[..., Any]]:
    def factory(op: OpInfo) -> Callable[..., Any]:
        def run(data: Any, ids: Any) -> tuple[np.ndarray]:
            d = np.asarray(data)
            if d.ndim == 0:
                raise ArgumentError(f"{op.label()}: DATA must have at least one dim")
            seg, k = _ranges(op, ids, d.shape[0])
            return (_reduce(kind, d, seg, k).astype(d.dtype if d.dtype.kind == "f" else np.float32),)

        return run

    return factory


def _backward(kind: str) -> Callable[[OpInfo], Callable[..., Any]]:
    def factory(op: OpInfo) -> Callable[..., Any]:
        def run(data: Any, out: Any, dout: Any, ids: Any) -> tuple[np.ndarray]:
            d, y, g = np.asarray(data), np.asarray(out), np.asarray(dout)
            seg, k = _ranges(op, ids, d.shape[0])
            # Caffe2 reads OUTPUT and its gradient as k blocks of DATA's row size, whatever their shapes
            # (a recurrent link hands them over as (1, k, ...) windows).
            row = (k, *d.shape[1:])
            want = int(np.prod(row, dtype=np.int64))
            if y.size == want and g.size == want:
                y, g = y.reshape(row), g.reshape(row)
            if y.shape[:1] != (k,) or g.shape != y.shape:
                raise ArgumentError(
                    f"{op.label()}: OUTPUT {y.shape} and its gradient {g.shape} must have {k} rows like each other"
                )
            return (_grad(kind, d, y, g, seg).astype(d.dtype),)

        return run

    return factory


def _maker(op: pb.OperatorDef, g_out: list[str | None]) -> GradientSpec:
    g = GradientContext(op, g_out)
    return g.spec([g.op_def(f"{op.type}Gradient", [g.I(0), g.O(0), g.GO(0), g.I(1)], [g.GI(0)])])


for _kind, _what in _KINDS.items():
    _name = f"SortedSegmentRange{_kind}"
    register_op(
        _name,
        inputs=2,
        infer=lambda op, ins: [info(None if ins[0].shape is None else (None, *ins[0].shape[1:]), ins[0].dtype)],
        doc=f"Output row i is {_what} over the DATA rows whose sorted SEGMENT_IDS equal i (0 for an id with no "
        "rows); last id + 1 output rows.",
        input_names=("DATA", "SEGMENT_IDS"),
        output_names=("OUTPUT",),
    )(_forward(_kind))
    register_op(
        f"{_name}Gradient",
        inputs=4,
        infer=lambda op, ins: [ins[0]],
        doc=f"Gradient of {_name}: inputs DATA, OUTPUT, dOUTPUT, SEGMENT_IDS; dDATA.",
        input_names=("DATA", "OUTPUT", "dOUTPUT", "SEGMENT_IDS"),
        output_names=("dDATA",),
    )(_backward(_kind))
    register_gradient(_name)(_maker)


# -- SparseLengthsIndicesInGradient{Sum,Mean}Gradient ------------------------------------------------


def _indices_in_gradient(mean: bool) -> Callable[[OpInfo], Callable[..., Any]]:
    def factory(op: OpInfo) -> Callable[..., Any]:
        def run(dout: Any, lengths: Any, indices: Any) -> tuple[np.ndarray]:
            g = np.asarray(dout)
            lens = np.asarray(lengths).astype(np.int64).reshape(-1)
            n = np.asarray(indices).size
            if g.ndim == 0 or g.shape[0] != lens.size or (lens < 0).any() or int(lens.sum()) != n:
                raise ArgumentError(
                    f"{op.label()}: need one dOUTPUT row per length and lengths summing to the {n} indices; "
                    f"got dOUTPUT {g.shape}, lengths {lens.tolist()}"
                )
            seg = np.repeat(np.arange(lens.size), lens)
            rows = g[seg]
            if mean:
                rows = rows / np.maximum(lens[seg], 1).reshape((-1,) + (1,) * (g.ndim - 1))
            return (np.asarray(rows, dtype=g.dtype),)

        return run

    return factory


def _indices_infer(op: OpInfo, ins: list[TensorInfo]) -> list[TensorInfo]:
    g, idx = ins[0].shape, ins[2].shape
    n = idx[0] if idx is not None and len(idx) == 1 else None
    return [info(None if g is None else (n, *g[1:]), ins[0].dtype)]


for _mean in (False, True):
    register_op(
        f"SparseLengthsIndicesInGradient{'Mean' if _mean else 'Sum'}Gradient",
        inputs=3,
        infer=_indices_infer,
        doc="Gradient rows of SparseLengths" + ("Mean" if _mean else "Sum") + " taking the indices as input: row "
        "j is dOUTPUT of the segment of index j" + (" divided by that segment's length" if _mean else "") + ".",
        input_names=("dOUTPUT", "LENGTHS", "INDICES"),
        output_names=("dDATA_rows",),
    )(_indices_in_gradient(_mean))
