"""String ops, PairWiseLoss (+ finite-difference gradient) and CTCGreedyDecoder against naive loops
written from Caffe2's operator docs (the StringStartsWith/EndsWith, PairWiseLoss and CTCGreedyDecoder
goldens run in test_goldens.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from asyncnet.training.gradcheck import check_gradient
from tests.ops.run_util import make_op, run_op

WORDS = np.array([b"apple", b"banana", b"ab", b""], dtype=object)


def test_string_ops() -> None:
    (p,) = run_op("StringPrefix", [WORDS], length=2)
    assert p.tolist() == [b"ap", b"ba", b"ab", b""]
    (s,) = run_op("StringSuffix", [WORDS], length=3)
    assert s.tolist() == [b"ple", b"ana", b"ab", b""]
    (sw,) = run_op("StringStartsWith", [WORDS], prefix="a")
    assert sw.tolist() == [True, False, True, False]
    (ew,) = run_op("StringEndsWith", [WORDS], suffix="a")
    assert ew.tolist() == [False, True, False, False]
    (eq,) = run_op("StringEquals", [np.array(["ab", b"ab", "x"], dtype=object)], text="ab")
    assert eq.tolist() == [True, True, False]
    (j,) = run_op("StringJoin", [np.array([[1, 2], [3, 4]], np.int32)], delimiter="-")
    assert j.tolist() == [b"1-2", b"3-4"]
    (j,) = run_op("StringJoin", [np.array([[1.5, 2.0]], np.float32)], axis=1)
    assert j.tolist() == [b"1.500000", b"2.000000"]


def naive_pairwise(x: list[float], y: list[float]) -> float:
    total, pairs = 0.0, 0
    for i in range(len(x)):
        for j in range(i):
            if y[i] == y[j]:
                continue
            pairs += 1
            s = 1.0 if y[i] > y[j] else -1.0
            total += math.log1p(math.exp(s * (x[j] - x[i])))
    return total / pairs if pairs else 0.0


def test_pair_wise_loss_and_gradient() -> None:
    rng = np.random.default_rng(2)
    x = rng.normal(size=7)
    label = np.array([1, 0, 2, 2, 0, 1, 1], np.float64)
    lengths = np.array([3, 0, 4], np.int32)
    (y,) = run_op("PairWiseLoss", [x, label, lengths])
    want = [naive_pairwise(list(x[0:3]), list(label[0:3])), 0.0, naive_pairwise(list(x[3:7]), list(label[3:7]))]
    np.testing.assert_allclose(y, want, rtol=1e-6)
    res = check_gradient(make_op("PairWiseLoss", ["X", "L", "N"], ["Y"]), {"X": x, "L": label, "N": lengths}, check=[0])
    assert res.ok, res.describe()
    (g,) = run_op("PairWiseLossGradient", [x, label, np.ones(3), lengths])
    assert g.shape == x.shape


def test_ctc_greedy_decoder() -> None:
    # T=4, N=2, C=3 (class 0 blank)
    best = [[1, 2], [1, 0], [0, 2], [1, 2]]
    a = np.zeros((4, 2, 3), np.float32)
    for t in range(4):
        for n in range(2):
            a[t, n, best[t][n]] = 1.0
    lens, vals = run_op("CTCGreedyDecoder", [a], 2)
    assert lens.tolist() == [2, 2] and vals.tolist() == [1, 1, 2, 2]
    lens, vals = run_op("CTCGreedyDecoder", [a, np.array([4, 4], np.int32)], 2, merge_repeated=0)
    assert lens.tolist() == [3, 3] and vals.tolist() == [1, 1, 1, 2, 2, 2]
    lens, vals = run_op("CTCGreedyDecoder", [a, np.array([2, 1], np.int32)], 2)
    assert lens.tolist() == [1, 1] and vals.tolist() == [1, 2]


def test_ctc_beam_search_matches_brute_force() -> None:
    import itertools

    rng = np.random.default_rng(4)
    t_len, classes = 4, 3
    probs = rng.uniform(0.05, 1.0, (t_len, 2, classes)).astype(np.float32)
    probs /= probs.sum(axis=2, keepdims=True)
    lens, vals, prob = run_op(
        "CTCBeamSearchDecoder",
        [probs, np.array([4, 3], np.int32)],
        3,
        beam_width=50,
        prune_threshold=0.0,
        num_candidates=2,
    )
    pos = 0
    for b, steps in enumerate((4, 3)):
        # Brute force: every path, collapsed (merge repeats, drop blanks), its probability summed.
        totals: dict[tuple[int, ...], float] = {}
        for path in itertools.product(range(classes), repeat=steps):
            p = math.prod(float(probs[t, b, c]) for t, c in enumerate(path))
            merged = [c for k, c in enumerate(path) if c != 0 and (k == 0 or c != path[k - 1])]
            totals[tuple(merged)] = totals.get(tuple(merged), 0.0) + p
        best = sorted(totals.items(), key=lambda kv: -kv[1])[:2]
        for k, (seq, p) in enumerate(best):
            n = int(lens[2 * b + k])
            assert tuple(vals[pos : pos + n].tolist()) == seq
            assert prob[2 * b + k] == pytest.approx(p, rel=1e-4)
            pos += n
