"""SparseToDenseMask, SparseNormalize, SparseLpRegularizer and the index ops, against naive loops
written from Caffe2's operator docs."""

from __future__ import annotations

import math
import threading

import numpy as np
import pytest

from asyncnet.errors import OperatorError
from asyncnet.proto import caffe2_pb2 as pb
from asyncnet.workspace import Workspace
from tests.ops.run_util import make_op, run_op

RNG = np.random.default_rng(9)


def test_sparse_to_dense_mask_rows_and_presence() -> None:
    ids = np.array([7, 3, 9, 3, -1, 5, 7], np.int64)
    vals = np.arange(7 * 2, dtype=np.float32).reshape(7, 2)
    default = np.array([-1.0, -2.0], np.float32)
    lengths = np.array([4, 3], np.int32)
    mask = [3, 5, 7]
    out, present = run_op("SparseToDenseMask", [ids, vals, default, lengths], 2, mask=mask, return_presence_mask=1)
    want = np.tile(default, (2, 3, 1))
    want_p = np.zeros((2, 3), bool)
    j = 0
    for r, n in enumerate(lengths.tolist()):
        for _ in range(n):
            if ids[j] in mask:
                want[r, mask.index(int(ids[j]))] = vals[j]
                want_p[r, mask.index(int(ids[j]))] = True
            j += 1
    np.testing.assert_array_equal(out, want)
    np.testing.assert_array_equal(present, want_p)
    (flat,) = run_op("SparseToDenseMask", [ids[:3], vals[:3], default], mask=mask)
    assert flat.shape == (3, 2) and flat[0].tolist() == [2.0, 3.0] and flat[1].tolist() == [-1.0, -2.0]


def test_sparse_normalize() -> None:
    p = np.array([[3.0, 4.0], [0.3, 0.4], [6.0, 8.0]], np.float32)
    idx = np.array([0, 1], np.int64)
    (capped,) = run_op("SparseNormalize", [p, idx], inplace=[0], norm=1.0)
    for r in range(3):
        n = math.hypot(*p[r])
        want = p[r] * (1.0 / (n + 1e-12)) if r in (0, 1) and n > 1.0 else p[r]
        np.testing.assert_allclose(capped[r], want, rtol=1e-6)
    (exact,) = run_op("SparseNormalize", [p, idx], inplace=[0], norm=2.0, use_max_norm=0)
    np.testing.assert_allclose(np.linalg.norm(exact[:2], axis=1), [2.0, 2.0], rtol=1e-6)
    np.testing.assert_array_equal(exact[2], p[2])


@pytest.mark.parametrize("p_norm", [1.0, 2.0])
def test_sparse_lp_regularizer(p_norm: float) -> None:
    param = np.array([[0.5, -0.05, 0.02], [1.0, -1.0, 0.0]], np.float32)
    lam = 0.1
    (out,) = run_op("SparseLpRegularizer", [param, np.array([0])], inplace=[0], p=p_norm, reg_lambda=lam)
    want = param.astype(np.float64).copy()
    for c in range(3):
        x = want[0, c]
        if p_norm == 2.0:
            want[0, c] = x * (1 - lam)
        else:
            want[0, c] = 0.0 if abs(x) <= lam else (x - lam if x > 0 else x + lam)
    np.testing.assert_allclose(out, want, rtol=1e-6, atol=1e-7)


def _ws_run(ws: Workspace, *ops: pb.OperatorDef) -> None:
    for op in ops:
        ws.run_operator_once(op)


