"""Sequence padding and masking: AddPadding, RemovePadding, GatherPadding, PadEmptySamples, SequenceMask
(+ gradient), and partitioning by key: Partition, LengthsPartition, KeySplit."""

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

INT32 = np.dtype(np.int32)
PAD_ARGS = (
    Arg("padding_width", 1, "rows at the start of each segment"),
    Arg("end_padding_width", -1, "rows at the end of each segment (-1: padding_width)"),
)


def _widths(op: OpInfo) -> tuple[int, int]:
    start = op.int_arg("padding_width")
    end = op.int_arg("end_padding_width")
    end = start if end < 0 else end
    if start < 0:
        raise ArgumentError(f"{op.label()}: padding_width must be nonnegative, got {start}")
    return start, end


def _segments(op: OpInfo, data: np.ndarray, lengths: Any) -> np.ndarray:
    if data.ndim == 0:
        raise ArgumentError(f"{op.label()}: data must have rank >= 1")
    if lengths is None:
        return np.array([data.shape[0]], np.int64)
    ln = np.asarray(lengths).reshape(-1).astype(np.int64)
    if np.any(ln < 0) or int(ln.sum()) != data.shape[0]:
        raise ArgumentError(f"{op.label()}: lengths {ln.tolist()} must be nonnegative and sum to {data.shape[0]}")
    return ln


def _padding_infer(sign: int) -> Callable[[OpInfo, list[TensorInfo]], list[TensorInfo]]:
    """Add/RemovePadding: rows change by +-(padding_width + end_padding_width) per segment (one
    segment without lengths); lengths_out has one entry per segment."""

    def infer(op: OpInfo, ins: list[TensorInfo]) -> list[TensorInfo]:
        d = ins[0]
        start, end = _widths(op)
        n_seg: int | None = 1
        if len(ins) > 1:
            n_seg = ins[1].shape[0] if ins[1].shape else None
        rows: int | None = None
        if d.shape and d.shape[0] is not None and n_seg is not None:
            rows = d.shape[0] + sign * n_seg * (start + end)
        out = TensorInfo(None if d.shape is None or not d.shape else (rows, *d.shape[1:]), d.dtype)
        lens = TensorInfo((n_seg,), ins[1].dtype if len(ins) > 1 else INT32)
        return [out, lens][: len(op.outputs)]

    return infer


@register_op(
    "AddPadding",
    inputs=(1, 4),
    outputs=(1, 2),
    args=PAD_ARGS,
    infer=_padding_infer(+1),
    doc="Add padding_width rows of start_padding (default zeros) before and end_padding_width rows of "
    "end_padding (default start_padding) after each segment of data (cut by lengths; one segment "
    "without it). Optional output 1: the new lengths.",
    input_names=("data", "lengths", "start_padding", "end_padding"),
    output_names=("data_out", "lengths_out"),
)
def add_padding(op: OpInfo) -> Callable[..., Any]:
    start, end = _widths(op)

    def run(data: Any, lengths: Any = None, sp: Any = None, ep: Any = None) -> tuple[np.ndarray, np.ndarray]:
        d = np.asarray(data)
        ln = _segments(op, d, lengths)
        block = d.shape[1:]
        s = np.zeros(block, d.dtype) if sp is None else np.asarray(sp, d.dtype).reshape(block)
        e = s if ep is None else np.asarray(ep, d.dtype).reshape(block)
        parts, pos = [], 0
        for n in ln.tolist():
            parts += [np.broadcast_to(s, (start, *block)), d[pos : pos + n], np.broadcast_to(e, (end, *block))]
            pos += n
        out = np.concatenate(parts) if parts else d[:0]
        lens_dtype = np.asarray(lengths).dtype if lengths is not None else INT32
        return out.astype(d.dtype, copy=False), (ln + start + end).astype(lens_dtype)

    return run


@register_op(
    "RemovePadding",
    inputs=(1, 2),
    outputs=(1, 2),
    args=PAD_ARGS,
    infer=_padding_infer(-1),
    doc="Remove padding_width rows from the start and end_padding_width rows from the end of each segment.",
    input_names=("data", "lengths"),
    output_names=("data_out", "lengths_out"),
)
def remove_padding(op: OpInfo) -> Callable[..., Any]:
    start, end = _widths(op)

    def run(data: Any, lengths: Any = None) -> tuple[np.ndarray, np.ndarray]:
        d = np.asarray(data)
        ln = _segments(op, d, lengths)
        if np.any(ln < start + end):
            raise ArgumentError(f"{op.label()}: a segment is shorter than its padding ({start} + {end})")
        keep, pos = [], 0
        for n in ln.tolist():
            keep.append(np.arange(pos + start, pos + n - end))
            pos += n
        idx = np.concatenate(keep).astype(np.int64) if keep else np.zeros(0, np.int64)
        lens_dtype = np.asarray(lengths).dtype if lengths is not None else INT32
        return d[idx], (ln - start - end).astype(lens_dtype)

    return run


