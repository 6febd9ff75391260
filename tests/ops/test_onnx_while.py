"""ONNXWhile against a plain Python loop of the same recurrence (Fibonacci below a limit)."""

from __future__ import annotations

import numpy as np
import pytest

from asyncnet.errors import ArgumentError
from asyncnet.proto import caffe2_pb2 as pb
from asyncnet.workspace import Workspace
from tests.ops.run_util import make_op


def fib_body() -> pb.NetDef:
    body = pb.NetDef(name="fib")
    body.external_input.extend(["i", "cond", "first", "second"])
    body.external_output.extend(["cond_new", "second", "third", "third"])
    body.op.extend(
        [
            make_op("Add", ["first", "second"], ["third"]),
            make_op("ConstantFill", [], ["limit"], shape=[1], value=100.0),
            make_op("LT", ["third", "limit"], ["cond_new"]),
        ]
    )
    return body


def naive(trips: int, cond: bool, has_trip: bool, has_cond: bool) -> tuple[float, float, list[float]]:
    first, second, out, it = 1.0, 1.0, [], 0
    while (not has_trip or it < trips) and (not has_cond or cond):
        third = first + second
        first, second = second, third
        out.append(third)
        cond = third < 100
        it += 1
        if not has_trip and not has_cond:
            break  # unbounded: not exercised
    return first, second, out


@pytest.mark.parametrize(
    ("trips", "cond", "has_trip", "has_cond"),
    [(50, True, 1, 1), (4, True, 1, 1), (7, False, 1, 1), (0, True, 1, 1), (6, True, 1, 0), (0, True, 0, 1)],
)
def test_onnx_while_fibonacci(trips: int, cond: bool, has_trip: int, has_cond: int) -> None:
    op = make_op(
        "ONNXWhile", ["trips", "cond", "a", "b"], ["first", "second", "scan"],
        body=fib_body(), has_trip_count=has_trip, has_cond=has_cond,
    )  # fmt: skip
    with Workspace() as ws:
        ws.feed("trips", np.array(trips, np.int64))
        ws.feed("cond", np.array(cond))
        ws.feed("a", np.array([1.0], np.float32))
        ws.feed("b", np.array([1.0], np.float32))
        ws.feed("third", np.array([-5.0], np.float32))  # a parent blob of a body name stays untouched
        ws.run_operator_once(op)
        first, second, scan = naive(trips, cond, bool(has_trip), bool(has_cond))
        assert float(ws.fetch("first").reshape(-1)[0]) == first
        assert float(ws.fetch("second").reshape(-1)[0]) == second
        assert ws.fetch("scan").tolist() == scan
        if not scan:
            assert ws.fetch("scan").dtype == np.int32  # Caffe2's empty scan output (golden)
        assert ws.fetch("third").tolist() == [-5.0]


def test_onnx_while_checks_the_body_signature() -> None:
    with Workspace() as ws:
        ws.feed("t", np.array(1, np.int64))
        ws.feed("c", np.array(True))
        with pytest.raises(ArgumentError, match="external inputs"):
            ws.run_operator_once(make_op("ONNXWhile", ["t", "c"], ["x"], body=fib_body(), has_trip_count=1))
