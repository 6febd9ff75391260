"""Caffe2's ``recurrent.recurrent_net``: a RecurrentNetwork op around a hand-written cell net.

Example (Caffe2's own LSTM recipe)::

    step = core.Net("lstm_cell")
    input_t, timestep, cell_t_prev, hidden_t_prev = step.AddExternalInputs(
        "input_t", "timestep", "cell_t_prev", "hidden_t_prev")
    gates_t = step.FC([hidden_t_prev, "gates_w", "gates_b"], "gates_t", axis=2)
    step.Sum([gates_t, input_t], "gates_sum")
    hidden_t, cell_t = step.LSTMUnit(
        [hidden_t_prev, cell_t_prev, "gates_sum", "seq_lengths", timestep], ["hidden_t", "cell_t"])
    step.AddExternalOutputs(cell_t, hidden_t)
    out_all, out_last, cell_all, cell_last = recurrent.recurrent_net(
        net, step, inputs=[(input_t, "i2h")],
        initial_cell_inputs=[(hidden_t_prev, "h0"), (cell_t_prev, "c0")],
        links={hidden_t_prev: hidden_t, cell_t_prev: cell_t}, timestep=timestep, scope="lstm")

The backward step net is derived from the cell net's gradients (SSA cell nets: a blob written by
two ops of the cell is not supported).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from asyncnet.compat.core import BlobReference, Net
from asyncnet.errors import ArgumentError
from asyncnet.recurrent.build import recurrent_network_op

__all__ = ["recurrent_net"]


def recurrent_net(
    net: Net,
    cell_net: Net,
    inputs: Sequence[tuple[Any, Any]],
    initial_cell_inputs: Sequence[tuple[Any, Any]],
    links: Mapping[Any, Any],
    timestep: Any = None,
    scope: str | None = None,
    outputs_with_grads: Sequence[int] = (0,),
    recompute_blobs_on_backward: Sequence[Any] | None = None,
    forward_only: bool = False,
) -> tuple[BlobReference, ...]:
    """Add a RecurrentNetwork op running ``cell_net`` once per timestep (Caffe2's signature).

    Returns, per initial cell input (in order), ``<cell output>_all`` and ``<cell output>_last``.
    """
    if len(inputs) != 1:
        raise ArgumentError(f"recurrent_net: exactly one sequence input is supported (as in Caffe2), got {len(inputs)}")
    input_t, input_blob = (str(inputs[0][0]), str(inputs[0][1]))
    ts = "timestep" if timestep is None else str(timestep)
    name = scope if scope is not None else net.NextName("recurrent")
    str_links = {str(k): str(v) for k, v in links.items()}
    states = []
    for cell_input, blob in initial_cell_inputs:
        ci = str(cell_input)
        if ci not in str_links:
            raise ArgumentError(f"recurrent_net: initial cell input '{ci}' has no link to a cell output")
        states.append((ci, str_links[ci], str(blob), f"{name}/{ci}_states"))
    known = {input_t, input_blob, ts, *(s[0] for s in states), *(s[2] for s in states)}
    references = [str(b) for b in cell_net.Proto().external_input if str(b) not in known]
    op, outs = recurrent_network_op(
        step_ops=list(cell_net.Proto().op),
        sequence=(input_t, input_blob),
        states=states,
        references=references,
        params=None,
        scope=name,
        timestep=ts,
        forward_only=forward_only,
        threaded=True,
        recompute_blobs_on_backward=[str(b) for b in recompute_blobs_on_backward or ()],
        outputs_with_grads=outputs_with_grads,
    )
    net._ExtendOps([op])
    return tuple(BlobReference(o, net) for o in op.output[:-1])
