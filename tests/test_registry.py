"""Registry and schema behavior: lookup, did-you-mean, engines, arity and in-place rules."""

from __future__ import annotations

import logging
import uuid

import numpy as np
import pytest

from asyncnet.errors import SchemaError, UnknownOperatorError
from asyncnet.net import Net
from asyncnet.proto import caffe2_pb2 as pb
from asyncnet.registry import OpRegistry, default_registry
from asyncnet.schema import Arg, OpSchema
from asyncnet.workspace import Workspace


def _net(*ops: pb.OperatorDef, name: str = "t") -> pb.NetDef:
    net = pb.NetDef(name=name)
    net.op.extend(ops)
    return net


def test_unknown_op_names_index_and_close_matches() -> None:
    ws = Workspace()
    net = _net(
        pb.OperatorDef(type="Relu", input=["x"], output=["y"]), pb.OperatorDef(type="Rleu", input=["y"], output=["z"])
    )
    with pytest.raises(UnknownOperatorError, match=r"op #1 Rleu.*unknown operator type 'Rleu'.*did you mean 'Relu'"):
        Net(net, ws)


def test_wrong_arity_is_refused() -> None:
    net = _net(pb.OperatorDef(type="FC", input=["x", "w"], output=["y"]))
    with pytest.raises(SchemaError, match=r"op #0 FC.*takes 3 input\(s\), got 2"):
        Net(net, Workspace())


def test_inplace_rules() -> None:
    ok = _net(pb.OperatorDef(type="Relu", input=["x"], output=["x"]))
    Net(ok, Workspace())
    bad = _net(pb.OperatorDef(type="FC", input=["x", "w", "b"], output=["w"]))
    with pytest.raises(SchemaError, match="cannot write input 1"):
        Net(bad, Workspace())


def test_engine_falls_back_to_default_kernel(caplog: pytest.LogCaptureFixture) -> None:
    ws = Workspace()
    ws.feed("x", np.array([-1.0, 2.0], np.float32))
    # The fallback is logged once per (op, device, engine); a fresh engine name keeps this independent of other tests.
    engine = f"CUDNN_{uuid.uuid4().hex[:8]}"
    op = pb.OperatorDef(type="Relu", input=["x"], output=["y"], engine=engine)
    with caplog.at_level(logging.INFO, logger="asyncnet.registry"):
        ws.run_operator_once(op)
    np.testing.assert_array_equal(ws.fetch("y"), [0.0, 2.0])
    assert any(engine in r.getMessage() for r in caplog.records)


def test_engine_list_and_gpu_device_fall_back() -> None:
    ws = Workspace()
    ws.feed("x", np.array([-3.0], np.float32))
    op = pb.OperatorDef(type="Relu", input=["x"], output=["y"], engine="DEPTHWISE_3x3,NNPACK")
    op.device_option.device_type = 1
    ws.run_operator_once(op)
    assert ws.fetch("y")[0] == 0.0


def test_duplicate_registration_raises() -> None:
    reg = OpRegistry()
    reg.op("X")(lambda op: lambda x: (x,))
    with pytest.raises(SchemaError, match="twice"):
        reg.op("X")(lambda op: lambda x: (x,))


def test_schema_checks() -> None:
    s = OpSchema(
        "T", inputs=(1, 3), outputs=(1, 1), args=(Arg("axis", 1),), arity=lambda i, o: i != 2, arity_doc="never 2"
    )
    assert s.check_arity(1, 1) is None
    assert "got 4" in (s.check_arity(4, 1) or "")
    assert "never 2" in (s.check_arity(2, 1) or "")
    assert "did you mean 'axis'" in (s.check_args(["axes"]) or "")


def test_every_registered_op_has_a_schema_and_kernel() -> None:
    reg = default_registry()
    for t in reg.types():
        assert reg.kernels_of(t), t
        assert reg.schema(t).type == t
