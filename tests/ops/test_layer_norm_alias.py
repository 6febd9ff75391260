"""C10LayerNorm_DontUseThisOpYet is LayerNorm under Caffe2's c10 name: checked against a naive formula."""

from __future__ import annotations

import numpy as np

from tests.ops.run_util import run_op


def test_c10_layer_norm_matches_formula() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 3, 4)).astype(np.float32)
    g, b = rng.normal(size=(3, 4)).astype(np.float32), rng.normal(size=(3, 4)).astype(np.float32)
    y, mean, std = run_op("C10LayerNorm_DontUseThisOpYet", [x, g, b], 3, axis=1, epsilon=1e-4, elementwise_affine=1)
    flat = x.reshape(2, -1).astype(np.float64)
    m = flat.mean(axis=1)
    s = np.sqrt(flat.var(axis=1) + 1e-4)
    want = ((flat - m[:, None]) / s[:, None]).reshape(x.shape) * g + b
    np.testing.assert_allclose(y, want, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(mean.reshape(-1), m, rtol=1e-5)
    np.testing.assert_allclose(std.reshape(-1), s, rtol=1e-5)
