"""Data-parallel training of the digits example (``asyncnet train-digits --workers N``).

Every rank builds the same nets as :mod:`asyncnet.training.digits`, plus rendezvous, a parameter
broadcast from rank 0 and one ``Allreduce`` per gradient. Each step takes the same global
batch as one process would (same seed, same order) and gives rank ``r`` the ``r``-th slice
of it, so N workers train the same model as one process on the whole batch.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import numpy as np

from asyncnet.distributed.data_parallel import Rendezvous, add_gradient_allreduce, add_rendezvous
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


def build_data_parallel_nets(cfg: DigitsConfig, rdv: Rendezvous) -> tuple[pb.NetDef, pb.NetDef, pb.NetDef, list[str]]:
    """(init net, train net, predict net, params) with rendezvous, broadcast and gradient all-reduce."""
    init, train, predict_net, params, grads = build_loss_nets(
        cfg, f"digits_{cfg.model}_init_rank{rdv.rank}", f"digits_{cfg.model}_train_rank{rdv.rank}"
    )
    seed_init_ops(init, cfg.seed)
    worlds = add_rendezvous(init, rdv, params)
    add_gradient_allreduce(train, {p: grads[p] for p in params}, worlds, size=rdv.size)
    add_sgd(init, train, params, grads, base_lr=cfg.base_lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    return init, train, predict_net, params


def train_digits_data_parallel(
    cfg: DigitsConfig, rdv: Rendezvous, *, on_step: StepCallback | None = None, trace: str | None = None
) -> TrainResult:
    """Train on this rank's slices of every global batch; returns the (rank-identical) result.

    Args:
        cfg: as for :func:`asyncnet.training.train_digits`; ``batch_size`` is the global batch.
        rdv: this rank and where the ranks meet.
        on_step: called after every step with (step, workspace, parameter names).
        trace: write a Chrome trace of the train-net runs (with the collectives' spans) here.
    """
    with one_blas_thread():
        return _train(cfg, rdv, on_step, trace)


def _train(cfg: DigitsConfig, rdv: Rendezvous, on_step: StepCallback | None, trace: str | None) -> TrainResult:
    from asyncnet.executors import ExecutorOptions

    if cfg.batch_size % rdv.size:
        raise ArgumentError(f"batch size {cfg.batch_size} must divide by the number of workers {rdv.size}")
    local = cfg.batch_size // rdv.size
    lo, hi = rdv.rank * local, (rdv.rank + 1) * local
    x_tr, y_tr, x_te, y_te = load_digits_split(cfg.seed)
    init_net, train_net, predict_net, params = build_data_parallel_nets(cfg, rdv)
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
