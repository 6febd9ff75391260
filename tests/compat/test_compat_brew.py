"""brew helpers and ModelHelper: Caffe2's parameter naming, arg scopes, tutorial-style models."""

from __future__ import annotations

import numpy as np
import pytest

from asyncnet.compat import brew, core, model_helper, workspace
from asyncnet.compat.model_helper import ModelHelper
from asyncnet.errors import ArgumentError
from asyncnet.serde import arguments_to_dict


def op_args(op: object) -> dict[str, object]:
    return arguments_to_dict(op.arg)  # type: ignore[attr-defined]


def test_fc_creates_params_with_caffe2_names_and_inits() -> None:
    model = ModelHelper(name="fc_model")
    out = brew.fc(model, "data", "fc1", dim_in=4, dim_out=3)
    assert str(out) == "fc1"
    assert [str(p) for p in model.params] == ["fc1_w", "fc1_b"]
    assert [str(w) for w in model.weights] == ["fc1_w"] and [str(b) for b in model.biases] == ["fc1_b"]
    init_ops = model.param_init_net.Proto().op
    assert [(op.type, op.output[0]) for op in init_ops] == [("XavierFill", "fc1_w"), ("ConstantFill", "fc1_b")]
    assert op_args(init_ops[0])["shape"] == [3, 4] and op_args(init_ops[1])["shape"] == [3]
    fc_op = model.net.Proto().op[0]
    assert (fc_op.type, list(fc_op.input)) == ("FC", ["data", "fc1_w", "fc1_b"])
    # As in Caffe2, the model's arg scope reaches helpers that take **kwargs.
    assert op_args(fc_op) == {"order": "NCHW", "use_cudnn": 1, "cudnn_exhaustive_search": 0}
    assert "data" in model.net.external_inputs


def test_fc_custom_init_and_name_scope() -> None:
    model = ModelHelper(name="scoped")
    with core.NameScope("tower"):
        brew.fc(
            model,
            "x",
            "fc",
            2,
            2,
            weight_init=("GaussianFill", {"std": 0.5}),
            bias_init=("ConstantFill", {"value": 1.0}),
        )
    init_ops = model.param_init_net.Proto().op
    assert [op.output[0] for op in init_ops] == ["tower/fc_w", "tower/fc_b"]
    assert init_ops[0].type == "GaussianFill" and op_args(init_ops[0])["std"] == pytest.approx(0.5)
    assert list(model.net.Proto().op[0].input) == ["tower/x", "tower/fc_w", "tower/fc_b"]
    assert [str(p) for p in model.GetParams("tower")] == ["tower/fc_w", "tower/fc_b"]
    assert model.GetParams("other") == []


def test_initializer_tuples_use_their_first_two_items() -> None:
    # Caffe2 read (op, kwargs) from the tuple and ignored anything after (its own tests pass 3-tuples).
    model = ModelHelper(name="lenient")
    brew.fc(model, "x", "fc", 2, 2, ("UniformFill", {"min": -1.0}, {"max": 1.0}), ("ConstantFill", {}, {}))
    w, b = model.param_init_net.Proto().op
    assert w.type == "UniformFill" and op_args(w) == {"min": -1.0, "shape": [2, 2]}
    assert b.type == "ConstantFill"
    with pytest.raises(ArgumentError, match="pair"):
        brew.fc(model, "x", "fc2", 2, 2, ("UniformFill",))


def test_conv_weight_shape_engine_and_kernel() -> None:
    model = ModelHelper(name="conv_model")
    brew.conv(model, "data", "conv1", dim_in=3, dim_out=8, kernel=5, stride=2)
    w = model.param_init_net.Proto().op[0]
    assert op_args(w)["shape"] == [8, 3, 5, 5]
    conv = model.net.Proto().op[0]
    args = op_args(conv)
    assert conv.engine == "CUDNN"  # use_cudnn=True is ModelHelper's default arg scope, as in Caffe2
    assert args["kernel"] == 5 and args["stride"] == 2 and args["order"] == "NCHW"

    nhwc = ModelHelper(name="nhwc", arg_scope={"order": "NHWC", "use_cudnn": False})
    brew.conv(nhwc, "data", "c", dim_in=4, dim_out=6, kernel=[3, 1], group=2, no_bias=True)
    assert op_args(nhwc.param_init_net.Proto().op[0])["shape"] == [6, 3, 1, 2]
    conv = nhwc.net.Proto().op[0]
    assert len(conv.input) == 2 and not conv.engine
    assert {k: op_args(conv)[k] for k in ("kernel_h", "kernel_w", "group", "order")} == {
        "kernel_h": 3,
        "kernel_w": 1,
        "group": 2,
        "order": "NHWC",
    }


def test_arg_scope_overrides_helper_defaults() -> None:
    model = ModelHelper(name="argscope")
    with brew.arg_scope([brew.max_pool], kernel=3, stride=1):
        brew.max_pool(model, "x", "p1")
        brew.max_pool(model, "x", "p2", kernel=2)
    brew.max_pool(model, "x", "p3", kernel=2, stride=2)
    got = [(op_args(op)["kernel"], op_args(op)["stride"]) for op in model.net.Proto().op]
    assert got == [(3, 1), (2, 1), (2, 2)]
    assert brew.has_helper(brew.fc) and brew.has_helper("conv")
    with pytest.raises(ArgumentError, match="first argument must be the model"):
        brew.relu("not a model", "x", "y")


