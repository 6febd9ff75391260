"""Segment (lengths) ops and small extras (IsMemberOf, Conditional, NanCheck, ClipTensorByScaling, Find,
Unique, ranking criteria, per-channel statistics) against naive Python loops."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from asyncnet.errors import OperatorError
from tests.ops.run_util import floats, ints, run1, run_op, shapes

SETTINGS = settings(max_examples=20)


def _segments(data: Any, max_seg: int = 4) -> tuple[np.ndarray, np.ndarray]:
    lengths = np.asarray(data.draw(st.lists(st.integers(0, 3), max_size=max_seg)), np.int32)
    x = data.draw(floats((int(lengths.sum()), 2)))
    return x, lengths


@SETTINGS
@given(data=st.data())
def test_lengths_tile_gather_range_fill(data: Any) -> None:
    n = data.draw(st.integers(0, 4))
    rows = data.draw(floats((n, 2)))
    lengths = np.asarray(data.draw(st.lists(st.integers(0, 3), min_size=n, max_size=n)), np.int32)
    tiled = run1("LengthsTile", rows, lengths)
    want = [rows[i] for i in range(n) for _ in range(lengths[i])]
    np.testing.assert_array_equal(tiled, np.array(want, np.float32).reshape(-1, 2))
    fill = run1("LengthsRangeFill", lengths)
    assert fill.dtype == np.int32
    assert fill.tolist() == [j for n_ in lengths.tolist() for j in range(n_)]

    items, seg = _segments(data)
    if seg.size:
        idx = np.asarray(data.draw(st.lists(st.integers(0, seg.size - 1), max_size=4)), np.int64)
        got = run1("LengthsGather", items, seg, idx)
        offsets = [int(sum(seg[:i])) for i in range(seg.size)]
        want_rows = [items[offsets[i] + k] for i in idx for k in range(seg[i])]
        np.testing.assert_array_equal(got, np.array(want_rows, np.float32).reshape(-1, 2))


@SETTINGS
@given(data=st.data())
def test_lengths_pad_naive(data: Any) -> None:
    x, lengths = _segments(data)
    target = int(lengths.max()) + 1 if lengths.size else 2
    y = run1("LengthsPad", x, lengths, target_length=target, padding_value=-7.0)
    assert y.shape == (lengths.size * target, 2)
    start = 0
    for i, n in enumerate(lengths.tolist()):
        for k in range(target):
            want = x[start + k] if k < n else [-7.0, -7.0]
            np.testing.assert_array_equal(y[i * target + k], want)
        start += n
    with pytest.raises(Exception, match="target_length"):
        run1("LengthsPad", x, lengths)


@SETTINGS
@given(data=st.data())
def test_split_by_lengths_naive(data: Any) -> None:
    n_out = data.draw(st.integers(1, 3))
    per = data.draw(st.integers(1, 2))
    lengths = np.asarray(data.draw(st.lists(st.integers(0, 2), min_size=n_out * per, max_size=n_out * per)), np.int32)
    x = data.draw(floats((int(lengths.sum()), 3)))
    outs = run_op("SplitByLengths", [x, lengths], n_out)
    start = 0
    for k in range(n_out):
        size = int(lengths[k * per : (k + 1) * per].sum())
        np.testing.assert_array_equal(outs[k], x[start : start + size])
        start += size
    with pytest.raises(OperatorError, match="sum to"):
        run_op("SplitByLengths", [x, lengths + 1], n_out)


@SETTINGS
@given(x=ints(shapes(0, 3), -3, 9, dtype=np.int64))
def test_is_member_of_naive(x: np.ndarray) -> None:
    values = [0, 3, 4, 6, 8]
    y = run1("IsMemberOf", x, value=values)
    assert y.dtype == np.bool_
    assert y.reshape(-1).tolist() == [v in values for v in x.reshape(-1).tolist()]


@SETTINGS
@given(data=st.data())
def test_conditional_naive(data: Any) -> None:
    n = data.draw(st.integers(1, 4))
    c = data.draw(hnp.arrays(np.bool_, (n,)))
    t = data.draw(floats((n, 2)))
    f = data.draw(floats((n, 2)))
    y = run1("Conditional", c, t, f)
    for i in range(n):
        np.testing.assert_array_equal(y[i], t[i] if c[i] else f[i])


def test_nan_check() -> None:
    x = np.array([1.0, 2.0], np.float32)
    np.testing.assert_array_equal(run1("NanCheck", x), x)
    with pytest.raises(OperatorError, match="NaN or infinite"):
        run1("NanCheck", np.array([1.0, np.inf], np.float32))


@SETTINGS
@given(x=floats((3, 2)), val=st.floats(0.125, 5, width=32), extra=st.booleans())
def test_clip_tensor_by_scaling_naive(x: np.ndarray, val: float, extra: bool) -> None:
    threshold = 1.0
    v = np.array(val, np.float32)
    ins = [x, v] + ([np.array([0.5], np.float32)] if extra else [])
    limit = threshold * (0.5 if extra else 1.0)
    y = run1("ClipTensorByScaling", *ins, threshold=threshold)
    want = x * (limit / float(v)) if float(v) > limit else x
    np.testing.assert_allclose(y, want, rtol=1e-6, atol=1e-7)


@SETTINGS
@given(data=st.data())
def test_find_and_unique_naive(data: Any) -> None:
    index = data.draw(ints(shapes(1, 1, 0, 5), 0, 5))
    query = data.draw(ints(shapes(0, 2, 0, 3), 0, 6))
    y = run1("Find", index, query, missing_value=-9)
    assert y.dtype == np.int32
    for pos in np.ndindex(*query.shape):
        hits = [j for j, v in enumerate(index.tolist()) if v == query[pos]]
        assert y[pos] == (hits[-1] if hits else -9)
    values, remap = run_op("Unique", [index], 2)
    assert values.tolist() == sorted(set(index.tolist()))
    assert [values[r] for r in remap.tolist()] == index.tolist()


@SETTINGS
@given(s=floats((6,), -1, 1), y=ints((6,), -1, 1), margin=st.sampled_from([0.0, 0.25]))
def test_ranking_criteria_naive(s: np.ndarray, y: np.ndarray, margin: float) -> None:
    y = np.where(y == 0, 1, y).astype(np.int32)
    cos = run1("CosineEmbeddingCriterion", s, y, margin=margin)
    for i in range(6):
        want = 1 - float(s[i]) if y[i] == 1 else max(0.0, float(s[i]) - margin)
        np.testing.assert_allclose(cos[i], want, rtol=1e-6, atol=1e-7)
    x2 = s[::-1].copy()
    rank = run1("MarginRankingCriterion", s, x2, y, margin=margin)
    for i in range(6):
        want = max(0.0, -int(y[i]) * (float(s[i]) - float(x2[i])) + margin)
        np.testing.assert_allclose(rank[i], want, rtol=1e-6, atol=1e-7)


@SETTINGS
@given(x=floats(shapes(2, 4, 1, 3)), nhwc=st.booleans())
def test_channel_stats_and_batch_moments_naive(x: np.ndarray, nhwc: bool) -> None:
    order = "NHWC" if nhwc else "NCHW"
    c_axis = x.ndim - 1 if nhwc else 1
    s, sq = run_op("ChannelStats", [x], 2, order=order)
    mu, second = run_op("BatchMoments", [x], 2, order=order)
    for c in range(x.shape[c_axis]):
        vals = [float(v) for v in np.take(x, c, axis=c_axis).reshape(-1)]
        np.testing.assert_allclose(s[c], sum(vals), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(sq[c], sum(v * v for v in vals), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(mu[c], sum(vals) / len(vals), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(second[c], sum(v * v for v in vals) / len(vals), rtol=1e-5, atol=1e-5)


@SETTINGS
@given(lengths=ints((4,), 0, 9), n=st.integers(1, 4))
def test_lengths_split_naive(lengths: np.ndarray, n: int) -> None:
    y = run1("LengthsSplit", lengths, n_split=n)
    y2 = run1("LengthsSplit", lengths, np.array([n], np.int32))
    want = []
    for length in lengths.tolist():
        want += [length // n + (1 if i < length % n else 0) for i in range(n)]
    assert y.tolist() == want and y2.tolist() == want
    assert y.dtype == np.int32


@SETTINGS
@given(data=st.data())
def test_reverse_packed_segs_naive(data: Any) -> None:
    t, n = data.draw(st.integers(1, 4)), data.draw(st.integers(0, 3))
    x = data.draw(floats((t, n, 2)))
    lengths = np.asarray(data.draw(st.lists(st.integers(0, t), min_size=n, max_size=n)), np.int64)
    y = run1("ReversePackedSegs", x, lengths)
    for j in range(n):
        for s in range(t):
            src = lengths[j] - 1 - s if s < lengths[j] else s
            np.testing.assert_array_equal(y[s, j], x[src, j])


@SETTINGS
@given(data=st.data())
def test_remove_data_blocks_and_segment_one_hot_naive(data: Any) -> None:
    x = data.draw(floats((data.draw(st.integers(0, 5)), 2)))
    drop = data.draw(st.lists(st.integers(0, max(x.shape[0] - 1, 0)), max_size=3)) if x.shape[0] else []
    y = run1("RemoveDataBlocks", x, np.asarray(drop, np.int64))
    np.testing.assert_array_equal(y, x[[i for i in range(x.shape[0]) if i not in drop]].reshape(-1, 2))

    lengths = np.asarray(data.draw(st.lists(st.integers(0, 3), max_size=3)), np.int32)
    idx = np.asarray(data.draw(st.lists(st.integers(0, 4), min_size=int(lengths.sum()), max_size=int(lengths.sum()))))
    oh = run1("SegmentOneHot", lengths, idx.astype(np.int64), np.array(5, np.int64))
    start = 0
    for i, n in enumerate(lengths.tolist()):
        hot = set(idx[start : start + n].tolist())
        assert oh[i].tolist() == [1.0 if j in hot else 0.0 for j in range(5)]
        start += n


@SETTINGS
@given(pos=ints((3, 2), 0, 9), e=st.integers(1, 6))
def test_sinusoid_position_encoding_naive(pos: np.ndarray, e: int) -> None:
    y = run1("SinusoidPositionEncoding", pos, embedding_size=e, alpha=100.0, amplitude=0.5)
    assert y.shape == (3, 2, e) and y.dtype == np.float32
    for m, k, i in np.ndindex(3, 2, e):
        x = float(pos[m, k]) / 100.0 ** (i / e)
        np.testing.assert_allclose(y[m, k, i], 0.5 * (math.sin(x) if i % 2 == 0 else math.cos(x)), rtol=1e-5, atol=1e-6)


@SETTINGS
@given(data=st.data())
def test_lengths_top_k_naive(data: Any) -> None:
    lengths = np.asarray(data.draw(st.lists(st.integers(0, 4), max_size=4)), np.int32)
    x = data.draw(ints((int(lengths.sum()),), 0, 3).map(lambda a: a.astype(np.float32)))
    k = data.draw(st.integers(1, 3))
    vals, idx = run_op("LengthsTopK", [x, lengths], 2, k=k)
    assert vals.shape == idx.shape == (lengths.size, k) and idx.dtype == np.int32
    start = 0
    for i, n in enumerate(lengths.tolist()):
        seg = x[start : start + n].tolist()
        ranked = sorted(range(n), key=lambda j: (-seg[j], j))[:k]
        assert idx[i].tolist() == ranked + [-1] * (k - len(ranked))
        assert vals[i].tolist() == [seg[j] for j in ranked] + [0.0] * (k - len(ranked))
        start += n
