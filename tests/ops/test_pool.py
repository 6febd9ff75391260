"""MaxPool / AveragePool against onnxruntime and against a naive loop of Caffe2's pooling rules."""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from asyncnet.errors import AsyncNetError
from asyncnet.net import op_info
from asyncnet.ops._conv_util import CAFFE_LEGACY_POOLING
from asyncnet.schema import TensorInfo
from tests.ops.run_util import make_op, ort_run, run_op


def to_nhwc(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.moveaxis(a, 1, -1))


def from_nhwc(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.moveaxis(a, -1, 1))


def naive_pool_2d(
    x: np.ndarray, kind: str, k: int, s: int, pad: int, out: tuple[int, int], include_pad: bool
) -> np.ndarray:
    """Caffe2's CPU pooling loop: windows clipped to the image; the average divides by the clipped
    window, or by k*k when count_include_pad."""
    n, c, h, w = x.shape
    y = np.zeros((n, c, *out), np.float64)
    for i, j, oy, ox in itertools.product(range(n), range(c), range(out[0]), range(out[1])):
        top, left = oy * s - pad, ox * s - pad
        bottom, right = min(top + k, h), min(left + k, w)
        top, left = max(top, 0), max(left, 0)
        win = x[i, j, top:bottom, left:right]
        if kind == "max":
            y[i, j, oy, ox] = win.max()
        else:
            y[i, j, oy, ox] = win.sum() / (k * k if include_pad else win.size)
    return y


@st.composite
def pool_cases(draw: Any) -> dict[str, Any]:
    nd = draw(st.sampled_from([1, 2, 2, 3]))
    kernel = [draw(st.integers(1, 3)) for _ in range(nd)]
    stride = [draw(st.integers(1, 3)) for _ in range(nd)]
    heads = [draw(st.integers(0, k - 1)) for k in kernel]
    tails = [draw(st.integers(0, k - 1)) for k in kernel]
    spatial = [draw(st.integers(max(1, k - h - t), k + 3)) for k, h, t in zip(kernel, heads, tails)]
    return {
        "op": draw(st.sampled_from(["MaxPool", "AveragePool"])),
        "include_pad": draw(st.booleans()),
        "n": draw(st.sampled_from([0, 1, 2])),
        "c": draw(st.integers(1, 3)),
        "kernel": kernel,
        "stride": stride,
        "heads": heads,
        "tails": tails,
        "spatial": spatial,
        "nhwc": draw(st.booleans()),
        "seed": draw(st.integers(0, 2**16)),
    }