@register_op(
    "GatherPadding",
    inputs=(1, 2),
    outputs=(1, 2),
    args=PAD_ARGS,
    infer=lambda op, ins: (
        [
            TensorInfo(None if ins[0].shape is None else tuple(ins[0].shape[1:]), ins[0].dtype)
            if any(_widths(op))
            else TensorInfo((), np.dtype(np.int64))
        ]
        * len(op.outputs)
    ),
    doc="Sum of the padding rows over all segments: output 0 the start padding, output 1 the end padding "
    "(with one output, both are summed into it). With both widths 0 the outputs are int64 zero scalars "
    "(Caffe2's short cut).",
    input_names=("data", "lengths"),
    output_names=("padding_sum", "end_padding_sum"),
)
def gather_padding(op: OpInfo) -> Callable[..., Any]:
    start, end = _widths(op)

    def run(data: Any, lengths: Any = None) -> tuple[np.ndarray, ...]:
        d = np.asarray(data)
        if start == 0 and end == 0:
            # Caffe2 short-cuts zero widths to int64 scalars (its golden records 0).
            return tuple(np.zeros((), np.int64) for _ in op.outputs)
        ln = _segments(op, d, lengths)
        s = np.zeros(d.shape[1:], d.dtype)
        e = np.zeros(d.shape[1:], d.dtype)
        pos = 0
        for n in ln.tolist():
            if n < start + end:
                raise ArgumentError(f"{op.label()}: a segment is shorter than its padding ({start} + {end})")
            s = s + d[pos : pos + start].sum(axis=0)
            e = e + d[pos + n - end : pos + n].sum(axis=0)
            pos += n
        if len(op.outputs) == 1:
            return ((s + e).astype(d.dtype),)
        return s.astype(d.dtype), e.astype(d.dtype)

    return run


@register_op(
    "PadEmptySamples",
    inputs=(1, -1),
    outputs=(1, -1),
    arity=lambda i, o: i == o,
    arity_doc="one output per input",
    infer=lambda op, ins: [
        TensorInfo(t.shape[:1] if t.shape else None, t.dtype)
        if k == 0
        else TensorInfo(None if t.shape is None else (None, *t.shape[1:]), t.dtype)
        for k, t in enumerate(ins)
    ],  # fmt: skip
    doc="Give every sample of length 0 one zero row: lengths become max(length, 1) and each feature "
    "tensor (rows cut by lengths) gets a zero row at that sample's place.",
    input_names=("lengths",),
    output_names=("out_lengths",),
)
def pad_empty_samples(op: OpInfo) -> Callable[..., Any]:
    def run(lengths: Any, *features: Any) -> list[np.ndarray]:
        ln = np.asarray(lengths).reshape(-1).astype(np.int64)
        outs: list[np.ndarray] = [np.maximum(ln, 1).astype(np.asarray(lengths).dtype)]
        for k, f in enumerate(features):
            a = np.asarray(f)
            if a.ndim == 0 or a.shape[0] != int(ln.sum()):
                raise ArgumentError(f"{op.label()}: feature {k} must have sum(lengths) = {int(ln.sum())} rows")
            parts, pos = [], 0
            for n in ln.tolist():
                parts.append(a[pos : pos + n] if n else np.zeros((1, *a.shape[1:]), a.dtype))
                pos += n
            outs.append(np.concatenate(parts) if parts else a[:0])
        return outs

    return run


@register_gradient("AddPadding")
def _add_padding_grad(op: pb.OperatorDef, g_out: list[str | None]) -> GradientSpec:
    # Caffe2: RemovePadding of dY (with the padded lengths) for the data, GatherPadding for the paddings.
    g = GradientContext(op, g_out)
    ins = [g.GO(0)]
    if len(op.input) > 1:
        if len(op.output) < 2:
            raise ArgumentError(f"AddPadding op '{op.name or op.output[0]}': its gradient needs output 1 (lengths)")
        ins.append(g.O(1))
    ops = [g.op_def("RemovePadding", ins, [g.GI(0)])]
    if len(op.input) >= 3:
        pads = [g.GI(2)] + ([g.GI(3)] if len(op.input) == 4 else [])
        ops.append(g.op_def("GatherPadding", list(ins), pads))
    return g.spec(ops)


@register_gradient("RemovePadding")
def _remove_padding_grad(op: pb.OperatorDef, g_out: list[str | None]) -> GradientSpec:
    g = GradientContext(op, g_out)
    ins = [g.GO(0)] + ([g.O(1)] if len(op.input) > 1 else [])
    return g.spec([g.op_def("AddPadding", ins, [g.GI(0)])])


