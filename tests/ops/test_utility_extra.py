"""Fill extras (UniformIntFill, UniqueUniformFill, DiagonalFill, Float16UniformFill,
GivenTensorByteStringToUInt8Fill, Range) and utility/check ops, against Caffe2's documented semantics."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from asyncnet.errors import AsyncNetError, OperatorError
from asyncnet.training.gradients import gradient_for_op
from asyncnet.workspace import Workspace
from tests.ops.run_util import make_op, run_op


def test_random_int_and_half_fills() -> None:
    (a,) = run_op("UniformIntFill", [], shape=[200], min=-2, max=3)
    assert a.dtype == np.int32 and a.min() >= -2 and a.max() <= 3 and set(a.tolist()) == set(range(-2, 4))
    (h,) = run_op("Float16UniformFill", [], shape=[50], min=1.0, max=2.0)
    assert h.dtype == np.float16 and np.all((h >= 1.0) & (h <= 2.0))
    (u,) = run_op("UniqueUniformFill", [np.zeros(6), np.array([1, 3])], min=0, max=7)
    vals = u.tolist()
    assert u.dtype == np.int32 and len(set(vals)) == 6 and not {1, 3} & set(vals) and set(vals) <= set(range(8))
    with pytest.raises(OperatorError, match="distinct"):
        run_op("UniqueUniformFill", [np.zeros(5)], min=0, max=3)


@pytest.mark.parametrize("op_type,dtype", [("UniformIntFill", np.int32), ("UniformFill", np.float32)])
def test_uniform_fills_take_shape_min_max_inputs(op_type: str, dtype: type) -> None:
    # Caffe2's three-input form: shape (input_as_shape), then one-value min and max tensors.
    shape = np.array([40, 3], np.int64)
    lo, hi = np.array([5], dtype), np.array([9], dtype)
    (y,) = run_op(op_type, [shape, lo, hi], input_as_shape=1)
    assert y.shape == (40, 3) and y.dtype == dtype
    assert np.all((y >= 5) & (y <= 9))
    if dtype is np.int32:
        assert set(y.reshape(-1).tolist()) == {5, 6, 7, 8, 9}
    # min > max: dim 0 becomes 0.
    (e,) = run_op(op_type, [shape, hi, lo], input_as_shape=1)
    assert e.shape == (0, 3) and e.dtype == dtype
    with pytest.raises(OperatorError, match="one value"):
        run_op(op_type, [shape, np.array([1, 2], dtype), hi], input_as_shape=1)
    with pytest.raises(AsyncNetError, match="input"):
        run_op(op_type, [shape, lo], input_as_shape=1)


def test_diagonal_fill() -> None:
    (d,) = run_op("DiagonalFill", [], shape=[3, 4], value=2.5)
    want = np.zeros((3, 4), np.float32)
    for i in range(3):
        want[i, i] = 2.5
    np.testing.assert_array_equal(d, want)
    (d3,) = run_op("DiagonalFill", [], shape=[2, 3, 2], value=1, dtype=10)
    assert d3.dtype == np.int64 and d3.sum() == 2 and d3[0, 0, 0] == 1 and d3[1, 1, 1] == 1


def test_byte_string_fill_and_range() -> None:
    (b,) = run_op("GivenTensorByteStringToUInt8Fill", [], shape=[2, 2], values=b"\x01\x02\xff\x00")
    assert b.dtype == np.uint8 and b.tolist() == [[1, 2], [255, 0]]
    (r,) = run_op("Range", [np.array(5, np.int32)])
    assert r.tolist() == [0, 1, 2, 3, 4] and r.dtype == np.int32
    (r,) = run_op("Range", [np.array(1.0), np.array(2.0), np.array(0.25)])
    assert r.tolist() == [1.0, 1.25, 1.5, 1.75]
    (r,) = run_op("Range", [np.array(10), np.array(1), np.array(-4)])
    assert r.tolist() == [10, 6, 2]


def test_checks_raise() -> None:
    with pytest.raises(OperatorError, match="boom"):
        run_op("ThrowException", [], 0, message="boom")
    run_op("Assert", [np.array([True, True])], 0)
    with pytest.raises(OperatorError, match="bad input"):
        run_op("Assert", [np.array([1, 0], np.int32)], 0, error_msg="bad input")
    run_op("EnforceFinite", [np.ones(3)], 0)
    with pytest.raises(OperatorError, match="non-finite"):
        run_op("EnforceFinite", [np.array([1.0, np.inf])], 0)


def test_ensure_clipped_scale_blobs_weight_scale() -> None:
    p = np.array([[-2.0, 0.5], [3.0, -0.1], [9.0, 9.0]])
    (c,) = run_op("EnsureClipped", [p], min=-1.0, max=1.0)
    assert c.tolist() == [[-1.0, 0.5], [1.0, -0.1], [1.0, 1.0]]
    (c,) = run_op("EnsureClipped", [p, np.array([1]), np.zeros((1, 2))], min=-1.0, max=1.0)
    assert c.tolist() == [[-2.0, 0.5], [1.0, -0.1], [9.0, 9.0]]
    a, b = run_op("ScaleBlobs", [np.array([1.0, 2.0]), np.array([[3.0]])], 2, scale=0.5)
    assert a.tolist() == [0.5, 1.0] and b.tolist() == [[1.5]]
    w = np.array([2.0, -4.0], np.float32)
    for it, scaled in ((6, True), (7, False), (12, False)):
        (nw,) = run_op("WeightScale", [w, np.array([it], np.int64)], stepsize=3, upper_bound_iter=10, scale=0.5)
        assert nw.tolist() == ([1.0, -2.0] if scaled else [2.0, -4.0])


def test_mod_prepend_dim_lengths_to_shape_bucketize() -> None:
    x = np.array([7, -7, 5, -5], np.int64)
    (m,) = run_op("Mod", [x], divisor=3)
    assert m.tolist() == [1, -1, 2, -2]  # C: sign of the dividend
    (m,) = run_op("Mod", [x], divisor=3, sign_follow_divisor=1)
    assert m.tolist() == [1, 2, 2, 1]
    (p,) = run_op("PrependDim", [np.arange(12).reshape(6, 2)], dim_size=2)
    assert p.shape == (2, 3, 2)
    (s,) = run_op("LengthsToShape", [np.array([4, 4, 4], np.int32)])
    assert s.tolist() == [3, 4]
    (bk,) = run_op("Bucketize", [np.array([-1.0, 0.5, 1.0, 1.5, 9.0], np.float32)], boundaries=[0.5, 1.0, 2.0])
    assert bk.tolist() == [0, 0, 1, 2, 3]


def test_print_logs_and_writes_to_file(
    caplog: pytest.LogCaptureFixture, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import logging

    with caplog.at_level(logging.INFO, logger="asyncnet.ops.utility_extra"):
        run_op("Print", [np.array([1, 2, 3])], 0, limit=2)
    assert "in0 [3] int64: 1,2" in caplog.text
    monkeypatch.chdir(tmp_path)
    with Workspace() as ws:
        ws.feed("blob", np.array([4.5]))
        op = make_op("Print", ["blob"], [], to_file=1)
        ws.run_operator_once(op)
        ws.run_operator_once(op)
    assert (tmp_path / "blob.log").read_text().count("blob [1] float64: 4.5") == 2


def test_zero_gradient_gives_zeros() -> None:
    spec = gradient_for_op(make_op("ZeroGradient", ["x"], []), [])
    (g,) = spec.ops
    assert g.type == "ConstantFill" and list(g.output) == ["x_grad"]
    run_op("ZeroGradient", [np.ones(2)], 0)


@pytest.mark.timeout(30)
def test_counters_and_atomic_fetch_add(no_thread_leak: None) -> None:
    with Workspace() as ws:
        ws.run_operator_once(make_op("CreateCounter", [], ["c"], init_count=2))
        ws.run_operator_once(make_op("CountUp", ["c"], ["prev"]))
        assert int(ws.fetch("prev")) == 2
        ws.run_operator_once(make_op("RetrieveCount", ["c"], ["n"]))
        assert int(ws.fetch("n")) == 3
        # Caffe2's CountDown: false while the count was positive (3, 2, 1), true once it was <= 0.
        for want in (False, False, False, True):
            ws.run_operator_once(make_op("CountDown", ["c"], ["done"]))
            assert bool(ws.fetch("done")) is want
        ws.run_operator_once(make_op("CheckCounterDone", ["c"], ["d"]))
        assert bool(ws.fetch("d"))
        ws.run_operator_once(make_op("ResetCounter", ["c"], ["before"], init_count=5))
        assert int(ws.fetch("before")) == -1
        ws.run_operator_once(make_op("RetrieveCount", ["c"], ["n"]))
        assert int(ws.fetch("n")) == 5
        ws.run_operator_once(make_op("ResetCounter", ["c"], []))  # init_count defaults to 0
        ws.run_operator_once(make_op("RetrieveCount", ["c"], ["n"]))
        assert int(ws.fetch("n")) == 0
        ws.run_operator_once(make_op("CreateMutex", [], ["mu"]))
        ws.feed("a", np.array(5, np.int32))
        ws.feed("b", np.array(2, np.int32))
        # Caffe2's order: output 0 is the sum (written over a), output 1 the value before the add.
        ws.run_operator_once(make_op("AtomicFetchAdd", ["mu", "a", "b"], ["a", "old"]))
        assert int(ws.fetch("old")) == 5 and int(ws.fetch("a")) == 7
        counter = ws.fetch("c")

    from asyncnet.registry import default_registry

    up = default_registry().kernel("CountUp").factory
    from asyncnet.net import op_info

    kernel = up(op_info(make_op("CountUp", ["c"], ["p"])))
    threads = [threading.Thread(target=lambda: [kernel(counter) for _ in range(500)]) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert counter.count == 0 + 2000  # after the last ResetCounter (0), 4 threads x 500 CountUp


def test_cast_to_and_from_string() -> None:
    (s,) = run_op("Cast", [np.array([1.5, -2.0], np.float32)], to=4)  # STRING
    assert s.dtype == object and s.tolist() == [b"1.500000", b"-2.000000"]
    (s,) = run_op("Cast", [np.array([3, -4], np.int64)], to="STRING")
    assert s.tolist() == [b"3", b"-4"]
    (f,) = run_op("Cast", [np.array([b"2.25", b"-1"], dtype=object)], to=1)
    assert f.dtype == np.float32 and f.tolist() == [2.25, -1.0]
    (i,) = run_op("Cast", [np.array(["7", "-8"], dtype=object)], to=2)
    assert i.dtype == np.int32 and i.tolist() == [7, -8]
    with pytest.raises(OperatorError, match="parse"):
        run_op("Cast", [np.array([b"x"], dtype=object)], to=2)


def test_range_zero_step_uses_caffe2_message() -> None:
    with pytest.raises(AsyncNetError, match="Step size cannot be 0"):
        run_op("Range", [np.array(0), np.array(3), np.array(0)])
