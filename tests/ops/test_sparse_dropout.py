"""SparseDropoutWithReplacement and SparseItemwiseDropoutWithReplacement: the extremes exactly, and the
drop rate and per-list structure of random runs checked item by item."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from asyncnet.errors import ArgumentError, OperatorError
from tests.ops.run_util import make_op, run_once, run_op


def seeded(op_type: str, inputs: list[Any], n_out: int = 1, **args: Any) -> list[Any]:
    """Run an op whose draws come from a fixed DeviceOption.random_seed (deterministic statistics)."""
    names = [f"in{i}" for i in range(len(inputs))]
    op = make_op(op_type, names, [f"out{i}" for i in range(n_out)], **args)
    op.device_option.random_seed = 1234
    return run_once(op, dict(zip(names, inputs)))


X = np.arange(1, 11, dtype=np.int64)
LENS = np.array([2, 3, 0, 4, 1], np.int32)


def split(ids: np.ndarray, lens: np.ndarray) -> list[list[int]]:
    out, pos = [], 0
    for n in lens.tolist():
        out.append(ids[pos : pos + n].tolist())
        pos += n
    return out


@pytest.mark.parametrize("ratio", [0.0, 1.0, 0.5])
def test_listwise_dropout(ratio: float) -> None:
    y, ly = run_op("SparseDropoutWithReplacement", [X, LENS], 2, ratio=ratio, replacement_value=-1)
    assert y.dtype == np.int64 and ly.dtype == np.int32 and int(ly.sum()) == y.size
    before, after = split(X, LENS), split(y, ly)
    for old, new in zip(before, after):
        # A list survives whole or becomes the single replacement id.
        assert new == old or new == [-1]
    if ratio == 0.0:
        assert after == before
    if ratio == 1.0:
        assert after == [[-1]] * len(before)


def test_listwise_dropout_rate() -> None:
    lens = np.ones(4000, np.int32)
    y, _ = seeded("SparseDropoutWithReplacement", [np.arange(4000), lens], 2, ratio=0.3, replacement_value=-7)
    assert 0.25 < float(np.mean(y == -7)) < 0.35


@pytest.mark.parametrize("ratio", [0.0, 1.0, 0.4])
def test_itemwise_dropout(ratio: float) -> None:
    ids = np.arange(3000, dtype=np.int64)
    lens = np.full(1000, 3, np.int32)
    y, ly = seeded("SparseItemwiseDropoutWithReplacement", [ids, lens], 2, ratio=ratio, replacement_value=-1)
    assert ly.tolist() == lens.tolist() and y.shape == ids.shape
    dropped = y == -1
    assert np.all(y[~dropped] == ids[~dropped])
    assert abs(float(dropped.mean()) - ratio) < 0.05


def test_dropout_errors() -> None:
    with pytest.raises(ArgumentError, match="ratio"):
        run_op("SparseDropoutWithReplacement", [X, LENS], 2, ratio=1.5)
    with pytest.raises(OperatorError, match="sum to"):
        run_op("SparseItemwiseDropoutWithReplacement", [X, np.array([3], np.int32)], 2)
