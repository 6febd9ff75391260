"""APMeter: average precision per class over a sliding buffer of the last predictions seen."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from asyncnet.errors import ArgumentError, TensorError
from asyncnet.opinfo import OpInfo
from asyncnet.ops._util import info
from asyncnet.registry import register_op
from asyncnet.schema import Arg


def average_precision(scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per column: mean over the positives of the precision at each positive's rank (best score first)."""
    n, d = scores.shape
    ap = np.zeros(d, np.float32)
    ranks = np.arange(1, n + 1, dtype=np.float32)
    for k in range(d):
        order = np.argsort(-scores[:, k], kind="stable")
        truth = labels[order, k].astype(np.float32)
        precision = np.cumsum(truth) / ranks
        ap[k] = precision[truth > 0].sum() / max(1.0, float(truth.sum()))
    return ap


@register_op(
    "APMeter",
    inputs=2,
    args=(Arg("buffer_size", 1000, "rows of (predictions, labels) kept across runs"),),
    infer=lambda op, ins: [info(None if ins[0].shape is None else (ins[0].shape[-1],), np.float32)],
    doc="Average precision per class (column) of the last `buffer_size` rows of predictions (N, D) and 0/1 "
    "labels (N, D) seen across runs of this op.",
    input_names=("predictions", "labels"),
    output_names=("AP",),
)
def apmeter(op: OpInfo) -> Callable[..., Any]:
    size = op.int_arg("buffer_size")
    if size <= 0:
        raise ArgumentError(f"{op.label()}: buffer_size must be positive, got {size}")
    state: dict[str, np.ndarray] = {}

    def run(predictions: Any, labels: Any) -> tuple[np.ndarray]:
        p, t = np.asarray(predictions, np.float32), np.asarray(labels)
        if p.ndim != 2 or t.shape != p.shape:
            raise TensorError(f"{op.label()}: predictions and labels must both be (N, D), got {p.shape}, {t.shape}")
        if "p" in state and state["p"].shape[1] != p.shape[1]:
            raise TensorError(f"{op.label()}: {p.shape[1]} classes, earlier runs had {state['p'].shape[1]}")
        state["p"] = np.concatenate([state.get("p", p[:0]), p])[-size:]
        state["t"] = np.concatenate([state.get("t", t[:0]), t])[-size:]
        return (average_precision(state["p"], state["t"]),)

    return run
