"""Named arrays to and from the TensorProtos of the prediction service (no grpc needed)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from asyncnet.errors import InputError, ParseError, TensorError
from asyncnet.proto import caffe2_pb2 as pb
from asyncnet.serde import numpy_to_tensor, tensor_to_numpy


def encode(arrays: Mapping[str, Any]) -> list[pb.TensorProto]:
    """TensorProtos (little-endian raw_data, the fast path) named after their keys."""
    return [numpy_to_tensor(np.asarray(v), k, raw=True) for k, v in arrays.items()]


def decode(protos: Iterable[pb.TensorProto], what: str = "request") -> dict[str, np.ndarray]:
    """Name -> array; refuses unnamed, duplicate or malformed tensors with InputError."""
    out: dict[str, np.ndarray] = {}
    for i, t in enumerate(protos):
        if not t.name:
            raise InputError(f"{what}: tensor #{i} has no name (TensorProto.name must be the input blob name)")
        if t.name in out:
            raise InputError(f"{what}: tensor '{t.name}' is given twice")
        try:
            out[t.name] = tensor_to_numpy(t)
        except (TensorError, ParseError) as e:
            raise InputError(f"{what}: tensor '{t.name}' is malformed: {e}") from e
    return out
