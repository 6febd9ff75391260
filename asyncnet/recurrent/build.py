"""Building recurrent networks: step-net backward passes and LSTM/GRU layers as RecurrentNetwork ops.

The idiomatic front end: :func:`lstm` and :func:`gru` return the operators to append to a net
(an input projection ``FC`` and one ``RecurrentNetwork``), the parameters to initialise and
the output names, the way Caffe2's ``rnn_cell.LSTM`` / ``MultiRNNCell`` laid them out: all
layers in one step net, so with the threaded timestep executor layer 2 at step t can run beside
layer 1 at step t+1. :mod:`asyncnet.compat.rnn_cell` wraps these with Caffe2's names.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from asyncnet.errors import ArgumentError
from asyncnet.proto import caffe2_pb2 as pb
from asyncnet.serde import make_argument
from asyncnet.training.gradients import gradient_for_op

__all__ = ["RecurrentLayer", "backward_pass", "gru", "lstm", "recurrent_network_op"]


def _op(op_type: str, inputs: Sequence[str], outputs: Sequence[str], **args: Any) -> pb.OperatorDef:
    o = pb.OperatorDef(type=op_type, input=list(inputs), output=list(outputs))
    for k, v in args.items():
        if isinstance(v, pb.NetDef):
            o.arg.append(pb.Argument(name=k, n=v))
        else:
            o.arg.append(make_argument(k, v))
    return o


def backward_pass(
    ops: Sequence[pb.OperatorDef], output_grads: dict[str, str]
) -> tuple[list[pb.OperatorDef], dict[str, str]]:
    """Gradient ops of ``ops`` given gradients of some of their outputs (Caffe2's GetBackwardPass).

    The step nets this is used for are in SSA form (no blob written twice). A blob read by several
    ops gets its partial gradients summed.

    Returns:
        (gradient ops in run order, blob -> gradient blob for every blob that got one)
    """
    grads = dict(output_grads)
    out: list[pb.OperatorDef] = []
    fresh = itertools.count()
    for op in reversed(list(ops)):
        g_out: list[str | None] = [grads.get(o) for o in op.output]
        if not any(g_out):
            continue
        spec = gradient_for_op(op, g_out)
        produced = {o for g in spec.ops for o in g.output}
        extra: list[pb.OperatorDef] = []
        for name, gname in zip(op.input, spec.grad_inputs):
            if gname is None:
                continue
            old = grads.get(name)
            if old is None:
                grads[name] = gname
                continue
            part = gname
            if gname in produced:
                part = f"_{gname}_autosplit_{next(fresh)}"
                for g in spec.ops:
                    for i, o in enumerate(g.output):
                        if o == gname:
                            g.output[i] = part
            total = f"{name}_grad_acc{next(fresh)}"
            acc = _op("Sum", [old, part], [total])
            acc.is_gradient_op = True
            extra.append(acc)
            grads[name] = total
        out.extend(spec.ops)
        out.extend(extra)
    return out, grads


@dataclass
class RecurrentLayer:
    """What :func:`lstm` / :func:`gru` built.

    Attributes:
        ops: operators to append to the net, in order.
        params: parameter name -> shape (initialise them before running).
        outputs: the RecurrentNetwork outputs by role: ``hidden_all`` (T, N, H) of the last layer,
            ``hidden_last`` (1, N, H), and per layer ``hidden_all_<k>`` / ``cell_all_<k>`` ...
        initial_states: the initial-state input names, in input order.
    """

    ops: list[pb.OperatorDef]
    params: dict[str, tuple[int, ...]]
    outputs: dict[str, str]
    initial_states: list[str] = field(default_factory=list)


def recurrent_network_op(
    *,
    step_ops: Sequence[pb.OperatorDef],
    sequence: tuple[str, str],
    states: Sequence[tuple[str, str, str, str]],
    references: Sequence[str],
    params: Sequence[str] | None,
    scope: str,
    timestep: str = "timestep",
    forward_only: bool = False,
    threaded: bool = True,
    recompute_blobs_on_backward: Sequence[str] = (),
    outputs_with_grads: Sequence[int] = (0,),
) -> tuple[pb.OperatorDef, dict[str, str]]:
    """One RecurrentNetwork op, as Caffe2's ``recurrent.recurrent_net`` laid it out.

    Args:
        step_ops: the step net's operators (SSA form).
        sequence: (step-net input name, outer sequence blob) linked at offset 0.
        states: per recurrent state (step input name, step output name, initial-state blob, state
            tensor name).
        references: further outer blobs the step net reads (parameters, sequence lengths).
        params: the references that get gradients (None: every reference the backward pass of the
            step net gives a gradient, as Caffe2's recurrent_net chose them).
        scope: prefix of internal names.
        timestep: the timestep blob name inside the step net.
        forward_only: build no backward step net.
        threaded: set enable_rnn_executor.
        recompute_blobs_on_backward: forward blobs the backward step net recomputes.
        outputs_with_grads: indices of the outputs (two per state: ``_all``, ``_last``) whose
            gradients the backward pass reads.

    Returns:
        (the op, output role -> name: ``<step output>_all`` and ``<step output>_last`` per state).
    """
    input_t, seq_blob = sequence
    step = pb.NetDef(name=f"{scope}/step_net", type="simple")
    step.op.extend(step_ops)
    step.external_input.extend([input_t, timestep, *(s[0] for s in states), *references])
    step.external_output.extend(s[1] for s in states)
    all_inputs = [seq_blob, *(s[2] for s in states), *references]
    links_i: list[str] = []
    links_e: list[str] = []
    links_o: list[int] = []
    aliases: list[tuple[str, str, int]] = []
    outputs: dict[str, str] = {}
    for step_in, step_out, _init, state in states:
        links_i += [step_in, step_out]
        links_e += [state, state]
        links_o += [0, 1]
        aliases += [(state, f"{step_out}_all", 1), (state, f"{step_out}_last", -1)]
        outputs[f"{step_out}_all"] = f"{step_out}_all"
        outputs[f"{step_out}_last"] = f"{step_out}_last"
    links_i.append(input_t)
    links_e.append(seq_blob)
    links_o.append(0)
    args: dict[str, Any] = {
        "step_net": step,
        "link_internal": links_i,
        "link_external": links_e,
        "link_offset": links_o,
        "link_window": [1] * len(links_i),
        "alias_src": [a[0] for a in aliases],
        "alias_dst": [a[1] for a in aliases],
        "alias_offset": [a[2] for a in aliases],
        "recurrent_states": [s[3] for s in states],
        "initial_recurrent_state_ids": [all_inputs.index(s[2]) for s in states],
        "timestep": timestep,
        "enable_rnn_executor": 1 if threaded else 0,
    }
    if not forward_only:
        recompute = set(recompute_blobs_on_backward)
        re_ops = [o for o in step_ops if recompute & set(o.output)]
        bwd_ops, mapping = backward_pass(step_ops, {s[1]: f"{s[1]}_grad" for s in states})
        bwd = pb.NetDef(name=f"{scope}/backward_step_net", type="simple")
        bwd.op.extend([*re_ops, *bwd_ops])
        # Like Caffe2's recurrent_net: declare what the backward step reads from the forward step
        # workspace and the links (checkers then know where those blobs come from).
        made: set[str] = set()
        reads: dict[str, None] = {}
        for o in bwd.op:
            reads.update((n, None) for n in o.input if n not in made)
            made.update(o.output)
        bwd.external_input.extend(reads)
        b_i: list[str] = []
        b_e: list[str] = []
        b_o: list[int] = []
        for step_in, step_out, _init, state in states:
            b_i += [f"{step_out}_grad"]
            b_e += [f"{state}_grad"]
            b_o += [1]
            if step_in in mapping:
                b_i.append(mapping[step_in])
                b_e.append(f"{state}_grad")
                b_o.append(0)
        if input_t in mapping:
            b_i.append(mapping[input_t])
            b_e.append(f"{seq_blob}_grad")
            b_o.append(0)
        if params is None:
            params = [r for r in references if r in mapping]
        missing = [p for p in params if p not in mapping]
        if missing:
            raise ArgumentError(f"recurrent network '{scope}': params {missing} get no gradient from the step net")
        args.update(
            {
                "backward_step_net": bwd,
                "backward_link_internal": b_i,
                "backward_link_external": b_e,
                "backward_link_offset": b_o,
                "backward_link_window": [1] * len(b_i),
                "param": [all_inputs.index(p) for p in params],
                "param_grads": [mapping[p] for p in params],
                "outputs_with_grads": list(outputs_with_grads),
                "recompute_blobs_on_backward": list(recompute_blobs_on_backward),
            }
        )
    out_names = [a[1] for a in aliases] + [f"{scope}/step_workspaces"]
    op = _op("RecurrentNetwork", all_inputs, out_names, **args)
    return op, outputs


def _layer_names(scope: str, k: int) -> dict[str, str]:
    p = f"{scope}/layer{k}"
    return {
        n: f"{p}/{n}" for n in ("hidden_t_prev", "cell_t_prev", "hidden_t", "cell_t", "hidden_states", "cell_states")
    }


def _sequence_projection(
    scope: str, rows: int, dim_in: int, params: dict[str, tuple[int, ...]]
) -> tuple[str, str, str]:
    """Names layer 0's input projection, done for the whole sequence by one FC outside the step net.

    Adds its weight and bias (``rows`` gate rows over ``dim_in``) to ``params``; returns the
    projected sequence blob, the weight and the bias.
    """
    w0, b0 = f"{scope}/layer0/i2h_w", f"{scope}/layer0/i2h_b"
    params[w0] = (rows, dim_in)
    params[b0] = (rows,)
    return f"{scope}/i2h", w0, b0


def _below_weights(
    scope: str, k: int, rows: int, dim_below: int, params: dict[str, tuple[int, ...]], refs: list[str]
) -> tuple[str, str]:
    """Adds layer ``k``'s (k > 0) per-step input projection weight and bias to ``params`` and ``refs``."""
    iw, ib = f"{scope}/layer{k}/i2h_w", f"{scope}/layer{k}/i2h_b"
    params[iw] = (rows, dim_below)
    params[ib] = (rows,)
    refs += [iw, ib]
    return iw, ib


def _unit_args(seq_lengths: str | None, **args: Any) -> dict[str, Any]:
    """The LSTMUnit/GRUUnit arguments; without a lengths input the unit must be told so."""
    if not seq_lengths:
        args["sequence_lengths"] = 0
    return args


def _layer_outputs(outs: dict[str, str], scope: str, n_layers: int, roles: Sequence[str]) -> dict[str, str]:
    """Maps ``<role>_{all,last}_<k>`` per layer, and the last layer's ``hidden_{all,last}``, to op outputs."""
    outputs: dict[str, str] = {}
    for k in range(n_layers):
        for role in roles:
            state = f"{scope}/layer{k}/{role}_t"
            outputs[f"{role}_all_{k}"] = outs[f"{state}_all"]
            outputs[f"{role}_last_{k}"] = outs[f"{state}_last"]
    outputs["hidden_all"] = outputs[f"hidden_all_{n_layers - 1}"]
    outputs["hidden_last"] = outputs[f"hidden_last_{n_layers - 1}"]
    return outputs


def _recurrent_layers(
    ops: list[pb.OperatorDef],
    step: list[pb.OperatorDef],
    sequence: tuple[str, str],
    states: Sequence[tuple[str, str, str, str]],
    refs: Sequence[str],
    params: list[str],
    scope: str,
    timestep: str,
    n_layers: int,
    roles: Sequence[str],
    *,
    forward_only: bool,
    threaded: bool,
    outputs_with_grads: Sequence[int],
    recompute_blobs_on_backward: Sequence[str],
) -> dict[str, str]:
    """Appends the RecurrentNetwork op of a stack of ``n_layers`` cells (each with a ``<role>_t`` state
    per role) to ``ops``; returns its outputs by name (see :func:`_layer_outputs`).

    ``outputs_with_grads`` indexes the last layer's outputs (``<role>_all``, ``<role>_last`` per role).
    """
    per_layer = 2 * len(roles)
    rnn, outs = recurrent_network_op(
        step_ops=step,
        sequence=sequence,
        states=states,
        references=refs,
        params=params,
        scope=scope,
        timestep=timestep,
        forward_only=forward_only,
        threaded=threaded,
        outputs_with_grads=[per_layer * (n_layers - 1) + i for i in outputs_with_grads],
        recompute_blobs_on_backward=recompute_blobs_on_backward,
    )
    ops.append(rnn)
    return _layer_outputs(outs, scope, n_layers, roles)


def lstm(
    input_blob: str,
    seq_lengths: str | None,
    initial_states: Sequence[tuple[str, str]],
    dim_in: int,
    dim_out: int | Sequence[int],
    scope: str,
    *,
    forget_bias: float = 0.0,
    drop_states: bool = False,
    forward_only: bool = False,
    threaded: bool = True,
    outputs_with_grads: Sequence[int] = (0,),
    recompute_blobs_on_backward: Sequence[str] = (),
) -> RecurrentLayer:
    """A (multi-layer) LSTM over ``input_blob`` (T, N, dim_in) as one RecurrentNetwork op.

    Args:
        input_blob: the sequence.
        seq_lengths: int32 (N,) lengths (rows past their length keep their state), or None.
        initial_states: per layer (initial hidden, initial cell) blobs, each (1, N, H) or (N, H).
        dim_in: input size.
        dim_out: hidden size, or one per layer.
        scope: prefix of every name made here.
        forget_bias: added to the forget gate.
        drop_states: zero (not keep) the states of finished rows.
        forward_only: no backward step net.
        threaded: enable the threaded timestep executor.
        outputs_with_grads: which of the last layer's outputs (0 hidden_all, 1 hidden_last,
            2 cell_all, 3 cell_last) the backward pass gets gradients for.
        recompute_blobs_on_backward: step blobs (e.g. ``{scope}/layer0/gates``) whose ops the
            backward step net runs again before its gradient ops, as Caffe2's memory optimisation.

    Returns:
        The ops, params (``{scope}/layer<k>/{i2h,gates}_{w,b}``) and outputs: ``hidden_all``,
        ``hidden_last``, ``cell_last`` of the last layer, and ``<role>_<k>`` per layer.
    """
    dims = [dim_out] if isinstance(dim_out, int) else list(dim_out)
    if len(initial_states) != len(dims):
        raise ArgumentError(f"lstm '{scope}': {len(dims)} layer(s) need as many (hidden, cell) initial states")
    params: dict[str, tuple[int, ...]] = {}
    i2h, w0, b0 = _sequence_projection(scope, 4 * dims[0], dim_in, params)
    ops: list[pb.OperatorDef] = [_op("FC", [input_blob, w0, b0], [i2h], axis=2)]
    step: list[pb.OperatorDef] = []
    states: list[tuple[str, str, str, str]] = []
    refs: list[str] = [*([seq_lengths] if seq_lengths else [])]
    input_t = f"{scope}/input_t"
    timestep = f"{scope}/timestep"
    below = ""
    unit_args = _unit_args(seq_lengths, forget_bias=float(forget_bias), drop_states=int(drop_states))
    for k, (h) in enumerate(dims):
        n = _layer_names(scope, k)
        gw, gb = f"{scope}/layer{k}/gates_w", f"{scope}/layer{k}/gates_b"
        params[gw] = (4 * h, h)
        params[gb] = (4 * h,)
        refs += [gw, gb]
        gates_h = f"{scope}/layer{k}/gates_h"
        gates = f"{scope}/layer{k}/gates"
        step.append(_op("FC", [n["hidden_t_prev"], gw, gb], [gates_h], axis=2))
        if k == 0:
            step.append(_op("Sum", [gates_h, input_t], [gates]))
        else:
            iw, ib = _below_weights(scope, k, 4 * h, dims[k - 1], params, refs)
            gates_x = f"{scope}/layer{k}/gates_x"
            step.append(_op("FC", [below, iw, ib], [gates_x], axis=2))
            step.append(_op("Sum", [gates_h, gates_x], [gates]))
        unit_in = [n["hidden_t_prev"], n["cell_t_prev"], gates, *([seq_lengths] if seq_lengths else []), timestep]
        step.append(_op("LSTMUnit", unit_in, [n["hidden_t"], n["cell_t"]], **unit_args))
        init_h, init_c = initial_states[k]
        states.append((n["hidden_t_prev"], n["hidden_t"], init_h, n["hidden_states"]))
        states.append((n["cell_t_prev"], n["cell_t"], init_c, n["cell_states"]))
        below = n["hidden_t"]
    outputs = _recurrent_layers(
        ops,
        step,
        (input_t, i2h),
        states,
        refs,
        [p for p in params if p not in (w0, b0)],
        scope,
        timestep,
        len(dims),
        ("hidden", "cell"),
        forward_only=forward_only,
        threaded=threaded,
        outputs_with_grads=outputs_with_grads,
        recompute_blobs_on_backward=recompute_blobs_on_backward,
    )
    outputs["cell_last"] = outputs[f"cell_last_{len(dims) - 1}"]
    return RecurrentLayer(ops, params, outputs, [s for pair in initial_states for s in pair])


def gru(
    input_blob: str,
    seq_lengths: str | None,
    initial_states: Sequence[str],
    dim_in: int,
    dim_out: int | Sequence[int],
    scope: str,
    *,
    drop_states: bool = False,
    forward_only: bool = False,
    threaded: bool = True,
    outputs_with_grads: Sequence[int] = (0,),
    recompute_blobs_on_backward: Sequence[str] = (),
) -> RecurrentLayer:
    """A (multi-layer) GRU as one RecurrentNetwork op, with Caffe2's GRU cell layout.

    Per layer and step: ``r = sigmoid(x_r + W_r h + b_r)``, ``u_pre = x_u + W_u h + b_u``,
    ``o_pre = x_o + W_o (r * h) + b_o``; GRUUnit then gives ``h' = h u + tanh(o_pre) (1 - u)``
    with ``u = sigmoid(u_pre)``. ``outputs_with_grads`` indexes the last layer's
    (hidden_all, hidden_last). ``recompute_blobs_on_backward``: step blobs (e.g.
    ``{scope}/layer0/gates``) the backward step net recomputes instead of keeping per timestep.
    """
    dims = [dim_out] if isinstance(dim_out, int) else list(dim_out)
    if len(initial_states) != len(dims):
        raise ArgumentError(f"gru '{scope}': {len(dims)} layer(s) need as many initial hidden states")
    params: dict[str, tuple[int, ...]] = {}
    i2h, w0, b0 = _sequence_projection(scope, 3 * dims[0], dim_in, params)
    ops: list[pb.OperatorDef] = [_op("FC", [input_blob, w0, b0], [i2h], axis=2)]
    step: list[pb.OperatorDef] = []
    states: list[tuple[str, str, str, str]] = []
    refs: list[str] = [*([seq_lengths] if seq_lengths else [])]
    input_t = f"{scope}/input_t"
    timestep = f"{scope}/timestep"
    below = ""
    unit_args = _unit_args(seq_lengths, drop_states=int(drop_states))
    for k, h in enumerate(dims):
        p = f"{scope}/layer{k}"
        h_prev, h_t = f"{p}/hidden_t_prev", f"{p}/hidden_t"
        if k == 0:
            x_t = input_t
        else:
            iw, ib = _below_weights(scope, k, 3 * h, dims[k - 1], params, refs)
            x_t = f"{p}/x_t"
            step.append(_op("FC", [below, iw, ib], [x_t], axis=2))
        ruw, rub, ow, ob = f"{p}/gates_w", f"{p}/gates_b", f"{p}/output_w", f"{p}/output_b"
        params[ruw] = (2 * h, h)
        params[rub] = (2 * h,)
        params[ow] = (h, h)
        params[ob] = (h,)
        refs += [ruw, rub, ow, ob]
        xr, xu, xo = f"{p}/x_r", f"{p}/x_u", f"{p}/x_o"
        step.append(_op("Split", [x_t], [xr, xu, xo], axis=2))
        ru = f"{p}/ru"
        step.append(_op("FC", [h_prev, ruw, rub], [ru], axis=2))
        hr, hu = f"{p}/h_r", f"{p}/h_u"
        step.append(_op("Split", [ru], [hr, hu], axis=2))
        r_pre, r, rh = f"{p}/r_pre", f"{p}/r", f"{p}/rh"
        step.append(_op("Sum", [hr, xr], [r_pre]))
        step.append(_op("Sigmoid", [r_pre], [r]))
        step.append(_op("Mul", [r, h_prev], [rh]))
        o_h, o_pre, u_pre, gates = f"{p}/o_h", f"{p}/o_pre", f"{p}/u_pre", f"{p}/gates"
        step.append(_op("FC", [rh, ow, ob], [o_h], axis=2))
        step.append(_op("Sum", [o_h, xo], [o_pre]))
        step.append(_op("Sum", [hu, xu], [u_pre]))
        step.append(_op("Concat", [r_pre, u_pre, o_pre], [gates, f"{p}/gates_split"], axis=2))
        unit_in = [h_prev, gates, *([seq_lengths] if seq_lengths else []), timestep]
        step.append(_op("GRUUnit", unit_in, [h_t], **unit_args))
        states.append((h_prev, h_t, initial_states[k], f"{p}/hidden_states"))
        below = h_t
    outputs = _recurrent_layers(
        ops,
        step,
        (input_t, i2h),
        states,
        refs,
        [q for q in params if q not in (w0, b0)],
        scope,
        timestep,
        len(dims),
        ("hidden",),
        forward_only=forward_only,
        threaded=threaded,
        outputs_with_grads=outputs_with_grads,
        recompute_blobs_on_backward=recompute_blobs_on_backward,
    )
    return RecurrentLayer(ops, params, outputs, list(initial_states))
