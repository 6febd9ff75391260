"""A Caffe2-compatible Python API on asyncnet.

Replace ``from caffe2.python import core, workspace, brew, model_helper, optimizer`` with
``from asyncnet.compat import core, workspace, brew, model_helper, optimizer`` (and
``from caffe2.proto import caffe2_pb2`` with ``from asyncnet.compat import caffe2_pb2``).
This package keeps Caffe2's process-wide state (current workspace, thread-local
scopes); the rest of asyncnet has none.
"""

from __future__ import annotations

from asyncnet.compat import (
    brew,
    caffe2_pb2,
    core,
    initializers,
    model_helper,
    optimizer,
    predictor,
    scope,
    workspace,
)

__all__ = [
    "brew",
    "caffe2_pb2",
    "core",
    "initializers",
    "model_helper",
    "optimizer",
    "predictor",
    "scope",
    "workspace",
]
