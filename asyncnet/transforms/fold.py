"""Folding per-channel affine ops into the weights of the Conv or FC that feeds them.

``SpatialBN(is_test=1)``, ``AffineChannel`` and ``Mul``/``Add`` by a constant that varies only along
the channel axis compute ``Y = X * alpha + beta`` per output channel. After a Conv or FC whose output
only they read, ``W' = W * alpha`` (per output channel) and ``b' = b * alpha + beta`` give the same
result with one op less. The folded weights are new blobs: a parameter another op still reads is
never changed. Conv groups (depthwise included) need no care: the filter's first dim is the output
channel in both orders.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from asyncnet.transforms._graph import Graph

CONV_TYPES = frozenset({"Conv", "Conv1D", "Conv2D", "Conv3D"})
FOLD_NAMES = {
    "SpatialBN": "fold_bn",
    "AffineChannel": "fold_affine_channel",
    "Mul": "fold_mul",
    "Add": "fold_add",
}


def _producer_layout(g: Graph, i: int) -> tuple[int, int, int] | None:
    """(output rank, channel axis, channels) of Conv/FC op ``i`` with constant weights, else None."""
    op = g.ops[i]
    if len(op.output) != 1 or not all(g.is_const(n) for n in op.input[1:]):
        return None
    args = g.args(i)
    w = g.params[op.input[1]]
    if op.type in CONV_TYPES:
        if w.ndim < 3 or w.dtype.kind != "f":
            return None
        order = args.get("order", "NCHW")
        order = order.decode() if isinstance(order, bytes) else order
        if order not in ("NCHW", "NHWC"):
            return None
        return w.ndim, 1 if order == "NCHW" else w.ndim - 1, int(w.shape[0])
    if op.type == "FC":
        axis, axis_w = args.get("axis", 1), args.get("axis_w", 1)
        if not isinstance(axis, int) or not isinstance(axis_w, int) or axis < 1 or not 1 <= axis_w < max(w.ndim, 2):
            return None
        if w.dtype.kind != "f":
            return None
        n = int(np.prod(w.shape[:axis_w]))
        return axis + 1, axis, n
    return None


def _channel_vector(value: np.ndarray, shape: list[int], axis: int, m: int) -> np.ndarray | None:
    """``value`` broadcast to ``shape`` as a length-``m`` per-channel vector, if only ``axis`` varies."""
    if len(value.shape) != len(shape):
        return None
    for d, size in enumerate(value.shape):
        if d != axis and size != 1:
            return None
    if value.shape[axis] not in (1, m):
        return None
    flat = value.reshape(-1).astype(np.float64)
    return np.broadcast_to(flat, (m,)) if flat.size == 1 else flat


def _binary_const(g: Graph, j: int, y: str, rank: int, axis: int, m: int, w_dtype: Any) -> np.ndarray | None:
    """The per-channel constant of Mul/Add op ``j`` applied to ``y``, else None."""
    op = g.ops[j]
    args = g.args(j)
    if len(op.input) != 2 or y == op.input[0] == op.input[1]:
        return None
    legacy = bool(args.get("broadcast", 0))
    if op.input[0] == y:
        c = op.input[1]
    elif op.input[1] == y and not legacy:
        c = op.input[0]
    else:
        return None
    if not g.is_const(c):
        return None
    value = g.params[c]
    if value.dtype != w_dtype or value.ndim > rank:
        return None
    if legacy:
        ax = args.get("axis", -1)
        if not isinstance(ax, int):
            return None
        start = rank - value.ndim if ax == -1 else ax
        if start < 0 or start + value.ndim > rank:
            return None
        full = [1] * start + list(value.shape) + [1] * (rank - start - value.ndim)
    else:
        full = [1] * (rank - value.ndim) + list(value.shape)
    return _channel_vector(value.reshape(full), full, axis, m)


def _affine_of(g: Graph, j: int, y: str, layout: tuple[int, int, int], w_dtype: Any) -> tuple[Any, Any] | None:
    """(alpha, beta) per channel if op ``j`` is a foldable affine op on ``y``, else None."""
    rank, axis, m = layout
    op = g.ops[j]
    args = g.args(j)
    if op.type in ("SpatialBN", "AffineChannel"):
        if len(op.output) != 1 or op.input[0] != y or y in op.input[1:]:
            return None
        if op.type == "SpatialBN" and (not args.get("is_test", 0) or len(op.input) != 5):
            return None
        order = args.get("order", "NCHW")
        order = order.decode() if isinstance(order, bytes) else order
        if (1 if order == "NCHW" else rank - 1) != axis or not all(g.is_const(n) for n in op.input[1:]):
            return None
        vecs = [g.params[n].astype(np.float64).reshape(-1) for n in op.input[1:]]
        if any(v.size != m for v in vecs):
            return None
        if op.type == "AffineChannel":
            return vecs[0], vecs[1]
        eps = float(args.get("epsilon", 1e-5))
        scale, bias, mean, var = vecs
        alpha = scale / np.sqrt(var + eps)
        return alpha, bias - alpha * mean
    if op.type in ("Mul", "Add"):
        vec = _binary_const(g, j, y, rank, axis, m, w_dtype)
        if vec is None:
            return None
        return (vec, np.zeros(m)) if op.type == "Mul" else (np.ones(m), vec)
    return None


def _try_fold(g: Graph, i: int) -> bool:
    layout = _producer_layout(g, i)
    if layout is None:
        return False
    op = g.ops[i]
    y = op.output[0]
    readers = g.value_readers(i, y)
    if len(readers) != 1:
        return False
    j = readers[0]
    consumer = g.ops[j]
    if consumer.type not in FOLD_NAMES or len(consumer.output) != 1 or consumer.control_input:
        return False
    z = consumer.output[0]
    if z != y and y in g.external_outputs and g.is_final_write(i, y):
        return False
    if z != y and (g.touched_between(z, i, j) or z in op.input or z in g.external_inputs):
        return False
    w_name = op.input[1]
    w = g.params[w_name]
    ab = _affine_of(g, j, y, layout, w.dtype)
    if ab is None:
        return False
    alpha, beta = ab
    m = layout[2]
    b_old = g.params[op.input[2]].astype(np.float64).reshape(-1) if len(op.input) > 2 else np.zeros(m)
    if b_old.size != m:
        return False
    w_new = (w.astype(np.float64).reshape(m, -1) * alpha.reshape(m, 1)).reshape(w.shape).astype(w.dtype)
    b_dtype = g.params[op.input[2]].dtype if len(op.input) > 2 else w.dtype
    b_new = (b_old * alpha + beta).astype(b_dtype)
    if len(op.input) > 2:
        b_new = b_new.reshape(g.params[op.input[2]].shape)
    op.input[1] = g.add_param(f"{w_name}_folded", w_new)
    b_base = f"{op.input[2]}_folded" if len(op.input) > 2 else f"{w_name}_bias_folded"
    b_name = g.add_param(b_base, b_new)
    if len(op.input) > 2:
        op.input[2] = b_name
    else:
        op.input.append(b_name)
    op.output[0] = z
    labels = [g.labels[i], g.labels[j]]
    g.labels[i] = f"{g.labels[i]} (+{consumer.type})"
    g.remove_op(j)
    g.record(f"{FOLD_NAMES[consumer.type]}_into_{op.type.lower()}", labels, f"{op.type} writes '{z}'")
    return True


def fold_affine(g: Graph) -> None:
    """Fold SpatialBN / AffineChannel / constant Mul / constant Add into the preceding Conv or FC."""
    i = 0
    while i < len(g.ops):
        if g.ops[i].type in CONV_TYPES or g.ops[i].type == "FC":
            if _try_fold(g, i):
                continue  # the same op may absorb the next affine op too
        i += 1
