"""Caffe2's ``rnn_cell`` names: ``LSTM(...)``, ``LSTMCell``, ``GRUCell``, ``MultiRNNCell``, ``GRU(...)``.

They emit what Caffe2's did: an input projection FC and one ``RecurrentNetwork`` op whose step
net holds every layer (``LSTMUnit`` / ``GRUUnit`` cells), with its backward step net, and
register the parameters with the model (``XavierFill`` weights, zero biases, in
``param_init_net``). Built by :mod:`asyncnet.recurrent.build`; the threaded timestep executor
is enabled, as Caffe2's ``recurrent_net`` enabled its RNN executor.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from asyncnet.compat.core import BlobReference
from asyncnet.compat.initializers import ExternalInitializer
from asyncnet.compat.model_helper import ModelHelper, ParameterTags
from asyncnet.compat.scope import CurrentNameScope
from asyncnet.errors import ArgumentError
from asyncnet.recurrent.build import RecurrentLayer, gru, lstm

__all__ = ["GRU", "LSTM", "GRUCell", "LSTMCell", "MultiRNNCell"]


def _register(model: ModelHelper, layer: RecurrentLayer) -> None:
    model.net._ExtendOps(layer.ops)
    for name, shape in layer.params.items():
        is_bias = name.endswith("_b")
        init: Any = ("ConstantFill", {}) if is_bias else ("XavierFill", {})
        if not model.init_params:
            init = ExternalInitializer()
        model.create_param(
            BlobReference(name), list(shape), init, tags=ParameterTags.BIAS if is_bias else ParameterTags.WEIGHT
        )


def _pairs(initial_states: Sequence[Any], layers: int, per_layer: int, what: str) -> list[Any]:
    states = [str(s) for s in initial_states]
    if len(states) != per_layer * layers:
        raise ArgumentError(
            f"{what}: {layers} layer(s) need {per_layer * layers} initial state blob(s), got {len(states)}"
        )
    if per_layer == 1:
        return states
    return [(states[2 * k], states[2 * k + 1]) for k in range(layers)]


def _refs(model: ModelHelper, names: Sequence[str]) -> tuple[BlobReference, ...]:
    return tuple(BlobReference(n, model.net) for n in names)


def LSTM(
    model: ModelHelper,
    input_blob: Any,
    seq_lengths: Any,
    initial_states: Sequence[Any],
    dim_in: int,
    dim_out: int | Sequence[int],
    scope: str | None = None,
    outputs_with_grads: Sequence[int] = (0,),
    return_params: bool = False,
    memory_optimization: bool = False,
    forget_bias: float = 0.0,
    forward_only: bool = False,
    drop_states: bool = False,
    return_last_layer_only: bool = True,
    static_rnn_unroll_size: int | None = None,
    **kwargs: Any,
) -> Any:
    """Caffe2's ``rnn_cell.LSTM``: a (multi-layer) LSTM over ``input_blob`` (T, N, dim_in).

    Returns (last layer) ``hidden_all, hidden_last, cell_all, cell_last``; with
    ``return_last_layer_only=False`` those four for every layer, in layer order.
    ``outputs_with_grads`` indexes those four (of the last layer). ``memory_optimization``
    recomputes each layer's gates in the backward pass instead of keeping them per timestep
    (Caffe2's ``recompute_blobs_on_backward`` of ``gates_t``); ``static_rnn_unroll_size`` is
    accepted and ignored.
    """
    dims = [dim_out] if isinstance(dim_out, int) else list(dim_out)
    name = CurrentNameScope() + (scope or "LSTM")
    recompute = (
        [f"{name}/layer{k}/{g}" for k in range(len(dims)) for g in ("gates_h", "gates")]
        if memory_optimization and not forward_only
        else []
    )
    layer = lstm(
        str(input_blob),
        str(seq_lengths) if seq_lengths is not None else None,
        _pairs(initial_states, len(dims), 2, f"LSTM '{name}'"),
        dim_in,
        dims,
        name,
        forget_bias=forget_bias,
        drop_states=drop_states,
        forward_only=forward_only,
        outputs_with_grads=outputs_with_grads,
        recompute_blobs_on_backward=recompute,
    )
    roles = ("hidden_all", "hidden_last", "cell_all", "cell_last")
    layers = [len(dims) - 1] if return_last_layer_only else list(range(len(dims)))
    return _emit(model, layer, [f"{r}_{k}" for k in layers for r in roles], return_params)


def GRU(
    model: ModelHelper,
    input_blob: Any,
    seq_lengths: Any,
    initial_states: Sequence[Any],
    dim_in: int,
    dim_out: int | Sequence[int],
    scope: str | None = None,
    outputs_with_grads: Sequence[int] = (0,),
    return_params: bool = False,
    memory_optimization: bool = False,
    forward_only: bool = False,
    drop_states: bool = False,
    **kwargs: Any,
) -> Any:
    """Caffe2's ``gru_cell.GRU``: returns (last layer) ``hidden_all, hidden_last``.

    ``memory_optimization`` recomputes each layer's concatenated gates in the backward pass
    (Caffe2's ``recompute_blobs = [gates_t]``) instead of keeping them per timestep.
    """
    dims = [dim_out] if isinstance(dim_out, int) else list(dim_out)
    name = CurrentNameScope() + (scope or "GRU")
    recompute = [f"{name}/layer{k}/gates" for k in range(len(dims))] if memory_optimization and not forward_only else []
    layer = gru(
        str(input_blob),
        str(seq_lengths) if seq_lengths is not None else None,
        _pairs(initial_states, len(dims), 1, f"GRU '{name}'"),
        dim_in,
        dims,
        name,
        drop_states=drop_states,
        forward_only=forward_only,
        outputs_with_grads=outputs_with_grads,
        recompute_blobs_on_backward=recompute,
    )
    return _emit(model, layer, ["hidden_all", "hidden_last"], return_params)


def _emit(model: ModelHelper, layer: RecurrentLayer, outputs: Sequence[str], return_params: bool) -> Any:
    """Adds ``layer`` to ``model``; returns references to the named ``layer.outputs``.

    With ``return_params`` a final ``{"params": [...]}`` follows them, as Caffe2's helpers return.
    """
    _register(model, layer)
    result = _refs(model, [layer.outputs[o] for o in outputs])
    if return_params:
        return (*result, {"params": [BlobReference(p) for p in layer.params]})
    return result


class _Cell:
    kind = ""

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        forget_bias: float = 0.0,
        memory_optimization: bool = False,
        drop_states: bool = False,
        initializer: Any = None,
        name: str | None = None,
        forward_only: bool = False,
        **kwargs: Any,
    ) -> None:
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.forget_bias = forget_bias
        self.drop_states = drop_states
        self.name = name
        self.forward_only = forward_only
        self.memory_optimization = memory_optimization

    def apply_over_sequence(
        self,
        model: ModelHelper,
        inputs: Any,
        seq_lengths: Any = None,
        initial_states: Sequence[Any] | None = None,
        outputs_with_grads: Sequence[int] | None = None,
    ) -> Any:
        """Unroll the cell over ``inputs`` (T, N, input_size) as one RecurrentNetwork op."""
        return MultiRNNCell([self], name=self.name).apply_over_sequence(
            model, inputs, seq_lengths, initial_states, outputs_with_grads
        )


class LSTMCell(_Cell):
    """Caffe2's LSTMCell (apply it with ``apply_over_sequence``)."""

    kind = "lstm"


class GRUCell(_Cell):
    """Caffe2's GRUCell (apply it with ``apply_over_sequence``)."""

    kind = "gru"


class MultiRNNCell:
    """Caffe2's MultiRNNCell: stacked cells of one kind, unrolled as one RecurrentNetwork op."""

    def __init__(self, cells: Sequence[_Cell], name: str | None = None, **kwargs: Any) -> None:
        if not cells or len({c.kind for c in cells}) != 1:
            raise ArgumentError("MultiRNNCell needs one or more cells, all LSTMCell or all GRUCell")
        for below, above in zip(cells, cells[1:]):
            if above.input_size != below.hidden_size:
                raise ArgumentError(
                    f"MultiRNNCell: a cell with input_size {above.input_size} follows one with hidden_size "
                    f"{below.hidden_size}"
                )
        self.cells = list(cells)
        self.name = name

    def apply_over_sequence(
        self,
        model: ModelHelper,
        inputs: Any,
        seq_lengths: Any = None,
        initial_states: Sequence[Any] | None = None,
        outputs_with_grads: Sequence[int] | None = None,
    ) -> Any:
        """Outputs per layer: LSTM ``hidden_all, hidden_last, cell_all, cell_last``; GRU ``hidden_all, hidden_last``."""
        first = self.cells[0]
        dims = [c.hidden_size for c in self.cells]
        kind = first.kind
        if initial_states is None:
            raise ArgumentError("apply_over_sequence needs initial_states (one blob per state per layer)")
        if kind == "lstm":
            return LSTM(
                model, inputs, seq_lengths, initial_states, first.input_size, dims, scope=self.name or first.name,
                outputs_with_grads=outputs_with_grads or (0,), forget_bias=first.forget_bias,
                forward_only=first.forward_only, drop_states=first.drop_states, return_last_layer_only=False,
                memory_optimization=first.memory_optimization,
            )  # fmt: skip
        return GRU(
            model, inputs, seq_lengths, initial_states, first.input_size, dims, scope=self.name or first.name,
            outputs_with_grads=outputs_with_grads or (0,), forward_only=first.forward_only,
            drop_states=first.drop_states, memory_optimization=first.memory_optimization,
        )  # fmt: skip
