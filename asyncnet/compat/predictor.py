"""Caffe2's Python predictor names: ``workspace.Predictor`` and ``mobile_exporter.Export``.

``Predictor(init_net, predict_net)`` accepts NetDefs, compat ``core.Net`` objects or their
serialized bytes (Caffe2 passed ``net.SerializeToString()``); ``run(inputs)`` takes a list (fed to
the first external inputs, in order) or a dict, and returns the outputs as a list in
``external_output`` order. Unlike Caffe2's, it is safe to call from many threads at once (it is an
:class:`asyncnet.serving.Predictor`). File access keeps Caffe2's permissive default.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, cast

import numpy as np

from asyncnet.compat.core import Net
from asyncnet.errors import CompatError
from asyncnet.iopolicy import IOPolicy
from asyncnet.proto import caffe2_pb2 as pb
from asyncnet.serde import make_argument, parse_message
from asyncnet.serving.predictor import Predictor as _Predictor

__all__ = ["Export", "Predictor"]


def _as_net(net: Any, what: str) -> pb.NetDef:
    if isinstance(net, pb.NetDef):
        return net
    if isinstance(net, Net):
        return net.Proto()
    if isinstance(net, bytes | bytearray):
        return parse_message(bytes(net), pb.NetDef, source=what)
    raise CompatError(f"{what}: expected a NetDef, core.Net or serialized NetDef bytes, got {type(net).__name__}")


def _placeholders(init: pb.NetDef) -> set[str]:
    # mobile_exporter-style init nets fill each data input with a dummy ConstantFill.
    return {o for op in init.op if op.type == "ConstantFill" and not op.input for o in op.output}


class Predictor:
    """Caffe2's ``workspace.Predictor(init_net, predict_net)`` with ``run(inputs) -> [outputs]``."""

    def __init__(self, init_net: Any, predict_net: Any) -> None:
        init = _as_net(init_net, "init_net")
        net = _as_net(predict_net, "predict_net")
        filled = {o for op in init.op for o in op.output} - _placeholders(init)
        data = [n for n in net.external_input if n not in filled] or list(net.external_input[:1])
        self._predictor = _Predictor(init, net, io_policy=IOPolicy.permissive(), input_names=data)

    @property
    def input_names(self) -> list[str]:
        return list(self._predictor.input_names)

    @property
    def output_names(self) -> list[str]:
        return list(self._predictor.output_names)

    def run(self, inputs: Sequence[Any] | Mapping[str, Any]) -> list[np.ndarray]:
        """Outputs (in external_output order) for a list or dict of inputs."""
        if isinstance(inputs, Mapping):
            out = cast(dict[str, np.ndarray], self._predictor.predict(inputs))
            return [out[n] for n in self._predictor.output_names]
        result = self._predictor.predict(list(inputs))
        return list(result) if isinstance(result, list) else list(result.values())

    def close(self) -> None:
        self._predictor.close()


_FILL_OF = {
    np.dtype(np.float32): "GivenTensorFill",
    np.dtype(np.float64): "GivenTensorDoubleFill",
    np.dtype(np.int32): "GivenTensorIntFill",
    np.dtype(np.int64): "GivenTensorInt64Fill",
    np.dtype(np.int16): "GivenTensorInt16Fill",
    np.dtype(np.bool_): "GivenTensorBoolFill",
}


def Export(workspace: Any, net: Any, params: Sequence[Any]) -> tuple[pb.NetDef, pb.NetDef]:  # noqa: N802 - Caffe2's name
    """Caffe2's ``mobile_exporter.Export``: (init_net, predict_net) for a Predictor.

    ``workspace`` is the compat ``workspace`` module or an :class:`asyncnet.Workspace`; the init
    net fills every parameter with its current value and each other external input with a
    placeholder.
    """
    fetch = workspace.FetchBlob if hasattr(workspace, "FetchBlob") else workspace.fetch
    predict = pb.NetDef()
    predict.CopyFrom(_as_net(net, "net"))
    init = pb.NetDef(name=f"{predict.name}_init" if predict.name else "init")
    names = [str(p) for p in params]
    for name in names:
        value = np.asarray(fetch(name))
        kind = _FILL_OF.get(value.dtype)
        if kind is None:
            raise CompatError(
                f"Export: parameter '{name}' has dtype {value.dtype}; supported: {sorted(map(str, _FILL_OF))}"
            )
        op = init.op.add(type=kind, output=[name])
        op.arg.extend([make_argument("shape", list(value.shape)), make_argument("values", value.reshape(-1).tolist())])
    for name in predict.external_input:
        if name not in names:
            op = init.op.add(type="ConstantFill", output=[name])
            op.arg.append(make_argument("shape", [1]))
    init.external_output.extend(names)
    return init, predict
