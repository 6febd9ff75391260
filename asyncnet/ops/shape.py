"""Shape and data movement: Copy, Alias, Reshape, Flatten, FlattenToVec, Transpose, Squeeze, ExpandDims,
Concat, Shape, Size."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from asyncnet.errors import ArgumentError, ShapeInferenceError
from asyncnet.opinfo import OpInfo
from asyncnet.ops._util import canonical_axis, order_arg, prod, prod_known
from asyncnet.registry import register_op
from asyncnet.schema import REQUIRED, Arg, TensorInfo, same_as_input


@register_op("Copy", allow_inplace=[(0, 0)], infer=same_as_input(), doc="Y = a copy of X.")
def copy(op: OpInfo) -> Callable[..., Any]:
    return lambda x: (np.array(x, copy=True),)


def resolve_reshape(op: OpInfo, old: tuple[int, ...], new: list[int]) -> tuple[int, ...]:
    """Caffe2's Reshape rules: 0 copies the input dim, one -1 is inferred.

    For an empty input (Caffe2's rules since it supported them) a 0 is a literal 0 and a -1
    becomes 0.
    """
    total = prod(old)
    if any(d < -1 for d in new):
        raise ArgumentError(f"{op.label()}: shape {new} has an invalid dim {min(new)}")
    if new.count(-1) > 1:
        raise ArgumentError(f"{op.label()}: shape {new} has more than one -1")
    if total == 0:
        out = [0 if d == -1 else d for d in new]
        if prod(out) != 0:
            raise ArgumentError(f"{op.label()}: cannot reshape the empty {old} to {new} (a non-empty shape)")
        return tuple(out)
    out = []
    for i, d in enumerate(new):
        if d == 0:
            if i >= len(old):
                raise ArgumentError(f"{op.label()}: shape {new} copies dim {i} (0) but the input has rank {len(old)}")
            out.append(old[i])
        else:
            out.append(d)
    if -1 in out:
        known = prod(d for d in out if d != -1)
        if known == 0 or total % known:
            raise ArgumentError(f"{op.label()}: cannot reshape {old} ({total} elements) to {new}")
        out[out.index(-1)] = total // known
    if prod(out) != total:
        raise ArgumentError(f"{op.label()}: cannot reshape {old} ({total} elements) to {new}")
    return tuple(out)


def _reshape_infer(op: OpInfo, ins: list[TensorInfo]) -> list[TensorInfo]:
    x = ins[0]
    old_shape = TensorInfo((None if x.shape is None else len(x.shape),), np.dtype(np.int64))
    if len(op.inputs) > 1 or x.shape is None or not op.has("shape"):
        return [TensorInfo(None, x.dtype), old_shape]
    new = op.ints_arg("shape")
    if any(d is None for d in x.shape):
        out = [x.shape[i] if d == 0 and i < len(x.shape) else (None if d == -1 else d) for i, d in enumerate(new)]
        return [TensorInfo(tuple(out), x.dtype), old_shape]
    try:
        shape = resolve_reshape(op, tuple(int(d) for d in x.shape), new)  # type: ignore[arg-type]
    except ArgumentError as e:
        raise ShapeInferenceError(str(e)) from e
    return [TensorInfo(shape, x.dtype), old_shape]


@register_op(
    "Reshape",
    inputs=(1, 2),
    outputs=(1, 2),
    allow_inplace=[(0, 0)],
    args=(Arg("shape", [], "new shape; 0 copies the input dim, -1 is inferred"),),
    infer=_reshape_infer,
    doc="Reshape X to `shape` (or to the values of input 1); output 1 is X's old shape (int64).",
    input_names=("data", "new_shape"),
    output_names=("reshaped", "old_shape"),
)
def reshape(op: OpInfo) -> Callable[..., Any]:
    static = op.ints_arg("shape") if op.has("shape") else None
    if len(op.inputs) == 1 and static is None:
        raise ArgumentError(f"{op.label()}: Reshape needs the `shape` argument or a shape input")
    if len(op.inputs) == 2 and static is not None and static:
        raise ArgumentError(f"{op.label()}: Reshape takes the shape from the argument or from input 1, not both")

    def run(x: Any, shape_in: Any = None) -> tuple[np.ndarray, np.ndarray]:
        x = np.asarray(x)
        new = static if shape_in is None else [int(v) for v in np.asarray(shape_in).reshape(-1)]
        out = x.reshape(resolve_reshape(op, x.shape, list(new or [])))
        return out, np.asarray(x.shape, dtype=np.int64)

    return run


def _flatten_infer(op: OpInfo, ins: list[TensorInfo]) -> list[TensorInfo]:
    x = ins[0]
    if x.shape is None:
        return [TensorInfo(None, x.dtype)]
    axis = canonical_axis(op.int_arg("axis"), len(x.shape) + 1, op) if x.shape else 0
    return [TensorInfo((prod_known(x.shape[:axis]), prod_known(x.shape[axis:])), x.dtype)]


@register_op(
    "Flatten",
    allow_inplace=[(0, 0)],
    args=(Arg("axis", 1, "dims before `axis` form the rows, the rest the columns"),),
    infer=_flatten_infer,
    doc="Flatten X to 2-D: [prod(dims[:axis]), prod(dims[axis:])].",
)
def flatten(op: OpInfo) -> Callable[..., Any]:
    axis_arg = op.int_arg("axis")

    def run(x: np.ndarray) -> tuple[np.ndarray]:
        axis = canonical_axis(axis_arg, x.ndim + 1, op)
        return (x.reshape(prod(x.shape[:axis]), prod(x.shape[axis:])),)

    return run


def concat_axis(op: OpInfo, ndim: int) -> tuple[int, bool]:
    """(axis, add_axis) from `axis`/`order`/`add_axis`."""
    add_axis = op.bool_arg("add_axis", 0)
    if op.has("axis"):
        axis = op.int_arg("axis")
    elif op.has("order"):
        axis = 3 if order_arg(op) == "NHWC" else 1
    else:
        axis = 1
    return canonical_axis(axis, ndim + (1 if add_axis else 0), op), add_axis


def _concat_infer(op: OpInfo, ins: list[TensorInfo]) -> list[TensorInfo]:
    split = TensorInfo((len(ins),), np.dtype(np.int32))
    first = ins[0]
    if any(t.shape is None for t in ins) or first.shape is None:
        return [TensorInfo(None, first.dtype), split]
    axis, add_axis = concat_axis(op, len(first.shape))
    if add_axis:
        return [TensorInfo(first.shape[:axis] + (len(ins),) + first.shape[axis:], first.dtype), split]
    total: int | None = 0
    for t in ins:
        assert t.shape is not None
        if len(t.shape) != len(first.shape):
            raise ShapeInferenceError(f"{op.label()}: inputs have different ranks: {first} vs {t}")
        for i, (a, b) in enumerate(zip(first.shape, t.shape)):
            if i != axis and a is not None and b is not None and a != b:
                raise ShapeInferenceError(f"{op.label()}: inputs differ off the concat axis {axis}: {first} vs {t}")
        total = None if total is None or t.shape[axis] is None else total + t.shape[axis]  # type: ignore[operator]
    return [TensorInfo(first.shape[:axis] + (total,) + first.shape[axis + 1 :], first.dtype), split]


@register_op(
    "Concat",
    inputs=(1, -1),
    outputs=(1, 2),
    args=(
        Arg("axis", 1, "concatenation axis"),
        Arg("order", "NCHW", "NHWC sets axis 3 when `axis` is absent"),
        Arg("add_axis", 0, "stack along a new axis instead"),
    ),
    infer=_concat_infer,
    doc="Concatenate inputs along `axis`; output 1 gives each input's size along it (int32).",
    output_names=("concat_result", "split_info"),
)
def concat(op: OpInfo) -> Callable[..., Any]:
    def run(*xs: Any) -> tuple[np.ndarray, np.ndarray]:
        arrays = [np.asarray(x) for x in xs]
        axis, add_axis = concat_axis(op, arrays[0].ndim)
        if add_axis:
            out = np.stack(arrays, axis=axis)
            sizes = np.ones(len(arrays), dtype=np.int32)
        else:
            out = np.concatenate(arrays, axis=axis)
            sizes = np.asarray([a.shape[axis] for a in arrays], dtype=np.int32)
        return out, sizes

    return run


@register_op(
    "FlattenToVec",
    allow_inplace=[(0, 0)],
    infer=lambda op, ins: [TensorInfo(None if ins[0].shape is None else (prod_known(ins[0].shape),), ins[0].dtype)],
    doc="Flatten X to 1-D.",
)
def flatten_to_vec(op: OpInfo) -> Callable[..., Any]:
    return lambda x: (np.asarray(x).reshape(-1),)


def _alias_factory(op: OpInfo) -> Callable[..., Any]:
    # The output is the very same object: an alias, as in Caffe2 (no copy).
    return lambda x: (x,)


for _name, _doc, _args in (
    ("Alias", "Y is X itself (no copy).", ()),
    (
        "AliasWithName",
        "Y is X itself (no copy); the arguments only label the blob for graph rewrites.",
        (Arg("name", "", "a label"), Arg("is_backward", 0, "whether this marks a backward blob")),
    ),
    ("EnsureDense", "Y is X (asyncnet tensors are always dense).", ()),
):
    register_op(_name, allow_inplace=[(0, 0)], args=_args, infer=same_as_input(), doc=_doc)(_alias_factory)


@register_op(
    "EnsureCPUOutput",
    allow_inplace=[(0, 0)],
    infer=same_as_input(),
    doc="Y = a copy of X on the CPU (every asyncnet tensor already is).",
)
def ensure_cpu_output(op: OpInfo) -> Callable[..., Any]:
    return lambda x: (np.array(x, copy=True),)


def _perm(op: OpInfo, ndim: int) -> list[int]:
    axes = op.ints_arg("axes") if op.has("axes") else []
    if not axes:
        return list(range(ndim))[::-1]
    canon = [canonical_axis(a, ndim, op, "axes") for a in axes]
    if len(axes) != ndim or sorted(canon) != list(range(ndim)):
        raise ArgumentError(f"{op.label()}: axes {axes} are not a permutation of the {ndim} dims")
    return canon


def _transpose_infer(op: OpInfo, ins: list[TensorInfo]) -> list[TensorInfo]:
    x = ins[0]
    if x.shape is None:
        return [x]
    return [x.with_shape([x.shape[a] for a in _perm(op, len(x.shape))])]


@register_op(
    "Transpose",
    args=(Arg("axes", [], "the permutation (default: reverse the dims)"),),
    infer=_transpose_infer,
    doc="Permute the dims of X by `axes` (reversed by default).",
    input_names=("X",),
    output_names=("Y",),
)
def transpose(op: OpInfo) -> Callable[..., Any]:
    def run(x: Any) -> tuple[np.ndarray]:
        x = np.asarray(x)
        return (np.ascontiguousarray(np.transpose(x, _perm(op, x.ndim))),)

    return run


def _squeeze_dims(op: OpInfo, shape: tuple[Any, ...]) -> list[int]:
    if not op.ints_arg("dims"):
        raise ArgumentError(f"{op.label()}: Squeeze needs a non-empty `dims`")
    dims = sorted({canonical_axis(d, len(shape), op, "dims") for d in op.ints_arg("dims")})
    for d in dims:
        if shape[d] is not None and shape[d] != 1:
            raise ArgumentError(f"{op.label()}: cannot squeeze dim {d} of size {shape[d]} in shape {shape}")
    return dims


def _squeeze_infer(op: OpInfo, ins: list[TensorInfo]) -> list[TensorInfo]:
    x = ins[0]
    if x.shape is None:
        return [x]
    try:
        dims = _squeeze_dims(op, x.shape)
    except ArgumentError as e:
        raise ShapeInferenceError(str(e)) from e
    return [x.with_shape([d for i, d in enumerate(x.shape) if i not in dims])]


@register_op(
    "Squeeze",
    allow_inplace=[(0, 0)],
    args=(Arg("dims", REQUIRED, "the size-1 dims to drop"),),
    infer=_squeeze_infer,
    doc="Drop the size-1 dims listed in `dims`.",
    input_names=("data",),
    output_names=("squeezed",),
)
def squeeze(op: OpInfo) -> Callable[..., Any]:
    if not op.ints_arg("dims"):
        raise ArgumentError(f"{op.label()}: Squeeze needs a non-empty `dims`")

    def run(x: Any) -> tuple[np.ndarray]:
        x = np.asarray(x)
        dims = _squeeze_dims(op, x.shape)
        return (x.reshape([d for i, d in enumerate(x.shape) if i not in dims]),)

    return run


def _expand_dims(op: OpInfo, shape: tuple[Any, ...]) -> tuple[Any, ...]:
    dims = op.ints_arg("dims")
    if not dims:
        raise ArgumentError(f"{op.label()}: ExpandDims needs a non-empty `dims`")
    out = list(shape)
    for d in sorted(set(dims)):
        if not 0 <= d <= len(out):
            raise ArgumentError(f"{op.label()}: dim {d} is out of range for inserting into a tensor of rank {len(out)}")
        out.insert(d, 1)
    return tuple(out)


@register_op(
    "ExpandDims",
    allow_inplace=[(0, 0)],
    args=(Arg("dims", REQUIRED, "positions (in the output) of the new size-1 dims"),),
    infer=lambda op, ins: [ins[0] if ins[0].shape is None else ins[0].with_shape(_expand_dims(op, ins[0].shape))],
    doc="Insert size-1 dims at the positions listed in `dims` (sorted, counted in the output).",
    input_names=("data",),
    output_names=("expanded",),
)
def expand_dims(op: OpInfo) -> Callable[..., Any]:
    op.ints_arg("dims")

    def run(x: Any) -> tuple[np.ndarray]:
        x = np.asarray(x)
        return (x.reshape(_expand_dims(op, x.shape)),)

    return run


def _shape_infer(op: OpInfo, ins: list[TensorInfo]) -> list[TensorInfo]:
    x = ins[0]
    n = (
        len(op.ints_arg("axes"))
        if op.has("axes") and op.ints_arg("axes")
        else (None if x.shape is None else len(x.shape))
    )
    return [TensorInfo((n,), np.dtype(np.int64))]


@register_op(
    "Shape",
    args=(Arg("axes", [], "only report these dims"),),
    infer=_shape_infer,
    doc="The shape of X as a 1-D int64 tensor (only the dims in `axes` when given).",
)
def shape_op(op: OpInfo) -> Callable[..., Any]:
    axes = op.ints_arg("axes") if op.has("axes") else []

    def run(x: Any) -> tuple[np.ndarray]:
        shape = np.shape(x)
        if axes:
            return (np.asarray([shape[canonical_axis(a, len(shape), op, "axes")] for a in axes], dtype=np.int64),)
        return (np.asarray(shape, dtype=np.int64),)

    return run


@register_op(
    "Size",
    infer=lambda op, ins: [TensorInfo((), np.dtype(np.int64))],
    doc="The number of elements of X, as an int64 scalar.",
)
def size_op(op: OpInfo) -> Callable[..., Any]:
    return lambda x: (np.asarray(np.size(x), dtype=np.int64),)
