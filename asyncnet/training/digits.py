"""Training example: an MLP or LeNet on scikit-learn's bundled 8x8 digits, end to end.

Builds the nets as plain NetDefs (init, train, predict), adds the backward
pass with :func:`asyncnet.training.gradients.add_gradient_ops` and momentum SGD with
:func:`asyncnet.training.optimizers.add_sgd`, trains with any executor, saves the
parameters as an init net of ``GivenTensorFill`` ops and reloads them for
inference. Needs the ``train`` extra (scikit-learn, tqdm).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from asyncnet.errors import ArgumentError, UnsupportedError
from asyncnet.iopolicy import IOPolicy
from asyncnet.proto import caffe2_pb2 as pb
from asyncnet.serde import make_argument, read_net, write_message
from asyncnet.training.gradients import add_gradient_ops
from asyncnet.training.optimizers import add_sgd
from asyncnet.workspace import Workspace

log = logging.getLogger(__name__)

MODELS = ("mlp", "lenet")


@dataclass
class DigitsConfig:
    """How to train. The defaults reach >= 97% test accuracy in seconds."""

    model: str = "lenet"
    epochs: int = 20
    batch_size: int = 32
    base_lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 1e-4
    hidden: int = 128
    seed: int = 0
    executor: str = "async_scheduling"
    threads: int = 2
    max_steps: int | None = None
    progress: bool = True
    io_policy: IOPolicy | None = None  # files the training nets may touch (default: any, as in Caffe2)


@dataclass
class TrainResult:
    """What training produced: per-step losses, accuracies, timing, and the trained parameters."""

    losses: list[float]
    train_accuracy: float
    test_accuracy: float
    seconds: float
    steps: int
    params: dict[str, np.ndarray] = field(default_factory=dict)
    test_predictions: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))


def load_digits_split(
    seed: int = 0, test_fraction: float = 0.25
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x_train, y_train, x_test, y_test): images as float32 [N, 1, 8, 8] scaled to [0, 1], labels int32."""
    try:
        from sklearn.datasets import load_digits
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise UnsupportedError("the digits example needs scikit-learn (pip install 'asyncnet[train]')") from e
    data = load_digits()
    x = (np.asarray(data.images, dtype=np.float32) / 16.0).reshape(-1, 1, 8, 8)
    y = np.asarray(data.target, dtype=np.int32)
    order = np.random.default_rng(seed).permutation(len(y))
    n_test = int(round(len(y) * test_fraction))
    test, train = order[:n_test], order[n_test:]
    return x[train], y[train], x[test], y[test]


class NetBuilder:
    """Appends ops to a NetDef (a deliberately tiny stand-in for a model builder)."""

    def __init__(self, name: str) -> None:
        self.net = pb.NetDef()
        self.net.name = name

    def op(self, op_type: str, inputs: Sequence[str], outputs: Sequence[str], **args: Any) -> None:
        """Append an op of ``op_type`` with these inputs, outputs and arguments."""
        o = self.net.op.add()
        o.type = op_type
        o.input.extend(inputs)
        o.output.extend(outputs)
        for k, v in args.items():
            o.arg.append(make_argument(k, v))


def _mlp(init: NetBuilder, fwd: NetBuilder, hidden: int) -> tuple[str, list[str]]:
    dims = [(64, hidden), (hidden, 10)]
    fwd.op("Flatten", ["data"], ["flat"])
    x = "flat"
    params: list[str] = []
    for i, (n_in, n_out) in enumerate(dims, start=1):
        w, b = f"fc{i}_w", f"fc{i}_b"
        init.op("XavierFill", [], [w], shape=[n_out, n_in])
        init.op("ConstantFill", [], [b], shape=[n_out], value=0.0)
        fwd.op("FC", [x, w, b], [f"fc{i}"])
        x = f"fc{i}"
        if i < len(dims):
            fwd.op("Relu", [x], [f"relu{i}"])
            x = f"relu{i}"
        params += [w, b]
    return x, params


def _lenet(init: NetBuilder, fwd: NetBuilder, hidden: int) -> tuple[str, list[str]]:
    params: list[str] = []
    x, channels = "data", 1
    for i, c_out in enumerate((16, 32), start=1):
        w, b = f"conv{i}_w", f"conv{i}_b"
        init.op("XavierFill", [], [w], shape=[c_out, channels, 3, 3])
        init.op("ConstantFill", [], [b], shape=[c_out], value=0.0)
        fwd.op("Conv", [x, w, b], [f"conv{i}"], kernel=3, pad=1, order="NCHW")
        fwd.op("Relu", [f"conv{i}"], [f"conv{i}_relu"])
        fwd.op("MaxPool", [f"conv{i}_relu"], [f"pool{i}"], kernel=2, stride=2, order="NCHW")
        x, channels = f"pool{i}", c_out
        params += [w, b]
    fwd.op("Flatten", [x], ["flat"])
    for i, (n_in, n_out) in enumerate([(channels * 2 * 2, hidden), (hidden, 10)], start=1):
        w, b = f"fc{i}_w", f"fc{i}_b"
        init.op("XavierFill", [], [w], shape=[n_out, n_in])
        init.op("ConstantFill", [], [b], shape=[n_out], value=0.0)
        fwd.op("FC", ["flat" if i == 1 else "relu3", w, b], [f"fc{i}"])
        if i == 1:
            fwd.op("Relu", ["fc1"], ["relu3"])
        params += [w, b]
    return "fc2", params


