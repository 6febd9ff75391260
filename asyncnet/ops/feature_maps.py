"""Merge{Dense,Single,Multi}*FeatureTensors (+ gradients): Caffe2's feature-map ops that merge per-feature
tensors into one multi-feature (lengths, keys, values) record, example by example.

Representations (per feature; ``presence`` marks which examples have it):
  single scalar: values (N,), presence    single list: lengths, values, presence
  single map: lengths, keys, values, presence
  multi scalar: lengths, keys, values     multi list: lengths, keys, values.lengths, values.values
  multi map: lengths, keys, values.lengths, values.keys, values.values
The output lists, for every example, the features of input 1, then input 2, ... A gradient op splits the
merged values' gradient back into each input's values in the same order.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from asyncnet.errors import ArgumentError, TensorError
from asyncnet.opinfo import OpInfo
from asyncnet.ops._util import info
from asyncnet.proto import caffe2_pb2 as pb
from asyncnet.registry import register_op
from asyncnet.schema import Arg, TensorInfo
from asyncnet.training.gradients import GradientContext, GradientSpec, register_gradient

I32, I64 = np.int32, np.int64


def interleave(srcs: Sequence[np.ndarray], sizes: np.ndarray) -> np.ndarray:
    """Concatenate, example by example and input by input, the next ``sizes[e, i]`` items of ``srcs[i]``."""
    starts = np.zeros(sizes.shape[1], np.int64)
    parts = []
    for e in range(sizes.shape[0]):
        for i, src in enumerate(srcs):
            n = int(sizes[e, i])
            if n:
                parts.append(src[starts[i] : starts[i] + n])
                starts[i] += n
    if not parts:
        return np.zeros((0,) + srcs[0].shape[1:], srcs[0].dtype) if srcs else np.zeros(0)
    return np.concatenate(parts)


def split(flat: np.ndarray, sizes: np.ndarray) -> list[np.ndarray]:
    """The inverse of ``interleave``: each input's items, in order."""
    pos = 0
    parts: list[list[np.ndarray]] = [[] for _ in range(sizes.shape[1])]
    for e in range(sizes.shape[0]):
        for i in range(sizes.shape[1]):
            n = int(sizes[e, i])
            parts[i].append(flat[pos : pos + n])
            pos += n
    return [np.concatenate(p) if p else flat[:0] for p in parts]


class _Args:
    """The op's inputs grouped per feature, with shape checks that name the op."""

    def __init__(self, op: OpInfo, ins: tuple[Any, ...], per: int, extra: int = 0) -> None:
        self.op = op
        body = ins[: len(ins) - extra]
        if not body or len(body) % per:
            raise ArgumentError(f"{op.label()}: expected a multiple of {per} inputs (+{extra}), got {len(ins)}")
        self.groups = [[np.asarray(x) for x in body[k : k + per]] for k in range(0, len(body), per)]
        self.tail = [np.asarray(x) for x in ins[len(ins) - extra :]]

    def ints(self, a: np.ndarray, what: str, n: int | None = None) -> np.ndarray:
        v = a.reshape(-1).astype(np.int64)
        if (v < 0).any() or (n is not None and v.size != n):
            raise TensorError(
                f"{self.op.label()}: {what} must be {n if n is not None else 'any number of'} counts >= 0"
            )
        return v

    def flags(self, a: np.ndarray, n: int) -> np.ndarray:
        if a.size != n:
            raise TensorError(f"{self.op.label()}: presence has {a.size} entries for {n} examples")
        return a.reshape(-1).astype(bool)

    def fits(self, src: np.ndarray, need: int, what: str) -> np.ndarray:
        if src.shape[:1] != (need,):
            raise TensorError(f"{self.op.label()}: {what} has {src.shape[:1]} items, the lengths need {need}")
        return src


def _feature_ids(op: OpInfo, k: int) -> np.ndarray:
    ids = np.asarray(op.ints_arg("feature_ids"), I64)
    if ids.size != k:
        raise ArgumentError(f"{op.label()}: feature_ids must have one id per feature ({k}), got {ids.tolist()}")
    return ids


def _keys(ids: np.ndarray, pres: np.ndarray) -> np.ndarray:
    return interleave([np.full(int(pres[:, i].sum()), ids[i], I64) for i in range(ids.size)], pres.astype(np.int64))


