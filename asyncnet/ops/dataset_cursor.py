"""Caffe2's dataset ops: a tree cursor over a dataset stored as one tensor per field (CreateTreeCursor,
ReadNextBatch, ResetCursor, GetCursorOffset, ComputeOffset, SortAndShuffle, ReadRandomBatch), the checks
and edits of such datasets (CheckDatasetConsistency, TrimDataset, Append, AtomicAppend).

Field names nest with ':'; a field ``<prefix>:lengths`` defines a domain, and every later field whose name
starts with ``<prefix>:`` lives in it (the longest such prefix wins): it has sum(lengths over the parent
rows) rows per parent row. Domain 0 is the top level. A cursor keeps one offset per domain.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from asyncnet.errors import ArgumentError, TensorError
from asyncnet.opinfo import OpInfo
from asyncnet.ops._util import info, rng_for
from asyncnet.ops.utility_extra import Mutex
from asyncnet.registry import register_op
from asyncnet.schema import Arg, TensorInfo

_FIELDS = Arg("fields", [], "the dataset's field names, nested with ':' ('<prefix>:lengths' opens a domain)")


class TreeIterator:
    """The domain structure of a list of field names."""

    def __init__(self, fields: Sequence[str], where: str = "dataset") -> None:
        self.fields = list(fields)
        parts = [f.split(":") for f in self.fields]
        self.length_fields = [i for i, p in enumerate(parts) if p and p[-1] == "lengths"]
        # domain[i]: the offset slot of field i (0 = top level, j + 1 = under length field j).
        self.domain: list[int] = []
        for i, p in enumerate(parts):
            best, level = -1, 1
            for j, lf in enumerate(self.length_fields):
                prefix = parts[lf][:-1]
                if lf != i and len(parts[lf]) > level and p[: len(prefix)] == prefix:
                    best, level = j, len(parts[lf])
            if best >= 0 and self.length_fields[best] > i:
                raise ArgumentError(
                    f"{where}: field {i} ('{self.fields[i]}') depends on a field defined afterwards: "
                    f"{self.length_fields[best]} ('{self.fields[self.length_fields[best]]}')"
                )
            self.domain.append(best + 1)

    @property
    def num_domains(self) -> int:
        return len(self.length_fields) + 1

    def lengths(self, data: Sequence[np.ndarray]) -> list[np.ndarray]:
        """The lengths fields' values, in domain order."""
        return [np.asarray(data[f]).reshape(-1).astype(np.int64) for f in self.length_fields]

    def limits(self, data: Sequence[np.ndarray]) -> list[float]:
        """Per domain, the fewest rows any of its fields has."""
        lim: list[float] = [float("inf")] * self.num_domains
        for i, x in enumerate(data):
            lim[self.domain[i]] = min(lim[self.domain[i]], np.shape(x)[0] if np.ndim(x) else 0)
        return lim

    def advance(
        self, lengths: Sequence[np.ndarray], offsets: Sequence[int], limits: Sequence[float], num: int
    ) -> tuple[list[int], list[int]]:
        """Move ``num`` top-level records forward: (new offsets, rows taken per domain)."""
        if limits[0] < offsets[0]:
            raise TensorError("tried to advance past the end of the cursor")
        sizes = [int(min(limits[0] - offsets[0], num))] + [0] * len(self.length_fields)
        for j, lf in enumerate(self.length_fields, 1):
            p = self.domain[lf]
            sizes[j] = int(lengths[j - 1][offsets[p] : offsets[p] + sizes[p]].sum())
            if offsets[j] + sizes[j] > limits[j]:
                raise TensorError(f"inconsistent field lengths: tried to advance past the end of domain {j}")
        return [o + s for o, s in zip(offsets, sizes)], sizes


class TreeCursor:
    """A shared read position in a dataset (thread-safe)."""

    def __init__(self, it: TreeIterator) -> None:
        self.it = it
        self.offsets: list[int] = []
        self.lock = threading.Lock()

    def __repr__(self) -> str:
        return f"TreeCursor({self.it.fields}, offsets={self.offsets})"


def _cursor(op: OpInfo, c: Any, data: Sequence[Any] | None = None) -> TreeCursor:
    if not isinstance(c, TreeCursor):
        raise ArgumentError(f"{op.label()}: input 0 must be a cursor (from CreateTreeCursor), got {type(c).__name__}")
    if data is not None and len(data) != len(c.it.fields):
        raise ArgumentError(f"{op.label()}: the cursor has {len(c.it.fields)} fields, got {len(data)} data inputs")
    return c


