"""Segment reductions (Lengths*, SparseLengths*, {Sorted,Unsorted}Segment*, Sparse*Segment*, SparseToDense)
against naive loops written from Caffe2's operator docs, plus finite-difference gradient checks."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from asyncnet.errors import OperatorError
from asyncnet.proto import caffe2_pb2 as pb
from asyncnet.training.gradcheck import check_gradient
from asyncnet.training.gradients import add_gradient_ops
from asyncnet.workspace import Workspace
from tests.ops.run_util import make_op, run_op

RNG = np.random.default_rng(3)


def naive(kind: str, rows: list[np.ndarray], block: tuple[int, ...]) -> np.ndarray:
    """One segment's result from its (already weighted) rows, by a plain loop."""
    if not rows:
        return np.zeros(block)
    acc = np.array(rows[0], dtype=np.float64)
    for r in rows[1:]:
        acc = np.maximum(acc, r) if kind == "Max" else acc + r
    return acc / len(rows) if kind == "Mean" else acc


def lengths_groups(lengths: np.ndarray) -> list[list[int]]:
    out, start = [], 0
    for n in lengths.tolist():
        out.append(list(range(start, start + n)))
        start += n
    return out


def id_groups(ids: np.ndarray, k: int) -> list[list[int]]:
    return [[j for j, s in enumerate(ids.tolist()) if s == i] for i in range(k)]


LENGTHS_CASES = [(k, s) for s in (False, True) for k in ("Sum", "Mean", "Max", "WeightedSum") if not (s and k == "Max")]


@pytest.mark.parametrize("kind,sparse", LENGTHS_CASES)
def test_lengths_family_matches_naive(kind: str, sparse: bool) -> None:
    data = RNG.normal(size=(7, 2)).astype(np.float32)
    lengths = np.array([2, 0, 3, 2], np.int32)
    indices = np.array([5, 0, 0, 3, 1, 2, 5], np.int64)
    n_items = int(lengths.sum())
    weights = RNG.normal(size=n_items).astype(np.float32)
    ins: list[Any] = [data] + ([weights] if kind == "WeightedSum" else []) + ([indices] if sparse else []) + [lengths]
    name = ("SparseLengths" if sparse else "Lengths") + kind
    data_items = data[indices] if sparse else data[:n_items]
    if not sparse:
        data = data[:n_items]
        ins[0] = data
    (got,) = run_op(name, ins)
    for i, grp in enumerate(lengths_groups(lengths)):
        rows = [data_items[j] * (weights[j] if kind == "WeightedSum" else 1) for j in grp]
        np.testing.assert_allclose(got[i], naive(kind, rows, (2,)), rtol=1e-5, atol=1e-6)


def test_sparse_lengths_positional_weighted_sum() -> None:
    data = RNG.normal(size=(5, 3)).astype(np.float32)
    w = np.array([1.0, 0.5, -2.0], np.float32)
    indices = np.array([4, 0, 1, 1, 2], np.int32)
    lengths = np.array([3, 2], np.int32)
    (got,) = run_op("SparseLengthsPositionalWeightedSum", [data, w, indices, lengths])
    for i, grp in enumerate(lengths_groups(lengths)):
        want = sum(data[indices[j]] * w[p] for p, j in enumerate(grp))
        np.testing.assert_allclose(got[i], want, rtol=1e-5)


