"""Caffe2's training tutorials, written as for Caffe2, run on the facade."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from asyncnet.compat import brew, core, model_helper, optimizer, workspace
from asyncnet.errors import ArgumentError, CompatError

# -- MNIST tutorial (LeNet sized for scikit-learn's 8x8 digits) --------------------------------------------


def AddInput(model: model_helper.ModelHelper) -> tuple[Any, str]:
    # The tutorial reads uint8 images from a DB; here they are fed as "data_uint8".
    data = model.Cast("data_uint8", "data", to=core.DataType.FLOAT)
    data = model.Scale(data, data, scale=float(1.0 / 16))
    data = model.StopGradient(data, data)
    return data, "label"


def AddLeNetModel(model: model_helper.ModelHelper, data: Any) -> Any:
    # The tutorial's LeNet with kernels shrunk for 8x8 inputs: 8 -conv3-> 6 -pool-> 3 -conv2-> 2 -pool-> 1.
    conv1 = brew.conv(model, data, "conv1", dim_in=1, dim_out=20, kernel=3)
    pool1 = brew.max_pool(model, conv1, "pool1", kernel=2, stride=2)
    conv2 = brew.conv(model, pool1, "conv2", dim_in=20, dim_out=50, kernel=2)
    pool2 = brew.max_pool(model, conv2, "pool2", kernel=2, stride=2)
    fc3 = brew.fc(model, pool2, "fc3", dim_in=50 * 1 * 1, dim_out=100)
    relu3 = brew.relu(model, fc3, "relu3")
    pred = brew.fc(model, relu3, "pred", dim_in=100, dim_out=10)
    return brew.softmax(model, pred, "softmax")


def AddAccuracy(model: model_helper.ModelHelper, softmax: Any, label: Any) -> Any:
    return brew.accuracy(model, [softmax, label], "accuracy")


def AddTrainingOperators(model: model_helper.ModelHelper, softmax: Any, label: Any) -> None:
    xent = model.LabelCrossEntropy([softmax, label], "xent")
    loss = model.AveragedLoss(xent, "loss")
    AddAccuracy(model, softmax, label)
    model.AddGradientOperators([loss])
    optimizer.build_sgd(model, base_learning_rate=0.1, policy="step", stepsize=1, gamma=0.999)


def _digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    order = np.random.default_rng(0).permutation(len(digits.target))
    images = digits.images.astype(np.uint8)[order][:, None]  # NCHW, values 0..16
    return images, digits.target.astype(np.int32)[order]


@pytest.mark.timeout(120)
def test_mnist_tutorial_lenet_on_digits() -> None:
    images, labels = _digits()
    train_x, train_y, test_x, test_y = images[:1472], labels[:1472], images[1472:], labels[1472:]
    arg_scope = {"order": "NCHW"}
    train_model = model_helper.ModelHelper(name="mnist_train", arg_scope=arg_scope)
    data, label = AddInput(train_model)
    softmax = AddLeNetModel(train_model, data)
    AddTrainingOperators(train_model, softmax, label)
    test_model = model_helper.ModelHelper(name="mnist_test", arg_scope=arg_scope, init_params=False)
    data, label = AddInput(test_model)
    softmax = AddLeNetModel(test_model, data)
    AddAccuracy(test_model, softmax, label)

    types = [op.type for op in train_model.net.Proto().op]
    assert types.count("WeightedSum") == len(train_model.params) == 8
    assert "ConvGradient" in types and "MaxPoolGradient" in types
    assert len(test_model.param_init_net.Proto().op) == 0  # shares the trained parameters

    workspace.FeedBlob("data_uint8", train_x[:64])
    workspace.FeedBlob("label", train_y[:64])
    workspace.RunNetOnce(train_model.param_init_net)
    workspace.CreateNet(train_model.net, overwrite=True)
    losses, accuracies = [], []
    for i in range(150):
        start = (i * 64) % len(train_y)
        workspace.FeedBlob("data_uint8", train_x[start : start + 64])
        workspace.FeedBlob("label", train_y[start : start + 64])
        workspace.RunNet(train_model.net)
        losses.append(float(workspace.FetchBlob("loss")))
        accuracies.append(float(workspace.FetchBlob("accuracy")))
    assert np.mean(losses[:5]) > 2.0  # ~log(10) at the start
    assert np.mean(losses[-10:]) < 0.3 * np.mean(losses[:5])
    assert np.mean(accuracies[-10:]) > 0.75
    assert int(workspace.FetchBlob("optimizer_iteration")[0]) == 150
    # StopGradient keeps the backward pass off the input ops (no gradients of Scale or Cast).
    assert types.count("Scale") == 1 and types.count("Cast") == 1

    workspace.CreateNet(test_model.net, overwrite=True)
    workspace.FeedBlob("data_uint8", test_x)
    workspace.FeedBlob("label", test_y)
    workspace.RunNet(test_model.net.Proto().name)
    assert float(workspace.FetchBlob("accuracy")) > 0.75  # chance is 0.1


# -- optimizer helpers ---------------------------------------------------------------------------------------


def _mlp(name: str) -> model_helper.ModelHelper:
    model = model_helper.ModelHelper(name=name)
    hid = brew.relu(model, brew.fc(model, "data", "fc1", 8, 16), "relu1")
    softmax = brew.softmax(model, brew.fc(model, hid, "pred", 16, 3), "softmax")
    loss = model.AveragedLoss(model.LabelCrossEntropy([softmax, "label"], "xent"), "loss")
    model.AddGradientOperators([loss])
    return model


def _blobs_task() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(4)
    centers = rng.standard_normal((3, 8)).astype(np.float32) * 3
    labels = rng.integers(0, 3, size=64).astype(np.int32)
    return centers[labels] + rng.standard_normal((64, 8)).astype(np.float32), labels


@pytest.mark.parametrize(
    ("build", "kwargs"),
    [
        (optimizer.build_sgd, {"base_learning_rate": 0.1}),
        (optimizer.build_sgd, {"base_learning_rate": 0.05, "momentum": 0.9}),
        (optimizer.build_adam, {"base_learning_rate": 0.01}),
        (optimizer.build_adagrad, {"base_learning_rate": 0.1}),
    ],
)
def test_optimizer_builders_train(build: Any, kwargs: dict[str, Any]) -> None:
    model = _mlp("opt_" + build.__name__)
    blobs = build(model, **kwargs)
    assert blobs.iteration == "optimizer_iteration"
    assert set(blobs.state) == {str(p) for p in model.params}
    feats, labels = _blobs_task()
    workspace.FeedBlob("data", feats)
    workspace.FeedBlob("label", labels)
    workspace.RunNetOnce(model.param_init_net)
    workspace.CreateNet(model.net)
    workspace.RunNet(model.net)
    first = float(workspace.FetchBlob("loss"))
    before = workspace.FetchBlob("fc1_w").copy()
    workspace.RunNet(model.net, 30)
    assert float(workspace.FetchBlob("loss")) < 0.5 * first
    assert not np.array_equal(before, workspace.FetchBlob("fc1_w"))
    assert int(workspace.FetchBlob("optimizer_iteration")[0]) == 31


def test_build_sgd_ops_and_learning_rate_sign() -> None:
    model = _mlp("sgd_ops")
    blobs = optimizer.build_sgd(model, 0.5, policy="step", stepsize=10, gamma=0.5)
    ops = model.net.Proto().op
    lr_op = next(op for op in ops if op.type == "LearningRate")
    args = {a.name: a for a in lr_op.arg}
    # WeightedSum adds lr * grad, so the rate is negative, as in Caffe2.
    assert args["base_lr"].f == -0.5 and args["policy"].s == b"step" and args["stepsize"].i == 10
    updates = [op for op in ops if op.type == "WeightedSum"]
    assert [op.input[0] for op in updates] == [str(p) for p in model.params]
    assert all(op.input[3] == blobs.lr and op.output[0] == op.input[0] for op in updates)
    assert all(op.debug_info == "" for op in ops)  # sites stay out of the proto
    assert all("test_compat_training.py" in op.debug_info for op in model.net.ToNetDef().op[-len(updates) :])


def test_build_sgd_before_gradients_is_refused() -> None:
    model = model_helper.ModelHelper(name="no_grads")
    brew.fc(model, "data", "fc", 4, 2)
    with pytest.raises(CompatError, match="AddGradientOperators"):
        optimizer.build_sgd(model, 0.1)
    with pytest.raises(ArgumentError, match="ModelHelper"):
        optimizer.build_adam(core.Net("not_a_model"), 0.1)  # type: ignore[arg-type]
    model = _mlp("clip")
    with pytest.raises(ArgumentError, match="max_gradient_norm"):
        optimizer.build_sgd(model, 0.1, max_gradient_norm=1.0)


# -- toy regression tutorial ---------------------------------------------------------------------------------


def test_toy_regression_tutorial_verbatim() -> None:
    # As published: data and noisy targets are drawn by fill ops inside the train net, and
    # StopGradient keeps the backward pass off the ground-truth branch.
    init_net = core.Net("init")
    W = init_net.UniformFill([], "W", shape=[1, 2], min=-1.0, max=1.0)
    B = init_net.ConstantFill([], "B", shape=[1], value=0.0)
    W_gt = init_net.GivenTensorFill([], "W_gt", shape=[1, 2], values=[2.0, 1.5])
    B_gt = init_net.GivenTensorFill([], "B_gt", shape=[1], values=[0.5])
    ONE = init_net.ConstantFill([], "ONE", shape=[1], value=1.0)
    ITER = init_net.ConstantFill([], "ITER", shape=[1], value=0, dtype=core.DataType.INT64)

    train_net = core.Net("train")
    X = train_net.GaussianFill([], "X", shape=[64, 2], mean=0.0, std=1.0, run_once=0)
    Y_gt = X.FC([W_gt, B_gt], "Y_gt")
    noise = train_net.GaussianFill([], "noise", shape=[64, 1], mean=0.0, std=1.0, run_once=0)
    Y_noise = Y_gt.Add(noise, "Y_noise")
    Y_noise = Y_noise.StopGradient([], "Y_noise")
    Y_pred = X.FC([W, B], "Y_pred")
    dist = train_net.SquaredL2Distance([Y_noise, Y_pred], "dist")
    loss = dist.AveragedLoss([], ["loss"])

    gradient_map = train_net.AddGradientOperators([loss])
    train_net.Iter(ITER, ITER)
    LR = train_net.LearningRate(ITER, "LR", base_lr=-0.1, policy="step", stepsize=20, gamma=0.9)
    train_net.WeightedSum([W, ONE, gradient_map[W], LR], W)
    train_net.WeightedSum([B, ONE, gradient_map[B], LR], B)

    # No gradient flows into the fills or the ground-truth parameters.
    assert "W_gt" not in gradient_map and "noise" not in gradient_map and "Y_gt" not in gradient_map
    assert str(gradient_map[W]) == "W_grad" and str(gradient_map[B]) == "B_grad"

    workspace.RunNetOnce(init_net)
    workspace.CreateNet(train_net)
    for _ in range(100):
        workspace.RunNet(train_net.Proto().name)
    assert int(workspace.FetchBlob("ITER")[0]) == 100
    # Unit noise on 64 samples: the estimate lands within a few hundredths of the truth.
    np.testing.assert_allclose(workspace.FetchBlob("W"), [[2.0, 1.5]], atol=0.2)
    np.testing.assert_allclose(workspace.FetchBlob("B"), [0.5], atol=0.2)
    np.testing.assert_array_equal(workspace.FetchBlob("W_gt"), [[2.0, 1.5]])