def _unknown(op: OpInfo, ins: list[TensorInfo]) -> list[TensorInfo]:
    return [TensorInfo(None, None)] * len(op.outputs)


@register_op(
    "CreateTreeCursor",
    inputs=0,
    args=(_FIELDS,),
    infer=_unknown,
    doc="Create a cursor over a dataset with the schema `fields` (offsets start at 0).",
    output_names=("cursor",),
)
def create_tree_cursor(op: OpInfo) -> Callable[..., Any]:
    it = TreeIterator(op.strs_arg("fields"), op.label())
    return lambda: (TreeCursor(it),)


@register_op("ResetCursor", outputs=0, infer=lambda op, ins: [], doc="Move the cursor back to the start.")
def reset_cursor(op: OpInfo) -> Callable[..., Any]:
    def run(c: Any) -> tuple[()]:
        cur = _cursor(op, c)
        with cur.lock:
            cur.offsets = []
        return ()

    return run


@register_op(
    "GetCursorOffset",
    infer=lambda op, ins: [info((None,), np.int32)],
    doc="The cursor's offsets, one per domain (int32; empty right after a reset).",
)
def get_cursor_offset(op: OpInfo) -> Callable[..., Any]:
    def run(c: Any) -> tuple[np.ndarray]:
        cur = _cursor(op, c)
        with cur.lock:
            return (np.array(cur.offsets, np.int32),)

    return run


@register_op(
    "ReadNextBatch",
    inputs=(1, -1),
    outputs=(0, -1),
    arity=lambda i, o: o == i - 1,
    arity_doc="one output per data field",
    args=(
        Arg("batch_size", 1, "top-level records read"),
        Arg("enforce_batch_size", 0, "return empty fields instead of a short last batch"),
    ),
    infer=lambda op, ins: [info(None if t.shape is None else (None, *t.shape[1:]), t.dtype) for t in ins[1:]],
    doc="Read the next batch_size top-level records: output i is field i's rows that belong to them. "
    "Thread-safe; at the end of the data the fields are empty.",
)
def read_next_batch(op: OpInfo) -> Callable[..., Any]:
    batch = op.int_arg("batch_size")
    enforce = op.bool_arg("enforce_batch_size")

    def run(c: Any, *data: Any) -> list[np.ndarray]:
        cur = _cursor(op, c, data)
        arrs = [np.asarray(x) for x in data]
        it = cur.it
        lengths, limits = it.lengths(arrs), it.limits(arrs)
        with cur.lock:
            start = cur.offsets or [0] * it.num_domains
            cur.offsets, sizes = it.advance(lengths, start, limits, batch)
        if enforce and sizes[0] < batch:
            sizes = [0] * len(sizes)
        return [a[start[d] : start[d] + sizes[d]] for a, d in zip(arrs, it.domain)]

    return run


@register_op(
    "ComputeOffset",
    inputs=(1, -1),
    infer=lambda op, ins: [info((None, None), np.int64)],
    doc="Offsets matrix (records + 1, domains): row k holds every domain's offset before record k. "
    "Resets the cursor to the start.",
)
def compute_offset(op: OpInfo) -> Callable[..., Any]:
    def run(c: Any, *data: Any) -> tuple[np.ndarray]:
        cur = _cursor(op, c, data)
        arrs = [np.asarray(x) for x in data]
        it = cur.it
        lengths, limits = it.lengths(arrs), it.limits(arrs)
        n = int(limits[0]) if limits[0] != float("inf") else 0
        rows, offs = [], [0] * it.num_domains
        with cur.lock:
            for _ in range(n + 1):
                rows.append(list(offs))
                offs, _ = it.advance(lengths, offs, limits, 1)
            cur.offsets = [0] * it.num_domains
        return (np.array(rows, np.int64).reshape(n + 1, it.num_domains),)

    return run