@pytest.mark.parametrize("create,keys", [
    ("IntIndexCreate", np.array([5, 9, 5, 2], np.int32)),
    ("LongIndexCreate", np.array([50, 90, 50, 20], np.int64)),
    ("StringIndexCreate", np.array(["a", "b", "a", "c"], dtype=object)),
])  # fmt: skip
def test_index_get_freeze_store_load_size(create: str, keys: np.ndarray) -> None:
    with Workspace() as ws:
        ws.feed("keys", keys)
        _ws_run(ws, make_op(create, [], ["h"]), make_op("IndexGet", ["h", "keys"], ["ids"]))
        assert ws.fetch("ids").tolist() == [1, 2, 1, 3] and ws.fetch("ids").dtype == np.int64
        _ws_run(ws, make_op("IndexSize", ["h"], ["n"]), make_op("IndexStore", ["h"], ["items"]))
        assert int(ws.fetch("n")) == 4
        assert list(ws.fetch("items")) == [keys[0], keys[1], keys[3]]
        ws.feed("new", keys[::-1].copy())
        _ws_run(ws, make_op("IndexFreeze", ["h"], ["h"]))
        ws.feed("probe", np.array([keys[3], keys[0]], dtype=keys.dtype))
        _ws_run(ws, make_op("IndexGet", ["h", "probe"], ["p"]))
        assert ws.fetch("p").tolist() == [3, 1]
        # A fresh index loaded from the stored items gives the same ids (skip_first_entry drops items[0]).
        ws.feed("stored", np.concatenate([keys[:1], ws.fetch("items")]))
        _ws_run(
            ws,
            make_op(create, [], ["h2"]),
            make_op("IndexLoad", ["h2", "stored"], ["h2"], skip_first_entry=1),
            make_op("IndexGet", ["h2", "keys"], ["ids2"]),
        )
        assert ws.fetch("ids2").tolist() == [1, 2, 1, 3]


def test_index_frozen_unknown_is_zero_and_full_index_fails() -> None:
    with Workspace() as ws:
        ws.feed("k", np.array([1, 2, 3], np.int64))
        _ws_run(ws, make_op("LongIndexCreate", [], ["h"], max_elements=3))
        with pytest.raises(OperatorError, match="max_elements"):
            _ws_run(ws, make_op("IndexGet", ["h", "k"], ["ids"]))
        _ws_run(ws, make_op("LongIndexCreate", [], ["f"]), make_op("IndexFreeze", ["f"], ["f"]))
        _ws_run(ws, make_op("IndexGet", ["f", "k"], ["z"]))
        assert ws.fetch("z").tolist() == [0, 0, 0]


@pytest.mark.timeout(30)
def test_index_get_is_safe_across_threads(no_thread_leak: None) -> None:
    from asyncnet.ops.index_ops import Index

    index = Index("long", 10_000)
    results: list[list[int]] = []

    def worker(seed: int) -> None:
        keys = np.random.default_rng(seed).integers(0, 500, 400).tolist()
        results.append(index.get(keys))

    threads = [threading.Thread(target=worker, args=(s,)) for s in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stored = index.store()
    assert len(stored) == len(set(stored)) == index.size() - 1
    assert sorted(set(i for r in results for i in r)) == list(range(1, index.size()))


def test_sparse_to_dense_mask_gradient() -> None:
    from asyncnet.training.gradcheck import check_gradient

    ids = np.array([7, 3, 9, 3, -1, 5, 7], np.int64)
    vals = np.random.default_rng(1).normal(size=(7, 2))
    feeds = {"I": ids, "V": vals, "D": np.zeros(2), "L": np.array([4, 3], np.int32)}
    op = make_op("SparseToDenseMask", ["I", "V", "D", "L"], ["Y"], mask=[3, 5, 7])
    res = check_gradient(op, feeds, check=[1])
    assert res.ok, res.describe()
    # The repeated id 3 in row 0: only its last occurrence (position 3) gets a gradient.
    assert not res.analytic["V"][1].any() and res.analytic["V"][3].any()
    (g,) = run_op("SparseToDenseMaskGradient", [ids[:3], np.ones((3, 2))], mask=[3, 5, 7])
    assert g.tolist() == [[1.0, 1.0], [1.0, 1.0], [0.0, 0.0]]  # id 9 is outside the mask


def test_sparse_to_dense_mask_second_output_without_flag() -> None:
    # Caffe2 accepted a named presence-mask output without return_presence_mask: it is written anyway.
    ids = np.array([4, 2], np.int32)
    out, present = run_op(
        "SparseToDenseMask", [ids, np.array([1.0, 2.0], np.float32), np.array(0.0, np.float32)], 2, mask=[2, 3, 4]
    )
    assert out.tolist() == [2.0, 0.0, 1.0] and present.tolist() == [True, False, True]
