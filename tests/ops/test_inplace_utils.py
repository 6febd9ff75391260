"""CopyRowsToTensor, DataCouple and UnsafeCoalesce against direct numpy statements of their semantics."""

from __future__ import annotations

import numpy as np
import pytest

from asyncnet.errors import OperatorError
from asyncnet.workspace import Workspace
from tests.ops.run_util import make_op


def test_copy_rows_to_tensor() -> None:
    x = np.arange(12, dtype=np.float32).reshape(4, 3)
    with Workspace() as ws:
        ws.feed("x", x)
        ws.feed("i", np.array([3, 1]))
        ws.feed("r", np.array([7, 8, 9], np.float32))
        ws.run_operator_once(make_op("CopyRowsToTensor", ["x", "i", "r"], ["x"]))
        want = x.copy()
        for i in (3, 1):
            for c in range(3):
                want[i, c] = [7, 8, 9][c]
        np.testing.assert_array_equal(ws.fetch("x"), want)
        ws.feed("r", np.zeros(4, np.float32))
        with pytest.raises(OperatorError, match="width of input tensor should match lengths of row"):
            ws.run_operator_once(make_op("CopyRowsToTensor", ["x", "i", "r"], ["x"]))


def test_data_couple_passes_through() -> None:
    with Workspace() as ws:
        for k, v in {"p": np.ones(3), "g": np.arange(3.0), "e": np.zeros(1)}.items():
            ws.feed(k, v)
        ws.run_operator_once(make_op("DataCouple", ["p", "g", "e"], ["p", "g"]))
        assert ws.fetch("p").tolist() == [1, 1, 1] and ws.fetch("g").tolist() == [0, 1, 2]


def test_unsafe_coalesce_shares_one_buffer() -> None:
    xs = [np.arange(6, dtype=np.float32).reshape(2, 3), np.full((4,), 9, np.float32), np.zeros((0, 2), np.float32)]
    with Workspace() as ws:
        for k, x in enumerate(xs):
            ws.feed(f"x{k}", x)
        ws.run_operator_once(make_op("UnsafeCoalesce", ["x0", "x1", "x2"], ["x0", "x1", "x2", "buf"]))
        buf = ws.fetch("buf")
        assert buf.tolist() == [0, 1, 2, 3, 4, 5, 9, 9, 9, 9]
        outs = [ws.fetch(f"x{k}") for k in range(3)]
        assert [o.shape for o in outs] == [(2, 3), (4,), (0, 2)]
        # The outputs are views of the buffer: writing it shows through.
        buf[:] = -2
        assert all((o == -2).all() for o in outs)
        ws.feed("y", np.ones(2, np.int32))
        with pytest.raises(OperatorError, match="different dtypes"):
            ws.run_operator_once(make_op("UnsafeCoalesce", ["x1", "y"], ["x1", "y", "b2"]))