@pytest.mark.parametrize("kind", ["Sum", "Mean", "WeightedSum"])
@pytest.mark.parametrize("prefix", ["Sorted", "Unsorted", "SparseSorted", "SparseUnsorted"])
def test_segment_family_matches_naive(kind: str, prefix: str) -> None:
    sparse, sorted_ = prefix.startswith("Sparse"), "Unsorted" not in prefix
    data = RNG.normal(size=(5, 2, 2)).astype(np.float32)
    ids = np.array([0, 0, 2, 2, 3], np.int32) if sorted_ else np.array([3, 0, 2, 0, 3], np.int32)
    indices = np.array([4, 4, 0, 1, 3], np.int64)
    weights = RNG.normal(size=5).astype(np.float32)
    ins: list[Any] = [data] + ([weights] if kind == "WeightedSum" else []) + ([indices] if sparse else []) + [ids]
    (got,) = run_op(f"{prefix}Segment{kind}", ins)
    items = data[indices] if sparse else data
    k = int(ids.max()) + 1
    assert got.shape == (k, 2, 2)
    for i, grp in enumerate(id_groups(ids, k)):
        rows = [items[j] * (weights[j] if kind == "WeightedSum" else 1) for j in grp]
        np.testing.assert_allclose(got[i], naive(kind, rows, (2, 2)), rtol=1e-5, atol=1e-6)
    if not sorted_:
        (wide,) = run_op(f"{prefix}Segment{kind}", ins, num_segments=6)
        assert wide.shape == (6, 2, 2) and not wide[4:].any()


def test_sorted_segment_refuses_unsorted_ids() -> None:
    with pytest.raises(OperatorError, match="sorted"):
        run_op("SortedSegmentSum", [np.ones((2, 1), np.float32), np.array([1, 0], np.int32)])


def test_sparse_to_dense_adds_repeated_indices() -> None:
    (out,) = run_op("SparseToDense", [np.array([2, 0, 2]), np.array([[1.0], [2.0], [3.0]]), np.zeros((4, 7))])
    assert out.tolist() == [[2.0], [0.0], [4.0], [0.0]]


GRAD_CASES: list[tuple[str, bool, str]] = [
    *((f"Lengths{k}", False, "lengths") for k in ("Sum", "Mean", "Max", "WeightedSum")),
    *((f"SparseLengths{k}", True, "lengths") for k in ("Sum", "Mean", "WeightedSum")),
    *((f"{p}Segment{k}", p.startswith("Sparse"), p) for p in ("Sorted", "Unsorted", "SparseSorted", "SparseUnsorted")
      for k in ("Sum", "Mean", "WeightedSum")),
]  # fmt: skip


@pytest.mark.parametrize("name,sparse,group", GRAD_CASES, ids=[c[0] for c in GRAD_CASES])
def test_gradients_finite_difference(name: str, sparse: bool, group: str) -> None:
    data = RNG.permutation(12).reshape(4, 3).astype(np.float64) / 3  # distinct values: Max has no ties
    weighted = "Weighted" in name
    group_blob = np.array([2, 1, 2], np.int32) if group == "lengths" else None
    if group_blob is None:
        group_blob = np.array([0, 1, 1, 3, 3], np.int32) if "Unsorted" not in group else np.array([2, 0, 2, 1, 0])
        group_blob = group_blob.astype(np.int32)
    n = int(group_blob.sum()) if group == "lengths" else group_blob.size
    if not sparse:
        data = RNG.permutation(3 * n).reshape(n, 3).astype(np.float64) / 3
    inputs: dict[str, Any] = {"D": data}
    if weighted:
        inputs["W"] = RNG.uniform(0.5, 1.5, n)
    if sparse:
        inputs["I"] = np.array([3, 0, 0, 2, 1], np.int64)[:n]
    inputs["G"] = group_blob
    check = [0, 1] if weighted else [0]
    op = make_op(name, list(inputs), ["Y"], **({"grad_on_weights": 1} if weighted else {}))
    res = check_gradient(op, inputs, check=check)
    assert res.ok, res.describe()


def test_sparse_lengths_sum_backward_in_a_net_gives_dense_gradient() -> None:
    net = pb.NetDef(name="emb")
    net.op.extend([make_op("SparseLengthsSum", ["E", "I", "L"], ["Y"]), make_op("SumElements", ["Y"], ["loss"])])
    add_gradient_ops(net, ["loss"])
    types = [o.type for o in net.op]
    assert "SparseLengthsSumGradient" in types and "SparseToDense" in types
    with Workspace() as ws:
        ws.feed("E", np.ones((4, 2), np.float32))
        ws.feed("I", np.array([1, 1, 3], np.int32))
        ws.feed("L", np.array([2, 1], np.int32))
        ws.create_net(net, executor="simple").run()
        assert ws.fetch("E_grad").tolist() == [[0, 0], [2, 2], [0, 0], [1, 1]]


