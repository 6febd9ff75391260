"""Gelu, Mish, Normalize, NormalizeL1, LpNorm, RMSNorm, CosineSimilarity, L1Distance, IntegralImage and
ChannelBackpropStats: forward values against naive loops / torch, gradients by finite differences
(the IntegralImage and ChannelBackpropStats goldens run in test_goldens.py)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from asyncnet.training.gradcheck import check_gradient
from tests.ops.run_util import make_op, run_op

RNG = np.random.default_rng(41)


def _grad_ok(op_type: str, inputs: dict[str, Any], check: list[int] | None = None, n_out: int = 1, **args: Any) -> None:
    op = make_op(op_type, list(inputs), [f"y{i}" for i in range(n_out)], **args)
    res = check_gradient(op, inputs, check=check, outputs_with_grad=[0])
    assert res.ok, f"{op_type}: {res.describe()}"


@pytest.mark.parametrize("fast", [0, 1])
def test_gelu(fast: int) -> None:
    x = RNG.normal(size=(3, 4))
    (y,) = run_op("Gelu", [x], fast_gelu=fast)
    for v, got in zip(x.reshape(-1), y.reshape(-1)):
        if fast:
            want = 0.5 * v * (1 + math.tanh(math.sqrt(2 / math.pi) * (v + 0.044715 * v**3)))
        else:
            want = 0.5 * v * (1 + math.erf(v / math.sqrt(2)))
        assert got == pytest.approx(want, rel=1e-12, abs=1e-12)
    _grad_ok("Gelu", {"X": x}, fast_gelu=fast)


def test_mish() -> None:
    x = RNG.normal(size=(5,)) * 3
    (y,) = run_op("Mish", [x])
    np.testing.assert_allclose(y, [v * math.tanh(math.log1p(math.exp(v))) for v in x], rtol=1e-12)
    _grad_ok("Mish", {"X": x})


def test_normalize_family() -> None:
    x = RNG.normal(size=(3, 4))
    (y,) = run_op("Normalize", [x])
    for i in range(3):
        n = math.sqrt(sum(v * v for v in x[i]))
        np.testing.assert_allclose(y[i], x[i] / n, rtol=1e-12)
    (y0,) = run_op("Normalize", [x], axis=0)
    np.testing.assert_allclose(np.linalg.norm(y0, axis=0), np.ones(4))
    _grad_ok("Normalize", {"X": x})
    _grad_ok("Normalize", {"X": x}, axis=0)
    (l1,) = run_op("NormalizeL1", [np.array([[1.0, -3.0], [0.0, 0.0]])])
    assert l1.tolist() == [[0.25, -0.75], [0.0, 0.0]]


@pytest.mark.parametrize("p,average", [(1, 0), (2, 0), (2, 1)])
def test_lp_norm(p: int, average: int) -> None:
    x = RNG.normal(size=(2, 3))
    (z,) = run_op("LpNorm", [x], p=p, average=average)
    want = sum(abs(v) if p == 1 else v * v for v in x.reshape(-1)) / (6 if average else 1)
    assert z.shape == (1,) and z[0] == pytest.approx(want)
    _grad_ok("LpNorm", {"X": x}, p=p, average=average)


def test_rms_norm() -> None:
    x = RNG.normal(size=(2, 3, 2))
    gamma, beta = RNG.normal(size=(3, 2)), RNG.normal(size=(3, 2))
    y, rr = run_op("RMSNorm", [x, gamma, beta], 2, axis=1, eps=1e-3)
    for i in range(2):
        r = 1 / math.sqrt(np.mean(x[i] ** 2) + 1e-3)  # eps travels as a float32 argument
        assert rr[i] == pytest.approx(r, rel=1e-7)
        np.testing.assert_allclose(y[i], x[i] * r * gamma + beta, rtol=1e-7, atol=1e-9)
    _grad_ok("RMSNorm", {"X": x, "g": gamma, "b": beta}, n_out=2, axis=1, eps=1e-3)


def test_cosine_similarity_and_l1_distance() -> None:
    x, y = RNG.normal(size=(4, 3)), RNG.normal(size=(4, 3))
    (c,) = run_op("CosineSimilarity", [x, y])
    for i in range(4):
        assert c[i] == pytest.approx(float(x[i] @ y[i]) / (np.linalg.norm(x[i]) * np.linalg.norm(y[i])))
    (d,) = run_op("L1Distance", [x, y])
    for i in range(4):
        assert d[i] == pytest.approx(sum(abs(a - b) for a, b in zip(x[i], y[i])))
    _grad_ok("CosineSimilarity", {"X": x, "Y": y})
    _grad_ok("L1Distance", {"X": x, "Y": y})


def test_integral_image_and_its_caffe2_gradient() -> None:
    x = RNG.normal(size=(1, 2, 3, 4)).astype(np.float32)
    (y,) = run_op("IntegralImage", [x])
    assert y.shape == (1, 2, 4, 5)
    for c in range(2):
        for i in range(4):
            for j in range(5):
                assert y[0, c, i, j] == pytest.approx(float(x[0, c, :i, :j].sum()), abs=1e-5)
    dy = RNG.normal(size=y.shape).astype(np.float32)
    (dx,) = run_op("IntegralImageGradient", [x, dy])
    for c in range(2):
        for i in range(3):
            for j in range(4):
                assert dx[0, c, i, j] == pytest.approx(float(dy[0, c, : i + 1, : j + 1].sum()), abs=1e-5)


def test_channel_backprop_stats() -> None:
    x, dy = RNG.normal(size=(2, 3, 2, 2)), RNG.normal(size=(2, 3, 2, 2))
    mean, inv = RNG.normal(size=3), RNG.uniform(0.5, 2, 3)
    ds, db = run_op("ChannelBackpropStats", [x, mean, inv, dy], 2)
    for c in range(3):
        assert db[c] == pytest.approx(dy[:, c].sum())
        assert ds[c] == pytest.approx(float((dy[:, c] * (x[:, c] - mean[c]) * inv[c]).sum()))


def test_gradient_op_types_follow_caffe2() -> None:
    from asyncnet.training.gradients import gradient_for_op

    cases = {
        "Gelu": (1, "GeluGradient"),
        "Mish": (1, "MishGradient"),
        "Normalize": (1, "NormalizeGradient"),
        "LpNorm": (1, "LpNormGradient"),
        "RMSNorm": (3, "RMSNormGradient"),
        "CosineSimilarity": (2, "CosineSimilarityGradient"),
        "L1Distance": (2, "L1DistanceGradient"),
        "IntegralImage": (1, "IntegralImageGradient"),
    }
    for fwd, (n_in, grad) in cases.items():
        outs = ["y", "rr"] if fwd == "RMSNorm" else ["y"]
        spec = gradient_for_op(
            make_op(fwd, [f"x{i}" for i in range(n_in)], outs), ["y_grad"] + [None] * (len(outs) - 1)
        )
        assert [o.type for o in spec.ops] == [grad]


def test_lp_norm_of_empty_input() -> None:
    empty = np.zeros((0,), np.float32)
    assert run_op("LpNorm", [empty], p=1)[0].tolist() == [0.0]
    assert run_op("LpNorm", [empty], p=2)[0].tolist() == [0.0]
    assert np.isnan(run_op("LpNorm", [empty], p=2, average=1)[0][0])  # 0 / 0, as Caffe2
