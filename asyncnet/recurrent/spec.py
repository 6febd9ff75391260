"""The arguments of Caffe2's RecurrentNetwork / RecurrentNetworkGradient, parsed once.

Vocabulary (Caffe2's):

* a *link* ties an internal blob of the step net to rows of an external tensor: at timestep t
  the internal blob is rows ``[t + offset, t + offset + window)`` of the external one (a view;
  an internal blob the step net writes is copied back into those rows);
* a *recurrent state* is an external tensor ``(T + L, N, D)`` whose first L rows come from an
  initial-state input (``initial_recurrent_state_ids``); links with offset 0 read step t's
  state and links with offset 1 write step t+1's;
* an *alias* exposes rows ``[offset, end)`` of a state (negative offset: counted from the end)
  as an output of the op.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from google.protobuf import text_format

from asyncnet.errors import ArgumentError
from asyncnet.opinfo import OpInfo
from asyncnet.proto import caffe2_pb2 as pb

__all__ = ["Alias", "Link", "RNNSpec", "parse_spec"]


@dataclass(frozen=True)
class Link:
    internal: str
    external: str
    offset: int
    window: int = 1


@dataclass(frozen=True)
class Alias:
    src: str
    dst: str
    offset: int


@dataclass
class RNNSpec:
    """Everything a RecurrentNetwork(Gradient) op needs from its arguments."""

    step_net: pb.NetDef
    backward_step_net: pb.NetDef | None
    links: list[Link]
    backward_links: list[Link]
    aliases: list[Alias]
    recurrent_states: list[str]
    initial_ids: list[int]
    timestep: str
    params: list[int] = field(default_factory=list)
    param_grads: list[str] = field(default_factory=list)
    outputs_with_grads: list[int] = field(default_factory=lambda: [0])
    recompute: list[str] = field(default_factory=list)
    threaded: bool = False
    num_threads: int | None = None


def _net(op: OpInfo, name: str) -> pb.NetDef | None:
    value = op.args.get(name)
    if value is None:
        return None
    if isinstance(value, pb.NetDef):
        return value
    if isinstance(value, (str, bytes)):
        # Old Caffe2 scripts passed str(net.Proto()): the text format.
        text = value.decode("utf-8") if isinstance(value, bytes) else value
        nd = pb.NetDef()
        try:
            text_format.Parse(text, nd)
        except text_format.ParseError as e:
            raise ArgumentError(f"{op.label()}: argument '{name}' is not a NetDef in text format: {e}") from e
        return nd
    raise ArgumentError(f"{op.label()}: argument '{name}' must be a NetDef, got {type(value).__name__}")


def _strings(op: OpInfo, name: str) -> list[str]:
    v = op.args.get(name, ())
    if isinstance(v, (str, bytes)):
        v = [v]
    return [x.decode("utf-8") if isinstance(x, bytes) else str(x) for x in v]


def _ints(op: OpInfo, name: str, default: Any = ()) -> list[int]:
    v = op.args.get(name, default)
    if isinstance(v, int):
        v = [v]
    return [int(x) for x in v]


def _links(op: OpInfo, prefix: str) -> list[Link]:
    internal = _strings(op, f"{prefix}link_internal")
    external = _strings(op, f"{prefix}link_external")
    offset = _ints(op, f"{prefix}link_offset")
    window = _ints(op, f"{prefix}link_window") or [1] * len(internal)
    if not len(internal) == len(external) == len(offset) == len(window):
        raise ArgumentError(
            f"{op.label()}: {prefix}link_internal/_external/_offset/_window must have one length, got "
            f"{len(internal)}, {len(external)}, {len(offset)}, {len(window)}"
        )
    if any(w < 1 for w in window):
        raise ArgumentError(f"{op.label()}: {prefix}link_window values must be at least 1, got {window}")
    return [Link(i, e, o, w) for i, e, o, w in zip(internal, external, offset, window)]


def parse_spec(op: OpInfo) -> RNNSpec:
    """Parse and check the arguments of a RecurrentNetwork or RecurrentNetworkGradient op."""
    step = _net(op, "step_net")
    if step is None:
        raise ArgumentError(f"{op.label()}: required argument 'step_net' (a NetDef) is missing")
    src, dst, off = _strings(op, "alias_src"), _strings(op, "alias_dst"), _ints(op, "alias_offset")
    if not len(src) == len(dst) == len(off):
        raise ArgumentError(
            f"{op.label()}: alias_src/alias_dst/alias_offset must have one length, got {len(src)}, {len(dst)}, {len(off)}"
        )
    states = _strings(op, "recurrent_states")
    initial = _ints(op, "initial_recurrent_state_ids")
    if len(states) != len(initial):
        raise ArgumentError(
            f"{op.label()}: recurrent_states names {len(states)} state(s) but initial_recurrent_state_ids "
            f"{len(initial)}"
        )
    for a in src:
        if a not in states:
            raise ArgumentError(
                f"{op.label()}: alias source '{a}' is not a recurrent state; states: {', '.join(states) or 'none'}"
            )
    params = _ints(op, "param")
    param_grads = _strings(op, "param_grads")
    if param_grads and len(param_grads) != len(params):
        raise ArgumentError(
            f"{op.label()}: param names {len(params)} input(s) but param_grads {len(param_grads)} gradient(s)"
        )
    timestep = op.args.get("timestep", "timestep")
    num_threads = op.args.get("rnn_executor.num_threads")
    return RNNSpec(
        step_net=step,
        backward_step_net=_net(op, "backward_step_net"),
        links=_links(op, ""),
        backward_links=_links(op, "backward_"),
        aliases=[Alias(s, d, o) for s, d, o in zip(src, dst, off)],
        recurrent_states=states,
        initial_ids=initial,
        timestep=timestep.decode("utf-8") if isinstance(timestep, bytes) else str(timestep),
        params=params,
        param_grads=param_grads,
        outputs_with_grads=_ints(op, "outputs_with_grads", [0]),
        recompute=_strings(op, "recompute_blobs_on_backward"),
        threaded=bool(op.args.get("enable_rnn_executor", 0)),
        num_threads=int(num_threads) if isinstance(num_threads, int) and num_threads > 0 else None,
    )