@settings(max_examples=25)
@given(pool_cases())
def test_pool_matches_onnxruntime(case: dict[str, Any]) -> None:
    rng = np.random.default_rng(case["seed"])
    x = rng.standard_normal((case["n"], case["c"], *case["spatial"])).astype(np.float32)
    attrs: dict[str, Any] = {
        "kernel_shape": case["kernel"],
        "strides": case["stride"],
        "pads": case["heads"] + case["tails"],
    }
    args: dict[str, Any] = {"kernels": case["kernel"], "strides": case["stride"], "pads": case["heads"] + case["tails"]}
    if case["op"] == "AveragePool":
        attrs["count_include_pad"] = int(case["include_pad"])
        args["count_include_pad"] = int(case["include_pad"])
    ref = ort_run(case["op"], [x], **attrs)[0]
    if case["nhwc"]:
        y = from_nhwc(run_op(case["op"], [to_nhwc(x)], order="NHWC", **args)[0])
    else:
        y = run_op(case["op"], [x], **args)[0]
    assert y.shape == ref.shape
    assert y.dtype == np.float32
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("op,onnx_op", [("MaxPool", "GlobalMaxPool"), ("AveragePool", "GlobalAveragePool")])
@pytest.mark.parametrize("shape", [(2, 3, 5, 4), (1, 2, 7), (1, 2, 3, 2, 4), (0, 3, 4, 4)])
def test_global_pooling(op: str, onnx_op: str, shape: tuple[int, ...]) -> None:
    x = np.random.default_rng(len(shape)).standard_normal(shape).astype(np.float32)
    ref = ort_run(onnx_op, [x])[0]
    np.testing.assert_allclose(run_op(op, [x], global_pooling=1)[0], ref, rtol=1e-6, atol=1e-6)
    y = run_op(op, [to_nhwc(x)], global_pooling=1, order="NHWC")[0]
    np.testing.assert_allclose(from_nhwc(y), ref, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("op,onnx_op", [("MaxPool", "MaxPool"), ("AveragePool", "AveragePool")])
@pytest.mark.parametrize("shape,stride", [((2, 3, 7, 7), 1), ((1, 4, 5, 3), 2), ((1, 2, 6), 1)])
def test_a_window_over_the_whole_map_matches_onnxruntime(
    op: str, onnx_op: str, shape: tuple[int, ...], stride: int
) -> None:
    """ResNet's 7x7 pool5 on a 7x7 map: one window per channel, computed as a plain reduction."""
    x = np.random.default_rng(3).standard_normal(shape).astype(np.float32)
    kernel = list(shape[2:])
    ref = ort_run(onnx_op, [x], kernel_shape=kernel, strides=[stride] * len(kernel))[0]
    got = run_op(op, [x], kernels=kernel, strides=[stride] * len(kernel))[0]
    assert got.shape == ref.shape == (*shape[:2], *([1] * len(kernel)))
    np.testing.assert_allclose(got, ref, rtol=1e-6, atol=1e-6)
    y = run_op(op, [to_nhwc(x)], kernels=kernel, strides=[stride] * len(kernel), order="NHWC")[0]
    np.testing.assert_allclose(from_nhwc(y), ref, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("op", ["MaxPool", "AveragePool"])
@pytest.mark.parametrize("size,k,s,pad", [(6, 3, 2, 0), (7, 3, 2, 1), (5, 2, 2, 1), (14, 3, 2, 0), (6, 2, 3, 1)])
def test_caffe_legacy_pooling_rounds_up(op: str, size: int, k: int, s: int, pad: int) -> None:
    x = np.random.default_rng(size + k).standard_normal((1, 2, size, size)).astype(np.float32)
    args = {"kernel": k, "stride": s, "pad": pad, "legacy_pad": CAFFE_LEGACY_POOLING}
    attrs = {"kernel_shape": [k, k], "strides": [s, s], "pads": [pad] * 4, "ceil_mode": 1}
    y = run_op(op, [x], **args)[0]
    np.testing.assert_allclose(y, ort_run(op, [x], **attrs)[0], rtol=1e-5, atol=1e-6)
    kind = "max" if op == "MaxPool" else "avg"
    ref = naive_pool_2d(x, kind, k, s, pad, y.shape[2:], include_pad=False)
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-6)
    if op == "AveragePool":
        # Caffe2 divides by the whole kernel here, even where the window runs past the tail pad.
        y = run_op(op, [x], count_include_pad=1, **args)[0]
        ref = naive_pool_2d(x, kind, k, s, pad, y.shape[2:], include_pad=True)
        np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-6)


def test_pool_arg_spellings_agree() -> None:
    x = np.random.default_rng(5).standard_normal((1, 2, 9, 8)).astype(np.float32)
    base = run_op("MaxPool", [x], kernel=3, stride=2, pad=1)[0]
    for args in (
        {"kernels": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]},
        {"kernel_h": 3, "kernel_w": 3, "stride_h": 2, "stride_w": 2, "pad_t": 1, "pad_l": 1, "pad_b": 1, "pad_r": 1},
    ):
        np.testing.assert_array_equal(run_op("MaxPool2D", [x], **args)[0], base)


