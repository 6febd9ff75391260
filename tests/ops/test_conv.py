"""Conv and ConvTranspose against onnxruntime (independent reference) on random geometries."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from asyncnet.errors import ArgumentError, AsyncNetError, OperatorError
from asyncnet.net import op_info
from asyncnet.ops._conv_util import CAFFE_LEGACY_POOLING, NOTSET, SAME, VALID, compute_size_and_pad
from asyncnet.schema import TensorInfo
from tests.ops.run_util import make_op, ort_run, run_op


def to_nhwc(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.moveaxis(a, 1, -1))


def from_nhwc(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.moveaxis(a, -1, 1))


def spelled(draw: Any, name: str, values: list[int], default: int) -> dict[str, Any]:
    """One of Caffe2's spellings of a per-dim window argument (all must mean the same)."""
    nd = len(values)
    options = ["list"]
    if all(v == values[0] for v in values):
        options.append("single")
        if values[0] == default:
            options.append("omit")
    if nd == 2:
        options.append("hw")
    choice = draw(st.sampled_from(options))
    if choice == "omit":
        return {}
    if choice == "single":
        return {name: values[0]}
    if choice == "hw":
        return {f"{name}_h": values[0], f"{name}_w": values[1]}
    return {f"{name}s": values}


def spelled_pads(draw: Any, heads: list[int], tails: list[int]) -> dict[str, Any]:
    options = ["list"]
    if all(p == heads[0] for p in heads + tails):
        options += ["single", "omit"] if heads[0] == 0 else ["single"]
    if len(heads) == 2:
        options.append("tlbr")
    choice = draw(st.sampled_from(options))
    if choice == "omit":
        return {}
    if choice == "single":
        return {"pad": heads[0]}
    if choice == "tlbr":
        return {"pad_t": heads[0], "pad_l": heads[1], "pad_b": tails[0], "pad_r": tails[1]}
    return {"pads": heads + tails}


@st.composite
def conv_cases(draw: Any) -> dict[str, Any]:
    nd = draw(st.sampled_from([1, 2, 2, 2, 3]))
    group = draw(st.integers(1, 3))
    cg, mg = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    n = draw(st.sampled_from([0, 1, 2]))
    kernel = [draw(st.integers(1, 3)) for _ in range(nd)]
    stride = [draw(st.integers(1, 3)) for _ in range(nd)]
    dilation = [draw(st.integers(1, 2)) for _ in range(nd)]
    heads = [draw(st.integers(0, 2)) for _ in range(nd)]
    tails = [draw(st.integers(0, 2)) for _ in range(nd)]
    spatial = []
    for i in range(nd):
        dk = dilation[i] * (kernel[i] - 1) + 1
        lo = max(1, dk - heads[i] - tails[i])
        spatial.append(draw(st.integers(lo, lo + (4 if nd < 3 else 2))))
    return {
        "nd": nd,
        "group": group,
        "c": cg * group,
        "m": mg * group,
        "n": n,
        "kernel": kernel,
        "stride": stride,
        "dilation": dilation,
        "heads": heads,
        "tails": tails,
        "spatial": spatial,
        "bias": draw(st.booleans()),
        "nhwc": draw(st.booleans()),
        "seed": draw(st.integers(0, 2**16)),
        "args": {
            **spelled(draw, "kernel", kernel, -1),
            **spelled(draw, "stride", stride, 1),
            **spelled(draw, "dilation", dilation, 1),
            **spelled_pads(draw, heads, tails),
        },
    }


