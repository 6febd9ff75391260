"""Gradients of data movement: Copy, Reshape, Flatten (ResizeLike), Concat (Split), Split (Concat), Transpose."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from asyncnet.serde import argument_value
from asyncnet.training.gradcheck import check_gradient
from asyncnet.training.gradients import gradient_for_op
from tests.ops.run_util import make_op, run_op

OK = {"threshold": 1e-6, "stepsize": 1e-6}


def test_copy_reshape_flatten_gradients() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 3, 2))
    for op in (
        make_op("Copy", ["x"], ["y"]),
        make_op("Reshape", ["x"], ["y", "old"], shape=[3, -1]),
        make_op("Flatten", ["x"], ["y"], axis=2),
    ):
        res = check_gradient(op, {"x": x}, **OK)
        assert res.ok, f"{op.type}: {res.describe()}"


def test_reshape_gradient_def_uses_the_old_shape() -> None:
    (g,) = gradient_for_op(make_op("Reshape", ["x"], ["y", "old"], shape=[-1]), ["y_grad", None]).ops
    assert (g.type, list(g.input), list(g.output)) == ("Reshape", ["y_grad", "old"], ["x_grad", "_x_grad_dims"])
    assert not g.arg


def test_resize_like() -> None:
    (y,) = run_op("ResizeLike", [np.arange(6, dtype=np.float32), np.zeros((2, 3))])
    assert y.shape == (2, 3) and y.dtype == np.float32
    with pytest.raises(Exception, match="6 elements"):
        run_op("ResizeLike", [np.arange(6, dtype=np.float32), np.zeros((4,))])


@settings(max_examples=10)
@given(sizes=st.lists(st.integers(1, 3), min_size=1, max_size=3), axis=st.integers(0, 1), seed=st.integers(0, 99))
def test_concat_gradient(sizes: list[int], axis: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    ins = {f"x{i}": rng.normal(size=(s, 2) if axis == 0 else (2, s)) for i, s in enumerate(sizes)}
    op = make_op("Concat", list(ins), ["y", "split"], axis=axis)
    res = check_gradient(op, ins, **OK)
    assert res.ok, res.describe()


def test_split_gradient_with_and_without_every_output_gradient() -> None:
    x = np.random.default_rng(1).normal(size=(2, 5))
    op = make_op("Split", ["x"], ["a", "b", "c"], axis=1, split=[1, 3, 1])
    res = check_gradient(op, {"x": x}, outputs_with_grad=[0, 1, 2], **OK)
    assert res.ok, res.describe()
    # Only output 1 reaches the loss: the others contribute zeros of their shape.
    res = check_gradient(op, {"x": x}, outputs_with_grad=[1], **OK)
    assert res.ok, res.describe()
    assert np.all(res.analytic["x"][:, [0, 4]] == 0)


@pytest.mark.parametrize("axes", [None, [1, 2, 0], [0, 2, 1]])
def test_transpose_gradient_inverts_the_axes(axes: list[int] | None) -> None:
    x = np.random.default_rng(2).normal(size=(2, 3, 4))
    op = make_op("Transpose", ["x"], ["y"]) if axes is None else make_op("Transpose", ["x"], ["y"], axes=axes)
    res = check_gradient(op, {"x": x}, **OK)
    assert res.ok, res.describe()
    if axes == [1, 2, 0]:
        (g,) = gradient_for_op(op, ["y_grad"]).ops
        assert [(a.name, argument_value(a)) for a in g.arg] == [("axes", [2, 0, 1])]


@pytest.mark.parametrize(
    "op_type,args,shape",
    [
        ("NCHW2NHWC", {}, (2, 3, 2, 2)),
        ("NHWC2NCHW", {}, (2, 2, 2, 3)),
        ("ChannelShuffle", {"group": 2}, (1, 6, 2, 2)),
        ("ChannelShuffle", {"group": 3, "order": "NHWC"}, (1, 2, 2, 6)),
        ("Tile", {"tiles": 3, "axis": 1}, (2, 2, 3)),
    ],
    ids=["nchw2nhwc", "nhwc2nchw", "shuffle", "shuffle-nhwc", "tile"],
)
def test_layout_gradients(op_type: str, args: dict[str, object], shape: tuple[int, ...]) -> None:
    x = np.random.default_rng(len(shape)).normal(size=shape)
    res = check_gradient(make_op(op_type, ["x"], ["y"], **args), {"x": x}, **OK)
    assert res.ok, res.describe()


def test_tile_and_expand_gradients_with_shape_inputs() -> None:
    rng = np.random.default_rng(4)
    ins = {"x": rng.normal(size=(2, 3)), "t": np.array([2]), "a": np.array([1])}
    res = check_gradient(make_op("Tile", ["x", "t", "a"], ["y"]), ins, check=[0], **OK)
    assert res.ok, res.describe()
    ins = {"x": rng.normal(size=(3, 1)), "s": np.array([2, 3, 4])}
    res = check_gradient(make_op("Expand", ["x", "s"], ["y"]), ins, check=[0], **OK)
    assert res.ok, res.describe()
