"""RecurrentNetwork / RecurrentNetworkGradient arguments: windows, multi-row initial states, goldens, errors."""

from __future__ import annotations

import zipfile
from typing import Any

import numpy as np
import pytest

from asyncnet.errors import ArgumentError, OperatorError
from asyncnet.proto import caffe2_pb2 as pb
from asyncnet.recurrent.build import lstm
from asyncnet.schema import TensorInfo
from asyncnet.serde import make_argument
from asyncnet.shapes import infer_shapes
from asyncnet.training.gradcheck import check_gradient
from asyncnet.training.gradients import gradient_for_op
from asyncnet.workspace import Workspace
from tests.conftest import realnets_path

T, N, D = 5, 2, 3


def _op(op_type: str, inputs: list[str], outputs: list[str], **args: Any) -> pb.OperatorDef:
    o = pb.OperatorDef(type=op_type, input=inputs, output=outputs)
    for k, v in args.items():
        if isinstance(v, pb.NetDef):
            o.arg.append(pb.Argument(name=k, n=v))
        else:
            o.arg.append(make_argument(k, v))
    return o


def window_rnn() -> pb.OperatorDef:
    """s[t + 2] = s[t] + s[t + 1] + x[t]: a window-2 link over a state with 2 initial rows."""
    step = pb.NetDef(name="fib_step")
    step.op.extend(
        [
            _op("Split", ["prev2"], ["a", "b"], axis=0),
            _op("Add", ["a", "b"], ["ab"]),
            _op("Add", ["ab", "x_t"], ["s_new"]),
        ]
    )
    step.external_input.extend(["prev2", "x_t"])
    step.external_output.append("s_new")
    return _op(
        "RecurrentNetwork",
        ["x", "s0"],
        ["s_all", "s_last", "steps"],
        step_net=step,
        link_internal=["prev2", "s_new", "x_t"],
        link_external=["s_states", "s_states", "x"],
        link_offset=[0, 2, 0],
        link_window=[2, 1, 1],
        alias_src=["s_states", "s_states"],
        alias_dst=["s_all", "s_last"],
        alias_offset=[2, -1],
        recurrent_states=["s_states"],
        initial_recurrent_state_ids=[1],
    )


def test_link_window_and_multi_row_initial_state() -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((T, N, D)).astype(np.float32)
    s0 = rng.standard_normal((2, N, D)).astype(np.float32)
    with Workspace() as ws:
        ws.feed("x", x)
        ws.feed("s0", s0)
        ws.run_operator_once(window_rnn())
        s = [s0[0], s0[1]]
        for t in range(T):
            s.append(s[t] + s[t + 1] + x[t])
        np.testing.assert_allclose(ws.fetch("s_all"), np.stack(s[2:]), rtol=1e-6)
        np.testing.assert_allclose(ws.fetch("s_last"), s[-1][None], rtol=1e-6)
        assert len(ws.fetch("steps")) == T
    shapes = infer_shapes(
        pb.NetDef(op=[window_rnn()]),
        {"x": TensorInfo((T, N, D), np.dtype(np.float32)), "s0": TensorInfo((2, N, D), np.dtype(np.float32))},
    )
    assert shapes.blobs["s_all"].shape == (T, N, D) and shapes.blobs["s_last"].shape == (1, N, D)


def test_a_step_sees_its_own_write_through_an_overlapping_link_window() -> None:
    # Caffe2's links share memory: a step that writes row t + 2 of a state (link `cur`) and reads rows
    # [t, t + 3) of it (link `win`) sees the new row at once (recurrent_network_test's stateful conv).
    step = pb.NetDef(name="stateful_step")
    step.op.extend(
        [
            _op("Scale", ["x_t"], ["cur"], scale=2.0),
            _op("Split", ["win"], ["a", "b", "c"], axis=0),
            _op("Sum", ["a", "b", "c"], ["o_new"]),
        ]
    )
    step.external_input.extend(["win", "x_t"])
    rnn = _op(
        "RecurrentNetwork",
        ["x", "s0", "o0"],
        ["s_all", "o_all", "steps"],
        step_net=step,
        link_internal=["win", "cur", "o_new", "x_t"],
        link_external=["s_states", "s_states", "o_states", "x"],
        link_offset=[0, 2, 1, 0],
        link_window=[3, 1, 1, 1],
        alias_src=["s_states", "o_states"],
        alias_dst=["s_all", "o_all"],
        alias_offset=[2, 1],
        recurrent_states=["s_states", "o_states"],
        initial_recurrent_state_ids=[1, 2],
    )
    rng = np.random.default_rng(3)
    x = rng.standard_normal((T, 1, D)).astype(np.float32)
    s0 = rng.standard_normal((2, 1, D)).astype(np.float32)
    with Workspace() as ws:
        ws.feed("x", x)
        ws.feed("s0", s0)
        ws.feed("o0", np.zeros((1, 1, D), np.float32))
        ws.run_operator_once(rnn)
        s = [s0[0], s0[1]]
        outs = []
        for t in range(T):
            s.append(2.0 * x[t])
            outs.append(s[t] + s[t + 1] + s[t + 2])
        np.testing.assert_allclose(ws.fetch("s_all"), np.stack(s[2:]), rtol=1e-6)
        np.testing.assert_allclose(ws.fetch("o_all"), np.stack(outs), rtol=1e-6)


