"""Add an optimizer to a model given as (init net, train net) NetDefs, Caffe2 style.

The init net gets the iteration counter, the constant ONE and per-parameter
state (moments); the train net gets ``Iter``, ``LearningRate`` and the update
ops, which write the parameters in place::

    grads = add_gradient_ops(train_net, ["loss"])
    add_sgd(init_net, train_net, ["fc_w", "fc_b"], grads, base_lr=0.1, momentum=0.9)

As in Caffe2's optimizer.py the learning-rate blob carries the sign of the
step: negative for WeightedSum/Adagrad/Adam (which add ``lr * step``) and
positive for MomentumSGDUpdate (which subtracts).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from asyncnet.errors import ArgumentError
from asyncnet.proto import caffe2_pb2 as pb
from asyncnet.serde import make_argument

__all__ = ["OptimizerBlobs", "add_adagrad", "add_adam", "add_iteration", "add_learning_rate", "add_sgd"]

ITER_BLOB = "optimizer_iteration"
ONE_BLOB = "ONE"


@dataclass
class OptimizerBlobs:
    """Names the optimizer created: the iteration counter, the lr blob and per-parameter state."""

    iteration: str
    lr: str
    state: dict[str, list[str]] = field(default_factory=dict)


def _add_op(net: pb.NetDef, op_type: str, inputs: Sequence[str], outputs: Sequence[str], **args: Any) -> pb.OperatorDef:
    op = net.op.add()
    op.type = op_type
    op.input.extend(inputs)
    op.output.extend(outputs)
    for k, v in args.items():
        op.arg.append(make_argument(k, v))
    return op


def _produces(net: pb.NetDef, blob: str) -> bool:
    return any(blob in op.output for op in net.op)


def _grad_list(params: Sequence[str], grads: Mapping[str, str] | Sequence[str]) -> list[str]:
    if isinstance(grads, Mapping):
        missing = [p for p in params if p not in grads]
        if missing:
            raise ArgumentError(f"no gradient for parameter(s) {missing}; gradients exist for {sorted(grads)}")
        return [grads[p] for p in params]
    if len(grads) != len(params):
        raise ArgumentError(f"{len(params)} parameters but {len(grads)} gradients")
    return list(grads)


def add_iteration(init_net: pb.NetDef, train_net: pb.NetDef, name: str = ITER_BLOB) -> str:
    """An int64 [1] counter set to 0 by the init net and incremented by ``Iter`` in the train net (once)."""
    if not _produces(init_net, name):
        _add_op(init_net, "ConstantFill", [], [name], shape=[1], value=0, dtype=pb.TensorProto.INT64)
    if not any(op.type in ("Iter", "AtomicIter") and name in op.output for op in train_net.op):
        _add_op(train_net, "Iter", [name], [name])
    return name


def add_learning_rate(
    train_net: pb.NetDef, iteration: str, base_lr: float, policy: str = "fixed", name: str = "lr", **policy_args: Any
) -> str:
    """A ``LearningRate`` op: ``name = base_lr * multiplier(iteration)`` (sign included by the caller)."""
    _add_op(train_net, "LearningRate", [iteration], [name], base_lr=float(base_lr), policy=policy, **policy_args)
    return name


def _add_one(init_net: pb.NetDef) -> str:
    if not _produces(init_net, ONE_BLOB):
        _add_op(init_net, "ConstantFill", [], [ONE_BLOB], shape=[1], value=1.0)
    return ONE_BLOB


def _start(
    init_net: pb.NetDef,
    train_net: pb.NetDef,
    params: Sequence[str],
    grads: Mapping[str, str] | Sequence[str],
    signed_lr: float,
    policy: str,
    lr_name: str,
    policy_args: Mapping[str, Any],
) -> tuple[list[str], OptimizerBlobs]:
    """What every optimizer adds first: the gradient list, the iteration counter and the lr blob."""
    grad_names = _grad_list(params, grads)
    it = add_iteration(init_net, train_net)
    lr = add_learning_rate(train_net, it, signed_lr, policy, name=lr_name, **policy_args)
    return grad_names, OptimizerBlobs(it, lr)


def _weight_decay(init_net: pb.NetDef, train_net: pb.NetDef, param: str, grad: str, weight_decay: float) -> None:
    if weight_decay:
        wd = f"{param}_wd"
        _add_op(init_net, "ConstantFill", [], [wd], shape=[1], value=float(weight_decay))
        _add_op(train_net, "WeightedSum", [grad, _add_one(init_net), param, wd], [grad])


def _zeros_like(init_net: pb.NetDef, param: str, name: str) -> str:
    if not _produces(init_net, param):
        raise ArgumentError(f"parameter '{param}' is produced by no op of init net '{init_net.name}'")
    _add_op(init_net, "ConstantFill", [param], [name], value=0.0)
    return name


def add_sgd(
    init_net: pb.NetDef,
    train_net: pb.NetDef,
    params: Sequence[str],
    grads: Mapping[str, str] | Sequence[str],
    *,
    base_lr: float = 0.01,
    policy: str = "fixed",
    momentum: float = 0.0,
    nesterov: bool = False,
    weight_decay: float = 0.0,
    **policy_args: Any,
) -> OptimizerBlobs:
    """Plain SGD (``WeightedSum``) or momentum SGD (``MomentumSGDUpdate``) for ``params``.

    Args:
        init_net: the net that initializes the parameters; optimizer state is appended.
        train_net: the net holding the forward and gradient ops; updates are appended.
        params: parameter blob names.
        grads: their gradients (a blob -> gradient map as add_gradient_ops returns, or a list).
        base_lr: the (positive) learning rate.
        policy: LearningRate policy; ``policy_args`` (stepsize, gamma, ...) go with it.
        momentum / nesterov: momentum SGD when momentum > 0.
        weight_decay: adds ``weight_decay * param`` to each gradient.
    """
    if base_lr <= 0:
        raise ArgumentError(f"add_sgd: base_lr must be positive, got {base_lr}")
    sign = 1.0 if momentum > 0 else -1.0
    grad_names, blobs = _start(
        init_net, train_net, params, grads, sign * base_lr, policy, "SgdOptimizer_lr", policy_args
    )
    lr = blobs.lr
    one = _add_one(init_net) if momentum <= 0 else ""
    for p, g in zip(params, grad_names):
        _weight_decay(init_net, train_net, p, g, weight_decay)
        if momentum > 0:
            m = _zeros_like(init_net, p, f"{p}_momentum")
            _add_op(
                train_net,
                "MomentumSGDUpdate",
                [g, m, lr, p],
                [g, m, p],
                momentum=float(momentum),
                nesterov=int(nesterov),
            )
            blobs.state[p] = [m]
        else:
            _add_op(train_net, "WeightedSum", [p, one, g, lr], [p])
            blobs.state[p] = []
    return blobs


def add_adagrad(
    init_net: pb.NetDef,
    train_net: pb.NetDef,
    params: Sequence[str],
    grads: Mapping[str, str] | Sequence[str],
    *,
    base_lr: float = 0.01,
    policy: str = "fixed",
    epsilon: float = 1e-4,
    decay: float = 1.0,
    weight_decay: float = 0.0,
    **policy_args: Any,
) -> OptimizerBlobs:
    """Adagrad for ``params`` (state: ``<param>_adagrad_moment``)."""
    grad_names, blobs = _start(
        init_net, train_net, params, grads, -abs(base_lr), policy, "AdagradOptimizer_lr", policy_args
    )
    lr = blobs.lr
    for p, g in zip(params, grad_names):
        _weight_decay(init_net, train_net, p, g, weight_decay)
        m = _zeros_like(init_net, p, f"{p}_adagrad_moment")
        _add_op(train_net, "Adagrad", [p, m, g, lr], [p, m], epsilon=float(epsilon), decay=float(decay))
        blobs.state[p] = [m]
    return blobs


def add_adam(
    init_net: pb.NetDef,
    train_net: pb.NetDef,
    params: Sequence[str],
    grads: Mapping[str, str] | Sequence[str],
    *,
    base_lr: float = 0.001,
    policy: str = "fixed",
    beta1: float = 0.9,
    beta2: float = 0.999,
    epsilon: float = 1e-8,
    weight_decay: float = 0.0,
    **policy_args: Any,
) -> OptimizerBlobs:
    """Adam for ``params`` (state: ``<param>_first_moment``, ``<param>_second_moment``)."""
    grad_names, blobs = _start(
        init_net, train_net, params, grads, -abs(base_lr), policy, "AdamOptimizer_lr", policy_args
    )
    it, lr = blobs.iteration, blobs.lr
    for p, g in zip(params, grad_names):
        _weight_decay(init_net, train_net, p, g, weight_decay)
        m1 = _zeros_like(init_net, p, f"{p}_first_moment")
        m2 = _zeros_like(init_net, p, f"{p}_second_moment")
        _add_op(
            train_net,
            "Adam",
            [p, m1, m2, g, lr, it],
            [p, m1, m2],
            beta1=float(beta1),
            beta2=float(beta2),
            epsilon=float(epsilon),
        )
        blobs.state[p] = [m1, m2]
    return blobs
