"""Recurrent networks: Caffe2's RecurrentNetwork runtime and its threaded timestep executor.

The operators themselves are registered in :mod:`asyncnet.ops.recurrent_network`; builders
live in :mod:`asyncnet.recurrent.build` and :mod:`asyncnet.compat.rnn_cell`.
"""

from __future__ import annotations

from asyncnet.recurrent.spec import Alias, Link, RNNSpec, parse_spec

__all__ = ["Alias", "Link", "RNNSpec", "parse_spec"]
