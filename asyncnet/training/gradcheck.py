"""Finite-difference gradient checking of an operator's registered gradient.

The checked scalar is ``L = sum_k sum(output_k * weights_k)`` with fixed random
weights; its analytic gradient comes from the op's gradient maker and kernels
(fed ``weights_k`` as the output gradients), its numeric gradient from central
differences of the forward op. Use float64 inputs for tight tolerances.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from asyncnet.proto import caffe2_pb2 as pb
from asyncnet.training.gradients import gradient_for_op
from asyncnet.workspace import Workspace

__all__ = ["GradCheckResult", "check_gradient"]


@dataclass
class GradCheckResult:
    """Per checked input: analytic and numeric gradients and the worst error."""

    analytic: dict[str, np.ndarray] = field(default_factory=dict)
    numeric: dict[str, np.ndarray] = field(default_factory=dict)
    max_error: dict[str, float] = field(default_factory=dict)
    ok: bool = True

    def describe(self) -> str:
        return "; ".join(f"{k}: max error {v:.3g}" for k, v in self.max_error.items())


def _run_forward(op: pb.OperatorDef, feeds: Mapping[str, np.ndarray]) -> Workspace:
    ws = Workspace("gradcheck")
    for k, v in feeds.items():
        ws.feed(k, np.array(v, copy=True))
    ws.run_operator_once(op)
    return ws


def _loss(op: pb.OperatorDef, feeds: Mapping[str, np.ndarray], weights: Mapping[str, np.ndarray]) -> float:
    ws = _run_forward(op, feeds)
    return float(sum(float(np.sum(np.asarray(ws.fetch(o), dtype=np.float64) * w)) for o, w in weights.items()))


def check_gradient(
    op: pb.OperatorDef,
    inputs: Mapping[str, Any],
    *,
    check: Sequence[int] | None = None,
    outputs_with_grad: Sequence[int] = (0,),
    stepsize: float = 1e-4,
    threshold: float = 1e-3,
    seed: int = 0,
) -> GradCheckResult:
    """Compare the analytic gradient of ``op`` with central differences.

    Args:
        op: the forward OperatorDef.
        inputs: a value for every input blob of ``op``.
        check: indices of the inputs to check (default: every input that gets a gradient).
        outputs_with_grad: indices of the outputs that enter the loss.
        stepsize: the finite-difference step.
        threshold: allowed error, relative to max(1, |numeric|) per element.
        seed: seed of the random output weights.

    Returns:
        The gradients, the worst error per input and ``ok``.
    """
    feeds = {k: np.asarray(v) for k, v in inputs.items()}
    ws = _run_forward(op, feeds)
    rng = np.random.default_rng(seed)
    weights: dict[str, np.ndarray] = {}
    g_out: list[str | None] = [None] * len(op.output)
    for k in outputs_with_grad:
        name = op.output[k]
        out = np.asarray(ws.fetch(name))
        weights[name] = rng.uniform(-1.0, 1.0, size=out.shape)
        gname = f"{name}_gradcheck_grad"
        g_out[k] = gname
        ws.feed(gname, weights[name].astype(out.dtype))
    spec = gradient_for_op(op, g_out)
    for gop in spec.ops:
        ws.run_operator_once(gop)
    result = GradCheckResult()
    indices = [i for i, g in enumerate(spec.grad_inputs) if g is not None] if check is None else list(check)
    for i in indices:
        name, grad_name = op.input[i], spec.grad_inputs[i]
        if grad_name is None:
            raise ValueError(f"{op.type}: input {i} ('{name}') gets no gradient from the gradient maker")
        analytic = np.asarray(ws.fetch(grad_name), dtype=np.float64)
        x = feeds[name].astype(np.float64)
        if analytic.shape != x.shape:
            raise ValueError(f"{op.type}: gradient of input {i} has shape {analytic.shape}, input has {x.shape}")
        numeric = np.zeros_like(x)
        flat = numeric.reshape(-1)
        for j in range(x.size):
            for sign in (1.0, -1.0):
                xs = x.copy().reshape(-1)
                xs[j] += sign * stepsize
                shifted = dict(feeds)
                shifted[name] = xs.reshape(x.shape).astype(feeds[name].dtype)
                flat[j] += sign * _loss(op, shifted, weights)
        numeric /= 2.0 * stepsize
        err = np.abs(analytic - numeric) / np.maximum(1.0, np.abs(numeric))
        worst = float(err.max()) if err.size else 0.0
        result.analytic[name], result.numeric[name], result.max_error[name] = analytic, numeric, worst
        result.ok = result.ok and worst <= threshold
    return result
