"""Small models for the serving tests, written in the zoo layout, and an independent reference.

``dense`` is FC -> Relu -> FC -> Softmax with seeded weights; :func:`reference` recomputes it
with plain numpy from Caffe2's documented semantics (FC: X W^T + b). ``slow`` adds the test-only
``ExecTestSleep`` op (tests/executors/helpers.py), tagged so tests can count runs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from executors import helpers
from executors.helpers import op

from asyncnet.proto import caffe2_pb2 as pb
from asyncnet.serde import write_message

IN, HID, OUT = 8, 16, 5


def weights(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "W1": rng.standard_normal((HID, IN)).astype(np.float32),
        "b1": rng.standard_normal(HID).astype(np.float32),
        "W2": rng.standard_normal((OUT, HID)).astype(np.float32),
        "b2": rng.standard_normal(OUT).astype(np.float32),
    }


def init_net(params: dict[str, np.ndarray], extra: list[pb.OperatorDef] | None = None) -> pb.NetDef:
    n = pb.NetDef(name="init")
    for k, v in params.items():
        n.op.append(op("GivenTensorFill", [], [k], shape=list(v.shape), values=[float(x) for x in v.reshape(-1)]))
    n.op.extend(extra or [])
    n.external_output.extend(params)
    return n


def predict_net(*, sleep_ms: float = 0.0, tag: str = "", extra: list[pb.OperatorDef] | None = None) -> pb.NetDef:
    n = pb.NetDef(name="dense")
    src = "data"
    if sleep_ms:
        n.op.append(op("ExecTestSleep", ["data"], ["data_s"], ms=sleep_ms, tag=tag or "serve"))
        src = "data_s"
    n.op.extend(
        [
            op("FC", [src, "W1", "b1"], ["h"]),
            op("Relu", ["h"], ["h"]),
            op("FC", ["h", "W2", "b2"], ["logits"]),
            op("Softmax", ["logits"], ["prob"]),
        ]
    )
    n.op.extend(extra or [])
    n.external_input.extend(["data", "W1", "b1", "W2", "b2"])
    n.external_output.append("prob")
    return n


def reference(x: np.ndarray, p: dict[str, np.ndarray]) -> np.ndarray:
    x64 = x.astype(np.float64)
    h = np.maximum(x64 @ p["W1"].T.astype(np.float64) + p["b1"], 0.0)
    z = h @ p["W2"].T.astype(np.float64) + p["b2"]
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def write_model(folder: Path, *, sleep_ms: float = 0.0, tag: str = "", value_info: bool = True, **kw: Any) -> Path:
    """Write init_net.pb / predict_net.pb / value_info.json of the dense model into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    write_message(init_net(weights()), folder / "init_net.pb")
    write_message(predict_net(sleep_ms=sleep_ms, tag=tag, **kw), folder / "predict_net.pb")
    if value_info:
        (folder / "value_info.json").write_text(json.dumps({"data": [1, [1, IN]]}))
    return folder


def runs(tag: str) -> int:
    """How many times the ExecTestSleep op tagged ``tag`` has run in this process."""
    return sum(1 for e in helpers.EVENTS if e[0] == tag)


def batch(n: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, IN)).astype(np.float32)


def write_heavy_model(folder: Path, *, width: int = 1024, layers: int = 60) -> Path:
    """A model slow enough to have requests in flight (``layers`` FCs of ``width``), built from
    registered ops only (server subprocesses have no test ops) with constant weights, so its
    output is known: every hidden unit equals ``sum(x) * 0.01 * (width * c)^k`` for k layers."""
    folder.mkdir(parents=True, exist_ok=True)
    init = pb.NetDef(name="init")
    init.op.extend(
        [
            op("ConstantFill", [], ["Wa"], shape=[width, IN], value=0.01),
            op("ConstantFill", [], ["ba"], shape=[width], value=0.0),
            op("ConstantFill", [], ["Wh"], shape=[width, width], value=1.0 / width),
            op("ConstantFill", [], ["bh"], shape=[width], value=0.0),
            op("ConstantFill", [], ["Wo"], shape=[OUT, width], value=1.0 / width),
            op("ConstantFill", [], ["bo"], shape=[OUT], value=0.0),
        ]
    )
    net = pb.NetDef(name="heavy")
    net.op.append(op("FC", ["data", "Wa", "ba"], ["h0"]))
    for k in range(layers):
        net.op.append(op("FC", [f"h{k}", "Wh", "bh"], [f"h{k + 1}"]))
    net.op.append(op("FC", [f"h{layers}", "Wo", "bo"], ["out"]))
    net.external_input.extend(["data", "Wa", "ba", "Wh", "bh", "Wo", "bo"])
    net.external_output.append("out")
    write_message(init, folder / "init_net.pb")
    write_message(net, folder / "predict_net.pb")
    (folder / "value_info.json").write_text(json.dumps({"data": [1, [1, IN]]}))
    return folder


def heavy_reference(x: np.ndarray) -> np.ndarray:
    """Output of :func:`write_heavy_model` (averaging layers keep the value): 0.01 * row sums."""
    return np.repeat(0.01 * x.astype(np.float64).sum(axis=1, keepdims=True), OUT, axis=1)
