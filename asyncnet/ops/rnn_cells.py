"""Recurrent cells: LSTMUnit, GRUUnit and their gradients (Caffe2's lstm_unit_op / gru_unit_op).

Shapes are Caffe2's step-net shapes: states ``(1, N, D)``, gates ``(1, N, 4D)`` (LSTM, order
input, forget, output, cell candidate) or ``(1, N, 3D)`` (GRU, order reset, update, output).
With ``sequence_lengths`` (default true) input 3 holds int32 lengths ``(N,)``; the timestep blob
(an int32 tensor whose first value is t) follows. Rows with ``t >= length`` copy their previous
state (or zero it with ``drop_states``).

Caffe2 computed its sigmoid and tanh (``2 sigmoid(2x) - 1``) in double precision and stored
floats; these kernels do the same.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from asyncnet.errors import TensorError
from asyncnet.opinfo import OpInfo
from asyncnet.proto import caffe2_pb2 as pb
from asyncnet.registry import register_op
from asyncnet.schema import Arg, TensorInfo
from asyncnet.training.gradients import GradientContext, GradientSpec, register_gradient


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return np.asarray(1.0 / (1.0 + np.exp(-x)))


def _tanh(x: np.ndarray) -> np.ndarray:
    return 2.0 * _sigmoid(2.0 * x) - 1.0


def _flag(op: OpInfo, name: str, default: bool) -> bool:
    return bool(op.arg(name, default))


def _valid_rows(op: OpInfo, n: int, lengths: Any, timestep: Any) -> np.ndarray | None:
    """(N, 1) bool mask of rows still inside their sequence at this timestep (None: all rows)."""
    t = int(np.asarray(timestep).reshape(-1)[0])
    if lengths is None:
        return None
    lens = np.asarray(lengths).reshape(-1)
    if lens.shape[0] != n:
        raise TensorError(f"{op.label()}: seq_lengths has {lens.shape[0]} entries, expected the batch size {n}")
    return (t < lens).reshape(n, 1)


def _split_inputs(op: OpInfo, ins: tuple[Any, ...], n_state: int) -> tuple[list[np.ndarray], Any, Any, list[Any]]:
    """(state inputs + gates, seq lengths or None, timestep, the rest) from a cell op's inputs."""
    k = n_state + 1
    with_lengths = _flag(op, "sequence_lengths", True)
    lengths = ins[k] if with_lengths else None
    t_at = k + 1 if with_lengths else k
    return [np.asarray(x) for x in ins[:k]], lengths, ins[t_at], list(ins[t_at + 1 :])


def _check_cell(op: OpInfo, states: list[np.ndarray], gates: np.ndarray, n_gates: int) -> tuple[int, int]:
    s0 = states[0]
    if s0.ndim != 3 or gates.ndim != 3:
        raise TensorError(f"{op.label()}: expected 3-D (1, N, D) states and gates, got {s0.shape} and {gates.shape}")
    n, d = s0.shape[1], s0.shape[2]
    for s in states:
        if s.shape != s0.shape:
            raise TensorError(f"{op.label()}: state shapes differ: {s0.shape} and {s.shape}")
    if gates.shape[1] != n or gates.shape[2] != n_gates * d:
        raise TensorError(
            f"{op.label()}: gates must be (1, {n}, {n_gates * d}) for states {s0.shape}, got {gates.shape}"
        )
    return n, d


def _keep(valid: np.ndarray | None, new: np.ndarray, old: np.ndarray, drop: bool) -> np.ndarray:
    if valid is None:
        return new
    return np.where(valid, new, 0.0 if drop else old)


def _lstm_gates(x: np.ndarray, d: int, forget_bias: float) -> tuple[np.ndarray, ...]:
    """LSTM activations (input, forget, output, candidate) of pre-activation gates ``x`` (..., 4d), in float64."""
    xd = x.astype(np.float64)
    return (
        _sigmoid(xd[..., :d]),
        _sigmoid(xd[..., d : 2 * d] + forget_bias),
        _sigmoid(xd[..., 2 * d : 3 * d]),
        _tanh(xd[..., 3 * d :]),
    )


