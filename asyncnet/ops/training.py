"""Ops that only matter for training graphs: StopGradient."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from asyncnet.opinfo import OpInfo
from asyncnet.registry import register_op
from asyncnet.schema import same_as_input


@register_op(
    "StopGradient",
    allow_inplace=[(0, 0)],
    infer=same_as_input(),
    doc="Y = X; the backward pass stops here (no gradient flows to X).",
)
def stop_gradient(op: OpInfo) -> Callable[..., Any]:
    def run(x: Any) -> tuple[Any]:
        # In place the value passes through untouched; otherwise Y must not alias X.
        return (x if op.inputs[0] == op.outputs[0] else np.array(x, copy=True),)

    return run
