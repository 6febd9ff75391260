"""Sampling by weights: WeightedSample (one index per row) and WeightedMultiSampling (many from one
distribution); an index is drawn with probability proportional to its weight."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from asyncnet.errors import ArgumentError, TensorError
from asyncnet.opinfo import OpInfo
from asyncnet.ops._util import info, rng_for
from asyncnet.registry import register_op
from asyncnet.schema import Arg


def draw(cum: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Indices j with cum[j - 1] <= u < cum[j] (cum: running sums of the weights)."""
    return np.minimum(np.searchsorted(cum, u, side="right"), cum.size - 1).astype(np.int32)


@register_op(
    "WeightedSample",
    inputs=(1, 2),
    outputs=(1, 2),
    arity=lambda i, o: i == o,
    arity_doc="values in, sampled values out",
    infer=lambda op, ins: (
        [info(None if ins[0].shape is None else ins[0].shape[:1], np.int32)]
        + [info(None if ins[0].shape is None else ins[0].shape[:1], np.float32)] * (len(op.outputs) - 1)
    ),
    doc="For every row of WEIGHTS (batch, n), draw one index with probability weight / row sum (int32); "
    "with VALUES (batch, n) also output the value at that index.",
    input_names=("weights", "values"),
    output_names=("sample_indices", "sample_values"),
)
def weighted_sample(op: OpInfo) -> Callable[..., Any]:
    rng = rng_for(op)

    def run(weights: Any, values: Any = None) -> tuple[np.ndarray, ...]:
        w = np.asarray(weights, np.float32)
        if w.ndim != 2:
            raise TensorError(f"{op.label()}: weights must be (batch, n), got {w.shape}")
        if values is not None and np.shape(values) != w.shape:
            raise TensorError(f"{op.label()}: values {np.shape(values)} must match weights {w.shape}")
        if w.size == 0:
            idx = np.zeros(w.shape[0] if w.shape[1] else 0, np.int32)
            return (idx,) + ((np.zeros(idx.size, np.float32),) if values is not None else ())
        cum = np.cumsum(w.astype(np.float64), axis=1)
        u = rng.random(w.shape[0]) * cum[:, -1]
        idx = np.array([draw(cum[r], u[r : r + 1])[0] for r in range(w.shape[0])], np.int32)
        if values is None:
            return (idx,)
        return idx, np.asarray(values, np.float32)[np.arange(w.shape[0]), idx]

    return run


@register_op(
    "WeightedMultiSampling",
    inputs=(1, 2),
    args=(Arg("num_samples", 0, "how many indices to draw (or give input 1, whose size is used)"),),
    infer=lambda op, ins: [info((None if len(ins) > 1 else op.int_arg("num_samples"),), np.int32)],
    doc="Draw num_samples indices (int32) from the 1-D WEIGHTS, each with probability weight / sum; empty "
    "weights give no samples.",
    input_names=("weights", "shape_tensor"),
    output_names=("sample_indices",),
)
def weighted_multi_sampling(op: OpInfo) -> Callable[..., Any]:
    count = op.int_arg("num_samples")
    if count < 0:
        raise ArgumentError(f"{op.label()}: num_samples must be >= 0, got {count}")
    rng = rng_for(op)

    def run(weights: Any, shape: Any = None) -> tuple[np.ndarray]:
        w = np.asarray(weights, np.float64).reshape(-1)
        n = int(np.size(shape)) if shape is not None else count
        if w.size == 0:
            return (np.zeros(0, np.int32),)
        cum = np.cumsum(w)
        return (draw(cum, rng.random(n) * cum[-1]),)

    return run
