"""RecurrentNetwork-built LSTM/GRU stacks against a naive numpy loop and finite differences."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from asyncnet.proto import caffe2_pb2 as pb
from asyncnet.recurrent.build import RecurrentLayer, gru, lstm
from asyncnet.training.gradcheck import check_gradient
from asyncnet.training.gradients import add_gradient_ops
from asyncnet.workspace import Workspace
from tests.recurrent.naive import gru_stack, lstm_stack

T, N, D, H = 4, 3, 2, 3
LENGTHS = np.array([4, 2, 1], np.int32)


def make(kind: str, layers: int, threaded: bool = False) -> RecurrentLayer:
    if kind == "lstm":
        return lstm("x", "lens", [(f"h{k}", f"c{k}") for k in range(layers)], D, [H] * layers, "L", threaded=threaded)
    return gru("x", "lens", [f"h{k}" for k in range(layers)], D, [H] * layers, "L", threaded=threaded)


def feeds(layer: RecurrentLayer, seed: int = 0, dtype: Any = np.float64) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    out = {"x": rng.standard_normal((T, N, D)).astype(dtype), "lens": LENGTHS}
    for s in layer.initial_states:
        out[s] = (0.5 * rng.standard_normal((1, N, H))).astype(dtype)
    for p, shape in layer.params.items():
        out[p] = (0.5 * rng.standard_normal(shape)).astype(dtype)
    return out


def run_forward(layer: RecurrentLayer, values: dict[str, np.ndarray]) -> Workspace:
    ws = Workspace()
    for k, v in values.items():
        ws.feed(k, v)
    net = pb.NetDef(name="rnn")
    net.op.extend(layer.ops)
    ws.run_net_once(net)
    return ws


def naive(kind: str, layers: int, values: dict[str, np.ndarray]) -> tuple[list[np.ndarray], list[np.ndarray]]:
    if kind == "lstm":
        init = [(values[f"h{k}"], values[f"c{k}"]) for k in range(layers)]
        all_h, last_h, _c = lstm_stack(values["x"], LENGTHS, init, values, "L")
        return all_h, last_h
    return gru_stack(values["x"], LENGTHS, [values[f"h{k}"] for k in range(layers)], values, "L")


@pytest.mark.parametrize("kind", ["lstm", "gru"])
@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("threaded", [False, True])
def test_forward_matches_naive_loop(kind: str, layers: int, threaded: bool) -> None:
    layer = make(kind, layers, threaded)
    values = feeds(layer, dtype=np.float32)
    ws = run_forward(layer, values)
    want_all, want_last = naive(kind, layers, values)
    for k in range(layers):
        got = ws.fetch(layer.outputs[f"hidden_all_{k}"])
        assert got.shape == (T, N, H) and got.dtype == np.float32
        np.testing.assert_allclose(got, want_all[k], rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(ws.fetch(layer.outputs[f"hidden_last_{k}"])[0], want_last[k], rtol=1e-5, atol=1e-5)
    if kind == "lstm":
        init = [(values[f"h{k}"], values[f"c{k}"]) for k in range(layers)]
        _a, _h, want_c = lstm_stack(values["x"], LENGTHS, init, values, "L")
        np.testing.assert_allclose(ws.fetch(layer.outputs["cell_last"])[0], want_c[-1], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", ["lstm", "gru"])
@pytest.mark.parametrize("layers", [1, 2])
def test_recurrent_network_gradients_match_finite_differences(kind: str, layers: int) -> None:
    layer = make(kind, layers)
    rnn = layer.ops[1]
    rng = np.random.default_rng(1)
    values = feeds(layer, seed=2)
    gates = 4 if kind == "lstm" else 3
    inputs = {"L/i2h": rng.standard_normal((T, N, gates * H)), "lens": LENGTHS}
    for name in rnn.input:
        if name not in inputs:
            inputs[name] = values[name]
    out_idx = list(rnn.output).index(layer.outputs["hidden_all"])
    res = check_gradient(rnn, inputs, outputs_with_grad=[out_idx], stepsize=1e-6, threshold=1e-6)
    assert res.ok, res.describe()
    # Every parameter, the sequence and every initial state were checked.
    assert set(res.max_error) == {"L/i2h", *layer.initial_states, *(p for p in layer.params if "layer0/i2h" not in p)}


def loss_net(layer: RecurrentLayer, weights: str) -> tuple[pb.NetDef, dict[str, str]]:
    net = pb.NetDef(name="train")
    net.op.extend(layer.ops)
    net.op.append(pb.OperatorDef(type="Mul", input=[layer.outputs["hidden_all"], weights], output=["weighted"]))
    net.op.append(pb.OperatorDef(type="SumElements", input=["weighted"], output=["loss"]))
    grads = add_gradient_ops(net, ["loss"])
    return net, grads


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_net_backward_matches_naive_finite_differences(kind: str) -> None:
    """Gradients from the whole net's backward pass vs central differences of the naive loop."""
    layers = 2
    layer = make(kind, layers)
    values = feeds(layer, seed=3)
    w = np.random.default_rng(4).uniform(-1, 1, (T, N, H))
    net, grads = loss_net(layer, "w")
    ws = Workspace()
    for k, v in {**values, "w": w}.items():
        ws.feed(k, v)
    ws.run_net_once(net)

    def naive_loss(vals: dict[str, np.ndarray]) -> float:
        all_h, _ = naive(kind, layers, vals)
        return float(np.sum(all_h[-1] * w))

    assert float(ws.fetch("loss")) == pytest.approx(naive_loss(values), rel=1e-9)
    eps = 1e-6
    for name in ["x", "h0", "L/layer0/i2h_w", "L/layer1/gates_w", "L/layer1/i2h_b"]:
        analytic = ws.fetch(grads[name])
        base = values[name]
        numeric = np.zeros(base.shape)
        for j in range(base.size):
            shifted = dict(values)
            plus = base.copy().reshape(-1)
            plus[j] += eps
            shifted[name] = plus.reshape(base.shape)
            up = naive_loss(shifted)
            plus[j] -= 2 * eps
            shifted[name] = plus.reshape(base.shape)
            numeric.reshape(-1)[j] = (up - naive_loss(shifted)) / (2 * eps)
        np.testing.assert_allclose(analytic, numeric, rtol=1e-5, atol=1e-7, err_msg=name)


def test_single_initial_state_row_broadcasts_and_its_gradient_sums_rows() -> None:
    layer = lstm("x", None, [("h0", "c0")], D, H, "L")
    values = feeds(layer)
    values["h0"] = np.linspace(-1, 1, H)  # 1-D: one state for the whole batch
    values["c0"] = np.zeros((N, H))  # 2-D: (N, H)
    values.pop("lens")
    ws = run_forward(layer, values)
    full = dict(values, h0=np.tile(values["h0"], (N, 1)).reshape(1, N, H), c0=values["c0"].reshape(1, N, H))
    ref = run_forward(layer, full)
    np.testing.assert_array_equal(ws.fetch(layer.outputs["hidden_all"]), ref.fetch(layer.outputs["hidden_all"]))
    rnn = layer.ops[1]
    inputs = {
        n: (values[n] if n in values else np.random.default_rng(0).standard_normal((T, N, 4 * H))) for n in rnn.input
    }
    res = check_gradient(rnn, inputs, check=[1, 2], stepsize=1e-6, threshold=1e-6)
    assert res.ok, res.describe()
    assert res.analytic["h0"].shape == (H,) and res.analytic["c0"].shape == (N, H)
