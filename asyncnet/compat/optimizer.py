"""Caffe2's ``optimizer`` module (``build_sgd``, ``build_adam``, ``build_adagrad``) on asyncnet.

Each builder takes a ModelHelper after ``AddGradientOperators`` and appends the
update ops for every parameter that got a gradient, using
:mod:`asyncnet.training.optimizers`: the iteration counter (``optimizer_iteration``, as in
Caffe2), a ``LearningRate`` op and the per-parameter state go where Caffe2 put
them (state in ``param_init_net``, updates in ``net``). Blob names of the learning
rate and the ``ONE`` constant are asyncnet's (``SgdOptimizer_lr``, ``ONE``), not
Caffe2's device-suffixed ones. Sparse (GradientSlice) updates are not supported.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from asyncnet.builder import user_site
from asyncnet.compat.model_helper import ModelHelper
from asyncnet.errors import ArgumentError, CompatError
from asyncnet.training import optimizers as _opt

__all__ = ["build_adagrad", "build_adam", "build_sgd"]


def _params_and_grads(model: ModelHelper, who: str) -> tuple[list[str], dict[str, str]]:
    if not isinstance(model, ModelHelper):
        raise ArgumentError(f"{who}: expected a ModelHelper, got {type(model).__name__}")
    if not model.gradient_ops_added:
        raise CompatError(f"{who}: model '{model.name}' has no gradients; call model.AddGradientOperators first")
    grads = {str(p): str(g) for p, g in model.param_to_grad.items()}
    # As Caffe2's GetOptimizationParamInfo: only parameters that received a gradient are updated.
    params = [str(p) for p in model.params if str(p) in grads]
    if not params:
        raise CompatError(f"{who}: no parameter of model '{model.name}' has a gradient (params: {model.params})")
    return params, grads


def _build(model: ModelHelper, who: str, add: Callable[..., _opt.OptimizerBlobs], **kwargs: Any) -> _opt.OptimizerBlobs:
    params, grads = _params_and_grads(model, who)
    net = model.net
    before = len(net.Proto().op)
    blobs = add(model.param_init_net.Proto(), net.Proto(), params, grads, **kwargs)
    # Errors at run time should point at the script line that built the optimizer.
    site = user_site()
    for i in range(before, len(net.Proto().op)):
        net._sites[i] = site
    net._RecreateLookupTables()
    model.param_init_net._RecreateLookupTables()
    return blobs


def build_sgd(
    model: ModelHelper,
    base_learning_rate: float,
    max_gradient_norm: float | None = None,
    allow_lr_injection: bool = False,
    *,
    policy: str = "fixed",
    momentum: float = 0.0,
    nesterov: bool = True,
    weight_decay: float = 0.0,
    **lr_kwargs: Any,
) -> _opt.OptimizerBlobs:
    """SGD updates for ``model`` (``WeightedSum``, or ``MomentumSGDUpdate`` when ``momentum`` > 0).

    Args:
        model: a ModelHelper whose gradient ops were added.
        base_learning_rate: the positive step size.
        max_gradient_norm / allow_lr_injection: Caffe2 options not supported here
            (must stay at their defaults).
        policy: ``LearningRate`` policy; ``lr_kwargs`` (stepsize, gamma, ...) go to that op.
        momentum / nesterov: momentum SGD (Caffe2's default is Nesterov).
        weight_decay: L2 term added to each gradient.

    Returns:
        The blob names created (iteration counter, lr blob, per-parameter state).
    """
    _unsupported("build_sgd", max_gradient_norm, allow_lr_injection)
    return _build(
        model,
        "build_sgd",
        _opt.add_sgd,
        base_lr=base_learning_rate,
        policy=policy,
        momentum=momentum,
        nesterov=nesterov,
        weight_decay=weight_decay,
        **lr_kwargs,
    )


def build_adam(
    model: ModelHelper,
    base_learning_rate: float,
    max_gradient_norm: float | None = None,
    allow_lr_injection: bool = False,
    *,
    policy: str = "fixed",
    beta1: float = 0.9,
    beta2: float = 0.999,
    epsilon: float = 1e-8,
    weight_decay: float = 0.0,
    **lr_kwargs: Any,
) -> _opt.OptimizerBlobs:
    """Adam updates for ``model`` (state ``<param>_first_moment`` / ``_second_moment``, as in Caffe2)."""
    _unsupported("build_adam", max_gradient_norm, allow_lr_injection)
    return _build(
        model,
        "build_adam",
        _opt.add_adam,
        base_lr=base_learning_rate,
        policy=policy,
        beta1=beta1,
        beta2=beta2,
        epsilon=epsilon,
        weight_decay=weight_decay,
        **lr_kwargs,
    )


def build_adagrad(
    model: ModelHelper,
    base_learning_rate: float,
    max_gradient_norm: float | None = None,
    allow_lr_injection: bool = False,
    *,
    policy: str = "fixed",
    epsilon: float = 1e-4,
    decay: float = 1.0,
    weight_decay: float = 0.0,
    **lr_kwargs: Any,
) -> _opt.OptimizerBlobs:
    """Adagrad updates for ``model`` (state ``<param>_adagrad_moment``)."""
    _unsupported("build_adagrad", max_gradient_norm, allow_lr_injection)
    return _build(
        model,
        "build_adagrad",
        _opt.add_adagrad,
        base_lr=base_learning_rate,
        policy=policy,
        epsilon=epsilon,
        decay=decay,
        weight_decay=weight_decay,
        **lr_kwargs,
    )


def _unsupported(who: str, max_gradient_norm: float | None, allow_lr_injection: bool) -> None:
    if max_gradient_norm is not None:
        raise ArgumentError(f"{who}: max_gradient_norm is not supported by asyncnet, got {max_gradient_norm}")
    if allow_lr_injection:
        raise ArgumentError(f"{who}: allow_lr_injection is not supported by asyncnet")
