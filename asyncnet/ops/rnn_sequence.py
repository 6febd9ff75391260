"""PackRNNSequence and UnpackRNNSequence: between concatenated variable-length sequences (sum(lengths), ...)
and a zero-padded time-major batch (T, N, ...); each is the other's gradient, as in Caffe2."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from asyncnet.errors import TensorError
from asyncnet.opinfo import OpInfo
from asyncnet.ops._util import info
from asyncnet.proto import caffe2_pb2 as pb
from asyncnet.registry import register_op
from asyncnet.training.gradients import GradientContext, GradientSpec, register_gradient


def _lengths(op: OpInfo, lengths: Any) -> np.ndarray:
    lens = np.asarray(lengths).reshape(-1).astype(np.int64)
    if (lens < 0).any():
        raise TensorError(f"{op.label()}: lengths must be >= 0, got {lens.tolist()}")
    return lens


def _positions(lens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(time step, sequence) of every item of the concatenated sequences."""
    seq = np.repeat(np.arange(lens.size), lens)
    starts = np.concatenate([[0], np.cumsum(lens)[:-1]]) if lens.size else np.zeros(0, np.int64)
    step = np.arange(seq.size) - starts[seq] if seq.size else np.zeros(0, np.int64)
    return step, seq


@register_op(
    "PackRNNSequence",
    inputs=2,
    infer=lambda op, ins: [
        info(
            None if ins[0].shape is None else (None, ins[1].shape[0] if ins[1].shape else None, *ins[0].shape[1:]),
            ins[0].dtype,
        )
    ],
    doc="Pad concatenated sequences VALUES (sum(LENGTHS), ...) into a time-major batch (max(LENGTHS), N, ...), "
    "zeros after each sequence's end.",
    input_names=("values", "lengths"),
    output_names=("packed",),
)
def pack_rnn_sequence(op: OpInfo) -> Callable[..., Any]:
    def run(values: Any, lengths: Any) -> tuple[np.ndarray]:
        v, lens = np.asarray(values), _lengths(op, lengths)
        if v.ndim == 0 or v.shape[0] != int(lens.sum()):
            raise TensorError(f"{op.label()}: values must have sum(lengths) = {int(lens.sum())} rows, got {v.shape}")
        steps = int(lens.max()) if lens.size else 0
        out = np.zeros((steps, lens.size, *v.shape[1:]), v.dtype)
        step, seq = _positions(lens)
        out[step, seq] = v
        return (out,)

    return run


@register_op(
    "UnpackRNNSequence",
    inputs=2,
    infer=lambda op, ins: [info(None if ins[0].shape is None else (None, *ins[0].shape[2:]), ins[0].dtype)],
    doc="The inverse of PackRNNSequence: the first LENGTHS[n] steps of every sequence n of a time-major batch "
    "(T, N, ...), concatenated.",
    input_names=("packed", "lengths"),
    output_names=("values",),
)
def unpack_rnn_sequence(op: OpInfo) -> Callable[..., Any]:
    def run(packed: Any, lengths: Any) -> tuple[np.ndarray]:
        p, lens = np.asarray(packed), _lengths(op, lengths)
        if p.ndim < 2 or p.shape[1] != lens.size or (lens.size and p.shape[0] < lens.max()):
            raise TensorError(f"{op.label()}: packed must be (>= max(lengths), {lens.size}, ...), got {p.shape}")
        step, seq = _positions(lens)
        return (np.ascontiguousarray(p[step, seq]).reshape(int(lens.sum()), *p.shape[2:]),)

    return run


def _other(op_type: str) -> None:
    grad_type = "UnpackRNNSequence" if op_type == "PackRNNSequence" else "PackRNNSequence"

    @register_gradient(op_type)
    def maker(op: pb.OperatorDef, g_out: list[str | None]) -> GradientSpec:
        g = GradientContext(op, g_out)
        return g.spec([g.op_def(grad_type, [g.GO(0), g.I(1)], [g.GI(0)])])


_other("PackRNNSequence")
_other("UnpackRNNSequence")