@settings(max_examples=25)
@given(conv_cases())
def test_conv_matches_onnxruntime(case: dict[str, Any]) -> None:
    rng = np.random.default_rng(case["seed"])
    x = rng.standard_normal((case["n"], case["c"], *case["spatial"])).astype(np.float32)
    w = rng.standard_normal((case["m"], case["c"] // case["group"], *case["kernel"])).astype(np.float32)
    b = rng.standard_normal(case["m"]).astype(np.float32)
    attrs = {
        "group": case["group"],
        "kernel_shape": case["kernel"],
        "strides": case["stride"],
        "dilations": case["dilation"],
        "pads": case["heads"] + case["tails"],
    }
    inputs = [x, w, b] if case["bias"] else [x, w]
    ref = ort_run("Conv", inputs, **attrs)[0]
    args = dict(case["args"], group=case["group"])
    if case["nhwc"]:
        c2_inputs = [to_nhwc(x), to_nhwc(w)] + ([b] if case["bias"] else [])
        y = from_nhwc(run_op("Conv", c2_inputs, order="NHWC", **args)[0])
    else:
        y = run_op("Conv", inputs, **args)[0]
    assert y.shape == ref.shape
    assert y.dtype == np.float32
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("legacy,auto_pad", [(VALID, "VALID"), (SAME, "SAME_UPPER")])
@pytest.mark.parametrize("size,kernel,stride", [(7, 3, 2), (8, 3, 2), (5, 1, 3), (6, 4, 1)])
def test_legacy_pad_valid_and_same(legacy: int, auto_pad: str, size: int, kernel: int, stride: int) -> None:
    rng = np.random.default_rng(size * kernel + stride)
    x = rng.standard_normal((1, 2, size, size + 1)).astype(np.float32)
    w = rng.standard_normal((3, 2, kernel, kernel)).astype(np.float32)
    ref = ort_run("Conv", [x, w], kernel_shape=[kernel, kernel], strides=[stride, stride], auto_pad=auto_pad)[0]
    y = run_op("Conv", [x, w], kernel=kernel, stride=stride, legacy_pad=legacy)[0]
    assert y.shape == ref.shape
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-5)


def test_compute_size_and_pad_caffe_legacy_pooling() -> None:
    # Caffe rounds up: 6 + 0 - 3 = 3, 3 / 2 -> ceil 2, + 1 = 3 windows (Caffe2's floor gives 2).
    assert compute_size_and_pad(6, 2, 3, 1, CAFFE_LEGACY_POOLING, 0, 0) == (3, 0, 2)
    # ...but the last window must start inside the image plus the head pad.
    assert compute_size_and_pad(5, 2, 2, 1, CAFFE_LEGACY_POOLING, 1, 1) == (3, 1, 1)
    assert compute_size_and_pad(7, 2, 3, 1, NOTSET, 1, 0) == (3, 1, 0)
    assert compute_size_and_pad(7, 2, 3, 1, SAME, 5, 5) == (4, 1, 1)
    with pytest.raises(ValueError, match="smaller than the kernel"):
        compute_size_and_pad(2, 1, 3, 1, NOTSET, 0, 0)


def test_conv_kernel_inferred_from_filter_and_aliases() -> None:
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 3, 6, 5)).astype(np.float32)
    w = rng.standard_normal((4, 3, 3, 2)).astype(np.float32)
    ref = ort_run("Conv", [x, w], kernel_shape=[3, 2], pads=[1, 0, 1, 0])[0]
    for op_type in ("Conv", "Conv2D"):
        np.testing.assert_allclose(run_op(op_type, [x, w], pads=[1, 0, 1, 0])[0], ref, rtol=1e-5, atol=1e-5)


def test_conv_engines_fall_back_to_cpu_kernel() -> None:
    from asyncnet.workspace import Workspace

    rng = np.random.default_rng(2)
    x = rng.standard_normal((1, 4, 5, 5)).astype(np.float32)
    w = rng.standard_normal((4, 1, 3, 3)).astype(np.float32)
    ref = ort_run("Conv", [x, w], kernel_shape=[3, 3], group=4, pads=[1, 1, 1, 1])[0]
    for engine in ("CUDNN", "NNPACK,MOBILE", "DEPTHWISE_3x3,NNPACK", "EIGEN"):
        op = make_op("Conv", ["x", "w"], ["y"], kernel=3, pad=1, group=4, shared_buffer=1, exhaustive_search=0)
        op.engine = engine
        ws = Workspace()
        ws.feed("x", x)
        ws.feed("w", w)
        ws.run_operator_once(op)
        np.testing.assert_allclose(ws.fetch("y"), ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("order", ["NCHW", "NHWC"])
@pytest.mark.parametrize("stride,dilation,pads", [(1, 1, [1, 1, 1, 1]), (2, 1, [0, 1, 2, 0]), (1, 2, [2, 0, 1, 1])])
def test_depthwise_conv(order: str, stride: int, dilation: int, pads: list[int]) -> None:
    rng = np.random.default_rng(stride * 10 + dilation)
    x = rng.standard_normal((2, 5, 7, 6)).astype(np.float32)
    w = rng.standard_normal((5, 1, 3, 3)).astype(np.float32)
    b = rng.standard_normal(5).astype(np.float32)
    attrs = {"kernel_shape": [3, 3], "strides": [stride] * 2, "dilations": [dilation] * 2, "pads": pads}
    ref = ort_run("Conv", [x, w, b], group=5, **attrs)[0]
    args = {"kernel": 3, "stride": stride, "dilation": dilation, "pads": pads, "group": 5, "order": order}
    if order == "NHWC":
        y = from_nhwc(run_op("Conv", [to_nhwc(x), to_nhwc(w), b], **args)[0])
    else:
        y = run_op("Conv", [x, w, b], **args)[0]
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-5)