def _gru_gates(x: np.ndarray, d: int) -> tuple[np.ndarray, np.ndarray]:
    """GRU update gate and tanh'd output of gates ``x`` (..., 3d), in float64 (the reset slice is unused here)."""
    xd = x.astype(np.float64)
    return _sigmoid(xd[..., d : 2 * d]), _tanh(xd[..., 2 * d :])


_CELL_ARGS = (
    Arg("sequence_lengths", True, "whether input 3 holds per-row sequence lengths (int32, N)"),
    Arg("drop_states", False, "rows past their length get zero states instead of keeping the previous ones"),
)


def _lstm_infer(op: OpInfo, ins: list[TensorInfo]) -> list[TensorInfo]:
    return [ins[1], ins[1]]


@register_op(
    "LSTMUnit",
    inputs=(4, 5),
    outputs=2,
    infer=_lstm_infer,
    args=(*_CELL_ARGS, Arg("forget_bias", 0.0, "added to the forget gate before its sigmoid")),
    input_names=("hidden_t_prev", "cell_t_prev", "gates", "seq_lengths", "timestep"),
    output_names=("hidden_t", "cell_t"),
    doc="One LSTM step (Caffe2's LSTMUnit): i, f, o = sigmoid(gates[0:D], gates[D:2D] + forget_bias, "
    "gates[2D:3D]), g = tanh(gates[3D:4D]); cell_t = f * cell_t_prev + i * g, hidden_t = o * tanh(cell_t).",
)
def lstm_unit(op: OpInfo) -> Callable[..., Any]:
    forget_bias = float(op.arg("forget_bias", 0.0))
    drop = _flag(op, "drop_states", False)

    def run(*ins: Any) -> tuple[np.ndarray, np.ndarray]:
        (h_prev, c_prev, x), lengths, t, _ = _split_inputs(op, ins, 2)
        n, d = _check_cell(op, [h_prev, c_prev], x, 4)
        i, f, o, g = _lstm_gates(x, d, forget_bias)
        c = (f * c_prev + i * g).astype(c_prev.dtype)
        h = (o * _tanh(c.astype(np.float64))).astype(c_prev.dtype)
        valid = _valid_rows(op, n, lengths, t)
        return _keep(valid, h, h_prev, drop).astype(h_prev.dtype), _keep(valid, c, c_prev, drop).astype(c_prev.dtype)

    return run


def _lstm_grad_infer(op: OpInfo, ins: list[TensorInfo]) -> list[TensorInfo]:
    return [ins[0], ins[1], ins[2]]


