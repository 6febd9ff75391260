"""compat.control_ops_grad: Caffe2's functions (control_ops_grad_test.py) and the makers behind them."""

from __future__ import annotations

import numpy as np
import pytest

from asyncnet.compat import control_ops_grad, core, model_helper, workspace


def test_disambiguate_grad_if_op_output_renames_inside_the_branches() -> None:
    workspace.FeedBlob("cond", np.array(True))
    then_model = model_helper.ModelHelper(name="then_test_model")
    then_model.net.Copy("then_grad", "input_grad")
    else_model = model_helper.ModelHelper(name="else_test_model")
    else_model.net.Copy("else_grad", "else_temp_grad")
    else_model.net.Copy("else_temp", "input_grad")
    grad_op = core.CreateOperator(
        "If",
        ["cond", "then_grad", "else_grad"],
        ["input_grad", "else_temp_grad"],
        then_net=then_model.net.Proto(),
        else_net=else_model.net.Proto(),
    )
    new = "input_grad_autosplit_0"
    control_ops_grad.disambiguate_grad_if_op_output(grad_op, 0, new)
    assert grad_op.output[0] == new
    then_net = control_ops_grad.getNetArgument(grad_op, "then_net")
    else_net = control_ops_grad.getNetArgument(grad_op, "else_net")
    assert then_net is not None and else_net is not None
    assert then_net.op[0].output[0] == new
    assert else_net.op[1].output[0] == new and else_net.op[0].output[0] == "else_temp_grad"


def test_gen_if_gradient_returns_ops_and_input_gradients() -> None:
    then_net = core.Net("t")
    then_net.Relu("x", "y")
    op = core.CreateOperator("If", ["c", "x"], ["y"], then_net=then_net.Proto())
    ops, g_in = control_ops_grad.gen_if_gradient(op, ["y_grad"])
    assert [o.type for o in ops][-1] == "If" and g_in == [None, "x_grad"]
    with pytest.raises(ValueError, match="expected a Do op"):
        control_ops_grad.gen_do_gradient(op, ["y_grad"])


def test_get_backward_pass_through_an_if_built_by_add_if_op() -> None:
    from asyncnet.compat import control_ops_util

    then_net = core.Net("t2")
    then_net.Tanh("x", "y")
    main = core.Net("gbp")
    control_ops_util.add_if_op(main, "c", ["c", "x", "y"], then_net)
    ops, grad_map = core.GetBackwardPass(main.Proto().op, {"y": "y_seed"})
    assert str(grad_map["x"]) == "x_grad" and ops[-1].type == "If" and ops[-1].is_gradient_op
    workspace.FeedBlob("c", np.array(True))
    workspace.FeedBlob("x", np.array([0.5, -1.0]))
    workspace.FeedBlob("y_seed", np.array([1.0, 2.0]))
    net = core.Net("gbp_run")
    net.Proto().op.extend([*main.Proto().op, *ops])
    workspace.RunNetOnce(net)
    np.testing.assert_allclose(workspace.FetchBlob("x_grad"), [1.0, 2.0] * (1 - np.tanh([0.5, -1.0]) ** 2))
