"""Merge*FeatureTensors (+ gradients) against naive per-example loops written from Caffe2's documentation."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from asyncnet.errors import ArgumentError, OperatorError
from asyncnet.training.gradcheck import check_gradient
from asyncnet.training.gradients import gradient_for_op
from tests.ops.run_util import make_op, run_op

RNG = np.random.default_rng(0)
N = 4


def lists(lengths: list[int], start: float) -> list[list[float]]:
    out, v = [], float(start)
    for n in lengths:
        out.append([v + k for k in range(n)])
        v += 10
    return out


def flat(xs: list[list[Any]]) -> list[Any]:
    return [v for x in xs for v in x]


def test_merge_dense_matches_naive() -> None:
    x = RNG.normal(size=(N, 3))
    pres = RNG.random((N, 3)) < 0.6
    lengths, keys, vals = run_op("MergeDenseFeatureTensors", [x, pres], 3, feature_ids=[7, 8, 9])
    want_l, want_k, want_v = [], [], []
    for e in range(N):
        want_l.append(int(pres[e].sum()))
        for f in range(3):
            if pres[e, f]:
                want_k.append([7, 8, 9][f])
                want_v.append(x[e, f])
    assert lengths.tolist() == want_l and keys.tolist() == want_k and vals.tolist() == want_v
    assert lengths.dtype == np.int32 and keys.dtype == np.int64


def single_inputs(kind: str) -> tuple[list[Any], list[dict[str, Any]]]:
    """Two features; for list/map the values hold only the present examples' items."""
    feats, ins = [], []
    for f in range(2):
        pres = RNG.random(N) < 0.7
        lens = RNG.integers(0, 3, N)
        feat: dict[str, Any] = {"pres": pres, "lens": lens}
        if kind == "scalar":
            feat["vals"] = RNG.normal(size=N)
            ins += [feat["vals"], pres]
        else:
            per = [v if p else [] for v, p in zip(lists(lens.tolist(), 100.0 * f), pres)]
            feat["per"] = per
            feat["keys"] = [[int(v) * 3 for v in x] for x in per]
            ins += [lens.astype(np.int32)]
            if kind == "map":
                ins += [np.array(flat(feat["keys"]), np.int64)]
            ins += [np.array(flat(per)), pres]
        feats.append(feat)
    return ins, feats


@pytest.mark.parametrize("kind", ["scalar", "list", "map"])
def test_merge_single_matches_naive(kind: str) -> None:
    ins, feats = single_inputs(kind)
    n_out = {"scalar": 3, "list": 4, "map": 5}[kind]
    op_type = {"scalar": "MergeSingleScalarFeatureTensors", "list": "MergeSingleListFeatureTensors"}.get(
        kind, "MergeSingleMapFeatureTensors"
    )
    outs = run_op(op_type, ins, n_out, feature_ids=[11, 12])
    lengths, keys, vl, vk, vv = [], [], [], [], []
    for e in range(N):
        lengths.append(sum(int(f["pres"][e]) for f in feats))
        for i, f in enumerate(feats):
            if not f["pres"][e]:
                continue
            keys.append([11, 12][i])
            if kind == "scalar":
                vv.append(f["vals"][e])
            else:
                vl.append(int(f["lens"][e]))
                vv += f["per"][e]
                vk += f["keys"][e]
    assert outs[0].tolist() == lengths and outs[1].tolist() == keys
    assert outs[-1].tolist() == vv
    if kind != "scalar":
        assert outs[2].tolist() == vl
    if kind == "map":
        assert outs[3].tolist() == vk


def multi_inputs(kind: str) -> tuple[list[Any], list[dict[str, Any]]]:
    feats, ins = [], []
    for f in range(2):
        lens = RNG.integers(0, 3, N)
        keys = [[100 * f + 10 * e + k for k in range(n)] for e, n in enumerate(lens)]
        feat: dict[str, Any] = {"lens": lens, "keys": keys}
        ins += [lens.astype(np.int32), np.array(flat(keys), np.int64)]
        if kind == "scalar":
            feat["vals"] = [[float(k) / 2 for k in ks] for ks in keys]
            ins += [np.array(flat(feat["vals"]))]
        else:
            vlens = [[int(RNG.integers(0, 3)) for _ in ks] for ks in keys]
            feat["vlens"] = vlens
            feat["vals"] = [[[k + 0.5 * j for j in range(m)] for k, m in zip(ks, vs)] for ks, vs in zip(keys, vlens)]
            ins += [np.array(flat(vlens), np.int32)]
            if kind == "map":
                ins += [np.array([int(v * 2) for v in flat(flat(feat["vals"]))], np.int64)]
            ins += [np.array(flat(flat(feat["vals"])))]
        feats.append(feat)
    return ins, feats


