"""InferenceLSTM: a multi-layer (optionally bidirectional) LSTM forward pass with PyTorch's weight layout,
as Caffe2's operator (inputs: X, h0, c0, then per layer and direction w_ih, w_hh[, b_ih, b_hh])."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from asyncnet.errors import ArgumentError, TensorError
from asyncnet.opinfo import OpInfo
from asyncnet.ops._util import info
from asyncnet.registry import register_op
from asyncnet.schema import Arg, TensorInfo


def _sigmoid(v: np.ndarray) -> np.ndarray:
    return np.asarray(0.5 * (1.0 + np.tanh(0.5 * v)))


def lstm_direction(
    x: np.ndarray, h: np.ndarray, c: np.ndarray, params: list[np.ndarray], reverse: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One layer, one direction over x (T, B, D): (outputs (T, B, H), last h, last c). Gates i, f, g, o."""
    w_ih, w_hh = params[0], params[1]
    bias = params[2] + params[3] if len(params) == 4 else 0.0
    pre = x @ w_ih.T + bias
    steps = range(x.shape[0] - 1, -1, -1) if reverse else range(x.shape[0])
    out = np.zeros((x.shape[0], x.shape[1], h.shape[-1]), x.dtype)
    for t in steps:
        gates = pre[t] + h @ w_hh.T
        i, f, g, o = np.split(gates, 4, axis=-1)
        c = _sigmoid(f) * c + _sigmoid(i) * np.tanh(g)
        h = _sigmoid(o) * np.tanh(c)
        out[t] = h
    return out, h, c


def _infer(op: OpInfo, ins: list[TensorInfo]) -> list[TensorInfo]:
    h = ins[1].shape
    return [TensorInfo(None, ins[0].dtype), info(h, ins[1].dtype), info(h, ins[2].dtype)]


@register_op(
    "InferenceLSTM",
    inputs=(5, -1),
    outputs=3,
    args=(
        Arg("num_layers", 1, "stacked layers"),
        Arg("has_biases", 1, "each layer and direction has b_ih and b_hh"),
        Arg("batch_first", 0, "X and the output are (batch, time, features)"),
        Arg("bidirectional", 0, "a second, time-reversed direction per layer (outputs concatenated)"),
    ),
    infer=_infer,
    doc="LSTM inference with PyTorch's layout: X (T, B, D) (or batch-first), h0 and c0 (layers * directions, "
    "B, H), then w_ih (4H, in), w_hh (4H, H)[, b_ih, b_hh] per layer and direction, gates ordered i, f, g, o. "
    "Outputs: the last layer's outputs (T, B, directions * H), the final h and the final c of every layer "
    "and direction.",
    output_names=("output", "hidden", "cell"),
)
def inference_lstm(op: OpInfo) -> Callable[..., Any]:
    layers, biases = op.int_arg("num_layers"), op.bool_arg("has_biases")
    batch_first, dirs = op.bool_arg("batch_first"), 2 if op.bool_arg("bidirectional") else 1
    per = 4 if biases else 2
    want = 3 + layers * dirs * per
    if layers < 1 or len(op.inputs) != want:
        raise ArgumentError(
            f"{op.label()}: {layers} layer(s), {dirs} direction(s), biases={int(biases)} need {want} inputs, "
            f"got {len(op.inputs)}"
        )

    def run(x: Any, h0: Any, c0: Any, *params: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        seq = np.asarray(x)
        if seq.ndim != 3:
            raise TensorError(f"{op.label()}: input must be 3-D, got {seq.shape}")
        if batch_first:
            seq = seq.transpose(1, 0, 2)
        h_all, c_all = np.asarray(h0), np.asarray(c0)
        if h_all.shape != c_all.shape or h_all.ndim != 3 or h_all.shape[:2] != (layers * dirs, seq.shape[1]):
            raise TensorError(f"{op.label()}: h0/c0 must be ({layers * dirs}, {seq.shape[1]}, H), got {h_all.shape}")
        ws = [np.asarray(p) for p in params]
        hs, cs = [], []
        for layer in range(layers):
            outs = []
            for d in range(dirs):
                k = layer * dirs + d
                o, h, c = lstm_direction(seq, h_all[k], c_all[k], ws[k * per : (k + 1) * per], reverse=d == 1)
                outs.append(o)
                hs.append(h)
                cs.append(c)
            seq = np.concatenate(outs, axis=-1)
        out = seq.transpose(1, 0, 2) if batch_first else seq
        dtype = np.asarray(x).dtype
        return out.astype(dtype), np.stack(hs).astype(dtype), np.stack(cs).astype(dtype)

    return run