def test_caffe2_golden_recurrent_mul_and_its_gradient_def() -> None:
    path = realnets_path("caffe2_serialized_operator_tests", "recurrent_network_test.test_mul.zip")
    with zipfile.ZipFile(path) as z:
        fwd = pb.OperatorDef()
        fwd.ParseFromString(z.read("op.pb"))
        grad_def = pb.OperatorDef()
        grad_def.ParseFromString(z.read("grad_0.pb"))
    assert grad_def.type == "RecurrentNetworkGradient"
    rng = np.random.default_rng(1)
    inputs = {"input": rng.standard_normal((4, 2, 3)), "initial_input": rng.standard_normal((1, 2, 3))}
    # Caffe2's own gradient def (its backward_step_net) run by asyncnet: out_t = x_t * out_{t-1}.
    res = check_gradient(fwd, inputs, stepsize=1e-6, threshold=1e-7)
    assert res.ok, res.describe()
    mine = gradient_for_op(fwd, [f"{fwd.output[0]}_grad", None, None]).ops[0]
    assert list(mine.input) == list(grad_def.input) and list(mine.output) == list(grad_def.output)


def test_lstm_gradient_op_runs_threaded_and_sequential_alike() -> None:
    layer = lstm("x", None, [("h0", "c0")], D, 4, "L", threaded=True)
    rnn = layer.ops[1]
    rng = np.random.default_rng(2)
    inputs = {n: rng.standard_normal((1, N, 4)) for n in layer.initial_states}
    inputs["L/i2h"] = rng.standard_normal((T, N, 16))
    for p, shape in layer.params.items():
        inputs[p] = 0.5 * rng.standard_normal(shape)
    inputs = {n: inputs[n] for n in rnn.input}
    res = check_gradient(rnn, inputs, stepsize=1e-6, threshold=1e-6)
    assert res.ok, res.describe()


def test_recurrent_network_errors() -> None:
    good = window_rnn()
    with Workspace() as ws:
        ws.feed("x", np.ones((T, N, D), np.float32))
        ws.feed("s0", np.ones((2, N, D), np.float32))
        bad = pb.OperatorDef()
        bad.CopyFrom(good)
        del bad.output[-1]
        with pytest.raises(ArgumentError, match="plus the step-workspaces blob"):
            ws.run_operator_once(bad)
        bad = pb.OperatorDef()
        bad.CopyFrom(good)
        for a in bad.arg:
            if a.name == "link_offset":
                a.ints[1] = 4
        with pytest.raises(OperatorError, match="needs rows .* of 's_states'"):
            ws.run_operator_once(bad)
        bad = pb.OperatorDef()
        bad.CopyFrom(good)
        for a in bad.arg:
            if a.name == "initial_recurrent_state_ids":
                a.ints.append(0)
        with pytest.raises(ArgumentError, match="recurrent_states names 1 state"):
            ws.run_operator_once(bad)
        ws.run_operator_once(good)
        grad = gradient_for_op(good, ["s_all_grad", None, None]).ops[0]
        assert grad.type == "RecurrentNetworkGradient"
        ws.feed("s_all_grad", np.ones((T, N, D), np.float32))
        ws.feed("steps", np.zeros(1))
        with pytest.raises(OperatorError, match="RecurrentNetworkGradient.*expected the step workspaces"):
            ws.run_operator_once(grad)


def test_recompute_blobs_on_backward_gives_the_same_gradients() -> None:
    rng = np.random.default_rng(4)
    results = []
    for recompute in ((), ("L/layer0/gates_h", "L/layer0/gates")):
        layer = lstm("x", None, [("h0", "c0")], D, 4, "L", recompute_blobs_on_backward=recompute)
        rnn = layer.ops[1]
        bwd = next(a.n for a in rnn.arg if a.name == "backward_step_net")
        assert [o.type for o in bwd.op[: len(recompute)]] == (["FC", "Sum"] if recompute else [])
        values = {n: np.random.default_rng(5).standard_normal((1, N, 4)) for n in layer.initial_states}
        values["L/i2h"] = rng.standard_normal((T, N, 16)) if not results else results[0][1]
        for p, shape in layer.params.items():
            values[p] = np.random.default_rng(len(p)).standard_normal(shape)
        res = check_gradient(rnn, {n: values[n] for n in rnn.input}, stepsize=1e-6, threshold=1e-6)
        assert res.ok, res.describe()
        results.append((res.analytic, values["L/i2h"]))
    for name, grad in results[0][0].items():
        assert np.array_equal(grad, results[1][0][name]), name


def test_step_net_given_as_text_like_old_caffe2_scripts() -> None:
    from google.protobuf import text_format

    op = window_rnn()
    for a in op.arg:
        if a.name == "step_net":
            text = text_format.MessageToString(a.n)
            a.ClearField("n")
            a.s = text.encode("utf-8")
    rng = np.random.default_rng(6)
    with Workspace() as ws:
        ws.feed("x", rng.standard_normal((T, N, D)).astype(np.float32))
        ws.feed("s0", rng.standard_normal((2, N, D)).astype(np.float32))
        ws.run_operator_once(op)
        text_out = ws.fetch("s_all").copy()
        ws.run_operator_once(window_rnn())
        np.testing.assert_array_equal(text_out, ws.fetch("s_all"))
        for a in op.arg:
            if a.name == "step_net":
                a.s = b"op { type: "
        with pytest.raises(ArgumentError, match="not a NetDef in text format"):
            ws.run_operator_once(op)
