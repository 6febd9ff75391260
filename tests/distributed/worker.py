"""A worker process for the multi-process tests (run by asyncnet.distributed.launch.launch).

``python -m tests.distributed.worker SCENARIO OUT_DIR``; the rank and the rendezvous come
from the launcher's environment. Each rank writes what it saw under OUT_DIR:
``rank{r}.json`` (status, error text, seconds, threads left) and per-step parameters.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from asyncnet.distributed.comm import exit_process
from asyncnet.distributed.digits import train_digits_data_parallel
from asyncnet.distributed.launch import world_from_env
from asyncnet.training import DigitsConfig
from asyncnet.workspace import Workspace

STEPS = 3


def _cfg(model: str, batch: int, hidden: int = 32) -> DigitsConfig:
    return DigitsConfig(model=model, epochs=1, max_steps=STEPS, batch_size=batch, hidden=hidden, progress=False)


# Bucket caps per model: the MLP all-reduces each gradient on its own (Caffe2's layout), LeNet in
# two buckets (a small first one, so its all-reduce overlaps the convolutions' backward pass).
BUCKETS = {"mlp": {"bucket_bytes": 0}, "lenet": {"first_bucket_bytes": 4096}}


def equivalence(out: Path, rank: int, size: int) -> dict[str, Any]:
    env = world_from_env()
    assert env is not None
    for model in ("mlp", "lenet"):

        def dump(step: int, ws: Workspace, params: list[str], model: str = model) -> None:
            np.savez(out / f"{model}_rank{rank}_step{step}.npz", **{p: np.asarray(ws.fetch(p)) for p in params})

        trace = str(out / f"{model}_rank{rank}_trace.json") if model == "lenet" else None
        train_digits_data_parallel(
            _cfg(model, 8 * size), env.rendezvous(prefix=model), on_step=dump, trace=trace, **BUCKETS[model]
        )
    return {}


def fault(out: Path, rank: int, size: int, kind: str) -> dict[str, Any]:
    env = world_from_env()
    assert env is not None
    hidden = 32 if not (kind == "mismatch" and rank == 1) else 16

    def misbehave(step: int, ws: Workspace, params: list[str]) -> None:
        if rank == 1 and step == 1:
            if kind == "raise":
                raise RuntimeError("rank 1 raises on purpose")
            if kind == "kill":
                os.kill(os.getpid(), signal.SIGKILL)

    train_digits_data_parallel(_cfg("mlp", 8 * size, hidden), env.rendezvous(prefix=kind), on_step=misbehave)
    return {}


def reshape(out: Path, rank: int, size: int) -> dict[str, Any]:
    """An Allreduce op whose input shape changes on rank 1 only, at step 3 (after the checks settled)."""
    from asyncnet.proto import caffe2_pb2 as pb

    env = world_from_env()
    assert env is not None
    net = pb.NetDef(name="reshape")
    net.op.add(type="FileStoreHandlerCreate", output=["h"]).arg.add(name="path", s=env.store_path.encode())
    cw = net.op.add(type="CreateCommonWorld", input=["h"], output=["cw"], name="w", engine="GLOO")
    cw.arg.add(name="timeout_ms", i=env.timeout_ms)
    step = pb.NetDef(name="step", type="async_scheduling")
    step.op.add(type="Allreduce", input=["cw", "x"], output=["x"], name="sum_x", engine="GLOO")
    sums = []
    with Workspace("reshape") as ws:
        ws.run_net_once(net)
        for k in range(1, 5):
            n = 5 if (k >= 3 and rank == 1) else 4
            ws.feed("x", np.full(n, rank + 1.0, np.float32))
            ws.run_net_once(step)
            sums.append(float(np.asarray(ws.fetch("x"))[0]))
            (out / f"rank{rank}_steps.json").write_text(json.dumps({"sums": sums, "checks": ws.fetch("cw").checks}))
    return {}


def swap(out: Path, rank: int, size: int) -> dict[str, Any]:
    """Two collectives, checked in one order; later rank 1 issues them in the other order."""
    from asyncnet.distributed.comm import CommonWorld

    env = world_from_env()
    assert env is not None
    world = CommonWorld(env.store_handler(), rank, size, "swap", env.timeout_ms / 1000)
    a, b = np.ones(3, np.float32), np.ones(7, np.float32)
    done = []
    for k in range(1, 5):
        pair = [("first", [a]), ("second", [a, b])]
        if k >= 3 and rank == 1:
            pair.reverse()
        for label, arrays in pair:
            world.allreduce_coalesced(arrays, label).result(timeout=120)
        done.append(k)
        (out / f"rank{rank}_steps.json").write_text(json.dumps({"steps": done, "checks": world.checks}))
    return {}


def reconnect(out: Path, rank: int, size: int) -> dict[str, Any]:
    from asyncnet.distributed.comm import CommonWorld

    env = world_from_env()
    assert env is not None
    world = CommonWorld(env.store_handler(), rank, size, "again", env.timeout_ms / 1000)
    total = world.allreduce([np.full(4, rank + 1.0)], "reconnect").result(timeout=30)[0]
    world.destroy()
    return {"sum": float(total[0])}


def main() -> None:
    scenario, out = sys.argv[1], Path(sys.argv[2])
    env = world_from_env()
    assert env is not None
    rank, size = env.rank, env.size
    start = time.monotonic()
    report: dict[str, Any] = {"rank": rank, "status": "ok"}
    code = 0
    error: Exception | None = None
    try:
        if scenario == "equivalence":
            report.update(equivalence(out, rank, size))
        elif scenario == "compat":
            report.update(compat(out, rank, size))
        elif scenario == "reconnect":
            report.update(reconnect(out, rank, size))
        elif scenario == "reshape":
            report.update(reshape(out, rank, size))
        elif scenario == "swap":
            report.update(swap(out, rank, size))
        else:
            report.update(fault(out, rank, size, scenario))
    except Exception as e:  # the test reads the message; the exit code tells the launcher
        report.update(status="error", type=type(e).__name__, error=str(e), cause=repr(e.__cause__))
        code, error = 1, e
    report["seconds"] = time.monotonic() - start
    time.sleep(0.05)
    report["threads"] = sorted(t.name for t in threading.enumerate() if t is not threading.main_thread())
    (out / f"rank{rank}.json").write_text(json.dumps(report))
    exit_process(code, error)


# -- Caffe2's data_parallel_model, as a Caffe2 script would use it ------------------------------------


def compat_train(rank: int, size: int, store: str | None, steps: int = STEPS) -> list[dict[str, np.ndarray]]:
    """Train an MLP with ``data_parallel_model.Parallelize``; parameters after each step.

    ``store`` None: one process, no rendezvous, on the whole (concatenated) batch.
    """
    from asyncnet.compat import brew, core, data_parallel_model, model_helper, optimizer, workspace
    from asyncnet.training import load_digits_split

    x, y, _, _ = load_digits_split(0)
    x = x.reshape(len(x), 64)
    batch = 8 * size
    workspace.ResetWorkspace()
    rendezvous = None
    if store is not None:
        op = core.CreateOperator("FileStoreHandlerCreate", [], ["store_handler"], path=store, prefix="compat")
        workspace.RunOperatorOnce(op)
        rendezvous = {"kv_handler": "store_handler", "shard_id": rank, "num_shards": size, "engine": "GLOO"}
    model = model_helper.ModelHelper(name="mlp")

    def add_input(m: Any) -> None:
        pass  # fed per step: cpu_0/data, cpu_0/label

    def forward(m: Any, loss_scale: float) -> list[Any]:
        hidden = brew.relu(m, brew.fc(m, "data", "fc1", dim_in=64, dim_out=32), "relu1")
        pred = brew.fc(m, hidden, "fc2", dim_in=32, dim_out=10)
        softmax, loss = m.SoftmaxWithLoss([pred, "label"], ["softmax", "loss"])
        return [m.Scale(loss, "loss_scaled", scale=loss_scale)]

    def add_optimizer(m: Any) -> None:
        optimizer.build_sgd(m, base_learning_rate=0.1, momentum=0.9)

    data_parallel_model.Parallelize(
        model,
        input_builder_fun=add_input,
        forward_pass_builder_fun=forward,
        optimizer_builder_fun=add_optimizer,
        devices=[0],
        rendezvous=rendezvous,
        cpu_device=True,
    )
    for i, init_op in enumerate(model.param_init_net.Proto().op):
        init_op.device_option.random_seed = 100 + i  # the same initial parameters as the reference
    local = batch // size
    workspace.FeedBlob("cpu_0/data", x[:local])
    workspace.FeedBlob("cpu_0/label", y[:local])
    workspace.RunNetOnce(model.param_init_net)
    workspace.CreateNet(model.net)
    out = []
    params = [str(p) for p in model.GetParams()]
    for k in range(steps):
        idx = np.arange(k * batch, (k + 1) * batch)
        lo = 0 if store is None else rank * local
        hi = batch if store is None else lo + local
        workspace.FeedBlob("cpu_0/data", x[idx[lo:hi]])
        workspace.FeedBlob("cpu_0/label", y[idx[lo:hi]])
        workspace.RunNet(model.net)
        out.append({p: np.array(workspace.FetchBlob(p)) for p in params})
    workspace.ResetWorkspace()
    return out


def compat(out: Path, rank: int, size: int) -> dict[str, Any]:
    env = world_from_env()
    assert env is not None
    for step, params in enumerate(compat_train(rank, size, env.store_path), start=1):
        np.savez(out / f"compat_rank{rank}_step{step}.npz", **params)
    return {}


if __name__ == "__main__":
    main()