@register_op(
    "SortAndShuffle",
    inputs=(1, -1),
    args=(
        Arg("sort_by_field_idx", 1, "top-level field to sort the records by first (-1: no sort)"),
        Arg("batch_size", 1, "records per batch"),
        Arg("shuffle_size", 1, "batches per shuffled chunk"),
    ),
    infer=lambda op, ins: [info((None,), np.int64)],
    doc="Record order for ReadRandomBatch: sort by a top-level field (optional), shuffle within chunks of "
    "batch_size * shuffle_size records, then shuffle whole batches (a short last batch stays last).",
)
def sort_and_shuffle(op: OpInfo) -> Callable[..., Any]:
    by, batch, shuffle = op.int_arg("sort_by_field_idx"), op.int_arg("batch_size"), op.int_arg("shuffle_size")
    if batch <= 0 or shuffle <= 0 or by < -1:
        raise ArgumentError(f"{op.label()}: need batch_size > 0, shuffle_size > 0, sort_by_field_idx >= -1")
    rng = rng_for(op)

    def run(c: Any, *data: Any) -> tuple[np.ndarray]:
        cur = _cursor(op, c, data)
        if by >= len(data):
            raise ArgumentError(f"{op.label()}: sort_by_field_idx {by} is outside the {len(data)} fields")
        size = np.shape(data[max(by, 0)])[0]
        order = np.arange(size)
        if by != -1:
            if cur.it.domain[by] != 0:
                raise ArgumentError(f"{op.label()}: field {by} is not at the top level; cannot sort by it")
            order = np.argsort(np.asarray(data[by]).reshape(-1), kind="stable")
        # A chunk larger than the data shrinks to the whole batches that fit (maybe none).
        chunk = batch * (shuffle if batch * shuffle <= size else size // batch)
        if chunk > 1:
            for s in range(0, size - chunk, chunk):
                rng.shuffle(order[s : s + chunk])
        n_batch = size // batch
        perm = rng.permutation(n_batch)
        full = [order[b * batch : (b + 1) * batch] for b in perm]
        return (np.concatenate([*full, order[n_batch * batch :]]).astype(np.int64),)

    return run


@register_op(
    "ReadRandomBatch",
    inputs=(3, -1),
    outputs=(0, -1),
    arity=lambda i, o: o == i - 3,
    arity_doc="cursor, record order, offsets matrix, then the fields; one output per field",
    args=(
        Arg("batch_size", 1, "records read"),
        Arg("enforce_batch_size", 0, "skip a short last batch"),
        Arg("loop_over", 0, "start over at the end of the order"),
    ),
    infer=lambda op, ins: [info(None if t.shape is None else (None, *t.shape[1:]), t.dtype) for t in ins[3:]],
    doc="Read the next batch_size records in the given order (from SortAndShuffle), using the offsets matrix "
    "(from ComputeOffset) to find each record's rows in every field.",
)
def read_random_batch(op: OpInfo) -> Callable[..., Any]:
    batch, enforce, loop = op.int_arg("batch_size"), op.bool_arg("enforce_batch_size"), op.bool_arg("loop_over")

    def run(c: Any, order: Any, offsets: Any, *data: Any) -> list[np.ndarray]:
        cur = _cursor(op, c, data)
        idx = np.asarray(order).reshape(-1).astype(np.int64)
        offs = np.asarray(offsets).astype(np.int64)
        with cur.lock:
            pos = cur.offsets[0] if cur.offsets else 0
            if enforce and pos + batch > idx.size:
                pos = idx.size
            if loop and pos >= idx.size:
                pos = 0
            cur.offsets = [pos + batch]
        picked = idx[pos : pos + batch]
        if offs.ndim != 2 or (picked.size and (picked.min() < 0 or picked.max() + 1 >= offs.shape[0])):
            raise TensorError(
                f"{op.label()}: record indices {picked.tolist()} fall outside the offsets matrix {offs.shape}"
            )
        outs = []
        for x, d in zip(data, cur.it.domain):
            a = np.asarray(x)
            parts = [a[offs[r, d] : offs[r + 1, d]] for r in picked.tolist()]
            outs.append(np.concatenate(parts) if parts else a[:0])
        return outs

    return run


@register_op(
    "CheckDatasetConsistency",
    inputs=(1, -1),
    outputs=0,
    args=(_FIELDS,),
    infer=lambda op, ins: [],
    doc="Fail unless the fields form a consistent dataset: fields of one domain have equal row counts and "
    "every lengths field sums to the rows of the domain it opens.",
)
def check_dataset_consistency(op: OpInfo) -> Callable[..., Any]:
    it = TreeIterator(op.strs_arg("fields"), op.label())

    def run(*data: Any) -> tuple[()]:
        if len(data) != len(it.fields):
            raise ArgumentError(f"{op.label()}: expected {len(it.fields)} fields, got {len(data)}")
        arrs = [np.asarray(x) for x in data]
        sizes: dict[int, int] = {}
        for i, a in enumerate(arrs):
            if a.ndim == 0:
                raise TensorError(f"{op.label()}: field {i} ('{it.fields[i]}') must have at least one dim")
            d = it.domain[i]
            if sizes.setdefault(d, a.shape[0]) != a.shape[0]:
                raise TensorError(
                    f"{op.label()}: inconsistent sizes for fields of one domain: field {i} ('{it.fields[i]}') has "
                    f"{a.shape[0]} rows, an earlier field of domain {d} has {sizes[d]}"
                )
        limits: list[float] = [float(sizes.get(d, float("inf"))) for d in range(it.num_domains)]
        end, _ = it.advance(it.lengths(arrs), [0] * it.num_domains, limits, int(limits[0]))
        if [float(e) for e in end] != limits:
            raise TensorError(f"{op.label()}: the lengths fields cover {end} rows, the domains hold {limits}")
        return ()

    return run


@register_op(
    "TrimDataset",
    inputs=(1, -1),
    outputs=(1, -1),
    allow_inplace=lambda i, o: i == o,
    arity=lambda i, o: i == o,
    args=(_FIELDS, Arg("multiple_of", 1, "keep the largest number of top-level records that is a multiple of this")),
    infer=lambda op, ins: [info(None if t.shape is None else (None, *t.shape[1:]), t.dtype) for t in ins],
    doc="Trim the dataset (in place) to the largest multiple of `multiple_of` top-level records.",
)
def trim_dataset(op: OpInfo) -> Callable[..., Any]:
    it = TreeIterator(op.strs_arg("fields"), op.label())
    multiple = op.int_arg("multiple_of")
    if multiple < 1:
        raise ArgumentError(f"{op.label()}: multiple_of must be >= 1, got {multiple}")

    def run(*data: Any) -> list[np.ndarray]:
        arrs = [np.asarray(x) for x in data]
        limits = it.limits(arrs)
        n = int(limits[0]) if limits[0] != float("inf") else 0
        keep = n // multiple * multiple
        ends, _ = it.advance(it.lengths(arrs), [0] * it.num_domains, limits, keep)
        return [a[: ends[d]] for a, d in zip(arrs, it.domain)]

    return run


def _append(op: OpInfo, a: Any, b: Any) -> np.ndarray:
    bb = np.asarray(b)
    if bb.ndim < 1:
        raise TensorError(f"{op.label()}: the appended tensor must have at least one dim")
    aa = None if a is None else np.asarray(a)
    if aa is None or aa.size == 0 and (aa.ndim == 0 or aa.shape[0] == 0):
        # An empty A (never written, or zero rows) takes B's shape and type.
        return np.array(bb, copy=True)
    if aa.ndim != bb.ndim or aa.shape[1:] != bb.shape[1:] or aa.dtype != bb.dtype:
        raise TensorError(f"{op.label()}: cannot append {bb.dtype} {bb.shape} to {aa.dtype} {aa.shape}")
    return np.concatenate([aa, bb])


@register_op(
    "Append",
    inputs=2,
    enforce_inplace=[(0, 0)],
    infer=lambda op, ins: [info(None if ins[1].shape is None else (None, *ins[1].shape[1:]), ins[1].dtype)],
    doc="Append B's rows to A (in place); an empty A becomes a copy of B.",
    input_names=("A", "B"),
    output_names=("A",),
)
def append(op: OpInfo) -> Callable[..., Any]:
    return lambda a, b: (_append(op, a, b),)


@register_op(
    "AtomicAppend",
    inputs=(3, -1),
    outputs=(1, -1),
    allow_inplace=lambda i, o: i == o + 1,
    arity=lambda i, o: i == 2 * o + 1,
    arity_doc="mutex, k tensors, k tensors to append; k outputs in place",
    infer=lambda op, ins: [TensorInfo(None, t.dtype) for t in ins[1 : 1 + len(op.outputs)]],
    doc="Under the mutex (input 0), append tensor k + i to tensor i for every field i (all checked first).",
)
def atomic_append(op: OpInfo) -> Callable[..., Any]:
    k = len(op.outputs)

    def run(mutex: Any, *xs: Any) -> tuple[np.ndarray, ...]:
        if not isinstance(mutex, Mutex):
            raise ArgumentError(f"{op.label()}: input 0 must be a mutex (from CreateMutex)")
        with mutex.lock:
            return tuple(_append(op, xs[i], xs[k + i]) for i in range(k))

    return run