# -- SequenceMask ------------------------------------------------------------------------------------

_MODES = ("sequence", "window", "upper", "lower", "upperdiag", "lowerdiag")


@register_op(
    "SequenceMask",
    inputs=(1, 2),
    args=(
        Arg("mode", "sequence", f"one of {', '.join(_MODES)}"),
        Arg("axis", 1, "dims before it form the rows, the rest the columns"),
        Arg("radius", 10, "window mode: half-width of the kept window"),
        Arg("grad", 0, "fill with 0 (the gradient form)"),
        Arg("fill_val", float("-inf"), "the value of the masked positions"),
        Arg("batch", -1, "when >= 0: dims up to and including it form independent batches, each masked alike"),
        Arg("repeat_from_axis", -1, "when given: dims from it on are not split into columns; the mask repeats"),
    ),
    infer=lambda op, ins: [ins[0]],
    doc="View input as (rows, cols) split at `axis` and fill positions with fill_val: sequence: "
    "col >= lengths[row]; window: |col - centers[row]| > radius; upper: col > row; lower: col < row; "
    "upperdiag: col >= row; lowerdiag: col <= row. With `batch` >= 0 the view is (batches, rows, cols), "
    "batches = dims up to `batch`, rows = dims from batch+1 to axis (lengths has one value per row, "
    "shared by the batches). With `repeat_from_axis` given (negative counts from the end), the "
    "columns stop before that axis and each masked column covers the remaining dims.",
    input_names=("input", "sequence_lengths"),
    output_names=("output",),
)
def sequence_mask(op: OpInfo) -> Callable[..., Any]:
    mode, axis, radius = op.str_arg("mode"), op.int_arg("axis"), op.int_arg("radius")
    fill = 0.0 if op.bool_arg("grad") else op.float_arg("fill_val")
    if mode not in _MODES:
        raise ArgumentError(f"{op.label()}: unknown mode '{mode}'; known: {', '.join(_MODES)}")
    batch = op.int_arg("batch")
    repeat_from = op.int_arg("repeat_from_axis") if op.has("repeat_from_axis") else None
    if repeat_from is not None and (mode != "sequence" or op.has("batch")):
        # Caffe2's constructor enforces both.
        raise ArgumentError(f"{op.label()}: repeat_from_axis needs mode 'sequence' and no batch argument")
    if mode in ("sequence", "window") and len(op.inputs) != 2:
        raise ArgumentError(f"{op.label()}: mode '{mode}' needs input 1")

    def run(x: Any, aux: Any = None) -> tuple[np.ndarray]:
        a = np.asarray(x)
        ax = axis + a.ndim if axis < 0 else axis
        end = a.ndim if repeat_from is None else (repeat_from + a.ndim if repeat_from < 0 else repeat_from)
        first = batch + 1 if batch >= 0 else 0
        if not 0 <= first <= ax <= end <= a.ndim:
            raise ArgumentError(
                f"{op.label()}: need batch < axis <= repeat_from_axis within {a.ndim} dims, "
                f"got batch={batch}, axis={axis}, repeat_from_axis={repeat_from}"
            )
        batches = int(np.prod(a.shape[:first], dtype=np.int64))
        rows = int(np.prod(a.shape[first:ax], dtype=np.int64))
        cols = int(np.prod(a.shape[ax:end], dtype=np.int64))
        r = np.arange(rows)[:, None]
        c = np.arange(cols)[None, :]
        if mode in ("sequence", "window"):
            v = np.asarray(aux).reshape(-1).astype(np.int64)
            if v.size != rows:
                raise ArgumentError(f"{op.label()}: input 1 has {v.size} values for {rows} rows")
            mask = c >= v[:, None] if mode == "sequence" else np.abs(c - v[:, None]) > radius
        else:
            mask = {"upper": c > r, "lower": c < r, "upperdiag": c >= r, "lowerdiag": c <= r}[mode]
        view = a.reshape(batches, rows, cols, int(np.prod(a.shape[end:], dtype=np.int64)))
        out = np.where(mask[None, :, :, None], np.asarray(fill, a.dtype), view)
        return (out.reshape(a.shape).astype(a.dtype, copy=False),)

    return run


@register_gradient("SequenceMask", copy_arguments=False)
def _sequence_mask_grad(op: pb.OperatorDef, g_out: list[str | None]) -> GradientSpec:
    # The same mask on dY filled with 0: Caffe2 copies the forward arguments, then appends grad=1.
    g = GradientContext(op, g_out)
    ins = [g.GO(0)] + [g.I(i) for i in range(1, len(op.input))]
    d = g.op_def("SequenceMask", ins, [g.GI(0)])
    d.arg.extend(a for a in op.arg if a.name != "grad")
    d.arg.extend(g.op_def("SequenceMask", [], [], {"grad": 1}).arg)
    return g.spec([d])


