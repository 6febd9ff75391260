"""LSTMUnit / GRUUnit and their gradients (LSTMUnitGradient, GRUUnitGradient) vs naive loops and finite differences."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from asyncnet.errors import OperatorError
from asyncnet.proto import caffe2_pb2 as pb
from asyncnet.serde import make_argument
from asyncnet.training.gradcheck import check_gradient
from asyncnet.training.gradients import gradient_for_op
from asyncnet.workspace import Workspace

N, D = 3, 4


def cell_op(op_type: str, inputs: list[str], outputs: list[str], **args: Any) -> pb.OperatorDef:
    o = pb.OperatorDef(type=op_type, input=inputs, output=outputs)
    for k, v in args.items():
        o.arg.append(make_argument(k, v))
    return o


def sig(v: float) -> float:
    return 1.0 / (1.0 + math.exp(-v))


def naive_lstm(h, c, x, lens, t, forget_bias, drop):  # type: ignore[no-untyped-def]
    h_out, c_out = np.zeros_like(h), np.zeros_like(c)
    for n in range(N):
        for d in range(D):
            if lens is not None and t >= lens[n]:
                h_out[0, n, d] = 0.0 if drop else h[0, n, d]
                c_out[0, n, d] = 0.0 if drop else c[0, n, d]
                continue
            i = sig(x[0, n, d])
            f = sig(x[0, n, D + d] + forget_bias)
            o = sig(x[0, n, 2 * D + d])
            g = math.tanh(x[0, n, 3 * D + d])
            c_out[0, n, d] = f * c[0, n, d] + i * g
            h_out[0, n, d] = o * math.tanh(c_out[0, n, d])
    return h_out, c_out


@pytest.mark.parametrize("drop", [False, True])
@pytest.mark.parametrize("with_lengths", [False, True])
def test_lstm_unit_matches_naive(drop: bool, with_lengths: bool) -> None:
    rng = np.random.default_rng(0)
    h, c = rng.standard_normal((1, N, D)).astype(np.float32), rng.standard_normal((1, N, D)).astype(np.float32)
    x = rng.standard_normal((1, N, 4 * D)).astype(np.float32)
    lens = np.array([3, 1, 2], np.int32)
    t = 1
    ins = ["h", "c", "x", *(["lens"] if with_lengths else []), "t"]
    op = cell_op(
        "LSTMUnit", ins, ["h_t", "c_t"], forget_bias=0.5, drop_states=int(drop), sequence_lengths=int(with_lengths)
    )
    with Workspace() as ws:
        for k, v in {"h": h, "c": c, "x": x, "lens": lens, "t": np.array([t], np.int32)}.items():
            ws.feed(k, v)
        ws.run_operator_once(op)
        want_h, want_c = naive_lstm(h, c, x, lens if with_lengths else None, t, 0.5, drop)
        np.testing.assert_allclose(ws.fetch("h_t"), want_h, rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(ws.fetch("c_t"), want_c, rtol=1e-6, atol=1e-6)
        assert ws.fetch("h_t").dtype == np.float32


@pytest.mark.parametrize("drop", [False, True])
def test_lstm_unit_gradient_matches_finite_differences(drop: bool) -> None:
    rng = np.random.default_rng(1)
    op = cell_op("LSTMUnit", ["h", "c", "x", "lens", "t"], ["h_t", "c_t"], forget_bias=0.3, drop_states=int(drop))
    inputs = {
        "h": rng.standard_normal((1, N, D)),
        "c": rng.standard_normal((1, N, D)),
        "x": rng.standard_normal((1, N, 4 * D)),
        "lens": np.array([3, 1, 2], np.int32),
        "t": np.array([1], np.int32),
    }
    spec = gradient_for_op(op, ["h_t_grad", "c_t_grad"])
    assert [g.type for g in spec.ops] == ["LSTMUnitGradient"]
    res = check_gradient(op, inputs, check=[0, 1, 2], outputs_with_grad=[0, 1], stepsize=1e-6, threshold=1e-7)
    assert res.ok, res.describe()


def naive_gru(h, x, lens, t, drop):  # type: ignore[no-untyped-def]
    out = np.zeros_like(h)
    for n in range(N):
        for d in range(D):
            if lens is not None and t >= lens[n]:
                out[0, n, d] = 0.0 if drop else h[0, n, d]
                continue
            u = sig(x[0, n, D + d])
            out[0, n, d] = h[0, n, d] * u + math.tanh(x[0, n, 2 * D + d]) * (1 - u)
    return out


@pytest.mark.parametrize("drop", [False, True])
def test_gru_unit_and_gradient(drop: bool) -> None:
    rng = np.random.default_rng(2)
    inputs = {
        "h": rng.standard_normal((1, N, D)),
        "x": rng.standard_normal((1, N, 3 * D)),
        "lens": np.array([1, 3, 2], np.int32),
        "t": np.array([1], np.int32),
    }
    op = cell_op("GRUUnit", ["h", "x", "lens", "t"], ["h_t"], drop_states=int(drop))
    with Workspace() as ws:
        for k, v in inputs.items():
            ws.feed(k, v)
        ws.run_operator_once(op)
        np.testing.assert_allclose(
            ws.fetch("h_t"), naive_gru(inputs["h"], inputs["x"], inputs["lens"], 1, drop), atol=1e-12
        )
    assert [g.type for g in gradient_for_op(op, ["g"]).ops] == ["GRUUnitGradient"]
    res = check_gradient(op, inputs, check=[0, 1], stepsize=1e-6, threshold=1e-7)
    assert res.ok, res.describe()
    assert np.all(res.analytic["x"][..., :D] == 0)  # the reset slice gets nothing from GRUUnit


def test_cell_shape_errors_name_the_op() -> None:
    with Workspace() as ws:
        ws.feed("h", np.zeros((1, N, D), np.float32))
        ws.feed("c", np.zeros((1, N, D), np.float32))
        ws.feed("x", np.zeros((1, N, 3 * D), np.float32))
        ws.feed("t", np.array([0], np.int32))
        ws.feed("lens", np.array([1, 1], np.int32))
        with pytest.raises(OperatorError, match=r"LSTMUnit.*gates must be \(1, 3, 16\)"):
            ws.run_operator_once(cell_op("LSTMUnit", ["h", "c", "x", "t"], ["a", "b"], sequence_lengths=0))
        with pytest.raises(OperatorError, match="GRUUnit.*seq_lengths has 2 entries"):
            ws.run_operator_once(cell_op("GRUUnit", ["h", "x", "lens", "t"], ["a"]))
