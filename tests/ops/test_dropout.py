"""Dropout: identity in test mode; in training a seeded Bernoulli mask with inverted scaling."""

from __future__ import annotations

import numpy as np
import pytest

from asyncnet.errors import AsyncNetError
from asyncnet.workspace import Workspace
from tests.ops.run_util import make_op, run_op


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int32])
def test_dropout_test_mode_is_identity(dtype: type) -> None:
    x = (np.random.default_rng(0).standard_normal((3, 4)) * 5).astype(dtype)
    y = run_op("Dropout", [x], ratio=0.7, is_test=1)[0]
    np.testing.assert_array_equal(y, x)
    assert y.dtype == x.dtype


def _train(x: np.ndarray, ratio: float, seed: int | None = 1) -> tuple[np.ndarray, np.ndarray]:
    op = make_op("Dropout", ["x"], ["y", "mask"], ratio=ratio, is_test=0)
    if seed is not None:
        op.device_option.random_seed = seed
    ws = Workspace()
    ws.feed("x", x)
    ws.run_operator_once(op)
    return ws.fetch("y"), ws.fetch("mask")


@pytest.mark.parametrize("ratio", [0.0, 0.25, 0.5, 0.9])
def test_dropout_training_scales_kept_values(ratio: float) -> None:
    x = np.random.default_rng(1).standard_normal((200, 50)).astype(np.float32)
    y, mask = _train(x, ratio)
    assert mask.dtype == np.bool_ and mask.shape == x.shape
    assert y.dtype == np.float32
    np.testing.assert_allclose(y[mask], x[mask] / (1 - ratio), rtol=1e-6)
    assert (y[~mask] == 0).all()
    # 10,000 Bernoulli draws: the kept fraction is within 5 standard deviations of 1 - ratio.
    sd = np.sqrt(ratio * (1 - ratio) / x.size)
    assert abs(mask.mean() - (1 - ratio)) <= 5 * sd + 1e-12


def test_dropout_ratio_one_drops_everything() -> None:
    y, mask = _train(np.ones((4, 4), np.float32), 1.0)
    assert not mask.any() and not y.any()


def test_dropout_seed_makes_masks_repeatable() -> None:
    x = np.ones((30, 30), np.float32)
    a, b = _train(x, 0.5, seed=5)[1], _train(x, 0.5, seed=5)[1]
    c = _train(x, 0.5, seed=6)[1]
    np.testing.assert_array_equal(a, b)
    assert (a != c).any()


def test_dropout_arguments_checked() -> None:
    x = np.ones(3, np.float32)
    with pytest.raises(AsyncNetError, match="ratio"):
        run_op("Dropout", [x], infer=False, ratio=1.5, is_test=1)
    with pytest.raises(AsyncNetError, match="2 outputs"):
        run_op("Dropout", [x], infer=False, ratio=0.5, is_test=0)
