"""Caffe2's workspace module behaviours (after caffe2/python/workspace_test.py) on asyncnet.compat."""

from __future__ import annotations

import numpy as np
import pytest

from asyncnet import Workspace
from asyncnet.compat import core, workspace


def test_feed_fetch_has_blobs() -> None:
    assert workspace.Blobs() == [] and not workspace.HasBlob("X")
    x = np.random.default_rng(0).random((4, 3, 2))
    assert workspace.FeedBlob("X", x) is True
    assert workspace.HasBlob("X") and workspace.Blobs() == ["X"]
    np.testing.assert_array_equal(workspace.FetchBlob("X"), x)
    workspace.FeedBlob(core.BlobReference("Y"), np.int32(3))
    assert workspace.FetchBlobs(["X", "Y"])[1] == 3
    assert workspace.RemoveBlob("Y") and not workspace.HasBlob("Y")


def test_fetch_missing_blob_is_runtime_and_key_error() -> None:
    workspace.FeedBlob("data", np.zeros(1))
    with pytest.raises(RuntimeError, match="Can't find blob: dat") as ei:
        workspace.FetchBlob("dat")
    assert isinstance(ei.value, KeyError)
    assert "did you mean 'data'" in str(ei.value)


def test_feed_string_arrays_become_objects() -> None:
    workspace.FeedBlob("s", np.array(["ab", "c"]))
    assert workspace.FetchBlob("s").dtype == object


def test_blobs_view() -> None:
    workspace.blobs["a"] = np.arange(3)
    assert "a" in workspace.blobs and "b" not in workspace.blobs
    np.testing.assert_array_equal(workspace.blobs["a"], [0, 1, 2])
    assert list(workspace.blobs) == ["a"] and len(workspace.blobs) == 1


def test_switch_and_reset_workspaces() -> None:
    workspace.FeedBlob("X", np.ones(2))
    assert workspace.CurrentWorkspace() == "default"
    with pytest.raises(RuntimeError, match="does not exist"):
        workspace.SwitchWorkspace("never_made_ws")
    workspace.SwitchWorkspace("gutentag", True)
    try:
        assert workspace.CurrentWorkspace() == "gutentag"
        assert workspace.Blobs() == []
        workspace.FeedBlob("Z", np.zeros(1))
    finally:
        workspace.SwitchWorkspace("default")
    assert workspace.Blobs() == ["X"]
    assert "gutentag" in workspace.Workspaces()
    assert isinstance(workspace.CurrentWorkspaceObject(), Workspace)
    assert workspace.ResetWorkspace() is True
    assert workspace.Blobs() == []


def test_run_operator_once_matches_numpy() -> None:
    x = np.random.default_rng(1).standard_normal((2, 3)).astype(np.float32)
    workspace.FeedBlob("X", x)
    workspace.RunOperatorOnce(core.CreateOperator("Relu", ["X"], ["Y"]))
    np.testing.assert_array_equal(workspace.FetchBlob("Y"), np.where(x > 0, x, 0))


def test_create_net_run_net_iterations() -> None:
    net = core.Net("counter")
    net.Add(["acc", "one"], ["acc"])
    workspace.FeedBlob("acc", np.zeros(1, np.float32))
    workspace.FeedBlob("one", np.ones(1, np.float32))
    assert workspace.CreateNet(net) is True
    assert workspace.RunNet(net.Proto().name, 3) is True
    workspace.RunNet(net)
    np.testing.assert_array_equal(workspace.FetchBlob("acc"), [4.0])
    with pytest.raises(RuntimeError, match="overwrite"):
        workspace.CreateNet(net)
    workspace.CreateNet(net, overwrite=True)
    with pytest.raises(RuntimeError, match="no net 'countr'.*did you mean 'counter'"):
        workspace.RunNet("countr")


def test_run_net_once_leaves_no_net() -> None:
    net = core.Net("once")
    net.ConstantFill([], "c", shape=[2], value=3.0)
    workspace.RunNetOnce(net)
    np.testing.assert_array_equal(workspace.FetchBlob("c"), [3.0, 3.0])
    assert workspace.CurrentWorkspaceObject().nets() == []
    workspace.RunNetOnce(net.Proto())  # a NetDef works too


