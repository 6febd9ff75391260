"""Quantized Int8* ops vs deliberately naive integer loop references."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from asyncnet.errors import ArgumentError, OperatorError
from asyncnet.proto import caffe2_pb2 as pb
from asyncnet.qtensor import Int8Tensor
from asyncnet.serde import make_argument
from asyncnet.shapes import infer_shapes, info_of
from asyncnet.workspace import Workspace
from tests.ops.run_util import make_op, run_once


def run_op(op_type: str, inputs: dict[str, Any], n_out: int = 1, **args: Any) -> list[Any]:
    outs = [f"out{i}" for i in range(n_out)]
    op = make_op(op_type, list(inputs), outs, **args)
    got = run_once(op, inputs)
    # Shape inference must describe what the kernel made.
    net = pb.NetDef(name="one")
    net.op.append(op)
    inferred = infer_shapes(net, {k: info_of(v) for k, v in inputs.items()})
    for o, v in zip(outs, got):
        t, real = inferred.blobs[o], info_of(v)
        assert t.dtype in (None, real.dtype), f"{op_type}: inferred {t}, got {real}"
        if t.shape is not None and real.shape is not None:
            assert len(t.shape) == len(real.shape) and all(a in (None, b) for a, b in zip(t.shape, real.shape)), (
                f"{op_type}: inferred {t}, got {real}"
            )
    return got


def q8(rng: np.random.Generator, shape: tuple[int, ...], scale: float, zp: int) -> Int8Tensor:
    return Int8Tensor(rng.integers(0, 256, shape).astype(np.uint8), scale, zp)


def f32(v: float) -> float:
    """An argument as the op sees it (protobuf stores floats in single precision)."""
    return float(np.float32(v))


def rq(acc: float, mult: float, zp: int, lo: int = 0) -> int:
    """Naive requantization: round half to even (Python's round), offset, saturate."""
    return min(max(round(acc * mult) + zp, lo), 255)


def test_quantize_rounds_half_to_even_and_saturates() -> None:
    x = np.array([0.25, 0.75, -0.1, 1000.0, -1000.0, 1.25], np.float32)
    (q,) = run_op("Int8Quantize", {"x": x}, Y_scale=0.5, Y_zero_point=3)
    assert isinstance(q, Int8Tensor) and q.scale == 0.5 and q.zero_point == 3
    np.testing.assert_array_equal(q.data, [3, 5, 3, 255, 0, 5])
    (d,) = run_op("Int8Dequantize", {"q": q})
    np.testing.assert_allclose(d, [0.0, 1.0, 0.0, 126.0, -1.5, 1.0])
    assert d.dtype == np.float32


def test_given_fills_from_bytes_and_ints() -> None:
    raw = bytes([0, 200, 255, 7, 128, 9])
    (t,) = run_op("Int8GivenTensorFill", {}, values=raw, shape=[2, 3], Y_scale=0.1, Y_zero_point=128)
    np.testing.assert_array_equal(t.data, np.frombuffer(raw, np.uint8).reshape(2, 3))
    assert (t.scale, t.zero_point) == (pytest.approx(0.1), 128)
    # Bytes that happen to be valid UTF-8 survive the argument reader.
    (u,) = run_op("Int8GivenTensorFill", {}, values=b"abc", shape=[3])
    np.testing.assert_array_equal(u.data, [97, 98, 99])
    (b,) = run_op("Int8GivenIntTensorFill", {}, values=[-5, 70000], shape=[2], Y_scale=0.01)
    assert b.data.dtype == np.int32 and b.data.tolist() == [-5, 70000]
    with pytest.raises(ArgumentError, match="needs 4"):
        run_op("Int8GivenTensorFill", {}, values=b"\x01\x02", shape=[2, 2])


def naive_conv(
    x: Int8Tensor, w: Int8Tensor, b: np.ndarray, stride: int, pad: int, group: int, ys: float, yz: int, relu: bool
) -> np.ndarray:
    n, h, wd, c = x.shape
    m, kh, kw, cg = w.shape
    oh = (h + 2 * pad - kh) // stride + 1
    ow = (wd + 2 * pad - kw) // stride + 1
    out = np.zeros((n, oh, ow, m), np.uint8)
    mult = x.scale * w.scale / f32(ys)
    mg = m // group
    for bi in range(n):
        for oy in range(oh):
            for ox in range(ow):
                for oc in range(m):
                    g = oc // mg
                    acc = int(b[oc])
                    for ky in range(kh):
                        for kx in range(kw):
                            iy, ix = oy * stride - pad + ky, ox * stride - pad + kx
                            if 0 <= iy < h and 0 <= ix < wd:
                                for ci in range(cg):
                                    xv = int(x.data[bi, iy, ix, g * cg + ci]) - x.zero_point
                                    wv = int(w.data[oc, ky, kx, ci]) - w.zero_point
                                    acc += xv * wv
                    out[bi, oy, ox, oc] = rq(acc, mult, yz, yz if relu else 0)
    return out


@pytest.mark.parametrize(
    ("op_type", "group", "stride", "pad", "cin", "m"),
    [
        ("Int8Conv", 1, 1, 1, 3, 4),
        ("Int8ConvRelu", 1, 2, 0, 4, 2),
        ("Int8Conv", 2, 1, 1, 4, 6),
        ("Int8Conv", 5, 2, 1, 5, 5),
    ],
)
def test_int8_conv_matches_naive(op_type: str, group: int, stride: int, pad: int, cin: int, m: int) -> None:
    rng = np.random.default_rng(group * 10 + stride)
    x = q8(rng, (2, 5, 6, cin), 0.05, 120)
    w = q8(rng, (m, 3, 3, cin // group), 0.02, 128)
    b = Int8Tensor(rng.integers(-2000, 2000, m).astype(np.int32), 0.001, 0)
    (y,) = run_op(op_type, {"x": x, "w": w, "b": b}, kernel=3, stride=stride, pad=pad, group=group,
                  order="NHWC", Y_scale=0.08, Y_zero_point=100)  # fmt: skip
    want = naive_conv(x, w, b.data, stride, pad, group, 0.08, 100, op_type.endswith("Relu"))
    assert (y.scale, y.zero_point) == (pytest.approx(0.08), 100)
    np.testing.assert_array_equal(y.data, want)


def test_int8_conv_without_bias_and_bad_channels() -> None:
    rng = np.random.default_rng(0)
    x = q8(rng, (1, 4, 4, 2), 0.1, 0)
    w = q8(rng, (3, 1, 1, 2), 0.1, 128)
    (y,) = run_op("Int8Conv", {"x": x, "w": w}, kernel=1, Y_scale=0.5, Y_zero_point=128)
    np.testing.assert_array_equal(y.data, naive_conv(x, w, np.zeros(3), 1, 0, 1, 0.5, 128, False))
    with pytest.raises(OperatorError, match="channels"):
        run_op("Int8Conv", {"x": x, "w": q8(rng, (3, 1, 1, 5), 0.1, 128)}, kernel=1)
    with pytest.raises(ArgumentError, match="NHWC"):
        run_op("Int8Conv", {"x": x, "w": w}, kernel=1, order="NCHW")


def test_int8_conv_transpose_matches_naive_scatter() -> None:
    rng = np.random.default_rng(7)
    x = q8(rng, (1, 3, 4, 3), 0.05, 128)
    w = q8(rng, (3, 2, 2, 4), 0.03, 120)
    b = Int8Tensor(rng.integers(-500, 500, 4).astype(np.int32), 1.0, 0)
    (y,) = run_op(
        "Int8ConvTranspose", {"x": x, "w": w, "b": b}, kernel=2, stride=2, pad=0, Y_scale=0.02, Y_zero_point=7
    )
    acc = np.zeros((1, 6, 8, 4), np.int64) + b.data
    for iy in range(3):
        for ix in range(4):
            for ci in range(3):
                xv = int(x.data[0, iy, ix, ci]) - 128
                for ky in range(2):
                    for kx in range(2):
                        for oc in range(4):
                            acc[0, iy * 2 + ky, ix * 2 + kx, oc] += xv * (int(w.data[ci, ky, kx, oc]) - 120)
    want = np.vectorize(lambda a: rq(int(a), 0.05 * 0.03 / f32(0.02), 7))(acc)
    np.testing.assert_array_equal(y.data, want)


def test_int8_fc_flattens_and_matches_naive() -> None:
    rng = np.random.default_rng(3)
    x = q8(rng, (2, 1, 1, 6), 0.1, 10)
    w = q8(rng, (3, 6), 0.05, 130)
    b = Int8Tensor(np.array([100, -100, 0], np.int32), 0.005, 0)
    (y,) = run_op("Int8FC", {"x": x, "w": w, "b": b}, Y_scale=0.3, Y_zero_point=50)
    for i in range(2):
        for o in range(3):
            acc = int(b.data[o]) + sum(
                (int(x.data.reshape(2, 6)[i, k]) - 10) * (int(w.data[o, k]) - 130) for k in range(6)
            )
            assert y.data[i, o] == rq(acc, 0.1 * 0.05 / f32(0.3), 50)


@pytest.mark.parametrize("op_type", ["Int8Sum", "Int8SumRelu", "Int8Add", "Int8AddRelu"])
def test_int8_sum(op_type: str) -> None:
    rng = np.random.default_rng(4)
    a, b = q8(rng, (2, 3, 3, 2), 0.1, 100), q8(rng, (2, 3, 3, 2), 0.2, 50)
    (y,) = run_op(op_type, {"a": a, "b": b}, Y_scale=0.25, Y_zero_point=80)
    for idx in np.ndindex(*a.shape):
        real = (int(a.data[idx]) - 100) * 0.1 + (int(b.data[idx]) - 50) * 0.2
        assert y.data[idx] == rq(real, 1 / f32(0.25), 80, 80 if op_type.endswith("Relu") else 0), idx
    with pytest.raises(OperatorError, match="equal shapes"):
        run_op("Int8Sum", {"a": a, "c": q8(rng, (2, 3, 3, 1), 0.1, 0)})


def test_int8_relu_keeps_quantization() -> None:
    x = Int8Tensor(np.array([[0, 99, 100, 101, 255]], np.uint8), 0.3, 100)
    (y,) = run_op("Int8Relu", {"x": x}, Y_scale=0.3, Y_zero_point=100)
    np.testing.assert_array_equal(y.data, [[100, 100, 100, 101, 255]])
    assert (y.scale, y.zero_point) == (0.3, 100)


def test_int8_pools() -> None:
    rng = np.random.default_rng(5)
    x = q8(rng, (1, 5, 4, 3), 0.2, 30)
    (avg,) = run_op("Int8AveragePool", {"x": x}, kernel=2, stride=2, Y_scale=0.1, Y_zero_point=5)
    (mx,) = run_op("Int8MaxPool", {"x": x}, kernel=2, stride=1)
    assert avg.shape == (1, 2, 2, 3) and mx.shape == (1, 4, 3, 3)
    for oy in range(2):
        for ox in range(2):
            for c in range(3):
                vals = [(int(x.data[0, oy * 2 + i, ox * 2 + j, c]) - 30) * 0.2 for i in range(2) for j in range(2)]
                assert avg.data[0, oy, ox, c] == rq(sum(vals) / 4, 1 / f32(0.1), 5)
    for oy in range(4):
        for ox in range(3):
            for c in range(3):
                assert mx.data[0, oy, ox, c] == x.data[0, oy : oy + 2, ox : ox + 2, c].max()
    assert (mx.scale, mx.zero_point) == (0.2, 30)


def test_int8_softmax_over_last_axis() -> None:
    rng = np.random.default_rng(6)
    x = q8(rng, (3, 5), 0.05, 128)
    (y,) = run_op("Int8Softmax", {"x": x}, Y_scale=1 / 256, Y_zero_point=0)
    for i in range(3):
        v = [(int(t) - 128) * 0.05 for t in x.data[i]]
        e = [math.exp(t - max(v)) for t in v]
        for j in range(5):
            assert y.data[i, j] == rq(e[j] / sum(e), 256, 0)


def test_int8_resize_nearest() -> None:
    x = Int8Tensor(np.arange(2 * 3 * 2, dtype=np.uint8).reshape(1, 2, 3, 2), 0.5, 3)
    (y,) = run_op("Int8ResizeNearest", {"x": x}, width_scale=2.0, height_scale=1.5, Y_scale=0.5, Y_zero_point=3)
    assert y.shape == (1, 3, 6, 2) and (y.scale, y.zero_point) == (0.5, 3)
    for oy in range(3):
        for ox in range(6):
            np.testing.assert_array_equal(y.data[0, oy, ox], x.data[0, min(int(oy / 1.5), 1), min(ox // 2, 2)])


def test_int8_pipeline_tracks_float_convolution() -> None:
    rng = np.random.default_rng(8)
    xf = rng.uniform(-1, 1, (1, 6, 6, 4)).astype(np.float32)
    wf = rng.uniform(-0.5, 0.5, (5, 3, 3, 4)).astype(np.float32)
    w = Int8Tensor.quantize(wf, 0.5 / 127, 128)
    with Workspace() as ws:
        ws.feed("x", xf)
        ws.feed("w", w)
        for o in (
            pb.OperatorDef(type="Int8Quantize", input=["x"], output=["xq"], arg=[make_argument("Y_scale", 1 / 127), make_argument("Y_zero_point", 128)]),
            pb.OperatorDef(type="Int8Conv", input=["xq", "w"], output=["yq"], arg=[make_argument("kernel", 3), make_argument("Y_scale", 0.05), make_argument("Y_zero_point", 128)]),
            pb.OperatorDef(type="Int8Dequantize", input=["yq"], output=["y"]),
        ):  # fmt: skip
            ws.run_operator_once(o)
        y = ws.fetch("y")
    ref = np.zeros((1, 4, 4, 5))
    for oy in range(4):
        for ox in range(4):
            ref[0, oy, ox] = np.tensordot(wf, xf[0, oy : oy + 3, ox : ox + 3], axes=([1, 2, 3], [0, 1, 2]))
    assert y.shape == ref.shape
    assert np.abs(y - np.clip(ref, -128 * 0.05, 127 * 0.05)).max() < 0.1
