"""RecurrentNetwork and RecurrentNetworkGradient (Caffe2's recurrent_network_op), over asyncnet.recurrent.

Inputs: the sequence ``(T, N, ...)`` first, then initial states and the blobs the step net
reads. Outputs: one per alias (``alias_dst``), then a step-workspaces blob that the gradient op
reads. The step net runs once per timestep in its own workspace; see
:mod:`asyncnet.recurrent.spec` for links, states and aliases.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from asyncnet.cancellation import register_subnet_op
from asyncnet.errors import ArgumentError, TensorError
from asyncnet.opinfo import OpInfo
from asyncnet.proto import caffe2_pb2 as pb
from asyncnet.recurrent.runtime import RecurrentRunner, StepWorkspaces
from asyncnet.recurrent.spec import RNNSpec, parse_spec
from asyncnet.registry import register_op
from asyncnet.schema import Arg, TensorInfo
from asyncnet.training.gradients import GradientContext, GradientSpec, register_gradient
from asyncnet.workspace import Workspace

for _type in ("RecurrentNetwork", "RecurrentNetworkGradient"):
    register_subnet_op(_type)

_ARGS = (
    Arg("step_net", None, "NetDef run once per timestep"),
    Arg("backward_step_net", None, "NetDef run once per timestep, last first, by the gradient op"),
    Arg("link_internal", (), "step-net blob names of the links"),
    Arg("link_external", (), "outer tensors the links view"),
    Arg("link_offset", (), "per link, the row of the outer tensor at timestep 0"),
    Arg("link_window", (), "per link, how many rows it views (default 1)"),
    Arg("backward_link_internal", (), "links of the backward step net (gradients)"),
    Arg("backward_link_external", (), "outer gradient tensors of the backward links"),
    Arg("backward_link_offset", (), "row offsets of the backward links"),
    Arg("backward_link_window", (), "row windows of the backward links"),
    Arg("alias_src", (), "recurrent states exposed as outputs"),
    Arg("alias_dst", (), "the output names of the aliases"),
    Arg("alias_offset", (), "first state row of each alias (negative: from the end)"),
    Arg("recurrent_states", (), "names of the (T + L, N, D) state tensors"),
    Arg("initial_recurrent_state_ids", (), "per state, the input index of its initial value"),
    Arg("timestep", "timestep", "name of the int32 timestep blob in the step workspaces"),
    Arg("param", (), "input indices of the parameters that get gradients"),
    Arg("param_grads", (), "per param, the gradient blob the backward step net writes"),
    Arg("outputs_with_grads", (0,), "outputs whose gradients the gradient op reads"),
    Arg(
        "recompute_blobs_on_backward",
        (),
        "step blobs the backward step net recomputes (its ops do it): the forward keeps one value for all "
        "timesteps instead of one per timestep",
    ),
    Arg("enable_rnn_executor", 0, "run ops of different timesteps concurrently when dependencies allow"),
    Arg("rnn_executor.num_threads", 0, "threads of the timestep executor (default: the usable CPUs)"),
)


def _workspace(op: OpInfo) -> Workspace:
    if op.workspace is None:
        raise ArgumentError(f"{op.label()}: {op.type} needs a workspace for its step workspaces")
    return op.workspace


def _check_outputs(op: OpInfo, spec: RNNSpec) -> None:
    if len(op.outputs) != len(spec.aliases) + 1:
        raise ArgumentError(
            f"{op.label()}: expected {len(spec.aliases)} alias output(s) ({', '.join(a.dst for a in spec.aliases)}) "
            f"plus the step-workspaces blob, got {len(op.outputs)} output(s)"
        )
    for alias, name in zip(spec.aliases, op.outputs):
        if alias.dst != name:
            raise ArgumentError(
                f"{op.label()}: alias_dst '{alias.dst}' must be the output at its position, got '{name}'"
            )


def _rnn_infer(op: OpInfo, ins: list[TensorInfo]) -> list[TensorInfo]:
    spec = parse_spec(op)
    x = ins[0].shape if ins else None
    out: list[TensorInfo] = []
    for alias in spec.aliases:
        idx = spec.initial_ids[spec.recurrent_states.index(alias.src)]
        init = ins[idx] if idx < len(ins) else TensorInfo()
        shape: tuple[int | None, ...] | None = None
        if x is not None and len(x) >= 2 and init.shape is not None and len(init.shape) >= 1:
            length = init.shape[0] if len(init.shape) == 3 else 1
            rows = None if x[0] is None or length is None else x[0] + length
            if rows is not None:
                start = alias.offset if alias.offset >= 0 else rows + alias.offset
                rows = max(rows - max(start, 0), 0)
            shape = (rows, x[1], init.shape[-1])
        out.append(TensorInfo(shape, init.dtype))
    return [*out, TensorInfo()]


@register_op(
    "RecurrentNetwork",
    inputs=(1, -1),
    outputs=(1, -1),
    infer=_rnn_infer,
    args=_ARGS,
    doc="Run step_net once per timestep over the sequence (input 0, T x N x ...), linking step-net blobs "
    "to rows of the sequence and of recurrent state tensors (Caffe2's RecurrentNetwork). Outputs: the "
    "aliases of the states, then the step workspaces kept for RecurrentNetworkGradient. With "
    "enable_rnn_executor, ops of different timesteps run concurrently where dependencies allow.",
)
def recurrent_network(op: OpInfo) -> Callable[..., Any]:
    spec = parse_spec(op)
    _check_outputs(op, spec)
    runner = RecurrentRunner(op, spec, _workspace(op))
    steps = StepWorkspaces(op.label())
    runner.slots(steps, 1)  # prepares (and so validates) the step net with the op

    def run(*ins: Any) -> list[Any]:
        return runner.forward(ins, steps)

    return run


def _grad_layout(op: OpInfo, spec: RNNSpec) -> tuple[int, int]:
    """(number of output gradients, number of forward outputs) at the front and back of the inputs."""
    n_go = len(spec.outputs_with_grads)
    n_out = len(spec.aliases) + 1
    if len(op.inputs) < n_go + n_out + 1:
        raise ArgumentError(
            f"{op.label()}: expected {n_go} output gradient(s), the forward inputs and {n_out} forward "
            f"output(s) as inputs, got {len(op.inputs)} input(s)"
        )
    want = 1 + len(spec.params) + len(spec.initial_ids)
    if len(op.outputs) != want:
        raise ArgumentError(
            f"{op.label()}: expected {want} outputs (input 0, {len(spec.params)} param(s), "
            f"{len(spec.initial_ids)} initial state(s)), got {len(op.outputs)}"
        )
    return n_go, n_out


def _rnn_grad_infer(op: OpInfo, ins: list[TensorInfo]) -> list[TensorInfo]:
    spec = parse_spec(op)
    n_go, n_out = _grad_layout(op, spec)
    fwd = ins[n_go : len(ins) - n_out]
    return [fwd[0], *(fwd[p] for p in spec.params), *(fwd[r] for r in spec.initial_ids)]


@register_op(
    "RecurrentNetworkGradient",
    inputs=(3, -1),
    outputs=(1, -1),
    infer=_rnn_grad_infer,
    args=_ARGS,
    doc="Gradient of RecurrentNetwork: inputs are the gradients of the outputs_with_grads outputs, the "
    "forward inputs and the forward outputs; outputs the gradients of input 0, of each `param` input and "
    "of each initial state. Runs backward_step_net once per timestep, last first, in the forward step "
    "workspaces.",
)
def recurrent_network_gradient(op: OpInfo) -> Callable[..., Any]:
    spec = parse_spec(op)
    n_go, n_out = _grad_layout(op, spec)
    runner = RecurrentRunner(op, spec, _workspace(op))
    fwd_names = list(op.inputs[n_go : len(op.inputs) - n_out])

    def run(*ins: Any) -> list[Any]:
        steps = ins[-1]
        if not isinstance(steps, StepWorkspaces):
            raise TensorError(
                f"{op.label()}: last input '{op.inputs[-1]}' holds {type(steps).__name__}, expected the step "
                "workspaces output of the forward RecurrentNetwork"
            )
        fwd = ins[n_go : len(ins) - n_out]
        return runner.backward(ins[:n_go], fwd, fwd_names, steps, op.outputs)

    return run


@register_gradient("RecurrentNetwork")
def _recurrent_network_grad(op: pb.OperatorDef, g_out: list[str | None]) -> GradientSpec:
    g = GradientContext(op, g_out)
    with_grads = [int(i) for i in (g.arg("outputs_with_grads") or [0])]
    params = [int(i) for i in (g.arg("param") or [])]
    initial = [int(i) for i in (g.arg("initial_recurrent_state_ids") or [])]
    ins = [
        *(g.GO(i) for i in with_grads),
        *(g.I(i) for i in range(len(op.input))),
        *(g.O(i) for i in range(len(op.output))),
    ]
    outs = [g.GI(0), *(g.GI(p) for p in params), *(g.GI(r) for r in initial)]
    return g.spec([g.op_def("RecurrentNetworkGradient", ins, outs)])