@pytest.mark.parametrize("kind", ["scalar", "list", "map"])
def test_merge_multi_matches_naive(kind: str) -> None:
    ins, feats = multi_inputs(kind)
    n_out = {"scalar": 3, "list": 4, "map": 5}[kind]
    op_type = f"MergeMulti{kind.capitalize()}FeatureTensors"
    assert op_type in ("MergeMultiScalarFeatureTensors", "MergeMultiListFeatureTensors", "MergeMultiMapFeatureTensors")
    outs = run_op(op_type, ins, n_out)
    lengths, keys, vl, vv = [], [], [], []
    for e in range(N):
        lengths.append(sum(int(f["lens"][e]) for f in feats))
        for f in feats:
            keys += f["keys"][e]
            if kind == "scalar":
                vv += f["vals"][e]
            else:
                vl += f["vlens"][e]
                vv += flat(f["vals"][e])
    assert outs[0].tolist() == lengths and outs[1].tolist() == keys and outs[-1].tolist() == vv
    if kind != "scalar":
        assert outs[2].tolist() == vl
    if kind == "map":
        assert outs[3].tolist() == [int(v * 2) for v in vv]


GRADIENT_TYPES = {
    "MergeSingleScalarFeatureTensors": ("MergeSingleScalarFeatureTensorsGradient", "scalar", True),
    "MergeSingleListFeatureTensors": ("MergeSingleListFeatureTensorsGradient", "list", True),
    "MergeSingleMapFeatureTensors": ("MergeSingleMapFeatureTensorsGradient", "map", True),
    "MergeMultiScalarFeatureTensors": ("MergeMultiScalarFeatureTensorsGradient", "scalar", False),
    "MergeMultiListFeatureTensors": ("MergeMultiListFeatureTensorsGradient", "list", False),
    "MergeMultiMapFeatureTensors": ("MergeMultiMapFeatureTensorsGradient", "map", False),
}


@pytest.mark.parametrize("op_type", list(GRADIENT_TYPES))
def test_gradients_route_values_back(op_type: str) -> None:
    grad_type, kind, single = GRADIENT_TYPES[op_type]
    ins, _ = single_inputs(kind) if single else multi_inputs(kind)
    names = [f"i{k}" for k in range(len(ins))]
    n_out = {"scalar": 3, "list": 4, "map": 5}[kind]
    args = {"feature_ids": [1, 2]} if single else {}
    op = make_op(op_type, names, [f"o{k}" for k in range(n_out)], **args)
    (gop,) = gradient_for_op(op, [None] * (n_out - 1) + ["dv"]).ops
    assert gop.type == grad_type
    per = len(ins) // 2
    value_pos = {"scalar": 0 if single else 2, "list": 1 if single else 3, "map": 2 if single else 4}[kind]
    assert list(gop.output) == [f"i{value_pos}_grad", f"i{per + value_pos}_grad"]
    # The merged values are a permutation of the inputs' values: the gradient maps each back to its place.
    res = check_gradient(op, dict(zip(names, ins)), check=[value_pos, per + value_pos], outputs_with_grad=(n_out - 1,))
    assert res.ok, res.describe()


def test_single_scalar_gradient_with_strings() -> None:
    pres = [np.array([True, False]), np.array([True, True]), np.array([False, True])]
    grads = run_op(
        "MergeSingleScalarFeatureTensorsGradient", [*pres, np.array(["0.1", "1.1", "1.2", "2.3"])], 3, infer=False
    )
    assert [g.tolist() for g in grads] == [[b"0.1", b""], [b"1.1", b"1.2"], [b"", b"2.3"]]


def test_feature_map_errors() -> None:
    with pytest.raises(ArgumentError, match="feature_ids"):
        run_op("MergeSingleScalarFeatureTensors", [np.ones(2), np.ones(2, bool)], 3, feature_ids=[1, 2])
    with pytest.raises(OperatorError, match="the lengths need"):
        run_op("MergeMultiScalarFeatureTensors", [np.array([2], np.int32), np.ones(1, np.int64), np.ones(1)], 3)
    with pytest.raises(OperatorError, match="value gradients"):
        run_op("MergeMultiScalarFeatureTensorsGradient", [np.array([2], np.int32), np.ones(3)])