def test_max_pool_integer_input_and_1d_alias() -> None:
    x = np.arange(24, dtype=np.int32).reshape(1, 2, 12)[:, :, ::-1].copy()
    y = run_op("MaxPool1D", [x], kernels=[3], strides=[3])[0]
    assert y.dtype == np.int32
    np.testing.assert_array_equal(y, x.reshape(1, 2, 4, 3).max(axis=3))


@pytest.mark.parametrize(
    "args,match",
    [
        ({"kernel": 2, "dilation": 2}, "dilation"),
        ({"global_pooling": 1, "stride": 2}, "global_pooling"),
        ({}, "no kernel size"),
    ],
)
def test_pool_bad_arguments(args: dict[str, Any], match: str) -> None:
    with pytest.raises(AsyncNetError, match=match):
        run_op("MaxPool", [np.zeros((1, 1, 4, 4), np.float32)], infer=False, **args)


def test_pool_shape_inference() -> None:
    f32 = np.dtype(np.float32)
    info = op_info(make_op("AveragePool", ["x"], ["y"], kernel=3, stride=2, legacy_pad=CAFFE_LEGACY_POOLING))
    assert info.schema.infer is not None
    assert info.schema.infer(info, [TensorInfo((None, 8, 6, None), f32)])[0].shape == (None, 8, 3, None)
    glob = op_info(make_op("MaxPool", ["x"], ["y"], global_pooling=1, order="NHWC"))
    assert glob.schema.infer is not None
    assert glob.schema.infer(glob, [TensorInfo((2, None, 7, 5), f32)])[0].shape == (2, 1, 1, 5)


def test_global_pooling_accepts_kernel_zero() -> None:
    # DenseNet-121's zoo net writes kernel 0 next to global_pooling; only non-global pools need a kernel.
    x = np.random.default_rng(8).standard_normal((1, 3, 4, 4)).astype(np.float32)
    y = run_op("AveragePool", [x], kernel=0, stride=1, pad=0, global_pooling=1)[0]
    np.testing.assert_allclose(y, x.mean(axis=(2, 3), keepdims=True), rtol=1e-6)
    with pytest.raises(AsyncNetError, match="positive"):
        run_op("AveragePool", [x], infer=False, kernel=0)


@pytest.mark.parametrize("op", ["MaxPool", "AveragePool"])
@pytest.mark.parametrize("include_pad", [False, True])
@pytest.mark.parametrize("size,k,s,pad,legacy", [(9, 3, 1, 1, 0), (8, 2, 1, 0, 0), (7, 4, 1, 2, 0), (7, 3, 1, 1, 3)])
def test_stride1_flat_path_matches_naive_loop(
    op: str, include_pad: bool, size: int, k: int, s: int, pad: int, legacy: int
) -> None:
    """Stride-1 2-D NCHW pooling takes the flat phase-split path; two runs of one net (the second
    reuses its padding buffer and output) both match the naive loop."""
    from asyncnet.proto import caffe2_pb2 as pb
    from asyncnet.workspace import Workspace

    kind = "max" if op == "MaxPool" else "avg"
    args: dict[str, Any] = {"kernel": k, "stride": s, "pad": pad, "legacy_pad": legacy}
    if op == "AveragePool":
        args["count_include_pad"] = int(include_pad)
    net = pb.NetDef(name="pool")
    net.op.append(make_op(op, ["x"], ["y"], **args))
    rng = np.random.default_rng(size * k)
    with Workspace() as ws:
        ws.feed("x", rng.standard_normal((2, 3, size, size)).astype(np.float32))
        n = ws.create_net(net)
        for _ in range(2):
            x = rng.standard_normal((2, 3, size, size)).astype(np.float32)
            ws.feed("x", x)
            n.run()
            y = ws.fetch("y")
            np.testing.assert_allclose(
                y, naive_pool_2d(x, kind, k, s, pad, y.shape[2:], include_pad), rtol=1e-5, atol=1e-6
            )
        n.close()
