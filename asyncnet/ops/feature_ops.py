"""Feature-processing ops from recommendation pipelines: GatherRangesToDense, IndexHash, MergeIdLists,
LearningRateAdaption."""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from typing import Any

import numpy as np

from asyncnet.errors import ArgumentError
from asyncnet.opinfo import OpInfo
from asyncnet.registry import register_op
from asyncnet.schema import Arg, TensorInfo


def _gather_ranges_infer(op: OpInfo, ins: list[TensorInfo]) -> list[TensorInfo]:
    n = None if ins[1].shape is None else ins[1].shape[0]
    return [TensorInfo((n, k), ins[0].dtype) for k in op.ints_arg("lengths")]


@register_op(
    "GatherRangesToDense",
    inputs=(2, 3),
    outputs=(1, -1),
    args=(
        Arg("lengths", [], "the expected range length of each feature (one output per feature)"),
        Arg("min_observation", 10000, "the ratio checks count at least this many examples"),
        Arg("max_mismatched_ratio", 0.01, "fail when a feature's mismatched ranges exceed this share (< 1)"),
        Arg("max_empty_ratio", 1.0, "fail when a feature's empty ranges exceed this share (< 1)"),
    ),
    infer=_gather_ranges_infer,
    doc="For RANGES (N, F, 2) of (start, length) into the 1-D DATA: output k is (N, lengths[k]) with each "
    "example's range of feature k; empty or mismatched ranges give zeros. With the int64 KEY input (1-D, "
    "DATA's size) each gathered range is ordered by its keys. Over the op's lifetime it counts the examples "
    "T and, per feature, the empty and the mismatched ranges; with max_mismatched_ratio < 1 it fails once "
    "mismatched > max(T, min_observation) * max_mismatched_ratio, likewise for max_empty_ratio.",
    input_names=("DATA", "RANGES", "KEY"),
)
def gather_ranges_to_dense(op: OpInfo) -> Callable[..., Any]:
    lens = op.ints_arg("lengths")
    if len(lens) != len(op.outputs):
        raise ArgumentError(f"{op.label()}: `lengths` has {len(lens)} values for {len(op.outputs)} outputs")
    if any(n <= 0 for n in lens):
        raise ArgumentError(f"{op.label()}: every length must be positive, got {lens}")
    min_obs = op.int_arg("min_observation")
    if min_obs < 1:
        raise ArgumentError(f"{op.label()}: min_observation must be at least 1, got {min_obs}")
    max_mismatched, max_empty = op.float_arg("max_mismatched_ratio"), op.float_arg("max_empty_ratio")
    # Lifetime counters of this op instance, as Caffe2 keeps them on the operator object.
    lock = threading.Lock()
    seen = {"total": 0}
    empty, mismatched = [0] * len(lens), [0] * len(lens)

    def check(kind: str, counts: list[int], ratio: float, total: int) -> None:
        if ratio >= 1.0:
            return
        for k, c in enumerate(counts):
            if c > max(total, min_obs) * ratio:
                raise ArgumentError(
                    f"{op.label()}: ratio of {kind} ranges for feature {k} is {c / total:g} ({c}/{total}), "
                    f"which exceeds {ratio:g}"
                )

    def run(data: Any, ranges: Any, key: Any = None) -> list[np.ndarray]:
        d, r = np.asarray(data), np.asarray(ranges)
        if d.ndim != 1:
            raise ArgumentError(f"{op.label()}: DATA must be 1-D, got shape {d.shape}")
        if r.ndim != 3 or r.shape[1] != len(lens) or r.shape[2] != 2:
            raise ArgumentError(f"{op.label()}: RANGES must be (N, {len(lens)}, 2), got {r.shape}")
        k_arr = None
        if key is not None:
            k_arr = np.asarray(key)
            if k_arr.ndim != 1 or k_arr.dtype != np.int64:
                raise ArgumentError(f"{op.label()}: KEY must be a 1-D int64 tensor, got {k_arr.dtype} {k_arr.shape}")
        outs = [np.zeros((r.shape[0], n), d.dtype) for n in lens]
        n_empty, n_mismatched = [0] * len(lens), [0] * len(lens)
        for i in range(r.shape[0]):
            for k, n in enumerate(lens):
                start, length = int(r[i, k, 0]), int(r[i, k, 1])
                if length == 0:
                    n_empty[k] += 1
                    continue
                if length != n:
                    n_mismatched[k] += 1
                    continue
                if start < 0 or start + n > d.size or (k_arr is not None and start + n > k_arr.size):
                    raise ArgumentError(f"{op.label()}: range ({start}, {n}) is outside DATA of size {d.size}")
                piece = d[start : start + n]
                if k_arr is not None:
                    piece = piece[np.argsort(k_arr[start : start + n], kind="stable")]
                outs[k][i] = piece
        with lock:
            seen["total"] += r.shape[0]
            for k in range(len(lens)):
                empty[k] += n_empty[k]
                mismatched[k] += n_mismatched[k]
            check("mismatched", mismatched, max_mismatched, seen["total"])
            check("empty", empty, max_empty, seen["total"])
        return outs

    return run


