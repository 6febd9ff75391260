"""Output-buffer reuse: steady-state runs write into last run's arrays, but never into one that
anybody else (the user, another blob, a view) can still see."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from asyncnet.ops import _buffers
from asyncnet.ops._buffers import OutputBuffer
from asyncnet.proto import caffe2_pb2 as pb
from asyncnet.workspace import Workspace
from tests.ops.run_util import make_op


@pytest.fixture(autouse=True)
def small_buffers(monkeypatch: pytest.MonkeyPatch) -> None:
    """Reuse kicks in above 32 MiB by default; these tests use small arrays."""
    monkeypatch.setattr(_buffers, "MIN_BYTES", 1 << 12)


def address(a: Any) -> int:
    return int(np.asarray(a).__array_interface__["data"][0])


def conv_net(ws: Workspace, relu_in_place: bool = True) -> Any:
    rng = np.random.default_rng(0)
    ws.feed("x", rng.standard_normal((1, 8, 64, 64)).astype(np.float32))
    ws.feed("w", rng.standard_normal((16, 8, 3, 3)).astype(np.float32))
    ws.feed("s", rng.uniform(0.5, 1.5, 16).astype(np.float32))
    ws.feed("bb", rng.standard_normal(16).astype(np.float32))
    ws.feed("mean", rng.standard_normal(16).astype(np.float32))
    ws.feed("var", rng.uniform(0.5, 1.5, 16).astype(np.float32))
    ws.feed("fw", rng.standard_normal((10, 16 * 32 * 32)).astype(np.float32))
    ws.feed("fb", rng.standard_normal(10).astype(np.float32))
    net = pb.NetDef(name="buffers")
    relu_out = "y" if relu_in_place else "r"
    net.op.extend(
        [
            make_op("Conv", ["x", "w"], ["y"], kernel=3, pad=1),
            make_op("SpatialBN", ["y", "s", "bb", "mean", "var"], ["y"], is_test=1),
            make_op("Relu", ["y"], [relu_out]),
            make_op("MaxPool", [relu_out], ["p"], kernel=2, stride=2),
            make_op("FC", ["p", "fw", "fb"], ["f"]),
        ]
    )
    return ws.create_net(net)


def new_input(ws: Workspace, seed: int) -> None:
    ws.feed("x", np.random.default_rng(seed).standard_normal((1, 8, 64, 64)).astype(np.float32))


def test_steady_state_runs_reuse_output_arrays() -> None:
    with Workspace() as ws:
        net = conv_net(ws, relu_in_place=False)
        net.run()
        first = {b: address(ws.fetch(b)) for b in ("y", "r", "p")}
        net.run()
        second = {b: address(ws.fetch(b)) for b in ("y", "r", "p")}
        net.close()
    assert first == second


def test_fetched_values_survive_later_runs() -> None:
    with Workspace() as ws:
        net = conv_net(ws)
        net.run()
        kept = {b: ws.fetch(b) for b in ("y", "p", "f")}
        copies = {b: np.array(v, copy=True) for b, v in kept.items()}
        for seed in (1, 2):
            new_input(ws, seed)
            net.run()
            assert not np.array_equal(ws.fetch("p"), copies["p"])  # the net did compute new values
        for b in kept:
            np.testing.assert_array_equal(kept[b], copies[b])
            assert kept[b] is not ws.fetch(b)
        net.close()


def test_a_view_of_an_output_protects_it() -> None:
    with Workspace() as ws:
        net = conv_net(ws, relu_in_place=False)
        net.run()
        view = ws.fetch("p").reshape(-1)[:10]
        copy = view.copy()
        new_input(ws, 3)
        net.run()
        np.testing.assert_array_equal(view, copy)
        net.close()


def test_value_held_after_its_blob_was_overwritten_is_not_reused() -> None:
    """The one extra reference is the user's, not the output cell's: no reuse."""
    with Workspace() as ws:
        net = conv_net(ws, relu_in_place=False)
        net.run()
        held = ws.fetch("r")
        copy = held.copy()
        ws.feed("r", np.zeros(1, np.float32))  # the cell no longer holds the array
        new_input(ws, 4)
        net.run()
        np.testing.assert_array_equal(held, copy)
        net.close()


def test_in_place_relu_does_not_write_into_a_fed_array() -> None:
    x = np.array([[-1.0, 2.0], [3.0, -4.0]] * 20000, dtype=np.float32)
    copy = x.copy()
    with Workspace() as ws:
        ws.feed("x", x)
        net = pb.NetDef(name="relu")
        net.op.append(make_op("Relu", ["x"], ["x"]))
        n = ws.create_net(net)
        n.run()
        np.testing.assert_array_equal(ws.fetch("x"), np.maximum(copy, 0))
        n.close()
    np.testing.assert_array_equal(x, copy)


def test_buffer_rules_directly() -> None:
    class Cell:
        value: Any = None

    cell = Cell()
    buf = OutputBuffer(cell)
    a = buf.take((64, 1024), np.dtype(np.float32))
    cell.value = a
    del a
    assert buf.take((64, 1024), np.dtype(np.float32)) is cell.value  # only the cell holds it
    user = cell.value
    assert buf.take((64, 1024), np.dtype(np.float32)) is not user  # the user holds it too
    cell.value = buf.take((64, 1024), np.dtype(np.float32))
    assert buf.take((64, 1024), np.dtype(np.float64)) is not cell.value  # another dtype
    small = buf.take((4,), np.dtype(np.float32))  # under MIN_BYTES
    assert buf.take((4,), np.dtype(np.float32)) is not small  # too small to be worth keeping


def test_reuse_can_be_switched_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_buffers, "ENABLED", False)
    buf = OutputBuffer()
    a = buf.take((64, 1024), np.dtype(np.float32))
    b = buf.take((64, 1024), np.dtype(np.float32))
    assert a is not b


def test_arrays_at_the_threshold_are_kept() -> None:
    buf = OutputBuffer()
    big = buf.take((_buffers.MIN_BYTES // 4,), np.dtype(np.float32))
    big_addr = address(big)
    del big
    assert address(buf.take((_buffers.MIN_BYTES // 4,), np.dtype(np.float32))) == big_addr


def test_large_im2col_columns_are_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    from asyncnet.ops._conv_fast import ConvPlan
    from asyncnet.ops._window import Window

    x = np.random.default_rng(1).standard_normal((1, 4, 10, 10)).astype(np.float32)
    w = np.random.default_rng(2).standard_normal((3, 4, 3, 3)).astype(np.float32)
    plan = ConvPlan(
        x.shape, w.shape, np.dtype(np.float32), Window((3, 3), (1, 1), (1, 1), (1, 1), (1, 1), (10, 10)), "NCHW", 1
    )
    first = plan.run(x, w, None, None).copy()
    cols = plan._cols
    assert cols is not None
    np.testing.assert_array_equal(plan.run(x, w, None, None), first)
    assert plan._cols is cols