@register_op(
    "LSTMUnitGradient",
    inputs=(8, 9),
    outputs=3,
    infer=_lstm_grad_infer,
    args=(*_CELL_ARGS, Arg("forget_bias", 0.0, "as in the forward LSTMUnit")),
    input_names=(
        "hidden_t_prev",
        "cell_t_prev",
        "gates",
        "seq_lengths",
        "timestep",
        "hidden_t",
        "cell_t",
        "hidden_t_grad",
        "cell_t_grad",
    ),
    output_names=("hidden_t_prev_grad", "cell_t_prev_grad", "gates_grad"),
    doc="Gradient of LSTMUnit (inputs: the forward inputs, its outputs, their gradients).",
)
def lstm_unit_gradient(op: OpInfo) -> Callable[..., Any]:
    forget_bias = float(op.arg("forget_bias", 0.0))
    drop = _flag(op, "drop_states", False)

    def run(*ins: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        (h_prev, c_prev, x), lengths, t, rest = _split_inputs(op, ins, 2)
        _h, c, dh, dc = (np.asarray(v) for v in rest)
        n, d = _check_cell(op, [h_prev, c_prev], x, 4)
        i, f, o, g = _lstm_gates(x, d, forget_bias)
        tanh_c = _tanh(c.astype(np.float64))
        dct = dc + dh * o * (1.0 - tanh_c * tanh_c)
        dtype = x.dtype
        gates = np.concatenate(
            [
                dct * g * i * (1.0 - i),
                dct * c_prev * f * (1.0 - f),
                dh * tanh_c * o * (1.0 - o),
                dct * i * (1.0 - g * g),
            ],
            axis=-1,
        ).astype(dtype)
        dc_prev = (dct * f).astype(dtype)
        dh_prev = np.zeros_like(h_prev)
        valid = _valid_rows(op, n, lengths, t)
        if valid is not None:
            dh_prev = np.where(valid, dh_prev, 0.0 if drop else dh).astype(dtype)
            dc_prev = np.where(valid, dc_prev, 0.0 if drop else dc).astype(dtype)
            gates = np.where(valid, gates, 0.0).astype(dtype)
        return dh_prev, dc_prev, gates

    return run


@register_gradient("LSTMUnit")
def _lstm_unit_grad(op: pb.OperatorDef, g_out: list[str | None]) -> GradientSpec:
    g = GradientContext(op, g_out)
    n = len(op.input)
    ins = [g.I(k) for k in range(n)]
    grad = g.op_def("LSTMUnitGradient", [*ins, g.O(0), g.O(1), g.GO(0), g.GO(1)], [g.GI(0), g.GI(1), g.GI(2)])
    return g.spec([grad])


def _gru_infer(op: OpInfo, ins: list[TensorInfo]) -> list[TensorInfo]:
    return [ins[0]]


@register_op(
    "GRUUnit",
    inputs=(3, 4),
    outputs=1,
    infer=_gru_infer,
    args=_CELL_ARGS,
    input_names=("hidden_t_prev", "gates", "seq_lengths", "timestep"),
    output_names=("hidden_t",),
    doc="One GRU step (Caffe2's GRUUnit): u = sigmoid(gates[D:2D]), o = tanh(gates[2D:3D]); "
    "hidden_t = hidden_t_prev * u + o * (1 - u). The reset gate (gates[0:D]) is applied by the step "
    "net before this op, as in Caffe2's GRU cell.",
)
def gru_unit(op: OpInfo) -> Callable[..., Any]:
    drop = _flag(op, "drop_states", False)

    def run(*ins: Any) -> tuple[np.ndarray]:
        (h_prev, x), lengths, t, _ = _split_inputs(op, ins, 1)
        n, d = _check_cell(op, [h_prev], x, 3)
        u, o = _gru_gates(x, d)
        h = (h_prev * u + o * (1.0 - u)).astype(h_prev.dtype)
        return (_keep(_valid_rows(op, n, lengths, t), h, h_prev, drop).astype(h_prev.dtype),)

    return run


def _gru_grad_infer(op: OpInfo, ins: list[TensorInfo]) -> list[TensorInfo]:
    return [ins[0], ins[1]]


@register_op(
    "GRUUnitGradient",
    inputs=(5, 6),
    outputs=2,
    infer=_gru_grad_infer,
    args=_CELL_ARGS,
    input_names=("hidden_t_prev", "gates", "seq_lengths", "timestep", "hidden_t", "hidden_t_grad"),
    output_names=("hidden_t_prev_grad", "gates_grad"),
    doc="Gradient of GRUUnit (inputs: the forward inputs, its output, its gradient); the reset-gate "
    "slice of gates_grad is zero, as in Caffe2.",
)
def gru_unit_gradient(op: OpInfo) -> Callable[..., Any]:
    drop = _flag(op, "drop_states", False)

    def run(*ins: Any) -> tuple[np.ndarray, np.ndarray]:
        (h_prev, x), lengths, t, rest = _split_inputs(op, ins, 1)
        dh = np.asarray(rest[1])
        n, d = _check_cell(op, [h_prev], x, 3)
        u, o = _gru_gates(x, d)
        dtype = x.dtype
        dh_prev = (dh * u).astype(dtype)
        gates = np.concatenate(
            [np.zeros_like(u), (dh * h_prev - dh * o) * u * (1.0 - u), dh * (1.0 - u) * (1.0 - o * o)], axis=-1
        ).astype(dtype)
        valid = _valid_rows(op, n, lengths, t)
        if valid is not None:
            dh_prev = np.where(valid, dh_prev, 0.0 if drop else dh).astype(dtype)
            gates = np.where(valid, gates, 0.0).astype(dtype)
        return dh_prev, gates

    return run


@register_gradient("GRUUnit")
def _gru_unit_grad(op: pb.OperatorDef, g_out: list[str | None]) -> GradientSpec:
    g = GradientContext(op, g_out)
    ins = [g.I(k) for k in range(len(op.input))]
    grad = g.op_def("GRUUnitGradient", [*ins, g.O(0), g.GO(0)], [g.GI(0), g.GI(1)])
    return g.spec([grad])