# -- partitioning ------------------------------------------------------------------------------------


def _shards(op: OpInfo, keys: np.ndarray, n: int) -> np.ndarray:
    if keys.dtype.kind not in "iu":
        raise ArgumentError(f"{op.label()}: the keys must be integers, got {keys.dtype}")
    return np.mod(keys.astype(np.int64), n)


@register_op(
    "Partition",
    inputs=(1, -1),
    outputs=(1, -1),
    arity=lambda i, o: o % i == 0,
    arity_doc="outputs: num_partitions per input",
    args=(Arg("pack_first_input", 0, "replace the keys by key / num_partitions in the outputs"),),
    infer=lambda op, ins: [
        TensorInfo(None if t.shape is None else (None, *t.shape[keys_ndim(ins) :]), t.dtype)
        for _ in range(len(op.outputs) // len(ins))
        for t in ins
    ],
    doc="Shard every input by key % num_partitions of input 0 (num_partitions = outputs / inputs); "
    "output p * n_inputs + k holds input k's items of shard p, in order.",
)
def partition(op: OpInfo) -> Callable[..., Any]:
    n = len(op.outputs) // len(op.inputs)
    pack = op.bool_arg("pack_first_input")

    def run(keys: Any, *rest: Any) -> list[np.ndarray]:
        k = np.asarray(keys)
        shard = _shards(op, k, n).reshape(-1)
        others = [np.asarray(x) for x in rest]
        for i, x in enumerate(others):
            if x.shape[: k.ndim] != k.shape:
                raise ArgumentError(f"{op.label()}: input {i + 1} {x.shape} must start with the keys' shape {k.shape}")
        outs: list[np.ndarray] = []
        for p in range(n):
            sel = shard == p
            kp = k.reshape(-1)[sel]
            outs.append((kp // n).astype(k.dtype) if pack else kp)
            for x in others:
                outs.append(x.reshape((-1, *x.shape[k.ndim :]))[sel])
        return outs

    return run


def keys_ndim(ins: list[TensorInfo]) -> int:
    return len(ins[0].shape) if ins[0].shape is not None else 1


@register_op(
    "LengthsPartition",
    inputs=(2, -1),
    outputs=(2, -1),
    arity=lambda i, o: o % i == 0,
    arity_doc="outputs: num_partitions per input",
    args=(Arg("pack_first_input", 0, "replace the keys by key / num_partitions in the outputs"),),
    infer=lambda op, ins: [TensorInfo(None, t.dtype) for _ in range(len(op.outputs) // len(ins)) for t in ins],
    doc="Partition with segments: inputs lengths, keys (1-D), others; each shard p gets its per-segment "
    "lengths (output p * n_inputs), its keys and the matching rows of the other inputs.",
)
def lengths_partition(op: OpInfo) -> Callable[..., Any]:
    n = len(op.outputs) // len(op.inputs)
    pack = op.bool_arg("pack_first_input")

    def run(lengths: Any, keys: Any, *rest: Any) -> list[np.ndarray]:
        ln = np.asarray(lengths).reshape(-1).astype(np.int64)
        k = np.asarray(keys)
        if k.ndim != 1 or int(ln.sum()) != k.size:
            raise ArgumentError(f"{op.label()}: keys must be 1-D with sum(lengths) = {int(ln.sum())} values")
        shard = _shards(op, k, n)
        seg = np.repeat(np.arange(ln.size), ln)
        outs: list[np.ndarray] = []
        for p in range(n):
            sel = shard == p
            outs.append(np.bincount(seg[sel], minlength=ln.size).astype(np.asarray(lengths).dtype))
            outs.append((k[sel] // n).astype(k.dtype) if pack else k[sel])
            outs.extend(np.asarray(x)[sel] for x in rest)
        return outs

    return run


@register_op(
    "KeySplit",
    outputs=(1, -1),
    args=(Arg("categorical_limit", 0, "number of categories (= number of outputs)"),),
    infer=lambda op, ins: [TensorInfo((None,), INT32)] * len(op.outputs),
    doc="Output k lists (int32) the positions i where keys[i] == k, for k < categorical_limit.",
    input_names=("keys",),
)
def key_split(op: OpInfo) -> Callable[..., Any]:
    limit = op.int_arg("categorical_limit")
    if limit != len(op.outputs):
        raise ArgumentError(
            f"{op.label()}: categorical_limit {limit} must equal the number of outputs {len(op.outputs)}"
        )

    def run(keys: Any) -> list[np.ndarray]:
        k = np.asarray(keys).reshape(-1)
        if np.any(k < 0) or np.any(k >= limit):
            raise ArgumentError(f"{op.label()}: keys must lie in [0, {limit})")
        return [np.flatnonzero(k == c).astype(np.int32) for c in range(limit)]

    return run
