"""Recurrent layers for :class:`asyncnet.builder.NetBuilder`: the idiomatic face of :mod:`asyncnet.recurrent.build`.

Example:
    >>> b = NetBuilder("lm")
    >>> x, h0, c0 = b.inputs("x", "h0", "c0")
    >>> out = lstm_layer(b, x, [(h0, c0)], dim_in=32, dim_out=64)
    >>> b.output(out.hidden_all)
    >>> init_net, predict_net = b.build()

Parameters are declared with :meth:`NetBuilder.param` (Xavier weights, zero biases), so the
init net fills them; the ops carry the builder's creation sites like any other op.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from asyncnet.builder import Blob, BlobLike, NetBuilder
from asyncnet.recurrent.build import RecurrentLayer, gru, lstm
from asyncnet.serde import argument_value

__all__ = ["GRUOutputs", "LSTMOutputs", "gru_layer", "lstm_layer"]


class LSTMOutputs(NamedTuple):
    """The last layer's hidden states for every step (T, N, H), final hidden and cell (1, N, H)."""

    hidden_all: Blob
    hidden_last: Blob
    cell_all: Blob
    cell_last: Blob


class GRUOutputs(NamedTuple):
    hidden_all: Blob
    hidden_last: Blob


def _emit(b: NetBuilder, layer: RecurrentLayer) -> dict[str, Blob]:
    prefix = b.current_scope
    for name, shape in layer.params.items():
        local = name[len(prefix) :] if prefix and name.startswith(prefix) else name
        b.param(local, shape, init=0.0 if name.endswith("_b") else "XavierFill")
    made: dict[str, Blob] = {}
    for op in layer.ops:
        args = {a.name: argument_value(a) for a in op.arg}
        outs = b.op(op.type, list(op.input), [Blob(o, b) for o in op.output], **args)
        for blob in outs if isinstance(outs, tuple) else (outs,):
            made[str(blob)] = blob
    return made


def lstm_layer(
    b: NetBuilder,
    x: BlobLike,
    initial_states: Sequence[tuple[BlobLike, BlobLike]],
    *,
    dim_in: int,
    dim_out: int | Sequence[int],
    seq_lengths: BlobLike | None = None,
    scope: str = "lstm",
    forget_bias: float = 0.0,
    drop_states: bool = False,
    forward_only: bool = False,
    threaded: bool = True,
) -> LSTMOutputs:
    """Add a (multi-layer) LSTM over ``x`` (T, N, dim_in) as one RecurrentNetwork op."""
    layer = lstm(
        str(x),
        str(seq_lengths) if seq_lengths is not None else None,
        [(str(h), str(c)) for h, c in initial_states],
        dim_in,
        dim_out,
        b.scoped(scope),
        forget_bias=forget_bias,
        drop_states=drop_states,
        forward_only=forward_only,
        threaded=threaded,
    )
    made = _emit(b, layer)
    o = layer.outputs
    last = len(initial_states) - 1
    return LSTMOutputs(made[o["hidden_all"]], made[o["hidden_last"]], made[o[f"cell_all_{last}"]], made[o["cell_last"]])


def gru_layer(
    b: NetBuilder,
    x: BlobLike,
    initial_states: Sequence[BlobLike],
    *,
    dim_in: int,
    dim_out: int | Sequence[int],
    seq_lengths: BlobLike | None = None,
    scope: str = "gru",
    drop_states: bool = False,
    forward_only: bool = False,
    threaded: bool = True,
) -> GRUOutputs:
    """Add a (multi-layer) GRU over ``x`` (T, N, dim_in) as one RecurrentNetwork op."""
    layer = gru(
        str(x),
        str(seq_lengths) if seq_lengths is not None else None,
        [str(h) for h in initial_states],
        dim_in,
        dim_out,
        b.scoped(scope),
        drop_states=drop_states,
        forward_only=forward_only,
        threaded=threaded,
    )
    made = _emit(b, layer)
    return GRUOutputs(made[layer.outputs["hidden_all"]], made[layer.outputs["hidden_last"]])