def _value_counts(lens: np.ndarray, vlens: np.ndarray) -> np.ndarray:
    """Per example, the number of values under its ``lens[e]`` keys (each key has ``vlens`` values)."""
    owner = np.repeat(np.arange(lens.size), lens)
    return np.bincount(owner, weights=vlens, minlength=lens.size).astype(np.int64)


# -- forward ops -------------------------------------------------------------------------------------


def merge_dense(op: OpInfo) -> Callable[..., Any]:
    def run(x: Any, presence: Any) -> tuple[np.ndarray, ...]:
        a, p = np.asarray(x), np.asarray(presence).astype(bool)
        if a.ndim != 2 or p.shape != a.shape:
            raise TensorError(
                f"{op.label()}: in1 must be (N, F) with presence of the same shape, got {a.shape}, {p.shape}"
            )
        ids = _feature_ids(op, a.shape[1])
        vals = interleave([a[p[:, i], i] for i in range(a.shape[1])], p.astype(np.int64))
        return p.sum(axis=1).astype(I32), _keys(ids, p), vals

    return run


def merge_single(kind: str) -> Callable[[OpInfo], Callable[..., Any]]:
    per = {"scalar": 2, "list": 3, "map": 4}[kind]

    def factory(op: OpInfo) -> Callable[..., Any]:
        ids = _feature_ids(op, len(op.inputs) // per)

        def run(*ins: Any) -> tuple[np.ndarray, ...]:
            a = _Args(op, ins, per)
            n = a.groups[0][0].size
            pres = np.stack([a.flags(g[-1], n) for g in a.groups], axis=1) if n else np.zeros((0, len(a.groups)), bool)
            keys = _keys(ids, pres)
            lengths = pres.sum(axis=1).astype(I32)
            if kind == "scalar":
                return lengths, keys, interleave([g[0].reshape(-1)[pres[:, i]] for i, g in enumerate(a.groups)], pres)
            lens = [a.ints(g[0], "lengths", n) * pres[:, i] for i, g in enumerate(a.groups)]
            sizes = np.stack(lens, axis=1) if n else np.zeros((0, len(a.groups)), np.int64)
            vlens = interleave([lv[pres[:, i]] for i, lv in enumerate(lens)], pres).astype(I32)
            fields = [
                interleave([a.fits(g[f], int(lens[i].sum()), "values") for i, g in enumerate(a.groups)], sizes)
                for f in range(1, per - 1)
            ]
            return (lengths, keys, vlens, *fields)

        return run

    return factory


def merge_multi(kind: str) -> Callable[[OpInfo], Callable[..., Any]]:
    per = {"scalar": 3, "list": 4, "map": 5}[kind]

    def factory(op: OpInfo) -> Callable[..., Any]:
        def run(*ins: Any) -> tuple[np.ndarray, ...]:
            a = _Args(op, ins, per)
            n = a.groups[0][0].size
            lens = [a.ints(g[0], "lengths", n) for g in a.groups]
            sizes = np.stack(lens, axis=1) if n else np.zeros((0, len(a.groups)), np.int64)
            keys = interleave([a.fits(g[1], int(lv.sum()), "keys").astype(I64) for g, lv in zip(a.groups, lens)], sizes)
            out_lengths = sizes.sum(axis=1).astype(I32)
            if kind == "scalar":
                vals = interleave([a.fits(g[2], int(lv.sum()), "values") for g, lv in zip(a.groups, lens)], sizes)
                return out_lengths, keys, vals
            vl = [
                a.fits(a.ints(g[2], "values.lengths"), int(lv.sum()), "values.lengths") for g, lv in zip(a.groups, lens)
            ]
            vsizes = np.stack([_value_counts(lv, v) for lv, v in zip(lens, vl)], axis=1) if n else sizes
            out_vl = interleave(vl, sizes).astype(I32)
            fields = [
                interleave([a.fits(g[f], int(v.sum()), "values") for g, v in zip(a.groups, vl)], vsizes)
                for f in range(3, per)
            ]
            return (out_lengths, keys, out_vl, *fields)

        return run

    return factory


# -- gradient ops ------------------------------------------------------------------------------------


def _default_like(flat: np.ndarray, n: int) -> np.ndarray:
    """An absent feature's gradient: zeros, or empty strings for string values."""
    if flat.dtype.kind in "OSU":
        return np.full(n, b"", dtype=object)
    return np.zeros(n, flat.dtype)


def _as_bytes(a: np.ndarray) -> np.ndarray:
    if a.dtype.kind != "U":
        return a
    return np.array([s.encode("utf-8") for s in a.tolist()], dtype=object)


def single_scalar_gradient(op: OpInfo) -> Callable[..., Any]:
    def run(*ins: Any) -> tuple[np.ndarray, ...]:
        a = _Args(op, ins, 1, extra=1)
        grad = _as_bytes(a.tail[0].reshape(-1))
        n = a.groups[0][0].size
        pres = np.stack([a.flags(g[0], n) for g in a.groups], axis=1) if n else np.zeros((0, len(a.groups)), bool)
        if grad.size != int(pres.sum()):
            raise TensorError(f"{op.label()}: {grad.size} value gradients for {int(pres.sum())} present features")
        outs = []
        for i, part in enumerate(split(grad, pres.astype(np.int64))):
            full = _default_like(grad, n)
            full[pres[:, i]] = part
            outs.append(full)
        return tuple(outs)

    return run


def split_gradient(kind: str) -> Callable[[OpInfo], Callable[..., Any]]:
    """single list/map: (lengths, presence)*k; multi scalar: lengths*k; multi list/map: (lengths, values.lengths)*k."""
    per = 1 if kind == "multi_scalar" else 2

    def factory(op: OpInfo) -> Callable[..., Any]:
        def run(*ins: Any) -> tuple[np.ndarray, ...]:
            a = _Args(op, ins, per, extra=1)
            grad = a.tail[0].reshape(-1)
            n = a.groups[0][0].size
            cols = []
            for g in a.groups:
                lens = a.ints(g[0], "lengths", n)
                if kind == "single":
                    cols.append(lens * a.flags(g[1], n))
                elif kind == "multi_scalar":
                    cols.append(lens)
                else:
                    cols.append(
                        _value_counts(lens, a.fits(a.ints(g[1], "values.lengths"), int(lens.sum()), "values.lengths"))
                    )
            sizes = np.stack(cols, axis=1) if n else np.zeros((0, len(cols)), np.int64)
            if grad.size != int(sizes.sum()):
                raise TensorError(f"{op.label()}: {grad.size} value gradients for {int(sizes.sum())} merged values")
            return tuple(split(grad, sizes))

        return run

    return factory


# -- registration ------------------------------------------------------------------------------------


def _unknown(op: OpInfo, ins: list[TensorInfo]) -> list[TensorInfo]:
    return [info((None,), None)] * len(op.outputs)


def _forward_infer(srcs: tuple[int | None, ...]) -> Callable[[OpInfo, list[TensorInfo]], list[TensorInfo]]:
    """Outputs: lengths (N,), keys, then one per ``srcs`` entry: the dtype of that input (None: int32 lengths)."""

    def infer(op: OpInfo, ins: list[TensorInfo]) -> list[TensorInfo]:
        n = ins[0].shape[0] if ins[0].shape else None
        rest = [info((None,), I32 if k is None else ins[k].dtype) for k in srcs]
        return [info((n,), I32), info((None,), I64), *rest]

    return infer


def _maker(forward: str, per: int, keep: Sequence[int], values: int, go: int) -> None:
    @register_gradient(forward)
    def maker(op: pb.OperatorDef, g_out: list[str | None]) -> GradientSpec:
        g = GradientContext(op, g_out)
        ins = [g.I(k * per + j) for k in range(len(op.input) // per) for j in keep]
        outs = [g.GI(k * per + values) for k in range(len(op.input) // per)]
        return g.spec([g.op_def(f"{forward}Gradient", [*ins, g.GO(go)], outs)])


_FEATURES = Arg("feature_ids", [], "the feature id of each input feature (the output keys)")
_MERGE_DOC = "Merge per-feature tensors into one multi-feature record: for each example, the present features "

register_op(
    "MergeDenseFeatureTensors",
    inputs=2,
    outputs=3,
    args=(_FEATURES,),
    infer=_forward_infer((0,)),
    doc="Turn a dense (N, F) feature matrix and its (N, F) presence mask into lengths (per example), keys "
    "(feature_ids of the present columns) and values, example by example.",
    input_names=("in1", "in1_presence"),
    output_names=("out_lengths", "out_keys", "out_values"),
)(merge_dense)

_SCALAR_OUTS = ("out_lengths", "out_keys", "out_values")
_LIST_OUTS = ("out_lengths", "out_keys", "out_values_lengths", "out_values_values")
_MAP_OUTS = ("out_lengths", "out_keys", "out_values_lengths", "out_values_keys", "out_values_values")

for _kind, _per, _outs, _srcs in (
    ("Scalar", 2, _SCALAR_OUTS, (0,)),
    ("List", 3, _LIST_OUTS, (None, 1)),
    ("Map", 4, _MAP_OUTS, (None, 1, 2)),
):
    register_op(
        f"MergeSingle{_kind}FeatureTensors",
        inputs=(_per, -1),
        outputs=len(_outs),
        arity=lambda i, o, p=_per: i % p == 0,
        arity_doc=f"a multiple of {_per} inputs",
        args=(_FEATURES,),
        infer=_forward_infer(_srcs),
        doc=_MERGE_DOC + f"(presence true) of input 1, 2, ... ({_kind.lower()} features: {_per} tensors each, "
        "the last the presence flags); keys are their feature_ids.",
        input_names=("in1", "in1_presence") if _kind == "Scalar" else (),
        output_names=_outs,
    )(merge_single(_kind.lower()))

for _kind, _per, _outs, _srcs in (
    ("Scalar", 3, _SCALAR_OUTS, (2,)),
    ("List", 4, _LIST_OUTS, (None, 3)),
    ("Map", 5, _MAP_OUTS, (None, 3, 4)),
):
    register_op(
        f"MergeMulti{_kind}FeatureTensors",
        inputs=(_per, -1),
        outputs=len(_outs),
        arity=lambda i, o, p=_per: i % p == 0,
        arity_doc=f"a multiple of {_per} inputs",
        infer=_forward_infer(_srcs),
        doc="Merge multi-feature tensors: for each example, the keys and values of input 1, then input 2, ... "
        f"({_kind.lower()} features: {_per} tensors each).",
        output_names=_outs,
    )(merge_multi(_kind.lower()))

register_op(
    "MergeSingleScalarFeatureTensorsGradient",
    inputs=(2, -1),
    outputs=(1, -1),
    arity=lambda i, o: o == i - 1,
    arity_doc="one output per presence input",
    infer=lambda op, ins: [info(p.shape, ins[-1].dtype) for p in ins[:-1]],
    doc="Gradient of MergeSingleScalarFeatureTensors: inputs presence_1..k and the merged values' gradient; "
    "output i is input i's values gradient (0, or '' for strings, where the feature is absent).",
)(single_scalar_gradient)

for _name, _kind, _per in (
    ("MergeSingleListFeatureTensorsGradient", "single", 2),
    ("MergeSingleMapFeatureTensorsGradient", "single", 2),
    ("MergeMultiScalarFeatureTensorsGradient", "multi_scalar", 1),
    ("MergeMultiListFeatureTensorsGradient", "multi", 2),
    ("MergeMultiMapFeatureTensorsGradient", "multi", 2),
):
    _ins = {"single": "(lengths, presence)", "multi_scalar": "lengths", "multi": "(lengths, values.lengths)"}[_kind]
    register_op(
        _name,
        inputs=(_per + 1, -1),
        outputs=(1, -1),
        arity=lambda i, o, p=_per: (i - 1) % p == 0 and o == (i - 1) // p,
        arity_doc=f"{_ins} per feature, then the gradient; one output per feature",
        infer=_unknown,
        doc=f"Gradient of {_name[: -len('Gradient')]}: inputs {_ins} of every feature and the merged values' "
        "gradient; output i is input i's values gradient.",
    )(split_gradient(_kind))

_maker("MergeSingleScalarFeatureTensors", 2, (1,), 0, 2)
_maker("MergeSingleListFeatureTensors", 3, (0, 2), 1, 3)
_maker("MergeSingleMapFeatureTensors", 4, (0, 3), 2, 4)
_maker("MergeMultiScalarFeatureTensors", 3, (0,), 2, 2)
_maker("MergeMultiListFeatureTensors", 4, (0, 2), 3, 3)
_maker("MergeMultiMapFeatureTensors", 5, (0, 2), 4, 4)
