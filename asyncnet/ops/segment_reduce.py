"""Segment reductions (the embedding-bag family) and their gradients.

Forward ops reduce the rows of DATA (or, for the Sparse* forms, the rows DATA[INDICES[j]]) in
groups given by LENGTHS (Lengths*), by sorted SEGMENT_IDS (SortedSegment*) or by arbitrary
SEGMENT_IDS (UnsortedSegment*, with an optional `num_segments`):

    Lengths{Sum,Mean,Max,WeightedSum}            DATA, [WEIGHTS], LENGTHS
    SparseLengths{Sum,Mean,WeightedSum}          DATA, [WEIGHTS], INDICES, LENGTHS
    SparseLengthsPositionalWeightedSum           DATA, WEIGHT, INDICES, LENGTHS
    {Sorted,Unsorted}Segment{Sum,Mean,WeightedSum}        DATA, [SCALARS], SEGMENT_IDS
    Sparse{Sorted,Unsorted}Segment{Sum,Mean,WeightedSum}  DATA, [SCALARS], INDICES, SEGMENT_IDS

An empty segment gives 0 (Mean and Max too), as Caffe2's reducers do. Gradients follow Caffe2's
op names and input orders; the Sparse forms' gradients produce per-index rows that a
SparseToDense op adds into a dense gradient shaped like DATA (asyncnet has no GradientSlice).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from asyncnet.errors import ArgumentError
from asyncnet.opinfo import OpInfo
from asyncnet.proto import caffe2_pb2 as pb
from asyncnet.registry import register_op
from asyncnet.schema import Arg, TensorInfo
from asyncnet.training.gradients import GradientContext, GradientSpec, register_gradient


@dataclass(frozen=True)
class _Spec:
    name: str
    kind: str  # Sum, Mean, Max, WeightedSum, PositionalWeightedSum
    sparse: bool
    group: str  # lengths, sorted, unsorted

    @property
    def weighted(self) -> bool:
        return self.kind in ("WeightedSum", "PositionalWeightedSum")

    @property
    def group_name(self) -> str:
        return "LENGTHS" if self.group == "lengths" else "SEGMENT_IDS"

    @property
    def input_names(self) -> tuple[str, ...]:
        w = ("WEIGHTS",) if self.weighted else ()
        i = ("INDICES",) if self.sparse else ()
        return ("DATA",) + w + i + (self.group_name,)


def _segments(op: OpInfo, spec: _Spec, group: Any, n_items: int) -> tuple[np.ndarray, int]:
    """(segment id of every item, number of output segments)."""
    g = np.asarray(group)
    if g.ndim != 1 or g.dtype.kind not in "iu":
        raise ArgumentError(f"{op.label()}: {spec.group_name} must be a 1-D integer tensor, got {g.dtype} {g.shape}")
    g = g.astype(np.int64)
    if np.any(g < 0):
        raise ArgumentError(f"{op.label()}: {spec.group_name} must be nonnegative, got {g.tolist()}")
    if spec.group == "lengths":
        if int(g.sum()) != n_items:
            raise ArgumentError(f"{op.label()}: LENGTHS sum to {int(g.sum())}, but there are {n_items} items")
        return np.repeat(np.arange(g.size, dtype=np.int64), g), g.size
    if g.size != n_items:
        raise ArgumentError(f"{op.label()}: SEGMENT_IDS has {g.size} values for {n_items} items")
    if spec.group == "sorted":
        if np.any(np.diff(g) < 0):
            raise ArgumentError(f"{op.label()}: SEGMENT_IDS must be sorted, got {g.tolist()}")
        return g, int(g[-1]) + 1 if g.size else 0
    num = op.int_arg("num_segments", -1)
    k = num if num >= 0 else (int(g.max()) + 1 if g.size else 0)
    if g.size and int(g.max()) >= k:
        raise ArgumentError(f"{op.label()}: a segment id is >= num_segments {k}")
    return g, k


def _items(op: OpInfo, data: np.ndarray, indices: Any) -> np.ndarray:
    if data.ndim == 0:
        raise ArgumentError(f"{op.label()}: DATA must have rank >= 1")
    if indices is None:
        return data
    ii = np.asarray(indices)
    if ii.ndim != 1 or ii.dtype.kind not in "iu":
        raise ArgumentError(f"{op.label()}: INDICES must be a 1-D integer tensor, got {ii.dtype} {ii.shape}")
    ii = ii.astype(np.int64)
    if np.any(ii < 0) or np.any(ii >= data.shape[0]):
        raise ArgumentError(f"{op.label()}: INDICES must lie in [0, {data.shape[0]})")
    return np.asarray(data[ii])


def _weights(op: OpInfo, spec: _Spec, w: Any, seg: np.ndarray, n_items: int) -> np.ndarray:
    ww = np.asarray(w).reshape(-1)
    if spec.kind == "PositionalWeightedSum":
        # Item j of a segment takes WEIGHT[j], its position in the segment.
        starts = np.searchsorted(seg, seg, side="left") if seg.size else seg
        pos = np.arange(seg.size) - starts
        if seg.size and int(pos.max()) >= ww.size:
            raise ArgumentError(f"{op.label()}: WEIGHT has {ww.size} values, a segment is longer")
        return ww[pos]
    if ww.size != n_items:
        raise ArgumentError(f"{op.label()}: WEIGHTS has {ww.size} values for {n_items} items")
    return ww


def _reduce(kind: str, items: np.ndarray, seg: np.ndarray, k: int, dtype: np.dtype[Any]) -> np.ndarray:
    out_shape = (k,) + items.shape[1:]
    counts = np.bincount(seg, minlength=k) if seg.size else np.zeros(k, np.int64)
    if kind == "Max":
        out = np.full(out_shape, -np.inf if dtype.kind == "f" else np.iinfo(dtype).min, dtype)
        np.maximum.at(out, seg, items)
        out[counts == 0] = 0
        return out
    acc = np.zeros(out_shape, np.result_type(dtype, np.float32) if dtype.kind == "f" else dtype)
    np.add.at(acc, seg, items)
    if kind == "Mean":
        denom = np.maximum(counts, 1).reshape((k,) + (1,) * (items.ndim - 1))
        acc = acc / denom
    return acc.astype(dtype, copy=False)


def _forward_factory(spec: _Spec) -> Callable[[OpInfo], Callable[..., Any]]:
    def factory(op: OpInfo) -> Callable[..., Any]:
        def run(*ins: Any) -> tuple[np.ndarray]:
            data = np.asarray(ins[0])
            pos = 1
            w = None
            if spec.weighted:
                w, pos = ins[1], 2
            indices = ins[pos] if spec.sparse else None
            items = _items(op, data, indices)
            seg, k = _segments(op, spec, ins[-1], items.shape[0])
            if w is not None:
                ww = _weights(op, spec, w, seg, items.shape[0]).astype(data.dtype)
                items = items * ww.reshape((-1,) + (1,) * (items.ndim - 1))
            return (_reduce(spec.kind, items, seg, k, data.dtype),)

        return run

    return factory


def _forward_infer(spec: _Spec) -> Callable[[OpInfo, list[TensorInfo]], list[TensorInfo]]:
    def infer(op: OpInfo, ins: list[TensorInfo]) -> list[TensorInfo]:
        d, g = ins[0], ins[-1]
        if d.shape is None:
            return [TensorInfo(None, d.dtype)]
        rows = g.shape[0] if spec.group == "lengths" and g.shape is not None and g.shape else None
        if spec.group == "unsorted" and op.int_arg("num_segments", -1) >= 0:
            rows = op.int_arg("num_segments", -1)
        return [TensorInfo((rows,) + tuple(d.shape[1:]), d.dtype)]

    return infer


_SPECS: list[_Spec] = [
    *(_Spec(f"Lengths{k}", k, False, "lengths") for k in ("Sum", "Mean", "Max", "WeightedSum")),
    *(_Spec(f"SparseLengths{k}", k, True, "lengths") for k in ("Sum", "Mean", "WeightedSum", "PositionalWeightedSum")),
    *(
        _Spec(f"{sp}{grp.capitalize()}Segment{k}", k, sp == "Sparse", grp)
        for sp in ("", "Sparse")
        for grp in ("sorted", "unsorted")
        for k in ("Sum", "Mean", "WeightedSum")
    ),
]

_DOC = {
    "Sum": "the sum",
    "Mean": "the mean (0 for an empty segment)",
    "Max": "the elementwise max (0 for an empty segment)",
    "WeightedSum": "the sum of the rows each scaled by its weight",
    "PositionalWeightedSum": "the sum of the rows each scaled by WEIGHT[its position in the segment]",
}

for _s in _SPECS:
    _args: tuple[Arg, ...] = ()
    if _s.group == "unsorted":
        _args += (Arg("num_segments", -1, "number of output segments (default: max id + 1)"),)
    if _s.weighted:
        _args += (Arg("grad_on_weights", 0, "the gradient also covers the weights"),)
    _rows = "DATA[INDICES[j]]" if _s.sparse else "DATA[j]"
    _how = {
        "lengths": "consecutive groups of LENGTHS[i] items",
        "sorted": "the sorted SEGMENT_IDS (output has last id + 1 rows)",
        "unsorted": "SEGMENT_IDS in any order (output has num_segments or max id + 1 rows)",
    }[_s.group]
    register_op(
        _s.name,
        inputs=len(_s.input_names),
        args=_args,
        infer=_forward_infer(_s),
        doc=f"Output row i is {_DOC[_s.kind]} of the items {_rows} of segment i, segments given by {_how}.",
        input_names=_s.input_names,
        output_names=("OUTPUT",),
    )(_forward_factory(_s))


# -- gradients ------------------------------------------------------------------------------------


def _grad_type(spec: _Spec, main_input: bool) -> str:
    if spec.group == "lengths":
        base = "SparseLengths" if spec.sparse else "Lengths"
        if spec.sparse and main_input:
            base += "IndicesInGradient"
    else:
        base = ("Sparse" if spec.sparse else "") + spec.group.capitalize() + "Segment"
    kind = spec.kind
    suffix = "Gradient"
    if spec.kind == "Max":
        suffix = "WithMainInputAndForwardOutputGradient"
    elif main_input:
        suffix = "WithMainInputGradient"
    return base + kind + suffix


def _grad_maker(spec: _Spec) -> Callable[[pb.OperatorDef, list[str | None]], GradientSpec]:
    def maker(op: pb.OperatorDef, g_out: list[str | None]) -> GradientSpec:
        g = GradientContext(op, g_out)
        main_input = spec.weighted and bool(g.arg("grad_on_weights", 0))
        ins: list[str] = []
        if spec.weighted:
            ins.append(g.I(1))
        idx_pos = 2 if spec.weighted else 1
        if spec.sparse and main_input:
            ins.append(g.I(idx_pos))
        ins.append(g.GO(0))
        if main_input or spec.kind == "Max":
            ins.append(g.I(0))
        if spec.kind == "Max":
            ins.append(g.O(0))
        ins.append(g.I(len(op.input) - 1))
        gtype = _grad_type(spec, main_input)
        if not spec.sparse:
            outs = [g.GI(0)] + ([g.GI(1)] if main_input else [])
            return g.spec([g.op_def(gtype, ins, outs)])
        values = f"{g.GI(0)}_values"
        outs = [values] + ([g.GI(1)] if main_input else [])
        dense = g.op_def("SparseToDense", [g.I(idx_pos), values, g.I(0)], [g.GI(0)])
        return g.spec([g.op_def(gtype, ins, outs), dense])

    return maker


def _grad_factory(spec: _Spec, main_input: bool) -> Callable[[OpInfo], Callable[..., Any]]:
    def factory(op: OpInfo) -> Callable[..., Any]:
        def run(*ins: Any) -> tuple[np.ndarray, ...]:
            rest = list(ins)
            w = rest.pop(0) if spec.weighted else None
            indices = rest.pop(0) if spec.sparse and main_input else None
            dout = np.asarray(rest.pop(0))
            data = np.asarray(rest.pop(0)) if (main_input or spec.kind == "Max") else None
            fwd_out = np.asarray(rest.pop(0)) if spec.kind == "Max" else None
            group = rest.pop(0)
            g = np.asarray(group)
            n_items = int(g.astype(np.int64).sum()) if spec.group == "lengths" else g.size
            seg, k = _segments(op, spec, group, n_items)
            if dout.shape[0] < k:
                raise ArgumentError(f"{op.label()}: the output gradient has {dout.shape[0]} rows for {k} segments")
            vals = dout[seg]
            if spec.kind == "Mean":
                counts = np.maximum(np.bincount(seg, minlength=k), 1)
                vals = vals / counts[seg].reshape((-1,) + (1,) * (vals.ndim - 1))
            outs: list[np.ndarray] = []
            if data is not None and fwd_out is not None:
                vals = np.where(data == fwd_out[seg], vals, 0)
            if w is not None:
                ww = _weights(op, spec, w, seg, n_items).astype(dout.dtype)
                items = None
                if main_input and data is not None:
                    items = _items(op, data, indices)
                outs_w = None
                if items is not None:
                    outs_w = (vals * items).reshape(n_items, -1).sum(axis=1).astype(dout.dtype)
                vals = vals * ww.reshape((-1,) + (1,) * (vals.ndim - 1))
                outs.append(vals.astype(dout.dtype, copy=False))
                if outs_w is not None:
                    outs.append(outs_w)
                return tuple(outs)
            return (np.asarray(vals, dtype=dout.dtype),)

        return run

    return factory


def _grad_infer(dout: int) -> Callable[[OpInfo, list[TensorInfo]], list[TensorInfo]]:
    def infer(op: OpInfo, ins: list[TensorInfo]) -> list[TensorInfo]:
        d = ins[dout]
        rows = TensorInfo(None if d.shape is None else (None,) + tuple(d.shape[1:]), d.dtype)
        return [rows, TensorInfo((None,), d.dtype)][: len(op.outputs)]

    return infer


def _grad_inputs(spec: _Spec, main_input: bool) -> tuple[str, ...]:
    names: list[str] = []
    if spec.weighted:
        names.append("WEIGHTS")
    if spec.sparse and main_input:
        names.append("INDICES")
    names.append("dOUTPUT")
    if main_input or spec.kind == "Max":
        names.append("DATA")
    if spec.kind == "Max":
        names.append("OUTPUT")
    names.append(spec.group_name)
    return tuple(names)


for _s in _SPECS:
    if _s.kind == "PositionalWeightedSum":
        continue
    register_gradient(_s.name)(_grad_maker(_s))
    for _main in (False, True) if _s.kind == "WeightedSum" else (False,):
        _names = _grad_inputs(_s, _main)
        _gt = _grad_type(_s, _main)
        register_op(
            _gt,
            inputs=len(_names),
            outputs=2 if _main else 1,
            args=(
                Arg("num_segments", -1, "the forward num_segments"),
                Arg("grad_on_weights", 0, "the forward grad_on_weights"),
            ),
            infer=_grad_infer(_names.index("dOUTPUT")),
            doc=f"Gradient of {_s.name}: "
            + (
                "the gradient row of each item (its segment's output gradient"
                if _s.sparse
                else "dDATA (each row gets its segment's output gradient"
            )
            + {"Mean": " / the segment size", "Max": " where it equals the max", "WeightedSum": " * its weight"}.get(
                _s.kind, ""
            )
            + ")"
            + ("; output 1 is the weights' gradient (sum of dOUTPUT * the row)" if _main else "")
            + ".",
            input_names=_names,
            output_names=("dDATA", "dWEIGHTS") if _main else ("dDATA",),
        )(_grad_factory(_s, _main))


# -- SparseToDense --------------------------------------------------------------------------------


@register_op(
    "SparseToDense",
    inputs=(2, 3),
    infer=lambda op, ins: [
        TensorInfo(
            None
            if ins[1].shape is None or (len(ins) > 2 and ins[2].shape is None)
            else ((ins[2].shape[0] if len(ins) > 2 else None),) + tuple(ins[1].shape[1:]),
            ins[1].dtype,
        )
    ],
    doc="Scatter-add the rows VALUES[j] into row INDICES[j] of a zero tensor; its first dim is "
    "DATA_TO_INFER_DIM's first dim (else max index + 1). Repeated indices add up.",
    input_names=("INDICES", "VALUES", "DATA_TO_INFER_DIM"),
    output_names=("OUTPUT",),
)
def sparse_to_dense(op: OpInfo) -> Callable[..., Any]:
    def run(indices: Any, values: Any, like: Any = None) -> tuple[np.ndarray]:
        ii, v = np.asarray(indices).reshape(-1).astype(np.int64), np.asarray(values)
        if v.ndim == 0 or v.shape[0] != ii.size:
            raise ArgumentError(f"{op.label()}: VALUES {v.shape} must have one row per index ({ii.size})")
        n = int(np.shape(like)[0]) if like is not None else (int(ii.max()) + 1 if ii.size else 0)
        if np.any(ii < 0) or np.any(ii >= n):
            raise ArgumentError(f"{op.label()}: INDICES must lie in [0, {n})")
        out = np.zeros((n,) + v.shape[1:], v.dtype)
        np.add.at(out, ii, v)
        return (out,)

    return run


@register_gradient("SparseToDense")
def _sparse_to_dense_grad(op: pb.OperatorDef, g_out: list[str | None]) -> GradientSpec:
    # The values' gradient gathers dOUTPUT's rows at INDICES (Caffe2 uses Gather).
    g = GradientContext(op, g_out)
    return g.spec([g.op_def("Gather", [g.GO(0), g.I(0)], [g.GI(1)])])