def test_spatial_bn_params() -> None:
    model = ModelHelper(name="bn")
    out = brew.spatial_bn(model, "x", "bn", 4, epsilon=1e-3)
    assert str(out) == "bn"
    op = model.net.Proto().op[0]
    assert list(op.input) == ["x", "bn_s", "bn_b", "bn_rm", "bn_riv"]
    assert list(op.output) == ["bn", "bn_rm", "bn_riv", "bn_sm", "bn_siv"]
    assert [str(p) for p in model.params] == ["bn_s", "bn_b"]
    assert [str(p) for p in model.GetComputedParams()] == ["bn_rm", "bn_riv"]
    test_model = ModelHelper(name="bn_test")
    brew.spatial_bn(test_model, "x", "bn", 4, is_test=True)
    assert list(test_model.net.Proto().op[0].output) == ["bn"]


def test_dropout_concat_outputs() -> None:
    model = ModelHelper(name="misc")
    with pytest.raises(ArgumentError, match="is_test"):
        brew.dropout(model, "x", "d")
    d = brew.dropout(model, "x", "d", ratio=0.5, is_test=1)
    c = brew.concat(model, ["a", "b"], "cat", axis=1)
    assert (str(d), str(c)) == ("d", "cat")
    assert list(model.net.Proto().op[0].output) == ["d", "_d_mask"]
    assert list(model.net.Proto().op[1].output) == ["cat", "_cat_concat_dims"]
    assert "order" not in op_args(model.net.Proto().op[1])


def test_model_helper_ops_and_validation() -> None:
    model = ModelHelper(name="mh")
    y = model.Relu("x", "y")
    assert str(y) == "y" and model.net.Proto().op[0].type == "Relu"
    with pytest.raises(AttributeError, match="did you mean"):
        model.Rleu("x", "y")
    with pytest.raises(RuntimeError, match="AddGradientOperators first"):
        model.get_param_to_grad([])


def _conv_naive(x: np.ndarray, w: np.ndarray, b: np.ndarray, n: int, o: int, i: int, j: int) -> float:
    k = w.shape[-1]
    return float(np.sum(x[n, :, i : i + k, j : j + k] * w[o]) + b[o])


def test_lenet_forward() -> None:
    # The MNIST tutorial's LeNet, built with brew exactly as the tutorial does.
    model = model_helper.ModelHelper(name="mnist_test", arg_scope={"order": "NCHW"}, init_params=True)
    data = model.net.AddExternalInput("data")
    conv1 = brew.conv(model, data, "conv1", dim_in=1, dim_out=20, kernel=5)
    pool1 = brew.max_pool(model, conv1, "pool1", kernel=2, stride=2)
    conv2 = brew.conv(model, pool1, "conv2", dim_in=20, dim_out=50, kernel=5)
    pool2 = brew.max_pool(model, conv2, "pool2", kernel=2, stride=2)
    fc3 = brew.fc(model, pool2, "fc3", dim_in=50 * 4 * 4, dim_out=500)
    relu = brew.relu(model, fc3, fc3)
    pred = brew.fc(model, relu, "pred", 500, 10)
    softmax = brew.softmax(model, pred, "softmax")
    assert [str(p) for p in model.params] == [f"{n}_{s}" for n in ("conv1", "conv2", "fc3", "pred") for s in "wb"]

    x = np.random.default_rng(2).random((2, 1, 28, 28)).astype(np.float32)
    workspace.FeedBlob("data", x)
    workspace.RunNetOnce(model.param_init_net)
    workspace.CreateNet(model.net, overwrite=True)
    workspace.RunNet(model.net.Proto().name)

    assert workspace.FetchBlob(conv1).shape == (2, 20, 24, 24)
    assert workspace.FetchBlob(pool2).shape == (2, 50, 4, 4)
    w1, b1 = workspace.FetchBlob("conv1_w"), workspace.FetchBlob("conv1_b")
    for n, o, i, j in ((0, 0, 0, 0), (1, 7, 11, 23), (0, 19, 23, 5)):
        assert workspace.FetchBlob(conv1)[n, o, i, j] == pytest.approx(
            _conv_naive(x, w1, b1, n, o, i, j), rel=1e-4, abs=1e-5
        )
    # The dense tail, recomputed from the fetched pool2 and parameters.
    p2 = workspace.FetchBlob(pool2).reshape(2, -1)
    h = np.maximum(p2 @ workspace.FetchBlob("fc3_w").T + workspace.FetchBlob("fc3_b"), 0)
    z = h @ workspace.FetchBlob("pred_w").T + workspace.FetchBlob("pred_b")
    e = np.exp(z - z.max(axis=1, keepdims=True))
    np.testing.assert_allclose(workspace.FetchBlob(softmax), e / e.sum(axis=1, keepdims=True), rtol=1e-4, atol=1e-6)