def test_run_net_allow_fail() -> None:
    net = core.Net("failing")
    net.Mul(["p", "q"], "r")
    workspace.FeedBlob("p", np.ones(2, np.float32))
    workspace.FeedBlob("q", np.ones(3, np.float32))
    workspace.CreateNet(net)
    assert workspace.RunNet(net, allow_fail=True) is False
    with pytest.raises(RuntimeError):
        workspace.RunNet(net)


def test_basics_tutorial_first_net() -> None:
    # The "Basics" tutorial's first net, as written for Caffe2.
    net = core.Net("my_first_net")
    x = net.GaussianFill([], ["X"], mean=0.0, std=1.0, shape=[2, 3], run_once=0)
    w = net.GaussianFill([], ["W"], mean=0.0, std=1.0, shape=[5, 3], run_once=0)
    b = net.ConstantFill([], ["b"], shape=[5], value=1.0, run_once=0)
    x.FC([w, b], ["Y"])
    workspace.ResetWorkspace()
    workspace.RunNetOnce(net)
    workspace.CreateNet(net)
    for _ in range(2):
        workspace.RunNet(net.Proto().name)
    xv, wv = workspace.FetchBlob("X"), workspace.FetchBlob("W")
    np.testing.assert_allclose(workspace.FetchBlob("Y"), xv @ wv.T + 1.0, rtol=1e-5, atol=1e-6)
    assert sorted(workspace.Blobs()) == ["W", "X", "Y", "b"]


def test_toy_regression_tutorial_converges() -> None:
    # Caffe2's "Toy Regression" tutorial with X and the noisy targets fed rather than drawn
    # by fill ops inside the train net (the verbatim version is in test_compat_training.py).
    init_net = core.Net("toy_init")
    one = init_net.ConstantFill([], "ONE", shape=[1], value=1.0)
    it = init_net.ConstantFill([], "ITER", shape=[1], value=0, dtype=core.DataType.INT64)
    w = init_net.UniformFill([], "W", shape=[1, 2], min=-1.0, max=1.0)
    b = init_net.ConstantFill([], "B", shape=[1], value=0.0)
    train_net = core.Net("toy_train")
    x, y_noise = train_net.AddExternalInputs("X", "Y_noise")
    y_pred = x.FC([w, b], "Y_pred")
    dist = train_net.SquaredL2Distance([y_noise, y_pred], "dist")
    loss = dist.AveragedLoss([], ["loss"])
    gradient_map = train_net.AddGradientOperators([loss])
    assert str(gradient_map[w]) == "W_grad" and str(gradient_map[b]) == "B_grad"
    train_net.Iter(it, it)
    lr = train_net.LearningRate(it, "LR", base_lr=-0.1, policy="step", stepsize=20, gamma=0.9)
    train_net.WeightedSum([w, one, gradient_map[w], lr], w)
    train_net.WeightedSum([b, one, gradient_map[b], lr], b)

    rng = np.random.default_rng(5)
    workspace.RunNetOnce(init_net)
    # As in Caffe2, the net's inputs must exist when it is created (input_blobs creates them).
    workspace.CreateNet(train_net, input_blobs=["X", "Y_noise"])
    for _ in range(100):
        xv = rng.standard_normal((64, 2)).astype(np.float32)
        noise = 0.1 * rng.standard_normal((64, 1)).astype(np.float32)
        workspace.FeedBlob("X", xv)
        workspace.FeedBlob("Y_noise", xv @ np.array([[2.0], [1.5]], np.float32) + 0.5 + noise)
        workspace.RunNet(train_net.Proto().name)
    np.testing.assert_allclose(workspace.FetchBlob("W"), [[2.0, 1.5]], atol=0.1)
    np.testing.assert_allclose(workspace.FetchBlob("B"), [0.5], atol=0.1)
    assert int(workspace.FetchBlob("ITER")[0]) == 100


def test_switch_workspace_takes_bytes_names() -> None:
    workspace.SwitchWorkspace(b"bytes_ws", True)
    try:
        assert workspace.CurrentWorkspace() == "bytes_ws"
    finally:
        workspace.SwitchWorkspace("default")
    assert "bytes_ws" in workspace.Workspaces()
