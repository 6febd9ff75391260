"""Logit against the formula (with clamping) and its gradient by finite differences."""

from __future__ import annotations

import math

import numpy as np

from asyncnet.training.gradcheck import check_gradient
from asyncnet.training.gradients import gradient_for_op
from tests.ops.run_util import make_op, run_op


def test_logit_clamps_and_matches_formula() -> None:
    x = np.array([0.0, 1e-9, 0.25, 0.5, 0.9, 1.0], np.float64)
    (y,) = run_op("Logit", [x], eps=1e-3)
    want = []
    for v in x:
        c = min(max(v, 1e-3), 1 - 1e-3)
        want.append(math.log(c / (1 - c)))
    np.testing.assert_allclose(y, want, rtol=1e-6)  # eps travels as a float32 argument


def test_logit_gradient() -> None:
    x = np.random.default_rng(0).uniform(0.05, 0.95, (3, 4))
    op = make_op("Logit", ["X"], ["Y"], eps=1e-2)
    assert gradient_for_op(op, ["dY"]).ops[0].type == "LogitGradient"
    res = check_gradient(op, {"X": x})
    assert res.ok, res.describe()
    (d,) = run_op("LogitGradient", [np.array([0.0, 0.5]), np.array([1.0, 1.0])], eps=1e-2)
    assert d.tolist() == [0.0, 4.0]  # clamped input: no gradient
