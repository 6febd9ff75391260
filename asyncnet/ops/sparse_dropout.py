"""Dropout of sparse id lists: SparseDropoutWithReplacement drops whole lists, replacing each dropped
list by the single id `replacement_value`; SparseItemwiseDropoutWithReplacement replaces single ids."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from asyncnet.errors import ArgumentError, TensorError
from asyncnet.opinfo import OpInfo
from asyncnet.ops._util import info, rng_for
from asyncnet.registry import register_op
from asyncnet.schema import Arg

_ARGS = (
    Arg("ratio", 0.0, "probability of dropping (in [0, 1])"),
    Arg("replacement_value", 0, "the id written in place of what is dropped"),
)


def _setup(op: OpInfo) -> tuple[float, int, np.random.Generator]:
    ratio = op.float_arg("ratio")
    if not 0.0 <= ratio <= 1.0:
        raise ArgumentError(f"{op.label()}: ratio must be in [0, 1], got {ratio}")
    return ratio, op.int_arg("replacement_value"), rng_for(op)


def _inputs(op: OpInfo, x: Any, lengths: Any) -> tuple[np.ndarray, np.ndarray]:
    ids = np.asarray(x).reshape(-1)
    lens = np.asarray(lengths).reshape(-1).astype(np.int64)
    if (lens < 0).any() or int(lens.sum()) != ids.size:
        raise TensorError(f"{op.label()}: Lengths {lens.tolist()} must be >= 0 and sum to the {ids.size} ids")
    return ids, lens


@register_op(
    "SparseDropoutWithReplacement",
    inputs=2,
    outputs=2,
    args=_ARGS,
    infer=lambda op, ins: [info((None,), ins[0].dtype), info(ins[1].shape, np.int32)],
    doc="Each list (given by Lengths) is dropped with probability `ratio`: it becomes the single id "
    "replacement_value (length 1), even an empty list. Kept lists are copied.",
    input_names=("X", "Lengths"),
    output_names=("Y", "OutputLengths"),
)
def sparse_dropout_with_replacement(op: OpInfo) -> Callable[..., Any]:
    ratio, value, rng = _setup(op)

    def run(x: Any, lengths: Any) -> tuple[np.ndarray, np.ndarray]:
        ids, lens = _inputs(op, x, lengths)
        dropped = rng.random(lens.size) < ratio
        parts, out_lens, start = [], np.empty(lens.size, np.int32), 0
        for i, n in enumerate(lens.tolist()):
            if dropped[i]:
                parts.append(np.array([value], ids.dtype))
                out_lens[i] = 1
            else:
                parts.append(ids[start : start + n])
                out_lens[i] = n
            start += n
        y = np.concatenate(parts) if parts else ids[:0]
        return y.astype(ids.dtype, copy=False), out_lens

    return run


@register_op(
    "SparseItemwiseDropoutWithReplacement",
    inputs=2,
    outputs=2,
    args=_ARGS,
    infer=lambda op, ins: [ins[0], info(ins[1].shape, np.int32)],
    doc="Each id is replaced by replacement_value with probability `ratio`; the lengths do not change.",
    input_names=("X", "Lengths"),
    output_names=("Y", "OutputLengths"),
)
def sparse_itemwise_dropout_with_replacement(op: OpInfo) -> Callable[..., Any]:
    ratio, value, rng = _setup(op)

    def run(x: Any, lengths: Any) -> tuple[np.ndarray, np.ndarray]:
        ids, lens = _inputs(op, x, lengths)
        y = np.where(rng.random(ids.size) < ratio, np.array(value, ids.dtype), ids)
        return y.astype(ids.dtype, copy=False), lens.astype(np.int32)

    return run