ModelBuilder = Callable[[NetBuilder, NetBuilder, int], tuple[str, list[str]]]
"""Adds a model's parameter fills to the init builder and its forward ops to the other; returns
(logits blob, parameter names). The third argument is the hidden width."""

MODEL_BUILDERS: dict[str, ModelBuilder] = {"mlp": _mlp, "lenet": _lenet}


def build_loss_nets(
    cfg: DigitsConfig, init_name: str, train_name: str
) -> tuple[pb.NetDef, pb.NetDef, pb.NetDef, list[str], dict[str, str]]:
    """(init net, train net, predict net, parameter names, gradient of each blob) before any optimizer.

    The train net reads ``data`` and ``label`` and ends with the loss, accuracy and
    gradient ops; the predict net reads ``data`` and writes ``softmax``. The init net's
    ops are not seeded yet (:func:`seed_init_ops`).
    """
    if cfg.model not in MODEL_BUILDERS:
        raise ArgumentError(f"unknown digits model '{cfg.model}'; choose one of {', '.join(MODELS)}")
    init = NetBuilder(init_name)
    fwd = NetBuilder(f"digits_{cfg.model}_predict")
    logits, params = MODEL_BUILDERS[cfg.model](init, fwd, cfg.hidden)
    predict = pb.NetDef()
    predict.CopyFrom(fwd.net)
    predict.op.add(type="Softmax", input=[logits], output=["softmax"])
    predict.external_input.extend(["data", *params])
    predict.external_output.append("softmax")

    train = fwd.net
    train.name = train_name
    train.op.add(type="SoftmaxWithLoss", input=[logits, "label"], output=["softmax", "loss"])
    train.op.add(type="Accuracy", input=["softmax", "label"], output=["accuracy"])
    grads = add_gradient_ops(train, ["loss"])
    return init.net, train, predict, params, grads


def seed_init_ops(init_net: pb.NetDef, seed: int) -> None:
    """Give every op of ``init_net`` its own fixed seed, so runs are reproducible."""
    for i, op in enumerate(init_net.op):
        op.device_option.random_seed = seed * 1000 + i


def build_nets(cfg: DigitsConfig) -> tuple[pb.NetDef, pb.NetDef, pb.NetDef, list[str]]:
    """(init net, train net, predict net, parameter names) for ``cfg.model``.

    The train net reads blobs ``data`` and ``label`` and ends with the gradient
    and momentum-SGD ops; the predict net reads ``data`` and writes ``softmax``.
    """
    init, train, predict, params, grads = build_loss_nets(cfg, f"digits_{cfg.model}_init", f"digits_{cfg.model}_train")
    add_sgd(
        init,
        train,
        params,
        grads,
        base_lr=cfg.base_lr,
        momentum=cfg.momentum,
        weight_decay=cfg.weight_decay,
    )
    seed_init_ops(init, cfg.seed)
    return init, train, predict, params


def params_init_net(params: dict[str, np.ndarray], name: str = "trained_params") -> pb.NetDef:
    """An init net of GivenTensorFill ops that recreates ``params`` exactly (float32)."""
    net = pb.NetDef()
    net.name = name
    for blob, value in params.items():
        arr = np.asarray(value, dtype=np.float32)
        op = net.op.add(type="GivenTensorFill", output=[blob])
        op.arg.append(make_argument("shape", [int(d) for d in arr.shape]))
        op.arg.append(make_argument("values", [float(v) for v in arr.reshape(-1)]))
    net.external_output.extend(params)
    return net


def predict(init_net: pb.NetDef, predict_net: pb.NetDef, x: np.ndarray, *, executor: str = "simple") -> np.ndarray:
    """Class probabilities of ``x`` with parameters from ``init_net`` in a fresh workspace."""
    with Workspace("digits_predict") as ws:
        ws.run_net_once(init_net, executor="simple")
        ws.feed("data", np.ascontiguousarray(x, dtype=np.float32))
        ws.run_net_once(predict_net, executor=executor)
        return np.asarray(ws.fetch("softmax"))


def _progress(total: int, enabled: bool) -> Any:
    if not enabled:
        return None
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover - tqdm is optional
        return None
    return tqdm(total=total, unit="step", leave=False, dynamic_ncols=True)


