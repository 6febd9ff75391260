"""Finite-difference checks of the CosineEmbeddingCriterion, MarginRankingCriterion, BernoulliJSD and
FlexibleTopK gradients (ops/grad_criteria.py)."""

from __future__ import annotations

from typing import Any

import numpy as np

from asyncnet.training.gradcheck import check_gradient
from asyncnet.training.gradients import gradient_for_op
from tests.ops.run_util import make_op, run_op

RNG = np.random.default_rng(5)


def _ok(op_type: str, inputs: dict[str, Any], check: list[int], n_out: int = 1, **args: Any) -> None:
    op = make_op(op_type, list(inputs), [f"y{i}" for i in range(n_out)], **args)
    res = check_gradient(op, inputs, check=check, stepsize=1e-3, threshold=1e-2)
    assert res.ok, f"{op_type}: {res.describe()}"


def _away_from(x: np.ndarray, kink: float, gap: float = 0.05) -> np.ndarray:
    """Values not within ``gap`` of the loss's kink (finite differences straddling it are wrong)."""
    return np.where(np.abs(x - kink) < gap, x + 2 * gap, x)


def test_cosine_embedding_criterion_gradient() -> None:
    s = _away_from(RNG.uniform(-1, 1, 8).astype(np.float32), 0.2)
    y = np.array([1, -1, 1, -1, -1, 1, -1, -1], np.int32)
    _ok("CosineEmbeddingCriterion", {"S": s, "Y": y}, [0], margin=0.2)


def test_margin_ranking_criterion_gradient() -> None:
    x1, x2 = RNG.normal(size=6).astype(np.float32), RNG.normal(size=6).astype(np.float32)
    y = np.array([1, -1, 1, 1, -1, -1], np.float32)
    # Keep -y (x1 - x2) + margin away from 0, where the hinge bends.
    x1 = np.where(np.abs(-y * (x1 - x2) + 0.5) < 0.05, x1 + 0.2, x1).astype(np.float32)
    _ok("MarginRankingCriterion", {"X1": x1, "X2": x2, "Y": y}, [0, 1], margin=0.5)


def test_bernoulli_jsd_gradient() -> None:
    p = RNG.uniform(0.05, 0.95, 7).astype(np.float32)
    q = RNG.uniform(0.05, 0.95, 7).astype(np.float32)
    _ok("BernoulliJSD", {"X": p, "T": q}, [0])


def test_flexible_top_k_gradient() -> None:
    x = RNG.permutation(12).astype(np.float64).reshape(3, 4)  # distinct values: no ties
    k = np.array([1, 3, 2], np.int64)
    _ok("FlexibleTopK", {"X": x, "K": k}, [0], n_out=2)
    (g,) = gradient_for_op(make_op("FlexibleTopK", ["X", "K"], ["V", "I"]), ["V_grad", None]).ops
    assert g.type == "FlexibleTopKGradient" and list(g.input) == ["X", "K", "V_grad", "I"]
    _, idx = run_op("FlexibleTopK", [x, k], 2)
    (dx,) = run_op("FlexibleTopKGradient", [x, k, np.arange(1, 7, dtype=np.float64), idx])
    want = np.zeros((3, 4))
    pos = 0
    for r, n in enumerate(k.tolist()):
        for _ in range(n):
            want[r, idx[pos]] = pos + 1
            pos += 1
    np.testing.assert_array_equal(dx, want)


def test_gradient_op_types_and_wiring_are_caffe2s() -> None:
    cases = {
        "CosineEmbeddingCriterion": (["S", "Y"], ["L"], "CosineEmbeddingCriterionGradient", ["S", "Y", "L_grad"]),
        "MarginRankingCriterion": (
            ["X1", "X2", "Y"],
            ["L"],
            "MarginRankingCriterionGradient",
            ["X1", "X2", "Y", "L_grad"],
        ),
        "BernoulliJSD": (["P", "Q"], ["L"], "BernoulliJSDGradient", ["L_grad", "P", "Q"]),
    }
    for fwd, (ins, outs, grad_type, grad_ins) in cases.items():
        (g,) = gradient_for_op(make_op(fwd, ins, outs), [o + "_grad" for o in outs]).ops
        assert (g.type, list(g.input)) == (grad_type, grad_ins), fwd
