"""Building data-parallel nets and launching workers: no torch needed."""

from __future__ import annotations

import sys
import time

import pytest

from asyncnet.distributed.buckets import gradient_bytes
from asyncnet.distributed.data_parallel import (
    Rendezvous,
    add_gradient_allreduce,
    add_rendezvous,
    gradient_buckets,
    world_blobs,
)
from asyncnet.distributed.launch import launch, world_from_env
from asyncnet.errors import ArgumentError
from asyncnet.proto import caffe2_pb2 as pb
from asyncnet.training import DigitsConfig, build_nets

pytestmark = pytest.mark.usefixtures("no_thread_leak")


def _train_without_optimizer() -> tuple[pb.NetDef, pb.NetDef, list[str], dict[str, str]]:
    from asyncnet.training.digits import MODEL_BUILDERS, NetBuilder
    from asyncnet.training.gradients import add_gradient_ops

    init, fwd = NetBuilder("init"), NetBuilder("train")
    logits, params = MODEL_BUILDERS["lenet"](init, fwd, 16)
    fwd.net.op.add(type="SoftmaxWithLoss", input=[logits, "label"], output=["softmax", "loss"])
    grads = add_gradient_ops(fwd.net, ["loss"])
    return init.net, fwd.net, params, grads


def test_allreduce_follows_each_gradient_and_worlds_are_chained() -> None:
    init, train, params, grads = _train_without_optimizer()
    worlds = add_rendezvous(init, Rendezvous(1, 4, path="/tmp/x", num_worlds=3), params)
    assert worlds == world_blobs(3)
    types = [op.type for op in init.op]
    assert types[-(3 + len(params)) :] == ["CreateCommonWorld"] + ["CloneCommonWorld"] * 2 + ["Broadcast"] * len(params)
    cw = next(op for op in init.op if op.type == "CreateCommonWorld")
    assert {a.name: a.i for a in cw.arg} == {"size": 4, "rank": 1, "timeout_ms": 30_000}
    inserted = add_gradient_allreduce(train, {p: grads[p] for p in params}, worlds, size=4, bucket_bytes=0)
    ops = list(train.op)
    assert len(inserted) == len(params)
    for ar in inserted:
        g = ar.output[0]
        k = next(i for i, op in enumerate(ops) if op is ar or op == ar)
        # Right after the last op writing the gradient, before anything reads it later.
        assert g in ops[k - 1].output or ops[k - 1].type == "Allreduce"
        assert all(g not in op.output for op in ops[k + 1 :])
    used = [ar.input[0] for ar in inserted]
    assert used[:3] == worlds and used[3:6] == worlds
    assert [ar.control_input[:] for ar in inserted[3:6]] == [[ar.output[0]] for ar in inserted[:3]]
    seed = next(op for op in ops if op.output[0] == "loss_autogen_grad")
    assert [a.f for a in seed.arg if a.name == "value"] == [0.25]