def _wrap(v: int, bits: int) -> int:
    v &= (1 << bits) - 1
    return v - (1 << bits) if v >= 1 << (bits - 1) else v


@register_op(
    "IndexHash",
    allow_inplace=[(0, 0)],
    args=(Arg("seed", 0, "hash seed"), Arg("modulo", 0, "the hashed values lie in [0, modulo)")),
    infer=lambda op, ins: [ins[0]],
    doc="Hash each int32/int64 index: h = seed * 0xDEADBEEF, then h = h * 65537 + b for each (signed) "
    "byte b of the index, in the index's integer width with wraparound; output h mod modulo (>= 0).",
    input_names=("indices",),
    output_names=("hashed_indices",),
)
def index_hash(op: OpInfo) -> Callable[..., Any]:
    seed, modulo = op.int_arg("seed"), op.int_arg("modulo")
    if modulo <= 0:
        raise ArgumentError(f"{op.label()}: modulo must be positive, got {modulo}")

    def run(x: Any) -> tuple[np.ndarray]:
        a = np.asarray(x)
        if a.dtype not in (np.dtype(np.int32), np.dtype(np.int64)):
            raise ArgumentError(f"{op.label()}: indices must be int32 or int64, got {a.dtype}")
        bits = a.dtype.itemsize * 8
        start = _wrap(_wrap(seed * 0xDEADBEEF, 64), bits)
        raw = a.astype(a.dtype.newbyteorder("<")).view(np.int8).reshape(a.size, a.dtype.itemsize)
        out = np.empty(a.size, a.dtype)
        for i in range(a.size):
            h = start
            for b in raw[i].tolist():
                h = _wrap(h * 65537 + b, bits)
            m = int(math.fmod(h, modulo))
            out[i] = m if m >= 0 else m + modulo
        return (out.reshape(a.shape),)

    return run


@register_op(
    "MergeIdLists",
    inputs=(2, -1),
    outputs=2,
    arity=lambda i, o: i % 2 == 0,
    arity_doc="inputs come in (lengths, values) pairs",
    infer=lambda op, ins: [TensorInfo(ins[0].shape, ins[0].dtype), TensorInfo((None,), ins[1].dtype)],
    doc="Per example, the sorted union of its ids over every (lengths, values) id list.",
    output_names=("merged_lengths", "merged_values"),
)
def merge_id_lists(op: OpInfo) -> Callable[..., Any]:
    def run(*ins: Any) -> tuple[np.ndarray, np.ndarray]:
        lens = [np.asarray(x).reshape(-1).astype(np.int64) for x in ins[0::2]]
        vals = [np.asarray(x).reshape(-1) for x in ins[1::2]]
        n = lens[0].size
        for k, (ln, v) in enumerate(zip(lens, vals)):
            if ln.size != n or int(ln.sum()) != v.size:
                raise ArgumentError(f"{op.label()}: id list {k} needs {n} lengths summing to its {v.size} values")
        offsets = [np.concatenate([[0], np.cumsum(ln)]) for ln in lens]
        out_len, out_vals = [], []
        for i in range(n):
            ids: set[Any] = set()
            for v, off in zip(vals, offsets):
                ids.update(v[off[i] : off[i + 1]].tolist())
            out_len.append(len(ids))
            out_vals.extend(sorted(ids))
        return np.array(out_len, np.asarray(ins[0]).dtype), np.array(out_vals, vals[0].dtype)

    return run


@register_op(
    "LearningRateAdaption",
    inputs=3,
    args=(
        Arg("lr_alpha", 0.01, "adaption rate"),
        Arg("normalized_lr_adaption", 1, "use the cosine of grad and effgrad instead of their dot product"),
    ),
    infer=lambda op, ins: [ins[0]],
    doc="Inputs lr, grad, effgrad: x = grad . effgrad; normalized: lr' = lr (1 - lr_alpha x / (max(|grad|, "
    "1e-12) max(|effgrad|, 1e-12))), else lr' = lr - lr_alpha x.",
    input_names=("lr", "grad", "effgrad"),
    output_names=("output_lr",),
)
def learning_rate_adaption(op: OpInfo) -> Callable[..., Any]:
    alpha, normalized = op.float_arg("lr_alpha"), op.bool_arg("normalized_lr_adaption")

    def run(lr: Any, grad: Any, eff: Any) -> tuple[np.ndarray]:
        lra = np.asarray(lr)
        g, e = np.asarray(grad, np.float64).reshape(-1), np.asarray(eff, np.float64).reshape(-1)
        if g.size != e.size:
            raise ArgumentError(f"{op.label()}: grad and effgrad must have one size, got {g.size} and {e.size}")
        x = float(g @ e)
        rate = float(lra.reshape(-1)[0])
        if normalized:
            y, z = max(math.sqrt(float(g @ g)), 1e-12), max(math.sqrt(float(e @ e)), 1e-12)
            new = rate * (1.0 - alpha * x / (y * z))
        else:
            new = rate - alpha * x
        return (np.full(lra.shape, new, lra.dtype),)

    return run
