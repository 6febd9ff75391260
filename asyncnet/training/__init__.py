"""Training: the backward pass, optimizers, gradient checks and the digits example.

* :mod:`asyncnet.training.gradients` — gradient makers and :func:`add_gradient_ops`
  (Caffe2's GradientRegistry and IR).
* :mod:`asyncnet.training.optimizers` — SGD, Adagrad and Adam added to (init, train) NetDefs.
* :mod:`asyncnet.training.gradcheck` — finite-difference checks of gradient makers.
* :mod:`asyncnet.training.digits` — an MLP or LeNet on scikit-learn's digits, end to end.
* :mod:`asyncnet.distributed.data_parallel` — making a training net data-parallel; its
  builders are re-exported here too (that module does not import torch).

The names below are resolved on first use: the op modules import
:mod:`asyncnet.training.gradients` while the registry loads, so importing this package
must not pull in the workspace (and through it the ops) or anything heavier.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from asyncnet.distributed.data_parallel import (
        Rendezvous,
        add_gradient_allreduce,
        add_rendezvous,
        scale_loss_gradients,
    )
    from asyncnet.training.digits import (
        MODELS,
        DigitsConfig,
        TrainResult,
        build_nets,
        evaluate_saved,
        load_digits_split,
        params_init_net,
        predict,
        save_model,
        train_digits,
    )
    from asyncnet.training.gradients import add_gradient_ops
    from asyncnet.training.optimizers import add_adagrad, add_adam, add_sgd

# Module (under asyncnet.) -> the names it provides here.
_LAZY = {
    "training.digits": (
        "MODELS",
        "DigitsConfig",
        "TrainResult",
        "build_nets",
        "evaluate_saved",
        "load_digits_split",
        "params_init_net",
        "predict",
        "save_model",
        "train_digits",
    ),
    "training.gradients": ("add_gradient_ops",),
    "training.optimizers": ("add_adagrad", "add_adam", "add_sgd"),
    "distributed.data_parallel": (
        "Rendezvous",
        "add_gradient_allreduce",
        "add_rendezvous",
        "scale_loss_gradients",
    ),
}
_WHERE = {name: module for module, names in _LAZY.items() for name in names}

__all__ = [
    "DigitsConfig",
    "MODELS",
    "Rendezvous",
    "TrainResult",
    "add_adagrad",
    "add_adam",
    "add_gradient_allreduce",
    "add_gradient_ops",
    "add_rendezvous",
    "add_sgd",
    "build_nets",
    "evaluate_saved",
    "load_digits_split",
    "params_init_net",
    "predict",
    "save_model",
    "scale_loss_gradients",
    "train_digits",
]


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'asyncnet.training' has no attribute '{name}'")
    value = getattr(importlib.import_module(f"asyncnet.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_WHERE})
