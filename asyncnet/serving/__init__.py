"""Serving: a thread-safe Predictor, dynamic batching, and a gRPC prediction server and client.

The Predictor needs only the core; the server and client import grpc lazily (install the
``serve`` extra: ``pip install asyncnet[serve]``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from asyncnet.serving.batching import BatchingOptions, batch_blockers
from asyncnet.serving.model import ModelFiles, TensorSpec, read_value_info
from asyncnet.serving.predictor import Predictor

if TYPE_CHECKING:
    from asyncnet.serving.client import Client
    from asyncnet.serving.server import PredictionServer, ServerOptions

__all__ = [
    "BatchingOptions",
    "Client",
    "ModelFiles",
    "PredictionServer",
    "Predictor",
    "ServerOptions",
    "TensorSpec",
    "batch_blockers",
    "read_value_info",
]


def __getattr__(name: str) -> Any:
    # grpc is an optional extra: import the server and client only when asked for.
    if name == "Client":
        from asyncnet.serving.client import Client

        return Client
    if name in ("PredictionServer", "ServerOptions"):
        from asyncnet.serving import server

        return getattr(server, name)
    raise AttributeError(f"module 'asyncnet.serving' has no attribute '{name}'")
