"""Gradients of UpsampleBilinear, ResizeNearest, PRelu and LayerNorm against finite differences."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from asyncnet.training.gradcheck import check_gradient
from tests.ops.run_util import make_op

# UpsampleBilinear/ResizeNearest weights are float32 in Caffe2, so the forward is float32-accurate.
F32 = {"stepsize": 1e-3, "threshold": 2e-3}


@pytest.mark.parametrize("scales", [(2.0, 2.0), (1.5, 3.0), (0.5, 1.0)])
def test_upsample_bilinear_gradient(scales: tuple[float, float]) -> None:
    x = np.random.default_rng(0).normal(size=(2, 2, 4, 3)).astype(np.float32)
    op = make_op("UpsampleBilinear", ["x"], ["y"], height_scale=scales[0], width_scale=scales[1])
    res = check_gradient(op, {"x": x}, **F32)
    assert res.ok, res.describe()


@pytest.mark.parametrize("order", ["NCHW", "NHWC"])
def test_resize_nearest_gradient(order: str) -> None:
    x = np.random.default_rng(1).normal(size=(1, 2, 3, 3)).astype(np.float32)
    op = make_op("ResizeNearest", ["x"], ["y"], height_scale=2.0, width_scale=1.5, order=order)
    res = check_gradient(op, {"x": x}, **F32)
    assert res.ok, res.describe()


@pytest.mark.parametrize("slope_shape,order", [((1,), "NCHW"), ((3,), "NCHW"), ((3,), "NHWC")])
def test_prelu_gradient(slope_shape: tuple[int, ...], order: str) -> None:
    rng = np.random.default_rng(2)
    x = rng.normal(size=(2, 3, 2, 3) if order == "NCHW" else (2, 2, 3, 3))
    x[np.abs(x) < 0.05] = 0.2
    ins = {"x": x, "s": rng.uniform(0.1, 0.5, size=slope_shape)}
    res = check_gradient(make_op("PRelu", ["x", "s"], ["y"], order=order), ins, threshold=1e-6, stepsize=1e-6)
    assert res.ok, res.describe()


@pytest.mark.parametrize("args", [{"axis": 1}, {"axis": 2, "epsilon": 1e-3}, {"axis": -1, "elementwise_affine": 1}])
def test_layer_norm_gradient(args: dict[str, Any]) -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(2, 3, 4))
    ins = {"x": x}
    if args.get("elementwise_affine"):
        ins.update(g=rng.normal(size=(4,)), b=rng.normal(size=(4,)))
    op = make_op("LayerNorm", list(ins), ["y", "mean", "std"], **args)
    res = check_gradient(op, ins, threshold=1e-5, stepsize=1e-6)
    assert res.ok, res.describe()