def test_conv_float64_keeps_dtype() -> None:
    rng = np.random.default_rng(3)
    x = rng.standard_normal((1, 2, 4, 4))
    w = rng.standard_normal((3, 2, 2, 2))
    y = run_op("Conv", [x, w], kernel=2)[0]
    ref = ort_run("Conv", [x.astype(np.float32), w.astype(np.float32)], kernel_shape=[2, 2])[0]
    assert y.dtype == np.float64
    np.testing.assert_allclose(y, ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    "args,inputs,match",
    [
        ({"kernel": 3}, [(1, 4, 5, 5), (2, 3, 3, 3)], "channels"),
        ({"kernel": 2}, [(1, 3, 5, 5), (2, 3, 3, 3)], "does not match the filter"),
        ({"kernel": 3, "group": 2}, [(1, 4, 5, 5), (3, 2, 3, 3)], "not divisible by group"),
        ({"kernel": 3}, [(1, 3, 2, 2), (2, 3, 3, 3)], "smaller than the kernel"),
        ({"kernels": [3, 3, 3]}, [(1, 3, 5, 5), (2, 3, 3, 3)], "3 values for 2 spatial"),
    ],
)
def test_conv_bad_shapes_name_the_problem(args: dict[str, Any], inputs: list[tuple[int, ...]], match: str) -> None:
    arrays = [np.zeros(s, np.float32) for s in inputs]
    with pytest.raises(OperatorError) as info:
        run_op("Conv", arrays, infer=False, **args)
    assert match in str(info.value.__cause__)


@pytest.mark.parametrize(
    "args,match",
    [
        ({"kernel": 3, "legacy_pad": VALID, "pad": 1}, "explicit pads"),
        ({"kernel": 3, "legacy_pad": 7}, "legacy_pad must be"),
        ({"kernel": 0}, "must be positive"),
        ({"kernel_h": 3}, "kernel_w"),
        ({"kernel": 3, "order": "CHWN"}, "order"),
    ],
)
def test_conv_bad_arguments_fail_at_preparation(args: dict[str, Any], match: str) -> None:
    arrays = [np.zeros((1, 3, 5, 5), np.float32), np.zeros((2, 3, 3, 3), np.float32)]
    with pytest.raises(AsyncNetError, match=match):
        run_op("Conv", arrays, infer=False, **args)


def test_conv_shape_inference_with_unknown_dims() -> None:
    op = make_op("Conv", ["x", "w"], ["y"], kernel=3, stride=2, pad=1)
    info = op_info(op)
    assert info.schema.infer is not None
    f32 = np.dtype(np.float32)
    out = info.schema.infer(info, [TensorInfo((None, 3, 224, None), f32), TensorInfo((64, 3, 3, 3), f32)])
    assert out[0] == TensorInfo((None, 64, 112, None), f32)
    out = info.schema.infer(info, [TensorInfo(None, f32), TensorInfo((64, 3, 3, 3), f32)])
    assert out[0].shape is None
    nhwc = op_info(make_op("Conv", ["x", "w"], ["y"], order="NHWC", stride=2))
    assert nhwc.schema.infer is not None
    out = nhwc.schema.infer(nhwc, [TensorInfo((1, 9, 9, 3), f32), TensorInfo((8, 3, 3, 3), f32)])
    assert out[0].shape == (1, 4, 4, 8)


# ---------------------------------------------------------------------------
# ConvTranspose


