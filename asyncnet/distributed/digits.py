"""Data-parallel training of the digits example (``asyncnet train-digits --workers N``).

Every rank builds the same nets as :mod:`asyncnet.training.digits`, plus rendezvous, a parameter
broadcast from rank 0 and the gradient all-reduces (bucketed, :mod:`asyncnet.distributed.buckets`). Each step takes the same global
batch as one process would (same seed, same order) and gives rank ``r`` the ``r``-th slice
of it, so N workers train the same model as one process on the whole batch.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np

from asyncnet.distributed.buckets import DEFAULT_BUCKET_BYTES, DEFAULT_FIRST_BUCKET_BYTES, gradient_bytes
from asyncnet.distributed.data_parallel import Rendezvous, add_gradient_allreduce, add_rendezvous, gradient_buckets
from asyncnet.errors import ArgumentError
from asyncnet.profiling import profile_report
from asyncnet.proto import caffe2_pb2 as pb
from asyncnet.training.digits import (
    DigitsConfig,
    TrainResult,
    build_loss_nets,
    evaluate_trained,
    load_digits_split,
    one_blas_thread,
    params_init_net,
    seed_init_ops,
)
from asyncnet.training.optimizers import add_sgd
from asyncnet.workspace import Workspace

log = logging.getLogger(__name__)

StepCallback = Callable[[int, Workspace, list[str]], None]


def build_data_parallel_nets(
    cfg: DigitsConfig,
    rdv: Rendezvous,
    *,
    bucket_bytes: int = DEFAULT_BUCKET_BYTES,
    first_bucket_bytes: int = DEFAULT_FIRST_BUCKET_BYTES,
) -> tuple[pb.NetDef, pb.NetDef, pb.NetDef, list[str]]:
    """(init net, train net, predict net, params) with rendezvous, broadcast and gradient all-reduce.

    ``bucket_bytes`` / ``first_bucket_bytes``: gradient bucket caps (0: one Allreduce per gradient).
    """
    init, train, predict_net, params, grads = build_loss_nets(
        cfg, f"digits_{cfg.model}_init_rank{rdv.rank}", f"digits_{cfg.model}_train_rank{rdv.rank}"
    )
    seed_init_ops(init, cfg.seed)
    param_grads = {p: grads[p] for p in params}
    sizes = gradient_bytes(init, param_grads)
    caps: dict[str, Any] = {"grad_bytes": sizes, "bucket_bytes": bucket_bytes, "first_bucket_bytes": first_bucket_bytes}
    # More worlds than concurrent collectives would only cost connections at start-up.
    n_collectives = len(gradient_buckets(train, param_grads, **caps))
    worlds = add_rendezvous(init, replace(rdv, num_worlds=max(1, min(rdv.num_worlds, n_collectives))), params)
    add_gradient_allreduce(train, param_grads, worlds, size=rdv.size, scale_loss=True, **caps)
    add_sgd(init, train, params, grads, base_lr=cfg.base_lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    return init, train, predict_net, params


def train_digits_data_parallel(
    cfg: DigitsConfig,
    rdv: Rendezvous,
    *,
    on_step: StepCallback | None = None,
    trace: str | None = None,
    bucket_bytes: int = DEFAULT_BUCKET_BYTES,
    first_bucket_bytes: int = DEFAULT_FIRST_BUCKET_BYTES,
) -> TrainResult:
    """Train on this rank's slices of every global batch; returns the (rank-identical) result.

    Args:
        cfg: as for :func:`asyncnet.training.train_digits`; ``batch_size`` is the global batch.
        rdv: this rank and where the ranks meet.
        on_step: called after every step with (step, workspace, parameter names).
        trace: write a Chrome trace of the train-net runs (with the collectives' spans) here.
        bucket_bytes / first_bucket_bytes: gradient bucket caps (0: one Allreduce per gradient).
    """
    with one_blas_thread():
        return _train(cfg, rdv, on_step, trace, (bucket_bytes, first_bucket_bytes))


def _train(
    cfg: DigitsConfig, rdv: Rendezvous, on_step: StepCallback | None, trace: str | None, caps: tuple[int, int]
) -> TrainResult:
    from asyncnet.executors import ExecutorOptions

    if cfg.batch_size % rdv.size:
        raise ArgumentError(f"batch size {cfg.batch_size} must divide by the number of workers {rdv.size}")
    local = cfg.batch_size // rdv.size
    lo, hi = rdv.rank * local, (rdv.rank + 1) * local
    x_tr, y_tr, x_te, y_te = load_digits_split(cfg.seed)
    init_net, train_net, predict_net, params = build_data_parallel_nets(
        cfg, rdv, bucket_bytes=caps[0], first_bucket_bytes=caps[1]
    )
    steps_per_epoch = max(len(y_tr) // cfg.batch_size, 1)
    total = cfg.epochs * steps_per_epoch if cfg.max_steps is None else min(cfg.epochs * steps_per_epoch, cfg.max_steps)
    rng = np.random.default_rng(cfg.seed)
    losses: list[float] = []
    with Workspace(f"digits_train_rank{rdv.rank}") as ws:
        ws.run_net_once(init_net, executor="simple")
        ws.feed("data", x_tr[:local])
        ws.feed("label", y_tr[:local])
        net = ws.create_net(
            train_net, executor=cfg.executor, options=ExecutorOptions(threads=cfg.threads, profile=trace is not None)
        )
        # Steps only: rendezvous and the parameter broadcast are a one-off start-up cost.
        start = time.perf_counter()
        step = 0
        while step < total:
            order = rng.permutation(len(y_tr))
            for k in range(steps_per_epoch):
                if step >= total:
                    break
                idx = order[k * cfg.batch_size : (k + 1) * cfg.batch_size][lo:hi]
                ws.feed("data", x_tr[idx])
                ws.feed("label", y_tr[idx])
                net.run()
                losses.append(float(np.asarray(ws.fetch("loss"))))
                step += 1
                if on_step is not None:
                    on_step(step, ws, params)
        trained = {p: np.array(ws.fetch(p), dtype=np.float32) for p in params}
        if trace is not None:
            profile_report(net, profile=False, trace=trace)
    seconds = time.perf_counter() - start
    result = evaluate_trained(params_init_net(trained), predict_net, (x_tr, y_tr, x_te, y_te), losses, trained, seconds)
    log.info(
        "rank %d/%d trained %s: %d steps in %.1fs, test accuracy %.4f",
        rdv.rank,
        rdv.size,
        cfg.model,
        result.steps,
        seconds,
        result.test_accuracy,
    )
    return result