def test_buckets_follow_the_backward_pass_and_keep_layers_together() -> None:
    init, train, params, grads = _train_without_optimizer()
    param_grads = {p: grads[p] for p in params}
    sizes = gradient_bytes(init, param_grads)
    # LeNet hidden 16: conv1 576 + 64 B, conv2 18432 + 128 B, fc1 8192 + 64 B, fc2 640 + 40 B.
    assert sizes["conv2_w_grad"] == 32 * 16 * 3 * 3 * 4 and sizes["fc2_b_grad"] == 10 * 4
    buckets = gradient_buckets(train, param_grads, grad_bytes=sizes, first_bucket_bytes=4096, bucket_bytes=18000)
    # Production order (last layer first); a layer's weight and bias share a bucket; caps close buckets.
    assert buckets == [
        ["fc2_w_grad", "fc2_b_grad", "fc1_w_grad", "fc1_b_grad"],
        ["conv2_w_grad", "conv2_b_grad"],
        ["conv1_w_grad", "conv1_b_grad"],
    ]
    assert gradient_buckets(train, param_grads, grad_bytes=sizes) == [[g for b in buckets for g in b]]
    # A gradient of unknown size closes its bucket rather than being merged blindly.
    assert gradient_buckets(train, param_grads, grad_bytes={})[:2] == [
        ["fc2_w_grad", "fc2_b_grad"],
        ["fc1_w_grad", "fc1_b_grad"],
    ]
    inserted = add_gradient_allreduce(
        train, param_grads, ["w0", "w1"], size=2, grad_bytes=sizes, first_bucket_bytes=4096, bucket_bytes=18000
    )
    assert [op.type for op in inserted] == ["AllreduceCoalesced"] * 3
    assert [list(op.output) for op in inserted] == buckets
    assert [op.input[0] for op in inserted] == ["w0", "w1", "w0"]
    assert [list(op.control_input) for op in inserted] == [[], [], ["fc2_w_grad"]]
    ops = list(train.op)
    for ar in inserted:
        k = ops.index(ar)
        written_before = {o for op in ops[:k] for o in op.output}
        assert set(ar.input[1:]) <= written_before, "a bucket starts after all its gradients are written"
        assert all(not set(ar.output) & set(op.output) for op in ops[k + 1 :]), "nothing rewrites them after"
    # The first bucket is issued while backward ops of earlier layers are still to come.
    assert any(op.type.endswith("Gradient") for op in ops[ops.index(inserted[0]) + 1 :])


def test_rendezvous_validation() -> None:
    with pytest.raises(ArgumentError, match="rank 2, size 2"):
        Rendezvous(2, 2, path="/tmp/x")
    with pytest.raises(ArgumentError, match="exactly one"):
        Rendezvous(0, 2)
    with pytest.raises(ArgumentError, match="written by no op"):
        _, train, _, _ = build_nets(DigitsConfig(model="mlp"))
        add_gradient_allreduce(train, ["nope_grad"], ["w"], size=2)


def test_world_from_env() -> None:
    assert world_from_env({}) is None
    env = world_from_env({"RANK": "1", "WORLD_SIZE": "2", "ASYNCNET_STORE": "/tmp/s"})
    assert env is not None and (env.rank, env.size, env.store_path) == (1, 2, "/tmp/s")
    tcp = world_from_env({"RANK": "0", "WORLD_SIZE": "2", "MASTER_ADDR": "10.0.0.1", "MASTER_PORT": "29500"})
    assert tcp is not None and tcp.rendezvous().host == "10.0.0.1" and tcp.rendezvous().port == 29500
    with pytest.raises(ArgumentError, match="neither"):
        world_from_env({"RANK": "0", "WORLD_SIZE": "2"})
    with pytest.raises(ArgumentError, match="integers"):
        world_from_env({"RANK": "x", "WORLD_SIZE": "2", "ASYNCNET_STORE": "/tmp/s"})


@pytest.mark.timeout(60)
def test_launch_sets_ranks_and_reports_exit_codes() -> None:
    code = "import os, sys; sys.exit(int(os.environ['RANK']) * 3 if os.environ['WORLD_SIZE'] == '3' else 9)"
    result = launch([sys.executable, "-c", code], 3, grace=10)
    assert result.returncodes == [0, 3, 6]
    assert result.first_failed in (1, 2) and not result.ok


@pytest.mark.timeout(60)
def test_launch_terminates_the_others_after_a_failure() -> None:
    code = "import os, sys, time; sys.exit(1) if os.environ['RANK'] == '0' else time.sleep(60)"
    start = time.monotonic()
    result = launch([sys.executable, "-c", code], 2, grace=1.0)
    assert time.monotonic() - start < 30
    assert result.returncodes[0] == 1 and result.returncodes[1] != 0 and result.first_failed == 0


def test_launch_rejects_bad_layouts() -> None:
    with pytest.raises(ArgumentError, match="master-addr"):
        launch(["true"], 2, nnodes=2)
    with pytest.raises(ArgumentError, match="nprocs"):
        launch(["true"], 0)
