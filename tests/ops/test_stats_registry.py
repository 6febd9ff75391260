"""The stat registry ops and the Put ops, checked against the arithmetic Caffe2 documents (a naive
running sum / count / offset sums kept in the test)."""

from __future__ import annotations

import numpy as np
import pytest

from asyncnet.errors import OperatorError
from asyncnet.proto import caffe2_pb2 as pb
from asyncnet.workspace import Workspace
from tests.ops.run_util import make_op

I64_MAX = np.iinfo(np.int64).max


def export(ws: Workspace, reg: str | None = None, reset: int = 1) -> dict[bytes, int]:
    ws.run_operator_once(make_op("StatRegistryExport", [reg] if reg else [], ["k", "v", "t"], reset=reset))
    k, v, t = ws.fetch("k"), ws.fetch("v"), ws.fetch("t")
    assert v.dtype == np.int64 and t.dtype == np.int64 and len(k) == len(v) == len(t)
    return dict(zip(k.tolist(), v.tolist()))


def put(ws: Workspace, op_type: str, value: list[float], name: str, **args: object) -> None:
    ws.feed("value", np.array(value, np.float64))
    ws.run_operator_once(make_op(op_type, ["value"], [], stat_name=name, **args))


def test_put_ops_record_scaled_values() -> None:
    values = [15.1111, 3.0, -2.5, 7.25]
    net = pb.NetDef(name="puts")
    net.op.extend(
        [
            make_op("AveragePut", ["value"], [], stat_name="t_avg", magnitude_expand=10000),
            make_op("IncrementPut", ["value"], [], stat_name="t_inc", magnitude_expand=100),
            make_op("StdDevPut", ["value"], [], stat_name="t_sd", magnitude_expand=10),
        ]
    )
    with Workspace() as ws:
        ws.feed("value", np.zeros(1))
        # One prepared net: StdDevPut keeps the first value it saw as the offset for later ones.
        with ws.create_net(net) as n:
            for v in values:
                ws.feed("value", np.array([v]))
                n.run()
        stats = export(ws)
    scaled = [int(v * 10000) for v in values]
    assert stats[b"t_avg/stat_value/sum"] == sum(scaled) and stats[b"t_avg/stat_value/count"] == 4
    assert stats[b"t_inc/stat_value"] == sum(int(v * 100) for v in values)
    sd = [int(v * 10) for v in values]
    assert stats[b"t_sd/stat_value/sum"] == sum(sd) and stats[b"t_sd/stat_value/count"] == 4
    # Offsets are taken from the first value recorded.
    assert stats[b"t_sd/stat_value/sumoffset"] == sum(x - sd[0] for x in sd)
    assert stats[b"t_sd/stat_value/sumsqoffset"] == sum((x - sd[0]) ** 2 for x in sd)


def test_put_defaults_bounds_and_errors() -> None:
    with Workspace() as ws:
        put(ws, "AveragePut", [], "t_def", magnitude_expand=10**12, bound=1, default_value=16.0)
        put(ws, "AveragePut", [10.0], "t_clamp", magnitude_expand=10**18, bound=1)
        put(ws, "AveragePut", [-1e20], "t_low", magnitude_expand=10**12, bound=1)
        put(ws, "IncrementPut", [float("nan")], "t_nan", bound=1)
        stats = export(ws)
        assert stats[b"t_def/stat_value/sum"] == 16 * 10**12
        assert stats[b"t_clamp/stat_value/sum"] == I64_MAX
        assert stats[b"t_low/stat_value/sum"] == np.iinfo(np.int64).min
        assert stats[b"t_nan/stat_value"] == 0
        with pytest.raises(OperatorError, match="default_value"):
            put(ws, "AveragePut", [], "t_err")
        with pytest.raises(OperatorError, match="too large"):
            put(ws, "IncrementPut", [10.0], "t_err", magnitude_expand=10**18)


def test_registry_update_export_and_private_registries() -> None:
    keys = np.array([b"t_reg/key1", b"t_reg/key2"], dtype=object)
    with Workspace() as ws:
        ws.feed("keys", keys)
        ws.feed("vals", np.array([34, 45], np.int64))
        for _ in range(2):
            ws.run_operator_once(make_op("StatRegistryUpdate", ["keys", "vals"], []))
        first = export(ws, reset=0)
        assert first[b"t_reg/key1"] == 68 and first[b"t_reg/key2"] == 90
        again = export(ws)  # reset after this export
        assert again[b"t_reg/key1"] == 68
        assert export(ws)[b"t_reg/key1"] == 0
        ws.run_operator_once(make_op("StatRegistryCreate", [], ["reg"]))
        ws.run_operator_once(make_op("StatRegistryUpdate", ["keys", "vals", "reg"], []))
        assert export(ws, "reg") == {b"t_reg/key1": 34, b"t_reg/key2": 45}
        ws.feed("short", np.array([1], np.int64))
        with pytest.raises(OperatorError, match="2 keys but 1 values"):
            ws.run_operator_once(make_op("StatRegistryUpdate", ["keys", "short"], []))
