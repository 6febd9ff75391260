"""Layout, padding, resampling, PRelu and style-transfer ops against onnxruntime or naive loops."""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from asyncnet.errors import AsyncNetError
from asyncnet.proto import caffe2_pb2 as pb
from asyncnet.workspace import Workspace
from tests.conftest import realnets_path
from tests.ops.run_util import make_op, ort_run, run_op


@pytest.mark.parametrize("shape", [(2, 3, 4, 5), (1, 2, 3), (2, 3, 1, 2, 2), (0, 3, 2, 2)])
def test_layout_transposes_match_onnxruntime(shape: tuple[int, ...]) -> None:
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    n = len(shape)
    to_last = ort_run("Transpose", [x], perm=[0, *range(2, n), 1])[0]
    y = run_op("NCHW2NHWC", [x])[0]
    np.testing.assert_array_equal(y, to_last)
    assert y.flags.c_contiguous
    back = ort_run("Transpose", [to_last], perm=[0, n - 1, *range(1, n - 1)])[0]
    np.testing.assert_array_equal(run_op("NHWC2NCHW", [to_last])[0], back)


@pytest.mark.parametrize("order", ["NCHW", "NHWC"])
@pytest.mark.parametrize("group", [1, 2, 3])
def test_channel_shuffle_naive(order: str, group: int) -> None:
    x = np.random.default_rng(group).standard_normal((2, 6, 2, 3)).astype(np.float32)
    if order == "NHWC":
        x = np.ascontiguousarray(np.moveaxis(x, 1, -1))
    ax = 1 if order == "NCHW" else 3
    c = x.shape[ax]
    want = np.empty_like(x)
    for j in range(c):
        # Output channel j = (i, g) in [C/group, group] order reads input channel g * (C/group) + i.
        i, g = divmod(j, group)
        src = g * (c // group) + i
        np.moveaxis(want, ax, 0)[j] = np.moveaxis(x, ax, 0)[src]
    np.testing.assert_array_equal(run_op("ChannelShuffle", [x], group=group, order=order)[0], want)


@st.composite
def pad_cases(draw: Any) -> dict[str, Any]:
    mode = draw(st.sampled_from(["constant", "reflect", "edge"]))
    h, w = draw(st.integers(1, 5)), draw(st.integers(1, 5))
    lo = 0 if mode != "constant" else -1
    pads = []
    for size in (h, w, h, w):
        hi = size - 1 if mode == "reflect" else 3
        pads.append(draw(st.integers(lo, hi)))
    if h + pads[0] + pads[2] <= 0 or w + pads[1] + pads[3] <= 0:
        pads = [max(p, 0) for p in pads]
    return {
        "mode": mode,
        "shape": (draw(st.integers(0, 2)), draw(st.integers(1, 3)), h, w),
        "pads": pads,
        "value": draw(st.sampled_from([0.0, 1.5])),
        "nhwc": draw(st.booleans()),
    }


@settings(max_examples=25)
@given(pad_cases())
def test_pad_image_matches_onnxruntime(case: dict[str, Any]) -> None:
    x = np.random.default_rng(1).standard_normal(case["shape"]).astype(np.float32)
    t, left, b, r = case["pads"]
    onnx_pads = np.array([0, 0, t, left, 0, 0, b, r], np.int64)
    inputs = [x, onnx_pads] + ([np.array(case["value"], np.float32)] if case["mode"] == "constant" else [])
    ref = ort_run("Pad", inputs, mode=case["mode"])[0]
    args = {"pad_t": t, "pad_l": left, "pad_b": b, "pad_r": r, "mode": case["mode"], "value": case["value"]}
    if case["nhwc"]:
        y = run_op("PadImage", [np.ascontiguousarray(np.moveaxis(x, 1, -1))], order="NHWC", **args)[0]
        y = np.moveaxis(y, -1, 1)
    else:
        y = run_op("PadImage", [x], **args)[0]
    np.testing.assert_array_equal(y, ref)


def test_pad_image_rejects_bad_mode_and_reflect_overflow() -> None:
    x = np.zeros((1, 1, 3, 3), np.float32)
    with pytest.raises(AsyncNetError, match="mode"):
        run_op("PadImage", [x], infer=False, pad=1, mode="wrap")
    with pytest.raises(AsyncNetError, match="smaller than"):
        run_op("PadImage", [x], infer=False, pad=3, mode="reflect")


@pytest.mark.parametrize("hs,ws", [(2.0, 2.0), (1.5, 3.0), (0.5, 0.75), (1.0, 1.0)])
@pytest.mark.parametrize("order", ["NCHW", "NHWC"])
def test_resize_nearest_matches_onnxruntime(hs: float, ws: float, order: str) -> None:
    x = np.random.default_rng(2).standard_normal((2, 3, 4, 6)).astype(np.float32)
    ref = ort_run(
        "Resize",
        [x, np.zeros(0, np.float32), np.array([1, 1, hs, ws], np.float32)],
        mode="nearest",
        nearest_mode="floor",
        coordinate_transformation_mode="asymmetric",
    )[0]
    xin = x if order == "NCHW" else np.ascontiguousarray(np.moveaxis(x, 1, -1))
    y = run_op("ResizeNearest", [xin], height_scale=hs, width_scale=ws, order=order)[0]
    y2 = run_op("ResizeNearest", [xin, np.array([hs, ws], np.float32)], order=order)[0]
    if order == "NHWC":
        y, y2 = np.moveaxis(y, -1, 1), np.moveaxis(y2, -1, 1)
    np.testing.assert_array_equal(y, ref)
    np.testing.assert_array_equal(y2, ref)


@pytest.mark.parametrize("hs,ws", [(0.3, 1 / 3), (0.6, 1.2), (1.1, 2.2)])
def test_resize_nearest_divides_in_float32(hs: float, ws: float) -> None:
    # Caffe2: in_y = min((int)(y / height_scale_), H - 1) with a float scale, so the C++ quotient is a
    # float32 division (correctly rounded, then truncated). Naive per-pixel loop with numpy float32 scalars.
    x = np.random.default_rng(4).standard_normal((1, 1, 30, 20)).astype(np.float32)
    (y,) = run_op("ResizeNearest", [x], height_scale=hs, width_scale=ws)
    h_s, w_s = np.float32(hs), np.float32(ws)
    oh, ow = int(np.float32(30) * h_s), int(np.float32(20) * w_s)
    assert y.shape == (1, 1, oh, ow)
    for i in range(oh):
        for j in range(ow):
            si = min(int(np.float32(i) / h_s), 29)
            sj = min(int(np.float32(j) / w_s), 19)
            assert y[0, 0, i, j] == x[0, 0, si, sj]
    if hs == 0.3:
        # 3 / 0.30000001f rounds to 10.0f in float32 (a float64 quotient, 9.9999996, would give 9).
        assert y[0, 0, 3, 0] == x[0, 0, 10, 0]


@pytest.mark.parametrize("shape,hs,ws", [((2, 3, 4, 5), 2.0, 2.0), ((1, 2, 5, 3), 1.5, 0.5), ((1, 1, 1, 4), 3.0, 1.0)])
def test_upsample_bilinear_matches_onnxruntime_align_corners(shape: tuple[int, ...], hs: float, ws: float) -> None:
    x = np.random.default_rng(3).standard_normal(shape).astype(np.float32)
    ref = ort_run(
        "Resize",
        [x, np.zeros(0, np.float32), np.array([1, 1, hs, ws], np.float32)],
        mode="linear",
        coordinate_transformation_mode="align_corners",
    )[0]
    y = run_op("UpsampleBilinear", [x], height_scale=hs, width_scale=ws)[0]
    assert y.shape == ref.shape
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-6)
    y2 = run_op("UpsampleBilinear", [x, np.array([hs, ws], np.float32)])[0]
    np.testing.assert_allclose(y2, ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("order", ["NCHW", "NHWC"])
@pytest.mark.parametrize("shared", [True, False])
def test_prelu_matches_onnxruntime(order: str, shared: bool) -> None:
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 3, 4, 5)).astype(np.float32)
    slope = rng.standard_normal(1 if shared else 3).astype(np.float32)
    ref = ort_run("PRelu", [x, slope.reshape(-1, 1, 1)])[0]
    if order == "NHWC":
        y = np.moveaxis(run_op("PRelu", [np.ascontiguousarray(np.moveaxis(x, 1, -1)), slope], order=order)[0], -1, 1)
    else:
        y = run_op("PRelu", [x, slope])[0]
    np.testing.assert_allclose(y, ref, rtol=1e-6)
    with pytest.raises(AsyncNetError, match="channels"):
        run_op("PRelu", [x, np.ones(2, np.float32)], infer=False)


