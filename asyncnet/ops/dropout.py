"""Dropout (identity in test mode)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from asyncnet.errors import ArgumentError
from asyncnet.opinfo import OpInfo
from asyncnet.ops._util import rng_for
from asyncnet.registry import register_op
from asyncnet.schema import Arg, TensorInfo


def _dropout_infer(op: OpInfo, ins: list[TensorInfo]) -> list[TensorInfo]:
    return [ins[0], TensorInfo(ins[0].shape, np.dtype(np.bool_))][: len(op.outputs)]


@register_op(
    "Dropout",
    inputs=1,
    outputs=(1, 2),
    allow_inplace=[(0, 0)],
    args=(
        Arg("ratio", 0.5, "probability of zeroing each element in training"),
        Arg("is_test", 0, "1: Y = X (no mask is drawn)"),
    ),
    infer=_dropout_infer,
    doc=(
        "Training: keep each element with probability 1 - ratio, Y = X * mask / (1 - ratio), output 1 is the "
        "boolean mask. Test mode (is_test=1): Y = X."
    ),
    input_names=("X",),
    output_names=("Y", "mask"),
)
def dropout(op: OpInfo) -> Callable[..., Any]:
    ratio = op.float_arg("ratio")
    if not 0.0 <= ratio <= 1.0:
        raise ArgumentError(f"{op.label()}: ratio must be in [0, 1], got {ratio}")
    is_test = op.bool_arg("is_test")
    if not is_test and len(op.outputs) != 2:
        raise ArgumentError(f"{op.label()}: training mode (is_test=0) needs 2 outputs (Y, mask)")
    rng = rng_for(op)
    with_mask = len(op.outputs) > 1

    def run(x: np.ndarray) -> tuple[np.ndarray, ...]:
        if is_test:
            # A copy: Y must not alias X when they are different blobs.
            return (x.copy(), np.ones(x.shape, dtype=np.bool_)) if with_mask else (x.copy(),)
        mask = rng.random(x.shape) >= ratio
        if ratio >= 1.0:
            return (np.zeros_like(x), mask)
        scale = np.asarray(1.0 / (1.0 - ratio), dtype=x.dtype if np.issubdtype(x.dtype, np.inexact) else np.float64)
        y = np.where(mask, x * scale, 0).astype(x.dtype, copy=False)
        return (y, mask)

    return run
