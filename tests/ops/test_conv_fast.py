"""The planned Conv paths (pointwise GEMM, im2col, flat depthwise, channels-last) against a
deliberately naive loop written from Caffe2's documented Conv semantics."""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from asyncnet.ops._conv_fast import ConvPlan
from asyncnet.ops._window import Window
from asyncnet.workspace import Workspace
from tests.ops.run_util import make_op


def naive_conv(
    x: np.ndarray,
    w: np.ndarray,
    b: np.ndarray | None,
    stride: list[int],
    dilation: list[int],
    heads: list[int],
    out: list[int],
    group: int,
) -> np.ndarray:
    """NCHW cross-correlation, one output value at a time; taps outside the input count as zero."""
    n, c = x.shape[:2]
    m = w.shape[0]
    cg, mg = c // group, m // group
    kernel = w.shape[2:]
    y = np.zeros((n, m, *out), np.float64)
    for i, o in itertools.product(range(n), range(m)):
        g = o // mg
        for pos in itertools.product(*(range(d) for d in out)):
            total = 0.0 if b is None else float(b[o])
            for tap in itertools.product(*(range(k) for k in kernel)):
                src = [p * s + t * d - h for p, s, t, d, h in zip(pos, stride, tap, dilation, heads)]
                if all(0 <= v < size for v, size in zip(src, x.shape[2:])):
                    for ci in range(cg):
                        total += float(x[(i, g * cg + ci, *src)]) * float(w[(o, ci, *tap)])
            y[(i, o, *pos)] = total
    return y


@st.composite
def conv_cases(draw: Any) -> dict[str, Any]:
    nd = draw(st.sampled_from([1, 2, 2, 2, 3]))
    kernel = [draw(st.integers(1, 3)) for _ in range(nd)]
    stride = [draw(st.integers(1, 3)) for _ in range(nd)]
    dilation = [draw(st.integers(1, 2)) for _ in range(nd)]
    legacy = draw(st.sampled_from(["explicit", "explicit", "VALID", "SAME"]))
    if legacy == "SAME":
        dilation = [1] * nd
    dk = [d * (k - 1) + 1 for k, d in zip(kernel, dilation)]
    heads = [draw(st.integers(0, 2)) for _ in range(nd)]
    tails = [draw(st.integers(0, 2)) for _ in range(nd)]
    if legacy != "explicit":
        heads = tails = [0] * nd
    spatial = [draw(st.integers(max(1, k - h - t), k + 4)) for k, h, t in zip(dk, heads, tails)]
    if legacy == "VALID":
        spatial = [max(s, k) for s, k in zip(spatial, dk)]
    groups = draw(st.sampled_from(["one", "two", "depthwise"]))
    cg = draw(st.integers(1, 3))
    if groups == "one":
        group, c, m = 1, cg, draw(st.integers(1, 4))
    elif groups == "two":
        group, c, m = 2, 2 * cg, 2 * draw(st.integers(1, 2))
    else:
        c = draw(st.integers(1, 4))
        group, m = c, c
    return {
        "nd": nd, "kernel": kernel, "stride": stride, "dilation": dilation, "legacy": legacy,
        "heads": heads, "tails": tails, "spatial": spatial, "group": group, "c": c, "m": m,
        "n": draw(st.integers(1, 2)), "bias": draw(st.booleans()), "nhwc": draw(st.booleans()),
        "seed": draw(st.integers(0, 2**16)),
    }  # fmt: skip


