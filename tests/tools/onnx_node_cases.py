"""onnx's backend node test cases, run through asyncnet's importer (shared by a test and a bench report)."""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from asyncnet.errors import AsyncNetError, UnsupportedError


@functools.cache
def all_cases() -> list[Any]:
    from onnx.backend.test.case import node

    return [c for c in node.collect_testcases(None) if c.kind == "node" and c.model is not None]


def mapped_cases() -> list[Any]:
    """Cases whose every node has a Caffe2 mapping (Constant nodes count as mapped)."""
    from asyncnet.onnx.importer import TRANSLATORS

    keep = []
    for c in all_cases():
        types = {n.op_type for n in c.model.graph.node}
        if types and all(t in TRANSLATORS or t == "Constant" for t in types):
            keep.append(c)
    return keep


def _array(v: Any) -> np.ndarray:
    from onnx import TensorProto, numpy_helper

    return numpy_helper.to_array(v) if isinstance(v, TensorProto) else np.asarray(v)


def run_case(case: Any) -> tuple[str, str]:
    """('passed' | 'refused' | 'failed', detail)."""
    from asyncnet.onnx import import_onnx
    from asyncnet.workspace import Workspace

    try:
        init, predict = import_onnx(case.model)
    except UnsupportedError as e:
        return "refused", str(e)
    except AsyncNetError as e:
        return "failed", f"import: {type(e).__name__}: {e}"
    graph_inputs = [
        i.name for i in case.model.graph.input if i.name not in {t.name for t in case.model.graph.initializer}
    ]
    rtol = getattr(case, "rtol", 1e-3)
    atol = getattr(case, "atol", 1e-7)
    for inputs, outputs in case.data_sets or []:
        ws = Workspace()
        try:
            ws.run_net_once(init)
            for name, value in zip(graph_inputs, inputs):
                ws.feed(name, _array(value))
            ws.run_net_once(predict)
            for out, expect in zip(case.model.graph.output, outputs):
                got = np.asarray(ws.fetch(out.name))
                exp = _array(expect)
                if got.shape != exp.shape:
                    return "failed", f"output {out.name}: shape {got.shape} != {exp.shape}"
                if exp.dtype.kind in "fc":
                    if not np.allclose(
                        got.astype(np.float64), exp.astype(np.float64), rtol=rtol, atol=max(atol, 1e-6), equal_nan=True
                    ):
                        return (
                            "failed",
                            f"output {out.name}: max diff {np.nanmax(np.abs(got.astype(np.float64) - exp)):.3g}",
                        )
                elif not np.array_equal(got, exp):
                    return "failed", f"output {out.name}: values differ"
        except UnsupportedError as e:
            return "refused", str(e)
        except Exception as e:  # a kernel failing on a valid case counts as a failure
            return "failed", f"run: {type(e).__name__}: {str(e)[:200]}"
    return "passed", ""
