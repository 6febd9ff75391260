"""Splitting, slicing and repeating: Split, Slice, Tile, NumpyTile, Expand."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from asyncnet.errors import ArgumentError, ShapeInferenceError
from asyncnet.opinfo import OpInfo
from asyncnet.ops._util import canonical_axis
from asyncnet.registry import register_op
from asyncnet.schema import Arg, TensorInfo, broadcast_shapes

# -- Split ----------------------------------------------------------------------------------------


def split_axis(op: OpInfo, ndim: int) -> int:
    """Split's axis: `axis`, else the channel dim of `order` (NCHW -> 1, NHWC -> last)."""
    if op.has("axis") and op.has("order"):
        raise ArgumentError(f"{op.label()}: give `axis` or `order`, not both")
    if op.has("axis"):
        axis = op.int_arg("axis")
    else:
        order = str(op.arg("order", "NCHW")).upper()
        if order not in ("NCHW", "NHWC"):
            raise ArgumentError(f"{op.label()}: order must be NCHW or NHWC, got '{order}'")
        axis = 1 if order == "NCHW" else ndim - 1
    return canonical_axis(axis, ndim, op)


def split_sizes(op: OpInfo, dim: int, n_out: int, given: list[int] | None) -> list[int]:
    """Sizes of the pieces: from `split` (arg or input), else equal parts."""
    if given is None:
        if dim % n_out:
            raise ArgumentError(f"{op.label()}: cannot split a dim of size {dim} into {n_out} equal parts")
        return [dim // n_out] * n_out
    if len(given) != n_out:
        raise ArgumentError(f"{op.label()}: split {given} has {len(given)} sizes for {n_out} outputs")
    if any(s < 0 for s in given) or sum(given) != dim:
        raise ArgumentError(f"{op.label()}: split {given} must be nonnegative and sum to the dim size {dim}")
    return given


def _split_infer(op: OpInfo, ins: list[TensorInfo]) -> list[TensorInfo]:
    x = ins[0]
    n = len(op.outputs)
    if x.shape is None or len(ins) > 1:
        return [TensorInfo(None, x.dtype)] * n
    axis = split_axis(op, len(x.shape))
    add_axis = op.bool_arg("add_axis")
    dim = x.shape[axis]
    given = op.ints_arg("split") if op.has("split") and op.ints_arg("split") else None
    if dim is None:
        sizes: list[int | None] = list(given) if given is not None else [None] * n
    else:
        try:
            sizes = list(split_sizes(op, dim, n, given))
        except ArgumentError as e:
            raise ShapeInferenceError(str(e)) from e
    out = []
    for s in sizes:
        shape = list(x.shape)
        if add_axis:
            del shape[axis]
        else:
            shape[axis] = s
        out.append(TensorInfo(tuple(shape), x.dtype))
    return out


@register_op(
    "Split",
    inputs=(1, 2),
    outputs=(1, -1),
    args=(
        Arg("split", [], "size of each piece (default: equal pieces)"),
        Arg("axis", 1, "the axis to split (default: the channel dim of `order`)"),
        Arg("order", "NCHW", "NCHW splits axis 1, NHWC the last axis, when `axis` is absent"),
        Arg("add_axis", 0, "pieces have size 1 and lose the axis (inverse of Concat add_axis)"),
    ),
    infer=_split_infer,
    doc="Split X along an axis into as many pieces as there are outputs; the sizes come from the "
    "`split` argument, the optional input 1, or equal parts.",
    input_names=("input", "split"),
)
def split(op: OpInfo) -> Callable[..., Any]:
    static = op.ints_arg("split") if op.has("split") and op.ints_arg("split") else None
    if static is not None and len(op.inputs) > 1:
        raise ArgumentError(f"{op.label()}: give the split sizes as the argument or input 1, not both")
    if op.has("axis") and op.has("order"):
        raise ArgumentError(f"{op.label()}: give `axis` or `order`, not both")
    add_axis = op.bool_arg("add_axis")
    n_out = len(op.outputs)

    def run(x: Any, lengths: Any = None) -> tuple[np.ndarray, ...]:
        x = np.asarray(x)
        if x.ndim == 0:
            raise ArgumentError(f"{op.label()}: cannot split a scalar")
        axis = split_axis(op, x.ndim)
        given = static if lengths is None else [int(v) for v in np.asarray(lengths).reshape(-1)]
        sizes = split_sizes(op, x.shape[axis], n_out, given)
        if add_axis and any(s != 1 for s in sizes):
            raise ArgumentError(f"{op.label()}: add_axis needs pieces of size 1, got {sizes}")
        bounds = np.cumsum([0, *sizes])
        pieces = []
        for lo, hi in zip(bounds[:-1], bounds[1:]):
            piece = np.take(x, np.arange(lo, hi), axis=axis)
            pieces.append(np.squeeze(piece, axis=axis) if add_axis else piece)
        return tuple(pieces)

    return run


# -- Slice ----------------------------------------------------------------------------------------


def slice_bounds(op: OpInfo, shape: tuple[int, ...], starts: list[int], ends: list[int]) -> list[slice]:
    """Caffe2's Slice rules: a negative index i means dim + 1 + i (so -1 is the end), clamped to dim."""
    if len(starts) != len(ends) or len(starts) > len(shape):
        raise ArgumentError(
            f"{op.label()}: starts {starts} and ends {ends} must have one length, at most the rank {len(shape)}"
        )
    out = []
    for i, dim in enumerate(shape):
        if i >= len(starts):
            out.append(slice(0, dim))
            continue
        if dim == 0:
            # Caffe2 takes nothing from an empty dim whatever the bounds say.
            out.append(slice(0, 0))
            continue
        s, e = starts[i], ends[i]
        s = dim + 1 + s if s < 0 else s
        e = dim + 1 + e if e < 0 else e
        s, e = min(s, dim), min(e, dim)
        if s < 0 or e < 0 or e < s:
            raise ArgumentError(
                f"{op.label()}: dim {i} of size {dim}: start {starts[i]} and end {ends[i]} give an invalid range"
            )
        out.append(slice(s, e))
    return out


def _slice_infer(op: OpInfo, ins: list[TensorInfo]) -> list[TensorInfo]:
    x = ins[0]
    if x.shape is None or len(ins) > 1 or any(d is None for d in x.shape):
        return [TensorInfo(None if x.shape is None else (None,) * len(x.shape), x.dtype)]
    shape = tuple(int(d) for d in x.shape)  # type: ignore[arg-type]
    try:
        sl = slice_bounds(op, shape, op.ints_arg("starts"), op.ints_arg("ends"))
    except ArgumentError as e:
        raise ShapeInferenceError(str(e)) from e
    return [x.with_shape([s.stop - s.start for s in sl])]


@register_op(
    "Slice",
    inputs=(1, 3),
    arity=lambda i, o: i != 2,
    arity_doc="starts and ends come as inputs together or as arguments",
    args=(
        Arg("starts", [], "start index per dim (negative i means dim + 1 + i)"),
        Arg("ends", [], "end index per dim (-1 means to the end)"),
    ),
    infer=_slice_infer,
    doc="Take X[starts:ends] per dim; starts/ends come from the arguments or inputs 1 and 2. "
    "Caffe2's rule for negative indices applies: -1 is the end of the dim; bounds past the end are "
    "clamped. (Caffe2 could slice only one dim at a time; asyncnet slices several.)",
    input_names=("X", "starts", "ends"),
    output_names=("Y",),
)
def slice_op(op: OpInfo) -> Callable[..., Any]:
    if len(op.inputs) == 3 and (op.has("starts") or op.has("ends")):
        raise ArgumentError(f"{op.label()}: give starts/ends as arguments or as inputs, not both")
    st, en = op.ints_arg("starts"), op.ints_arg("ends")

    def run(x: Any, starts: Any = None, ends: Any = None) -> tuple[np.ndarray]:
        x = np.asarray(x)
        s = st if starts is None else [int(v) for v in np.asarray(starts).reshape(-1)]
        e = en if ends is None else [int(v) for v in np.asarray(ends).reshape(-1)]
        return (np.array(x[tuple(slice_bounds(op, x.shape, s, e))], copy=True),)

    return run


# -- Tile / NumpyTile / Expand ----------------------------------------------------------------------


def _tile_infer(op: OpInfo, ins: list[TensorInfo]) -> list[TensorInfo]:
    x = ins[0]
    if x.shape is None:
        return [x]
    if len(ins) > 1:
        return [x.with_shape([None] * len(x.shape))]
    axis = canonical_axis(op.int_arg("axis"), len(x.shape), op)
    shape = list(x.shape)
    t = op.int_arg("tiles")
    d = shape[axis]
    shape[axis] = None if d is None else d * t
    return [x.with_shape(shape)]


def _scalar_int(op: OpInfo, v: Any, what: str) -> int:
    a = np.asarray(v)
    if a.size != 1 or a.dtype.kind not in "iu":
        raise ArgumentError(f"{op.label()}: {what} must be one integer, got {a.dtype} of shape {a.shape}")
    return int(a.reshape(-1)[0])


@register_op(
    "Tile",
    inputs=(1, 3),
    args=(Arg("tiles", 1, "number of copies"), Arg("axis", 0, "axis along which to repeat")),
    infer=_tile_infer,
    doc="Repeat X `tiles` times along `axis` (whole blocks, like numpy.tile on that axis); "
    "tiles and axis may come as inputs 1 and 2.",
    input_names=("data", "tiles", "axis"),
    output_names=("tiled_data",),
)
def tile(op: OpInfo) -> Callable[..., Any]:
    tiles_arg, axis_arg = op.int_arg("tiles"), op.int_arg("axis")

    def run(x: Any, tiles: Any = None, axis: Any = None) -> tuple[np.ndarray]:
        x = np.asarray(x)
        t = tiles_arg if tiles is None else _scalar_int(op, tiles, "tiles")
        a = canonical_axis(axis_arg if axis is None else _scalar_int(op, axis, "axis"), x.ndim, op)
        if t < 0:
            raise ArgumentError(f"{op.label()}: tiles must be nonnegative, got {t}")
        reps = [1] * x.ndim
        reps[a] = t
        return (np.tile(x, reps),)

    return run


@register_op(
    "NumpyTile",
    inputs=2,
    infer=lambda op, ins: [ins[0] if ins[0].shape is None else ins[0].with_shape([None] * len(ins[0].shape))],
    doc="numpy.tile(X, repeats) with one repeat count (int64 input 1) per dim of X.",
    input_names=("data", "repeats"),
    output_names=("tiled_data",),
)
def numpy_tile(op: OpInfo) -> Callable[..., Any]:
    def run(x: Any, repeats: Any) -> tuple[np.ndarray]:
        x, r = np.asarray(x), np.asarray(repeats)
        if r.ndim != 1 or r.size != x.ndim or r.dtype.kind not in "iu" or np.any(r < 0):
            raise ArgumentError(
                f"{op.label()}: repeats must be {x.ndim} nonnegative integers, got {r.dtype} {r.tolist()}"
            )
        return (np.tile(x, [int(v) for v in r]),)

    return run


@register_op(
    "Expand",
    inputs=2,
    infer=lambda op, ins: [TensorInfo(None, ins[0].dtype)],
    doc="Broadcast X to `shape` (input 1, int64) with numpy rules in both directions: "
    "the output shape is the broadcast of X's shape and `shape`; a target dim of -1 (or 0) keeps X's dim.",
    input_names=("X", "shape"),
    output_names=("Y",),
)
def expand(op: OpInfo) -> Callable[..., Any]:
    def run(x: Any, shape: Any) -> tuple[np.ndarray]:
        x, s = np.asarray(x), np.asarray(shape)
        if s.ndim != 1 or s.dtype.kind not in "iu":
            raise ArgumentError(f"{op.label()}: shape must be a 1-D integer tensor, got {s.dtype} {s.shape}")
        # A target dim <= 0 (PyTorch's -1) keeps X's dim, as in Caffe2.
        target = tuple(int(v) if v > 0 else 1 for v in s)
        try:
            out_shape = broadcast_shapes(x.shape, target)
        except Exception as e:
            raise ArgumentError(f"{op.label()}: X {x.shape} cannot expand to {s.tolist()}: {e}") from None
        assert out_shape is not None
        return (np.array(np.broadcast_to(x, tuple(int(d) for d in out_shape)), copy=True),)  # type: ignore[arg-type]

    return run
