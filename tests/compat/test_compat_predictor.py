"""Caffe2's workspace.Predictor / mobile_exporter.Export names on the serving Predictor."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from serving.models import batch, init_net, predict_net, reference, weights

from asyncnet.compat import predictor as compat_predictor
from asyncnet.compat import workspace
from asyncnet.workspace import Workspace


def test_workspace_predictor_takes_serialized_nets_and_runs_lists_and_dicts() -> None:
    p = workspace.Predictor(init_net(weights()).SerializeToString(), predict_net().SerializeToString())
    try:
        assert p.input_names == ["data"] and p.output_names == ["prob"]
        x = batch(2)
        (out,) = p.run([x])
        np.testing.assert_allclose(out, reference(x, weights()), rtol=1e-5, atol=1e-6)
        (again,) = p.run({"data": x})
        np.testing.assert_array_equal(out, again)
    finally:
        p.close()


@pytest.mark.timeout(30)
def test_export_then_predict_from_threads(no_thread_leak: None) -> None:
    ws = Workspace()
    for k, v in weights().items():
        ws.feed(k, v)
    init, net = compat_predictor.Export(ws, predict_net(), list(weights()))
    # The data input gets a placeholder in the init net, as Caffe2's exporter wrote it.
    assert any(op.type == "ConstantFill" and list(op.output) == ["data"] for op in init.op)
    p = compat_predictor.Predictor(init, net)
    xs = [batch(1, seed=i) for i in range(8)]
    outs: list[np.ndarray | None] = [None] * 8

    def call(i: int) -> None:
        outs[i] = p.run([xs[i]])[0]

    threads = [threading.Thread(target=call, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    p.close()
    for x, o in zip(xs, outs):
        np.testing.assert_allclose(o, reference(x, weights()), rtol=1e-5, atol=1e-6)


def test_bad_net_argument_is_named() -> None:
    with pytest.raises(Exception, match="init_net: expected a NetDef, core.Net or serialized NetDef bytes, got int"):
        workspace.Predictor(3, predict_net())