# Forward op (with grad_on_weights) -> the gradient op type Caffe2 names (the Sparse forms also add SparseToDense).
GRAD_NAMES = {
    ("LengthsSum", 0): "LengthsSumGradient",
    ("LengthsMean", 0): "LengthsMeanGradient",
    ("LengthsMax", 0): "LengthsMaxWithMainInputAndForwardOutputGradient",
    ("LengthsWeightedSum", 0): "LengthsWeightedSumGradient",
    ("LengthsWeightedSum", 1): "LengthsWeightedSumWithMainInputGradient",
    ("SparseLengthsSum", 0): "SparseLengthsSumGradient",
    ("SparseLengthsMean", 0): "SparseLengthsMeanGradient",
    ("SparseLengthsWeightedSum", 0): "SparseLengthsWeightedSumGradient",
    ("SparseLengthsWeightedSum", 1): "SparseLengthsIndicesInGradientWeightedSumWithMainInputGradient",
    ("SortedSegmentSum", 0): "SortedSegmentSumGradient",
    ("SortedSegmentMean", 0): "SortedSegmentMeanGradient",
    ("SortedSegmentWeightedSum", 0): "SortedSegmentWeightedSumGradient",
    ("SortedSegmentWeightedSum", 1): "SortedSegmentWeightedSumWithMainInputGradient",
    ("UnsortedSegmentSum", 0): "UnsortedSegmentSumGradient",
    ("UnsortedSegmentMean", 0): "UnsortedSegmentMeanGradient",
    ("UnsortedSegmentWeightedSum", 0): "UnsortedSegmentWeightedSumGradient",
    ("UnsortedSegmentWeightedSum", 1): "UnsortedSegmentWeightedSumWithMainInputGradient",
    ("SparseSortedSegmentSum", 0): "SparseSortedSegmentSumGradient",
    ("SparseSortedSegmentMean", 0): "SparseSortedSegmentMeanGradient",
    ("SparseSortedSegmentWeightedSum", 0): "SparseSortedSegmentWeightedSumGradient",
    ("SparseSortedSegmentWeightedSum", 1): "SparseSortedSegmentWeightedSumWithMainInputGradient",
    ("SparseUnsortedSegmentSum", 0): "SparseUnsortedSegmentSumGradient",
    ("SparseUnsortedSegmentMean", 0): "SparseUnsortedSegmentMeanGradient",
    ("SparseUnsortedSegmentWeightedSum", 0): "SparseUnsortedSegmentWeightedSumGradient",
    ("SparseUnsortedSegmentWeightedSum", 1): "SparseUnsortedSegmentWeightedSumWithMainInputGradient",
}


@pytest.mark.parametrize("key", list(GRAD_NAMES), ids=[f"{k}-{w}" for k, w in GRAD_NAMES])
def test_gradient_op_names_follow_caffe2(key: tuple[str, int]) -> None:
    from asyncnet.registry import default_registry
    from asyncnet.training.gradients import gradient_for_op

    name, on_w = key
    schema = default_registry().schema(name)
    ins = [f"x{i}" for i in range(schema.inputs[0])]
    op = make_op(name, ins, ["Y"], **({"grad_on_weights": 1} if on_w else {}))
    spec = gradient_for_op(op, ["Y_grad"])
    assert spec.ops[0].type == GRAD_NAMES[key]
    assert [o.type for o in spec.ops[1:]] == (["SparseToDense"] if name.startswith("Sparse") else [])


def test_sparse_to_dense_gradient() -> None:
    feeds = {"I": np.array([2, 0, 2]), "V": RNG.normal(size=(3, 2)), "D": np.zeros((4, 1))}
    res = check_gradient(make_op("SparseToDense", ["I", "V", "D"], ["Y"]), feeds, check=[1])
    assert res.ok, res.describe()