def test_stylizer_deprocess_naive_loop() -> None:
    x = np.random.default_rng(5).uniform(-200, 300, (2, 3, 3, 4)).astype(np.float32)
    mean = np.array([10.0, 20.0, 30.5], np.float32)
    y = run_op("BRGNCHWCToPackedInt8BGRAStylizerDeprocess", [x, mean])[0]
    assert y.dtype == np.uint8 and y.shape == (2, 3, 4, 4)
    for n, h, w in itertools.product(range(2), range(3), range(4)):
        for c in range(3):
            v = float(x[n, c, h, w]) + float(mean[c])
            assert y[n, h, w, c] == (255 if v >= 255 else 0 if v <= 0 else int(v))
        assert y[n, h, w, 3] == 255


def test_stylizer_preprocess_mean_and_cycled_noise() -> None:
    rng = np.random.default_rng(6)
    x = rng.integers(0, 256, (2, 3, 5, 4), dtype=np.uint8)
    mean = np.array([100.0, 110.0, 120.0], np.float32)
    op_type = "PackedInt8BGRANHWCToNCHWCStylizerPreprocess"
    plain = x[..., :3].astype(np.float32) - mean
    y = run_op(op_type, [x, mean], noise_std=0.0)[0]
    np.testing.assert_allclose(y, np.moveaxis(plain, -1, 1))
    # The noise sequence runs over (pixel, channel) in order and restarts for every image.
    op = make_op(op_type, ["x", "m"], ["y"], noise_std=5.0, noise_size=7)
    op.device_option.random_seed = 3
    ws = Workspace()
    ws.feed("x", x)
    ws.feed("m", mean)
    ws.run_operator_once(op)
    noise = np.moveaxis(ws.fetch("y"), 1, -1) - plain
    flat = noise.reshape(2, -1)
    np.testing.assert_allclose(flat[0], flat[1], atol=1e-4)
    np.testing.assert_allclose(flat[0][7:], flat[0][:-7], atol=1e-4)
    assert 0 < np.abs(flat).std() < 20