def test_basics_tutorial_model_helper() -> None:
    rng = np.random.default_rng(3)
    workspace.FeedBlob("data", rng.random((16, 100)).astype(np.float32))
    workspace.FeedBlob("label", (rng.random(16) * 10).astype(np.int32))
    m = model_helper.ModelHelper(name="my first net")
    m.param_init_net.XavierFill([], "fc_w", shape=[10, 100])
    m.param_init_net.ConstantFill([], "fc_b", shape=[10])
    fc_1 = m.net.FC(["data", "fc_w", "fc_b"], "fc1")
    pred = m.net.Sigmoid(fc_1, "pred")
    softmax, loss = m.net.SoftmaxWithLoss([pred, "label"], ["softmax", "loss"])
    grads = m.AddGradientOperators([loss])
    assert str(grads["fc_w"]) == "fc_w_grad" and str(grads["pred"]) == "pred_grad"
    with pytest.raises(RuntimeError, match="already called"):
        m.AddGradientOperators([loss])
    workspace.RunNetOnce(m.param_init_net)
    workspace.CreateNet(m.net)
    workspace.RunNet(m.name, 10)
    sm = workspace.FetchBlob("softmax")
    assert sm.shape == (16, 10)
    np.testing.assert_allclose(sm.sum(axis=1), 1.0, rtol=1e-5)
    assert workspace.FetchBlob("fc_w_grad").shape == (10, 100)


def test_mnist_style_training_reduces_loss() -> None:
    # The MNIST tutorial's training recipe (xent, averaged loss, iter, LR, WeightedSum) on an MLP.
    rng = np.random.default_rng(4)
    centers = rng.standard_normal((3, 8)).astype(np.float32) * 3
    labels = rng.integers(0, 3, size=64).astype(np.int32)
    feats = centers[labels] + rng.standard_normal((64, 8)).astype(np.float32)
    model = model_helper.ModelHelper(name="mlp_train")
    data, label = model.net.AddExternalInputs("data", "label")
    hid = brew.relu(model, brew.fc(model, data, "fc1", 8, 16), "relu1")
    pred = brew.fc(model, hid, "pred", 16, 3)
    softmax = brew.softmax(model, pred, "softmax")
    xent = model.LabelCrossEntropy([softmax, label], "xent")
    loss = model.AveragedLoss(xent, "loss")
    brew.accuracy(model, [softmax, label], "accuracy")
    model.AddGradientOperators([loss])
    it = brew.iter(model, "iter")
    lr = model.LearningRate(it, "LR", base_lr=-0.1, policy="step", stepsize=1, gamma=0.999)
    one = model.param_init_net.ConstantFill([], "ONE", shape=[1], value=1.0)
    for param in model.params:
        model.WeightedSum([param, one, model.param_to_grad[param], lr], param)
    assert str(model.param_to_grad[model.params[0]]) == "fc1_w_grad"

    workspace.FeedBlob("data", feats)
    workspace.FeedBlob("label", labels)
    workspace.RunNetOnce(model.param_init_net)
    workspace.CreateNet(model.net, overwrite=True)
    workspace.RunNet(model.net)
    first = float(workspace.FetchBlob("loss"))
    workspace.RunNet(model.net, 40)
    last = float(workspace.FetchBlob("loss"))
    assert last < 0.5 * first
    assert float(workspace.FetchBlob("accuracy")) > 0.8
    assert int(workspace.FetchBlob("iter")[0]) == 41


def test_extract_predictor_net() -> None:
    model = ModelHelper(name="extract", arg_scope={"order": "NCHW"})
    data, label = model.net.AddExternalInputs("xx/data", "label")
    cnv = brew.conv(model, data, "cnv", 3, 4, 3)
    a = brew.fc(model, cnv, "a", 4 * 6 * 6, 5)
    pred = brew.fc(model, a, "pred", 5, 3)
    brew.softmax(model, [pred, label], "softmax")
    predict_net, export_blobs = model_helper.ExtractPredictorNet(
        net_proto=model.net.Proto(), input_blobs=["xx/data"], output_blobs=["pred"], renames={"xx/data": "image"}
    )
    ops = list(predict_net.Proto().op)
    assert [op.type for op in ops] == ["Conv", "FC", "FC"]
    assert ops[0].input[0] == "image"
    assert set(export_blobs) == {str(p) for p in model.params}
    assert "image" in predict_net.Proto().external_input
    assert list(predict_net.Proto().external_output) == ["pred"]
    # The extracted net runs from the parameters and an "image".
    workspace.RunNetOnce(model.param_init_net)
    workspace.FeedBlob("image", np.ones((2, 3, 8, 8), np.float32))
    workspace.RunNetOnce(predict_net)
    assert workspace.FetchBlob("pred").shape == (2, 3)

    train = ModelHelper(name="extract_train")
    brew.spatial_bn(train, "x", "bn", 3, is_test=0)
    with pytest.raises(ValueError, match="is_test=0"):
        model_helper.ExtractPredictorNet(train.net.Proto(), ["x"], ["bn"])
