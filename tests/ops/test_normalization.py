"""SpatialBN, InstanceNorm, GroupNorm, LayerNorm, AffineChannel, LRN against onnxruntime or naive loops."""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from asyncnet.errors import AsyncNetError, SchemaError
from asyncnet.workspace import Workspace
from tests.ops.run_util import make_op, ort_run, run_op


def to_nhwc(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.moveaxis(a, 1, -1))


def from_nhwc(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.moveaxis(a, -1, 1))


@st.composite
def images(draw: Any, min_rank: int = 3, max_rank: int = 5, min_batch: int = 0) -> tuple[tuple[int, ...], int, bool]:
    rank = draw(st.integers(min_rank, max_rank))
    shape = (
        draw(st.integers(min_batch, 2)),
        draw(st.integers(1, 4)),
        *[draw(st.integers(1, 4)) for _ in range(rank - 2)],
    )
    return shape, draw(st.integers(0, 2**16)), draw(st.booleans())


def vec(rng: np.random.Generator, c: int, lo: float = -1.0, hi: float = 1.0) -> np.ndarray:
    return rng.uniform(lo, hi, c).astype(np.float32)


@settings(max_examples=20)
@given(images(min_rank=2))
def test_spatial_bn_test_mode_matches_onnxruntime(case: tuple[tuple[int, ...], int, bool]) -> None:
    shape, seed, nhwc = case
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape).astype(np.float32)
    c = shape[1]
    s, b, m, v = vec(rng, c), vec(rng, c), vec(rng, c), vec(rng, c, 0.1, 2.0)
    ref = ort_run("BatchNormalization", [x, s, b, m, v], epsilon=1e-3)[0]
    if nhwc and x.ndim > 2:
        y = from_nhwc(run_op("SpatialBN", [to_nhwc(x), s, b, m, v], is_test=1, epsilon=1e-3, order="NHWC")[0])
    else:
        y = run_op("SpatialBN", [x, s, b, m, v], is_test=1, epsilon=1e-3)[0]
    assert y.shape == ref.shape
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-5)


def _run_named(op_type: str, feeds: dict[str, np.ndarray], outputs: list[str], **args: Any) -> list[np.ndarray]:
    ws = Workspace()
    for n, a in feeds.items():
        ws.feed(n, a)
    ws.run_operator_once(make_op(op_type, list(feeds), outputs, **args))
    return [ws.fetch(n) for n in outputs]


