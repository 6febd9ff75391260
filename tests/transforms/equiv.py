"""Differential check shared by the rewrite tests: original and rewritten nets, same outputs."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from asyncnet.proto import caffe2_pb2 as pb
from asyncnet.transforms import OptimizeResult, optimize_for_inference
from asyncnet.workspace import Workspace


def assert_close(got: Any, ref: Any, what: str, rtol: float = 1e-4, atol: float = 1e-5) -> None:
    got, ref = np.asarray(got), np.asarray(ref)
    assert got.shape == ref.shape and got.dtype == ref.dtype, (
        f"{what}: {got.shape} {got.dtype} vs {ref.shape} {ref.dtype}"
    )
    if ref.dtype.kind == "f":
        # Deep random nets reach large magnitudes; atol is relative to the output's scale.
        scale = max(1.0, float(np.abs(ref).max()) if ref.size else 1.0)
        np.testing.assert_allclose(got, ref, rtol=rtol, atol=atol * scale, err_msg=what)
    else:
        np.testing.assert_array_equal(got, ref, err_msg=what)


def run_net(net: pb.NetDef, blobs: Mapping[str, Any], outputs: Sequence[str]) -> dict[str, Any]:
    with Workspace() as ws:
        for k, v in blobs.items():
            ws.feed(k, np.array(v, copy=True))
        ws.run_net_once(net)
        return {n: np.array(ws.fetch(n), copy=True) for n in outputs}


def check_rewrite(
    net: pb.NetDef,
    params: Mapping[str, np.ndarray],
    feeds: Mapping[str, np.ndarray],
    *,
    rewrites: Sequence[str] | None = None,
    rtol: float = 1e-4,
    atol: float = 1e-5,
) -> OptimizeResult:
    """Rewrite ``net``, run both, compare every external output; return the rewrite result."""
    before = {k: np.array(v, copy=True) for k, v in params.items()}
    res = optimize_for_inference(net, params=params, data_inputs=list(feeds), rewrites=rewrites)
    for k, v in before.items():
        np.testing.assert_array_equal(params[k], v, err_msg=f"parameter '{k}' was mutated")
    outs = list(net.external_output)
    assert list(res.predict_net.external_output) == outs
    ref = run_net(net, {**params, **feeds}, outs)
    got = run_net(res.predict_net, {**params, **res.params, **feeds}, outs)
    for n in outs:
        assert_close(got[n], ref[n], f"output '{n}' after {[str(r) for r in res.report]}", rtol, atol)
    return res
