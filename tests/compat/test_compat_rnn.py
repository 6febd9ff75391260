"""Caffe2-style control_ops_util and rnn_cell scripts on the compat API."""

from __future__ import annotations

import numpy as np
import pytest

from asyncnet.compat import control_ops_util, core, model_helper, rnn_cell, workspace
from asyncnet.errors import ArgumentError, NetDefinitionError
from tests.recurrent.naive import gru_stack, lstm_stack


def test_add_while_op_with_condition_net_keeps_body_blobs_local() -> None:
    init = core.Net("init")
    init.ConstantFill([], "i", shape=[], value=0.0)
    init.ConstantFill([], "n", shape=[], value=4.0)
    init.ConstantFill([], "one", shape=[], value=1.0)
    init.ConstantFill([], "acc", shape=[], value=0.0)
    init.ConstantFill([], "cond", shape=[], value=0, dtype=core.DataType.BOOL)
    workspace.RunNetOnce(init)
    cond = core.Net("cond")
    cond.LT(["i", "n"], "cond")
    body = core.Net("body")
    body.Add(["i", "one"], "i")
    body.Mul(["i", "i"], "sq")  # local to the body's workspace
    body.Add(["acc", "sq"], "acc")
    main = core.Net("main")
    scope = ["i", "n", "one", "acc", "cond"]
    control_ops_util.add_while_op(main, "cond", scope, body, cond)
    workspace.RunNetOnce(main)
    assert float(workspace.FetchBlob("acc")) == 1 + 4 + 9 + 16
    assert float(workspace.FetchBlob("i")) == 4
    assert not workspace.HasBlob("sq")
    with pytest.raises(NetDefinitionError, match="does not write 'cond'"):
        control_ops_util.add_while_op(core.Net("m2"), "cond", scope, body, body)
    with pytest.raises(NetDefinitionError, match=r"reads blob\(s\) \['acc'\]"):
        control_ops_util.add_while_op(core.Net("m3"), "cond", ["i", "one"], body)


@pytest.mark.parametrize("flag", [True, False])
def test_add_if_op_runs_one_branch(flag: bool) -> None:
    workspace.FeedBlob("c", np.array(flag))
    workspace.FeedBlob("x", np.array([1.0, -2.0], np.float32))
    then_net = core.Net("then")
    then_net.Relu("x", "y")
    else_net = core.Net("else")
    else_net.Negative("x", "tmp")
    else_net.Relu("tmp", "y")
    main = core.Net("main")
    control_ops_util.add_if_op(main, "c", ["c", "x", "y"], then_net, else_net)
    workspace.RunNetOnce(main)
    want = [1.0, 0.0] if flag else [0.0, 2.0]
    np.testing.assert_array_equal(workspace.FetchBlob("y"), want)
    assert not workspace.HasBlob("tmp")


T, N, D, H = 4, 3, 2, 3


def _feed_states(names: list[str]) -> None:
    rng = np.random.default_rng(5)
    for s in names:
        workspace.FeedBlob(s, (0.5 * rng.standard_normal((1, N, H))).astype(np.float32))