@pytest.mark.parametrize("order", ["NCHW", "NHWC"])
def test_spatial_bn_training_against_float64_formulas(order: str) -> None:
    rng = np.random.default_rng(7)
    x = rng.standard_normal((3, 4, 5, 2)).astype(np.float32)
    c = 4 if order == "NCHW" else 2
    s, b, m, v = vec(rng, c), vec(rng, c), vec(rng, c), vec(rng, c, 0.5, 2.0)
    feeds = {"x": x, "s": s, "b": b, "rm": m, "rv": v}
    y, rm, rv, sm, siv = _run_named(
        "SpatialBN", feeds, ["y", "rm", "rv", "sm", "siv"], is_test=0, epsilon=1e-4, momentum=0.8, order=order
    )
    axes = tuple(a for a in range(4) if a != (1 if order == "NCHW" else 3))
    x64 = x.astype(np.float64)
    mean, var = x64.mean(axis=axes), x64.var(axis=axes)
    shape = [1, -1, 1, 1] if order == "NCHW" else [1, 1, 1, -1]
    want = (x64 - mean.reshape(shape)) / np.sqrt(var.reshape(shape) + 1e-4) * s.reshape(shape) + b.reshape(shape)
    np.testing.assert_allclose(y, want, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(rm, 0.2 * mean + 0.8 * m, rtol=1e-5, atol=1e-6)
    # The running variance takes the unbiased batch variance (n / (n - 1)), as Caffe2.
    n = x.size // c
    np.testing.assert_allclose(rv, 0.2 * var * n / (n - 1) + 0.8 * v, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(sm, mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(siv, 1 / np.sqrt(var + 1e-4), rtol=1e-5)
    # The seven-input form takes per-channel sums of X and X^2 over `num_batches` batches instead.
    feeds.update(sums=x64.sum(axis=axes).astype(np.float32), sumsq=(x64**2).sum(axis=axes).astype(np.float32))
    outs = _run_named("SpatialBN", feeds, ["y", "rm", "rv", "sm", "siv"], is_test=0, epsilon=1e-4, order=order)
    np.testing.assert_allclose(outs[0], want, rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(outs[3], mean, rtol=1e-5, atol=1e-6)


def test_spatial_bn_multi_batch_empty_batch_keeps_running_stats() -> None:
    # Seven-input form on N = 0: running stats unchanged, saved stats 0 (not 0 / 0).
    x = np.zeros((0, 3, 2, 2), np.float32)
    p = [np.ones(3, np.float32), np.zeros(3, np.float32), np.full(3, 0.5, np.float32), np.full(3, 2.0, np.float32)]
    feeds = {"x": x, "s": p[0], "b": p[1], "rm": p[2], "rv": p[3], "sums": np.ones(3, np.float32)}
    feeds["sumsq"] = np.ones(3, np.float32)
    y, rm, rv, sm, siv = _run_named("SpatialBN", feeds, ["y", "rm", "rv", "sm", "siv"], is_test=0, num_batches=3)
    assert y.shape == x.shape and rm.tolist() == [0.5] * 3 and rv.tolist() == [2.0] * 3
    assert sm.tolist() == [0.0] * 3 and siv.tolist() == [0.0] * 3


def test_spatial_bn_running_stats_match_torch() -> None:
    # torch's batch_norm also tracks the unbiased variance; its momentum is Caffe2's 1 - momentum.
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 3, 2, 3)).astype(np.float32)
    s, b, m, v = vec(rng, 3), vec(rng, 3), vec(rng, 3), vec(rng, 3, 0.5, 2.0)
    feeds = {"x": x, "s": s, "b": b, "rm": m, "rv": v}
    y, rm, rv, _, _ = _run_named("SpatialBN", feeds, ["y", "rm", "rv", "sm", "siv"], is_test=0, momentum=0.7)
    t_rm, t_rv = torch.tensor(m), torch.tensor(v)
    t_y = torch.nn.functional.batch_norm(
        torch.tensor(x), t_rm, t_rv, torch.tensor(s), torch.tensor(b), training=True, momentum=0.3, eps=1e-5
    )
    np.testing.assert_allclose(y, t_y.numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(rm, t_rm.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(rv, t_rv.numpy(), rtol=1e-5, atol=1e-6)


def test_spatial_bn_batch_sums_form_against_naive_loop() -> None:
    # Seven inputs: per-channel sums of X and X^2 over num_batches equal batches.
    rng = np.random.default_rng(5)
    nb, x = 3, rng.standard_normal((2, 2, 3, 1)).astype(np.float32)
    sums = rng.uniform(-1, 1, 2).astype(np.float32)
    sumsq = rng.uniform(20, 30, 2).astype(np.float32)
    m, v = vec(rng, 2), vec(rng, 2, 0.5, 2.0)
    s, b = vec(rng, 2), vec(rng, 2)
    feeds = {"x": x, "s": s, "b": b, "rm": m, "rv": v, "sums": sums, "sumsq": sumsq}
    y, rm, rv, sm, siv = _run_named(
        "SpatialBN", feeds, ["y", "rm", "rv", "sm", "siv"], is_test=0, momentum=0.9, num_batches=nb, epsilon=1e-3
    )
    size = nb * 2 * 3 * 1
    for ch in range(2):
        mu = float(sums[ch]) / size
        var = float(sumsq[ch]) / size - mu * mu
        assert rm[ch] == pytest.approx(0.9 * float(m[ch]) + 0.1 * mu, rel=1e-5)
        assert rv[ch] == pytest.approx(0.9 * float(v[ch]) + 0.1 * var * size / (size - 1), rel=1e-5)
        assert sm[ch] == pytest.approx(mu, rel=1e-5)
        assert siv[ch] == pytest.approx(1 / (var + 1e-3) ** 0.5, rel=1e-5)
        for i in range(2):
            for h in range(3):
                want = (float(x[i, ch, h, 0]) - mu) / (var + 1e-3) ** 0.5 * float(s[ch]) + float(b[ch])
                assert y[i, ch, h, 0] == pytest.approx(want, rel=1e-4, abs=1e-5)


def test_spatial_bn_schema_rules() -> None:
    x = np.ones((2, 3, 2, 2), np.float32)
    p = [np.ones(3, np.float32)] * 4
    with pytest.raises(SchemaError, match="in place"):
        run_op("SpatialBN", [x, *p], 5, infer=False, is_test=0)
    with pytest.raises(AsyncNetError, match="5 outputs"):
        _run_named("SpatialBN", dict(zip(["x", "s", "b", "m", "v"], [x, *p])), ["y"], is_test=0)
    with pytest.raises(AsyncNetError, match="one per channel"):
        run_op("SpatialBN", [x, np.ones(2, np.float32), *p[1:]], infer=False, is_test=1)


@settings(max_examples=15)
@given(images(min_rank=3, max_rank=4))
def test_instance_norm_matches_onnxruntime(case: tuple[tuple[int, ...], int, bool]) -> None:
    shape, seed, nhwc = case
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape).astype(np.float32)
    s, b = vec(rng, shape[1]), vec(rng, shape[1])
    ref = ort_run("InstanceNormalization", [x, s, b], epsilon=1e-3)[0]
    if nhwc:
        y, mean, rstd = run_op("InstanceNorm", [to_nhwc(x), s, b], 3, epsilon=1e-3, order="NHWC")
        y = from_nhwc(y)
    else:
        y, mean, rstd = run_op("InstanceNorm", [x, s, b], 3, epsilon=1e-3)
    np.testing.assert_allclose(y, ref, rtol=1e-4, atol=1e-4)
    axes = tuple(range(2, x.ndim))
    np.testing.assert_allclose(mean, x.mean(axis=axes), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(rstd, 1 / np.sqrt(x.var(axis=axes) + 1e-3), rtol=1e-4)


@settings(max_examples=15)
@given(st.integers(1, 3), st.integers(1, 3), images(min_rank=3, max_rank=4, min_batch=1))
def test_group_norm_matches_onnxruntime(group: int, per: int, case: tuple[tuple[int, ...], int, bool]) -> None:
    shape, seed, nhwc = case
    shape = (shape[0], group * per, *shape[2:])
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape).astype(np.float32)
    g, b = vec(rng, shape[1]), vec(rng, shape[1])
    ref = ort_run("GroupNormalization", [x, g, b], opset=21, num_groups=group, epsilon=1e-3)[0]
    if nhwc:
        y, mean, rstd = run_op("GroupNorm", [to_nhwc(x), g, b], 3, group=group, epsilon=1e-3, order="NHWC")
        y = from_nhwc(y)
    else:
        y, mean, rstd = run_op("GroupNorm", [x, g, b], 3, group=group, epsilon=1e-3)
    np.testing.assert_allclose(y, ref, rtol=1e-4, atol=1e-4)
    grouped = x.reshape(shape[0], group, -1)
    np.testing.assert_allclose(mean, grouped.mean(axis=2), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(rstd, 1 / np.sqrt(grouped.var(axis=2) + 1e-3), rtol=1e-4)


@settings(max_examples=20)
@given(st.integers(2, 4), st.data())
def test_layer_norm_matches_onnxruntime(rank: int, data: Any) -> None:
    shape = tuple(data.draw(st.integers(1, 4)) for _ in range(rank))
    axis = data.draw(st.integers(-rank, rank - 1))
    affine = data.draw(st.booleans())
    rng = np.random.default_rng(data.draw(st.integers(0, 2**16)))
    x = rng.standard_normal(shape).astype(np.float32)
    a = axis % rank
    g = rng.standard_normal(shape[a:]).astype(np.float32)
    b = rng.standard_normal(shape[a:]).astype(np.float32)
    ref, ref_mean, ref_rstd = ort_run(
        "LayerNormalization", [x, g, b] if affine else [x, np.ones_like(g)], 3, axis=axis, epsilon=1e-3
    )
    inputs = [x, g, b] if affine else [x]
    y, mean, std = run_op("LayerNorm", inputs, 3, axis=axis, epsilon=1e-3, elementwise_affine=int(affine))
    np.testing.assert_allclose(y, ref, rtol=1e-4, atol=1e-4)
    assert mean.shape == std.shape == (*shape[:a], 1)
    np.testing.assert_allclose(mean.reshape(-1), ref_mean.reshape(-1), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(1 / std.reshape(-1), ref_rstd.reshape(-1), rtol=1e-4)


def test_group_norm_empty_batch() -> None:
    y, mean, rstd = run_op("GroupNorm", [np.zeros((0, 4, 3, 3), np.float32), *[np.ones(4, np.float32)] * 2], 3, group=2)
    assert y.shape == (0, 4, 3, 3) and mean.shape == rstd.shape == (0, 2)


def test_layer_norm_affine_needs_three_inputs() -> None:
    with pytest.raises(AsyncNetError, match="elementwise_affine"):
        run_op("LayerNorm", [np.ones((2, 3), np.float32)], 3, infer=False, elementwise_affine=1)


@pytest.mark.parametrize("order", ["NCHW", "NHWC"])
def test_affine_channel_naive_and_in_place(order: str) -> None:
    rng = np.random.default_rng(11)
    x = rng.standard_normal((2, 3, 4, 5)).astype(np.float32)
    c = x.shape[1] if order == "NCHW" else x.shape[-1]
    s, b = vec(rng, c), vec(rng, c)
    want = np.empty_like(x)
    for idx in itertools.product(*(range(d) for d in x.shape)):
        ch = idx[1] if order == "NCHW" else idx[-1]
        want[idx] = x[idx] * s[ch] + b[ch]
    np.testing.assert_allclose(run_op("AffineChannel", [x, s, b], order=order)[0], want, rtol=1e-6)
    (y,) = _run_named("AffineChannel", {"x": x, "s": s, "b": b}, ["x"], order=order)
    np.testing.assert_allclose(y, want, rtol=1e-6)
    with pytest.raises(AsyncNetError, match="in place"):
        _run_named("AffineChannel", {"x": x, "s": s, "b": b}, ["x"], order=order, is_learnable=1)


@pytest.mark.parametrize("size", [1, 3, 5])
@pytest.mark.parametrize("shape", [(2, 7, 3, 3), (0, 4, 2, 2), (1, 3, 4)])
def test_lrn_matches_onnxruntime(size: int, shape: tuple[int, ...]) -> None:
    x = np.random.default_rng(size).standard_normal(shape).astype(np.float32)
    # onnxruntime takes 4-D only; a trailing unit dim does not change a cross-channel window.
    x4 = x.reshape(*shape, *[1] * (4 - len(shape)))
    ref = ort_run("LRN", [x4], size=size, alpha=1e-2, beta=0.75, bias=2.0)[0].reshape(shape)
    y, scale = run_op("LRN", [x], 2, size=size, alpha=1e-2, beta=0.75, bias=2.0)
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(y, x * scale**-0.75, rtol=1e-5, atol=1e-6)
    if len(shape) == 4:
        y = run_op("LRN", [to_nhwc(x)], size=size, alpha=1e-2, beta=0.75, bias=2.0, order="NHWC")[0]
        np.testing.assert_allclose(from_nhwc(y), ref, rtol=1e-5, atol=1e-6)


def test_lrn_even_size_naive_loop() -> None:
    # Even sizes put one more channel after c than before it: window [c - (size-1)//2, c + size//2].
    x = np.random.default_rng(4).standard_normal((1, 6, 2, 2)).astype(np.float32)
    size, alpha, beta, bias = 4, 0.3, 0.5, 1.5
    want = np.empty_like(x)
    for c in range(6):
        lo, hi = max(c - (size - 1) // 2, 0), min(c + size // 2, 5)
        sq = (x[:, lo : hi + 1] ** 2).sum(axis=1)
        want[:, c] = x[:, c] * (bias + alpha / size * sq) ** -beta
    y = run_op("LRN", [x], size=size, alpha=alpha, beta=beta, bias=bias)[0]
    np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-6)