def expected_geometry(case: dict[str, Any]) -> tuple[list[int], list[int]]:
    """(pad heads, output sizes) from Caffe2's legacy_pad rules, written out independently."""
    heads, out = [], []
    for size, k, s, d, h, t in zip(
        case["spatial"], case["kernel"], case["stride"], case["dilation"], case["heads"], case["tails"]
    ):
        dk = d * (k - 1) + 1
        if case["legacy"] == "VALID":
            heads.append(0)
            out.append((size - dk) // s + 1)
        elif case["legacy"] == "SAME":
            o = -(-size // s)
            total = max((o - 1) * s + k - size, 0)
            heads.append(total // 2)
            out.append(o)
        else:
            heads.append(h)
            out.append((size + h + t - dk) // s + 1)
    return heads, out


@settings(max_examples=60)
@given(conv_cases())
def test_conv_matches_naive_loop(case: dict[str, Any]) -> None:
    rng = np.random.default_rng(case["seed"])
    nd, group = case["nd"], case["group"]
    x = rng.standard_normal((case["n"], case["c"], *case["spatial"])).astype(np.float32)
    w = rng.standard_normal((case["m"], case["c"] // group, *case["kernel"])).astype(np.float32)
    b = rng.standard_normal(case["m"]).astype(np.float32) if case["bias"] else None
    heads, out = expected_geometry(case)
    ref = naive_conv(x, w, b, case["stride"], case["dilation"], heads, out, group)
    args: dict[str, Any] = {"kernels": case["kernel"], "strides": case["stride"], "group": group}
    if case["dilation"] != [1] * nd:
        args["dilations"] = case["dilation"]
    if case["legacy"] == "explicit":
        args["pads"] = case["heads"] + case["tails"]
    else:
        args["legacy_pad"] = 1 if case["legacy"] == "VALID" else 2
    if case["nhwc"]:
        args["order"] = "NHWC"
        x, w = np.moveaxis(x, 1, -1).copy(), np.moveaxis(w, 1, -1).copy()
    inputs = ["x", "w"] + (["b"] if b is not None else [])
    op = make_op("Conv", inputs, ["y"], **args)
    with Workspace() as ws:
        ws.feed("x", x)
        ws.feed("w", w)
        if b is not None:
            ws.feed("b", b)
        net = ws.create_net(_net_of(op))
        for _ in range(2):  # the second run reuses the plan, its padding buffer and the output
            net.run()
            y = np.asarray(ws.fetch("y"))
            if case["nhwc"]:
                y = np.moveaxis(y, -1, 1)
            np.testing.assert_allclose(y, ref, rtol=1e-4, atol=1e-4)
        net.close()


def _net_of(*ops: Any) -> Any:
    from asyncnet.proto import caffe2_pb2 as pb

    net = pb.NetDef(name="t")
    net.op.extend(ops)
    return net


@pytest.mark.parametrize(
    "x_shape,w_shape,stride,pad,group,order,kind",
    [
        ((2, 6, 5, 5), (4, 6, 1, 1), 1, 0, 1, "NCHW", "pointwise"),
        ((2, 6, 5, 5), (4, 3, 1, 1), 1, 0, 2, "NCHW", "pointwise"),
        ((2, 5, 5, 6), (4, 1, 1, 6), 1, 0, 1, "NHWC", "pointwise"),
        ((1, 4, 9, 9), (4, 1, 3, 3), 2, 1, 4, "NCHW", "flat_depthwise"),
        ((1, 4, 9, 9, 3), (4, 1, 3, 3, 3), 1, 1, 4, "NCHW", "depthwise"),
        ((1, 9, 9, 4), (4, 3, 3, 1), 1, 1, 4, "NHWC", "depthwise"),
        ((1, 4, 9, 9), (6, 2, 3, 3), 1, 1, 2, "NCHW", "im2col"),
        ((1, 4, 9, 9), (6, 4, 1, 1), 2, 0, 1, "NCHW", "im2col"),
        ((1, 9, 9, 4), (6, 3, 3, 2), 1, 1, 2, "NHWC", "reference"),
    ],
)
def test_each_plan_path_is_taken_and_exact(
    x_shape: tuple[int, ...], w_shape: tuple[int, ...], stride: int, pad: int, group: int, order: str, kind: str
) -> None:
    nd = len(x_shape) - 2
    sp = x_shape[2:] if order == "NCHW" else x_shape[1:-1]
    k = w_shape[2:] if order == "NCHW" else w_shape[1:-1]
    out = tuple((s + 2 * pad - kk) // stride + 1 for s, kk in zip(sp, k))
    win = Window(tuple(k), (stride,) * nd, (1,) * nd, (pad,) * nd, (pad,) * nd, out)
    plan = ConvPlan(x_shape, w_shape, np.dtype(np.float32), win, order, group)
    assert plan.kind == kind
    rng = np.random.default_rng(7)
    x = rng.standard_normal(x_shape).astype(np.float32)
    w = rng.standard_normal(w_shape).astype(np.float32)
    b = rng.standard_normal(w_shape[0]).astype(np.float32)
    xn, wn = (x, w) if order == "NCHW" else (np.moveaxis(x, -1, 1), np.moveaxis(w, -1, 1))
    ref = naive_conv(xn, wn, b, [stride] * nd, [1] * nd, [pad] * nd, list(out), group)
    for _ in range(2):
        y = plan.run(x, w, b, None)
        y = y if order == "NCHW" else np.moveaxis(y, -1, 1)
        np.testing.assert_allclose(y, ref, rtol=1e-4, atol=1e-4)
        x = x[::-1].copy()  # a different input through the same plan and padding buffer
        xn = x if order == "NCHW" else np.moveaxis(x, -1, 1)
        ref = naive_conv(xn, wn, b, [stride] * nd, [1] * nd, [pad] * nd, list(out), group)


@pytest.mark.parametrize("stride,dilation", [((2, 2), (2, 2)), ((1, 1), (2, 1)), ((1, 1), (1, 1))])
def test_flat_depthwise_every_tap_sum_agrees(stride: tuple[int, int], dilation: tuple[int, int]) -> None:
    """Tap by tap, columns + matmul, and (stride 1) shifted row copies + matmuls: all exact."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 3, 50, 47)).astype(np.float32)
    w = rng.standard_normal((3, 1, 3, 3)).astype(np.float32)
    heads, tails = (1, 2), (1, 1)
    out = [(s + h + t - (d * 2 + 1)) // st + 1 for s, h, t, d, st in zip((50, 47), heads, tails, dilation, stride)]
    win = Window((3, 3), stride, dilation, heads, tails, tuple(out))
    plan = ConvPlan(x.shape, w.shape, np.dtype(np.float32), win, "NCHW", 3)
    assert plan.flat is not None
    ref = naive_conv(x, w, None, list(stride), list(dilation), list(heads), out, 3)
    modes = [(True, False), (False, False)] + ([(False, True)] if stride == (1, 1) else [])
    for tapwise, shifted in modes:
        plan.flat.tapwise, plan.flat.shifted = tapwise, shifted
        np.testing.assert_allclose(plan.run(x, w, None, None), ref, rtol=1e-4, atol=1e-4)


def test_flat_depthwise_picks_shifted_rows_for_small_stride_one_maps() -> None:
    small = Window((3, 3), (1, 1), (1, 1), (1, 1), (1, 1), (14, 14))
    plan = ConvPlan((1, 8, 14, 14), (8, 1, 3, 3), np.dtype(np.float32), small, "NCHW", 8)
    assert plan.flat is not None and plan.flat.shifted and not plan.flat.tapwise
    large = Window((3, 3), (1, 1), (1, 1), (1, 1), (1, 1), (56, 56))
    plan = ConvPlan((1, 8, 56, 56), (8, 1, 3, 3), np.dtype(np.float32), large, "NCHW", 8)
    assert plan.flat is not None and plan.flat.tapwise and not plan.flat.shifted


def test_conv_kernel_shapes_change_between_runs() -> None:
    """One op sees two input sizes: each gets its own plan, both exact."""
    rng = np.random.default_rng(5)
    w = rng.standard_normal((4, 2, 3, 3)).astype(np.float32)
    with Workspace() as ws:
        ws.feed("w", w)
        net = ws.create_net(_net_of(make_op("Conv", ["x", "w"], ["y"], kernel=3, pad=1, group=2)))
        for hw in (5, 8, 5):
            x = rng.standard_normal((1, 4, hw, hw)).astype(np.float32)
            ws.feed("x", x)
            net.run()
            ref = naive_conv(x, w, None, [1, 1], [1, 1], [1, 1], [hw, hw], 2)
            np.testing.assert_allclose(ws.fetch("y"), ref, rtol=1e-4, atol=1e-4)
        net.close()


@pytest.mark.parametrize("limit", [0, 8])
@pytest.mark.parametrize(
    "x_shape,w_shape,stride,pad,group",
    [
        ((2, 6, 5, 5), (4, 3, 1, 1), 1, 0, 2),
        ((2, 4, 9, 9), (6, 2, 3, 3), 2, 1, 2),
        ((1, 4, 6, 6), (5, 4, 3, 3), 1, 0, 1),
    ],
)
def test_bias_first_gemms_and_bias_pass_agree(
    monkeypatch: pytest.MonkeyPatch,
    limit: int,
    x_shape: tuple[int, ...],
    w_shape: tuple[int, ...],
    stride: int,
    pad: int,
    group: int,
) -> None:
    """The bias as the GEMMs' starting value (CBLAS, beta = 1) and as a pass afterwards: both exact."""
    from asyncnet.ops import _conv_fast

    monkeypatch.setattr(_conv_fast, "MAX_BIAS_GEMMS", limit)
    out = tuple((s + 2 * pad - k) // stride + 1 for s, k in zip(x_shape[2:], w_shape[2:]))
    win = Window(tuple(w_shape[2:]), (stride, stride), (1, 1), (pad, pad), (pad, pad), out)
    plan = ConvPlan(x_shape, w_shape, np.dtype(np.float32), win, "NCHW", group)
    assert plan.kind in ("pointwise", "im2col")
    rng = np.random.default_rng(9)
    x = rng.standard_normal(x_shape).astype(np.float32)
    w = rng.standard_normal(w_shape).astype(np.float32)
    b = rng.standard_normal(w_shape[0]).astype(np.float64)  # another dtype than X: cast on the way in
    ref = naive_conv(x, w, b, [stride] * 2, [1, 1], [pad] * 2, list(out), group)
    for _ in range(2):
        np.testing.assert_allclose(plan.run(x, w, b, None), ref, rtol=1e-4, atol=1e-4)


def test_bias_first_with_zero_input_channels() -> None:
    """Zero input channels: the output is the bias (the CBLAS form is skipped for empty dimensions)."""
    win = Window((1, 1), (1, 1), (1, 1), (0, 0), (0, 0), (3, 3))
    b = np.arange(4, dtype=np.float32)
    plan = ConvPlan((1, 0, 3, 3), (4, 0, 1, 1), np.dtype(np.float32), win, "NCHW", 1)
    y = plan.run(np.zeros((1, 0, 3, 3), np.float32), np.zeros((4, 0, 1, 1), np.float32), b, None)
    np.testing.assert_array_equal(y, np.broadcast_to(b.reshape(1, 4, 1, 1), (1, 4, 3, 3)))