@st.composite
def conv_transpose_cases(draw: Any) -> dict[str, Any]:
    nd = draw(st.sampled_from([1, 2, 2, 3]))
    group = draw(st.integers(1, 2))
    kernel = [draw(st.integers(1, 3)) for _ in range(nd)]
    stride = [draw(st.integers(1, 3)) for _ in range(nd)]
    adj = [draw(st.integers(0, s - 1)) for s in stride]
    heads = [draw(st.integers(0, k - 1)) for k in kernel]
    tails = [draw(st.integers(0, k - 1)) for k in kernel]
    # The output (in - 1) * stride + kernel + adj - pads must be positive.
    lo = [1 + max(0, -(-(h + t + 1 - k - a) // s)) for h, t, k, a, s in zip(heads, tails, kernel, adj, stride)]
    return {
        "nd": nd,
        "group": group,
        "c": draw(st.integers(1, 3)) * group,
        "mg": draw(st.integers(1, 3)),
        "n": draw(st.sampled_from([0, 1, 2])),
        "kernel": kernel,
        "stride": stride,
        "adj": adj,
        "heads": heads,
        "tails": tails,
        "spatial": [draw(st.integers(v, v + 3)) for v in lo],
        "bias": draw(st.booleans()),
        "nhwc": draw(st.booleans()),
        "seed": draw(st.integers(0, 2**16)),
        "args": {
            **spelled(draw, "kernel", kernel, -1),
            **spelled(draw, "stride", stride, 1),
            **spelled(draw, "adj", adj, 0),
            **spelled_pads(draw, heads, tails),
        },
    }


@settings(max_examples=25)
@given(conv_transpose_cases())
def test_conv_transpose_matches_onnxruntime(case: dict[str, Any]) -> None:
    rng = np.random.default_rng(case["seed"])
    x = rng.standard_normal((case["n"], case["c"], *case["spatial"])).astype(np.float32)
    w = rng.standard_normal((case["c"], case["mg"], *case["kernel"])).astype(np.float32)
    b = rng.standard_normal(case["mg"] * case["group"]).astype(np.float32)
    inputs = [x, w, b] if case["bias"] else [x, w]
    ref = ort_run(
        "ConvTranspose",
        inputs,
        group=case["group"],
        kernel_shape=case["kernel"],
        strides=case["stride"],
        pads=case["heads"] + case["tails"],
        output_padding=case["adj"],
    )[0]
    args = dict(case["args"], group=case["group"])
    if case["nhwc"]:
        c2_inputs = [to_nhwc(x), to_nhwc(w)] + ([b] if case["bias"] else [])
        y = from_nhwc(run_op("ConvTranspose", c2_inputs, order="NHWC", **args)[0])
    else:
        y = run_op("ConvTranspose", inputs, **args)[0]
    assert y.shape == ref.shape
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-5)


def test_conv_transpose_rejects_bad_adj_and_filter() -> None:
    x = np.zeros((1, 2, 3, 3), np.float32)
    with pytest.raises(AsyncNetError, match="adj"):
        run_op("ConvTranspose", [x, np.zeros((2, 1, 3, 3), np.float32)], infer=False, kernel=3, stride=1, adj=2)
    with pytest.raises(OperatorError) as info:
        run_op("ConvTranspose", [x, np.zeros((3, 1, 3, 3), np.float32)], infer=False, kernel=3)
    assert isinstance(info.value.__cause__, ArgumentError)
    assert "input channels 2" in str(info.value.__cause__)


def _bench_module() -> Any:
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "bench" / "bench_ops.py"
    spec = importlib.util.spec_from_file_location("bench_ops", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
@pytest.mark.timeout(240)
@pytest.mark.parametrize("name", ["squeezenet", "resnet50"])
def test_zoo_net_matches_onnxruntime_light_model(name: str) -> None:
    """A whole model-zoo net against its ONNX export, both fed the same seeded weights."""
    from tests.conftest import realnets_path

    realnets_path("onnx_light_models", f"light_{name}.onnx")
    run_ours, run_ort, net = _bench_module().prepare_zoo_pair(name)
    try:
        ours, ref = run_ours(), run_ort()
    finally:
        net.close()
    np.testing.assert_allclose(ours.reshape(ref.shape), ref, rtol=2e-3, atol=1e-7)
    assert ours.argmax() == ref.argmax()


@pytest.mark.parametrize("order", ["NCHW", "NHWC"])
def test_col2im_is_the_adjoint_of_window_view(order: str) -> None:
    """<window_view(x), c> == <x, col2im(c)>: what gradient kernels rely on."""
    from asyncnet.ops._conv_util import Window, col2im, padded_for_windows, window_view

    rng = np.random.default_rng(9)
    win = Window(kernel=(3, 2), stride=(2, 1), dilation=(1, 2), pad_head=(1, 0), pad_tail=(1, 2), out=(3, 4))
    x = rng.standard_normal((2, 3, 5, 4) if order == "NCHW" else (2, 5, 4, 3))
    view = window_view(padded_for_windows(x, win, order), win, order, kernel_first=True)
    cols = rng.standard_normal(view.shape)
    back = col2im(cols, win, order, (5, 4))
    assert back.shape == x.shape
    np.testing.assert_allclose(np.vdot(view, cols), np.vdot(x, back), rtol=1e-10)