def test_rnn_cell_lstm_matches_naive_loop_and_trains() -> None:
    model = model_helper.ModelHelper(name="lstm_model")
    workspace.FeedBlob("seq", np.random.default_rng(0).standard_normal((T, N, D)).astype(np.float32))
    workspace.FeedBlob("lens", np.array([4, 2, 3], np.int32))
    states = ["h0", "c0", "h1", "c1"]
    _feed_states(states)
    hidden_all, hidden_last, cell_all, cell_last = rnn_cell.LSTM(
        model, "seq", "lens", states, dim_in=D, dim_out=[H, H], scope="lstm"
    )
    assert str(hidden_all) == "lstm/layer1/hidden_t_all"
    assert len(model.params) == 8
    workspace.RunNetOnce(model.param_init_net)
    workspace.RunNetOnce(model.net)
    params = {str(p): workspace.FetchBlob(p) for p in model.params}
    init = [
        (workspace.FetchBlob("h0"), workspace.FetchBlob("c0")),
        (workspace.FetchBlob("h1"), workspace.FetchBlob("c1")),
    ]
    all_h, last_h, last_c = lstm_stack(workspace.FetchBlob("seq"), np.array([4, 2, 3]), init, params, "lstm")
    np.testing.assert_allclose(workspace.FetchBlob(hidden_all), all_h[1], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(workspace.FetchBlob(cell_last)[0], last_c[1], rtol=1e-5, atol=1e-5)
    # Train a few SGD steps on sum(hidden_all * target) and check the loss falls.
    workspace.FeedBlob("target", -np.ones((T, N, H), np.float32))
    prod = model.net.Mul([hidden_all, "target"], "prod")
    loss = model.net.SumElements(prod, "loss")
    grads = model.AddGradientOperators([loss])
    for p in model.params:
        model.net.WeightedSum([p, "ONE", grads[p], "LR"], p)
    workspace.FeedBlob("ONE", np.array([1.0], np.float32))
    workspace.FeedBlob("LR", np.array([-0.05], np.float32))
    workspace.CreateNet(model.net)
    losses = []
    for _ in range(5):
        workspace.RunNet(model.net.Name())
        losses.append(float(workspace.FetchBlob("loss")))
    assert losses[-1] < losses[0]


def test_multi_rnn_cell_of_gru_cells_matches_naive() -> None:
    model = model_helper.ModelHelper(name="gru_model")
    workspace.FeedBlob("seq", np.random.default_rng(1).standard_normal((T, N, D)).astype(np.float32))
    _feed_states(["g0", "g1"])
    cell = rnn_cell.MultiRNNCell([rnn_cell.GRUCell(D, H), rnn_cell.GRUCell(H, H)], name="gru")
    outs = cell.apply_over_sequence(model, "seq", None, ["g0", "g1"])
    workspace.RunNetOnce(model.param_init_net)
    workspace.RunNetOnce(model.net)
    params = {str(p): workspace.FetchBlob(p) for p in model.params}
    all_h, _ = gru_stack(
        workspace.FetchBlob("seq"), np.full(N, T), [workspace.FetchBlob("g0"), workspace.FetchBlob("g1")], params, "gru"
    )
    np.testing.assert_allclose(workspace.FetchBlob(outs[0]), all_h[1], rtol=1e-5, atol=1e-5)
    with pytest.raises(ArgumentError, match="all LSTMCell or all GRUCell"):
        rnn_cell.MultiRNNCell([rnn_cell.GRUCell(D, H), rnn_cell.LSTMCell(H, H)])
    with pytest.raises(ArgumentError, match="need 4 initial state"):
        rnn_cell.LSTM(model, "seq", None, ["a"], D, [H, H])


def test_recurrent_net_with_a_caffe2_style_cell_matches_naive_and_the_builder() -> None:
    from asyncnet.compat import recurrent

    step = core.Net("lstm_cell")
    input_t, timestep, cell_t_prev, hidden_t_prev = step.AddExternalInputs(
        "input_t", "timestep", "cell_t_prev", "hidden_t_prev"
    )
    gates_t = step.FC([hidden_t_prev, "L/layer0/gates_w", "L/layer0/gates_b"], "gates_t", axis=2)
    step.Sum([gates_t, input_t], "gates_sum")
    hidden_t, cell_t = step.LSTMUnit(
        [hidden_t_prev, cell_t_prev, "gates_sum", "lens", timestep], ["hidden_t", "cell_t"]
    )
    step.AddExternalOutputs(cell_t, hidden_t)
    net = core.Net("main")
    net.FC(["seq", "L/layer0/i2h_w", "L/layer0/i2h_b"], "i2h", axis=2)
    out_all, out_last, cell_all, cell_last = recurrent.recurrent_net(
        net,
        step,
        inputs=[(input_t, "i2h")],
        initial_cell_inputs=[(hidden_t_prev, "h0"), (cell_t_prev, "c0")],
        links={hidden_t_prev: hidden_t, cell_t_prev: cell_t},
        timestep=timestep,
        scope="lstm",
    )
    assert [str(b) for b in (out_all, out_last, cell_all, cell_last)] == [
        "hidden_t_all", "hidden_t_last", "cell_t_all", "cell_t_last"
    ]  # fmt: skip
    rnn = net.Proto().op[-1]
    assert rnn.type == "RecurrentNetwork" and list(rnn.input)[:3] == ["i2h", "h0", "c0"]
    rng = np.random.default_rng(8)
    values = {
        "seq": rng.standard_normal((T, N, D)).astype(np.float32),
        "lens": np.array([4, 1, 3], np.int32),
        "h0": rng.standard_normal((1, N, H)).astype(np.float32),
        "c0": rng.standard_normal((1, N, H)).astype(np.float32),
        "L/layer0/i2h_w": rng.standard_normal((4 * H, D)).astype(np.float32),
        "L/layer0/i2h_b": rng.standard_normal(4 * H).astype(np.float32),
        "L/layer0/gates_w": rng.standard_normal((4 * H, H)).astype(np.float32),
        "L/layer0/gates_b": rng.standard_normal(4 * H).astype(np.float32),
    }
    for k, v in values.items():
        workspace.FeedBlob(k, v)
    loss = net.SumElements(out_all, "loss")
    grads = net.AddGradientOperators([loss])
    workspace.RunNetOnce(net)
    all_h, _h, _c = lstm_stack(values["seq"], values["lens"], [(values["h0"], values["c0"])], values, "L")
    np.testing.assert_allclose(workspace.FetchBlob(out_all), all_h[0], rtol=1e-5, atol=1e-5)
    # The same model from the idiomatic builder gives the same gradients.
    from asyncnet.proto import caffe2_pb2 as pb
    from asyncnet.recurrent.build import lstm
    from asyncnet.training.gradients import add_gradient_ops
    from asyncnet.workspace import Workspace

    layer = lstm("seq", "lens", [("h0", "c0")], D, H, "L")
    ref = pb.NetDef(name="ref", op=layer.ops)
    ref.op.append(pb.OperatorDef(type="SumElements", input=[layer.outputs["hidden_all"]], output=["loss"]))
    ref_grads = add_gradient_ops(ref, ["loss"])
    ws = Workspace()
    for k, v in values.items():
        ws.feed(k, v)
    ws.run_net_once(ref)
    for p in ("L/layer0/gates_w", "L/layer0/i2h_w", "h0", "c0"):
        np.testing.assert_allclose(workspace.FetchBlob(grads[p]), ws.fetch(ref_grads[p]), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kind", ["LSTM", "GRU"])
def test_rnn_cell_memory_optimization_recomputes_gates_with_identical_gradients(kind: str) -> None:
    from asyncnet.recurrent.runtime import StepWorkspaces

    results = []
    for optimise in (False, True):
        workspace.ResetWorkspace()
        model = model_helper.ModelHelper(name=f"{kind}_mem_{optimise}")
        workspace.FeedBlob("seq", np.random.default_rng(0).standard_normal((T, N, D)).astype(np.float32))
        states = ["h0", "c0"] if kind == "LSTM" else ["h0"]
        _feed_states(states)
        hidden_all = getattr(rnn_cell, kind)(
            model, "seq", None, states, dim_in=D, dim_out=H, scope="m", memory_optimization=optimise
        )[0]
        loss = model.net.SumElements(hidden_all, "loss")
        grads = model.AddGradientOperators([loss])
        workspace.RunNetOnce(model.param_init_net)
        for k, p in enumerate(sorted(str(q) for q in model.params)):  # the same weights both times
            shape = workspace.FetchBlob(p).shape
            workspace.FeedBlob(p, np.random.default_rng(k).standard_normal(shape).astype(np.float32))
        workspace.RunNetOnce(model.net)
        steps = workspace.FetchBlob("m/step_workspaces")
        assert isinstance(steps, StepWorkspaces)
        results.append(({str(p): workspace.FetchBlob(grads[p]) for p in model.params}, steps.retained_bytes()))
    (plain, kept_plain), (lean, kept_lean) = results
    for name, g in plain.items():
        np.testing.assert_array_equal(g, lean[name], err_msg=name)
    # LSTM: gates_h + gates (N, 4H); GRU: gates (N, 3H); float32, one value instead of T.
    per_step = 2 * N * 4 * H * 4 if kind == "LSTM" else N * 3 * H * 4
    assert kept_plain - kept_lean == (T - 1) * per_step
