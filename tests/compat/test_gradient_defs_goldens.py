"""Gradient OperatorDefs from compat's GradientRegistry equal the ones Caffe2 saved in its goldens.

Caffe2's serialized operator tests stored, next to each op, the gradient ops its registry made
(``GetGradientForOp(op, [out + "_grad" ...])``) and compared them field by field (arguments sorted
by name), field presence included: Caffe2's gradient defs always carried ``name`` and ``engine``.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from asyncnet.compat import core
from asyncnet.errors import GradientError
from asyncnet.proto import caffe2_pb2 as pb
from tests.conftest import REALNETS, realnets_path

GOLDENS = REALNETS / "caffe2_serialized_operator_tests"
# Op types whose gradient asyncnet does not have yet (the test asserts they are still missing, so
# this list shrinks when one is added).
STILL_MISSING: set[str] = set()


def _zips_with_gradients() -> list[Path]:
    if not GOLDENS.is_dir():
        return []
    out = []
    for p in sorted(GOLDENS.glob("*.zip")):
        with zipfile.ZipFile(p) as z:
            if "grad_0.pb" in z.namelist():
                out.append(p)
    return out


def _sorted_args(op: pb.OperatorDef) -> pb.OperatorDef:
    out = pb.OperatorDef()
    out.CopyFrom(op)
    args = sorted(out.arg, key=lambda a: a.name)
    del out.arg[:]
    out.arg.extend(args)
    return out


def test_gradient_defs_carry_name_and_engine() -> None:
    op = core.CreateOperator("Elu", ["X"], ["Y"], alpha=0.5, engine="")
    (g,), _ = core.GradientRegistry.GetGradientForOp(op, ["Y_grad"])
    assert g.HasField("name") and g.name == ""
    assert g.HasField("engine") and g.engine == ""
    assert g.is_gradient_op
    op.ClearField("engine")
    (g,), _ = core.GradientRegistry.GetGradientForOp(op, ["Y_grad"])
    assert not g.HasField("engine")


@pytest.mark.parametrize("path", _zips_with_gradients() or [None], ids=lambda p: p.stem if p else "absent")
def test_gradient_defs_match_golden(path: Path | None) -> None:
    if path is None:
        realnets_path("caffe2_serialized_operator_tests")
        return
    with zipfile.ZipFile(path) as z:
        op = pb.OperatorDef()
        op.ParseFromString(z.read("op.pb"))
        want = []
        for i in range(len([n for n in z.namelist() if n.startswith("grad_")])):
            g = pb.OperatorDef()
            g.ParseFromString(z.read(f"grad_{i}.pb"))
            want.append(g)
    g_out = [o + "_grad" for o in op.output]
    if op.type in STILL_MISSING:
        with pytest.raises(GradientError):
            core.GradientRegistry.GetGradientForOp(op, g_out)
        return
    got, _ = core.GradientRegistry.GetGradientForOp(op, g_out)
    assert [_sorted_args(g) for g in got] == [_sorted_args(g) for g in want]