def one_blas_thread() -> contextlib.AbstractContextManager[Any]:
    """Run BLAS on one thread inside the block (the training loops' setting)."""
    # The matrices are tiny: multi-threaded BLAS only adds wake-up latency (tens of ms
    # per call on a busy machine); the executor's own threads give the parallelism.
    from asyncnet.recurrent.timesteps import one_blas_thread as limit

    return limit()


def train_digits(cfg: DigitsConfig) -> tuple[TrainResult, pb.NetDef, pb.NetDef]:
    """Train ``cfg.model`` on digits; returns the result, the trained-params init net and the predict net."""
    with one_blas_thread():
        return _train_digits(cfg)


def _train_digits(cfg: DigitsConfig) -> tuple[TrainResult, pb.NetDef, pb.NetDef]:
    from asyncnet.executors import ExecutorOptions

    x_tr, y_tr, x_te, y_te = load_digits_split(cfg.seed)
    init_net, train_net, predict_net, params = build_nets(cfg)
    steps_per_epoch = max(len(y_tr) // cfg.batch_size, 1)
    total = cfg.epochs * steps_per_epoch
    if cfg.max_steps is not None:
        total = min(total, cfg.max_steps)
    rng = np.random.default_rng(cfg.seed)
    losses: list[float] = []
    start = time.perf_counter()
    bar = _progress(total, cfg.progress)
    with Workspace("digits_train", io_policy=cfg.io_policy) as ws:
        ws.run_net_once(init_net, executor="simple")
        ws.feed("data", x_tr[: cfg.batch_size])
        ws.feed("label", y_tr[: cfg.batch_size])
        net = ws.create_net(train_net, executor=cfg.executor, options=ExecutorOptions(threads=cfg.threads))
        step, acc_sum, acc_n = 0, 0.0, 0
        while step < total:
            order = rng.permutation(len(y_tr))
            for k in range(steps_per_epoch):
                if step >= total:
                    break
                idx = order[k * cfg.batch_size : (k + 1) * cfg.batch_size]
                ws.feed("data", x_tr[idx])
                ws.feed("label", y_tr[idx])
                net.run()
                loss = float(np.asarray(ws.fetch("loss")))
                losses.append(loss)
                acc_sum += float(np.asarray(ws.fetch("accuracy")))
                acc_n += 1
                step += 1
                if bar is not None:
                    bar.update(1)
                    if step % 10 == 0:
                        bar.set_postfix(loss=f"{np.mean(losses[-steps_per_epoch:]):.4f}", acc=f"{acc_sum / acc_n:.3f}")
            acc_sum, acc_n = 0.0, 0
        trained = {p: np.array(ws.fetch(p), dtype=np.float32) for p in params}
    if bar is not None:
        bar.close()
    seconds = time.perf_counter() - start
    saved = params_init_net(trained)
    result = evaluate_trained(
        saved, predict_net, (x_tr, y_tr, x_te, y_te), losses, trained, seconds, executor=cfg.executor
    )
    log.info(
        "trained %s: %d steps in %.1fs, test accuracy %.4f", cfg.model, result.steps, seconds, result.test_accuracy
    )
    return result, saved, predict_net


def evaluate_trained(
    params_net: pb.NetDef,
    predict_net: pb.NetDef,
    split: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    losses: list[float],
    params: dict[str, np.ndarray],
    seconds: float,
    *,
    executor: str = "simple",
) -> TrainResult:
    """The :class:`TrainResult` of trained ``params``: their accuracy on both halves of ``split``."""
    x_tr, y_tr, x_te, y_te = split
    probs_te = predict(params_net, predict_net, x_te, executor=executor)
    probs_tr = predict(params_net, predict_net, x_tr, executor=executor)
    pred_te = probs_te.argmax(axis=1)
    return TrainResult(
        losses=losses,
        train_accuracy=float((probs_tr.argmax(axis=1) == y_tr).mean()),
        test_accuracy=float((pred_te == y_te).mean()),
        seconds=seconds,
        steps=len(losses),
        params=params,
        test_predictions=pred_te,
    )


def save_model(
    out_dir: str | Path, params_net: pb.NetDef, predict_net: pb.NetDef, *, binary: bool = False
) -> tuple[Path, Path]:
    """Write the trained-params init net and the predict net (``.pb`` when binary, else ``.pbtxt``)."""
    d = Path(out_dir)
    d.mkdir(parents=True, exist_ok=True)
    ext = ".pb" if binary else ".pbtxt"
    init_path, predict_path = d / f"init_net{ext}", d / f"predict_net{ext}"
    write_message(params_net, init_path)
    write_message(predict_net, predict_path)
    return init_path, predict_path


def evaluate_saved(init_path: str | Path, predict_path: str | Path, seed: int = 0) -> tuple[float, np.ndarray]:
    """Reload saved nets and return (test accuracy, test predictions) on the same split."""
    _, _, x_te, y_te = load_digits_split(seed)
    probs = predict(read_net(init_path), read_net(predict_path), x_te)
    pred = probs.argmax(axis=1)
    return float((pred == y_te).mean()), pred