def test_style_transfer_net_runs_end_to_end() -> None:
    from asyncnet import serde

    d = realnets_path("caffe2_model_zoo", "style_transfer_crayon")
    init = serde.read_net(d / "crayon_init.pb")
    pred = serde.read_net(d / "crayon_predict.pb")
    ws = Workspace()
    ws.run_net_once(init)
    img = np.random.default_rng(7).integers(0, 256, (1, 64, 48, 4), dtype=np.uint8)
    ws.feed("data_int8_bgra", img)
    copy = pb.NetDef()
    copy.CopyFrom(pred)
    ws.run_net_once(copy)
    out = ws.fetch("styled_int8_bgra")
    assert out.shape == img.shape and out.dtype == np.uint8
    assert (out[..., 3] == 255).all()
    assert 5 < out[..., :3].std()


@pytest.mark.parametrize("dtype", [np.uint8, np.int32])
def test_layout_and_resampling_keep_integer_dtypes(dtype: type) -> None:
    x = np.random.default_rng(8).integers(0, 100, (1, 4, 3, 5)).astype(dtype)
    np.testing.assert_array_equal(run_op("NCHW2NHWC", [x])[0], ort_run("Transpose", [x], perm=[0, 2, 3, 1])[0])
    pads = np.array([0, 0, 1, 2, 0, 0, 2, 0], np.int64)
    ref = ort_run("Pad", [x, pads], mode="edge")[0]
    y = run_op("PadImage", [x], pad_t=1, pad_l=2, pad_b=2, pad_r=0, mode="edge")[0]
    assert y.dtype == dtype
    np.testing.assert_array_equal(y, ref)
    ref = ort_run(
        "Resize",
        [x, np.zeros(0, np.float32), np.array([1, 1, 2, 1.5], np.float32)],
        mode="nearest",
        nearest_mode="floor",
        coordinate_transformation_mode="asymmetric",
    )[0]
    y = run_op("ResizeNearest", [x], height_scale=2.0, width_scale=1.5)[0]
    assert y.dtype == dtype
    np.testing.assert_array_equal(y, ref)
    y = run_op("ChannelShuffle", [x], group=2)[0]
    assert y.dtype == dtype
    np.testing.assert_array_equal(y, x[:, [0, 2, 1, 3]])
