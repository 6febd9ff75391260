"""tools/caffe2_suite.py and its pytest plugin, on a synthetic upstream tree (no download)."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

TOOLS = Path(__file__).resolve().parents[2] / "tools"


def _load(name: str) -> Any:
    sys.path.insert(0, str(TOOLS))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(TOOLS))


suite = _load("caffe2_suite")
plugin = _load("caffe2_suite_plugin")


@pytest.fixture
def fake_upstream(tmp_path: Path) -> Path:
    ops = tmp_path / "caffe2" / "python" / "operator_test"
    ops.mkdir(parents=True)
    (tmp_path / "caffe2" / "__init__.py").write_text("raise ImportError('upstream __init__ must not run')\n")
    (tmp_path / "caffe2" / "python" / "__init__.py").write_text("raise ImportError('must not run')\n")
    (tmp_path / "caffe2" / "python" / "helper_util.py").write_text("from caffe2.python import core\nCORE = core\n")
    (ops / "__init__.py").write_text("")
    (ops / "conftest.py").write_text("")
    (ops / "toy_test.py").write_text(
        "import unittest\n"
        "import numpy as np\n"
        "from caffe2.python import core, workspace\n\n"
        "class T(unittest.TestCase):\n"
        "    def test_relu(self):\n"
        "        workspace.FeedBlob('X', np.array([-1.0, 2.0], dtype=np.float32))\n"
        "        workspace.RunOperatorOnce(core.CreateOperator('Relu', ['X'], ['Y']))\n"
        "        np.testing.assert_allclose(workspace.FetchBlob('Y'), [0.0, 2.0])\n\n"
        "    def test_missing_op(self):\n"
        "        workspace.RunOperatorOnce(core.CreateOperator('NoSuchOpAtAll', [], ['Y']))\n\n"
        "    @unittest.skip('No gpu support')\n"
        "    def test_gpu(self):\n"
        "        pass\n\n"
        "    def test_wrong(self):\n"
        "        np.testing.assert_allclose(np.zeros(2), np.ones(2))\n"
    )
    (ops / "broken_test.py").write_text("from caffe2.python import no_such_module_here\n\ndef test_a():\n    pass\n")
    return tmp_path


@pytest.fixture
def finder(fake_upstream: Path) -> Iterator[Any]:
    saved = {k: v for k, v in sys.modules.items() if k == "caffe2" or k.startswith("caffe2.")}
    f = plugin.Caffe2Finder(fake_upstream)
    sys.meta_path.insert(0, f)
    try:
        yield f
    finally:
        sys.meta_path.remove(f)
        for k in [k for k in sys.modules if k == "caffe2" or k.startswith("caffe2.")]:
            del sys.modules[k]
        sys.modules.update(saved)


def test_hook_serves_compat_modules_and_upstream_files(finder: Any, fake_upstream: Path) -> None:
    from asyncnet.compat import caffe2_pb2, core, workspace

    assert importlib.import_module("caffe2.python.core") is core
    assert importlib.import_module("caffe2.python.workspace") is workspace
    assert importlib.import_module("caffe2.proto.caffe2_pb2") is caffe2_pb2
    helper = importlib.import_module("caffe2.python.helper_util")
    assert helper.CORE is core
    assert Path(helper.__file__).is_relative_to(fake_upstream)
    c_ext = importlib.import_module("caffe2.python._import_c_extension")
    assert c_ext.has_gpu_support is False
    assert callable(c_ext.Workspace)
    assert importlib.import_module("caffe2.python.dyndep").InitOpsLibrary("@/caffe2/foo:bar") is None


def test_hook_skips_compat_modules_asyncnet_does_not_have(fake_upstream: Path) -> None:
    f = plugin.Caffe2Finder(fake_upstream, {"caffe2.python.core": "asyncnet.compat.core", "caffe2.python.x": "a.b"})
    assert set(f.compat) == {"caffe2.python.core"}


@pytest.mark.parametrize(
    ("rec", "expected"),
    [
        (
            {"exc_type": "UnknownOperatorError", "message": "op #0 Foo: unknown operator type 'Foo'"},
            ("missing-op", "Foo"),
        ),
        (
            {"exc_type": "UnknownOpAttributeError", "message": "Method SparseFoo is not a registered operator."},
            ("missing-op", "SparseFoo"),
        ),
        (
            {"exc_type": "GradientError", "message": "x: no gradient is registered for operator type 'Bar' (it"},
            ("missing-grad", "Bar"),
        ),
        (
            {"exc_type": "AttributeError", "message": "module 'asyncnet.compat.workspace' has no attribute 'Zap'"},
            ("compat-api", "workspace.Zap"),
        ),
        (
            {"exc_type": "ImportError", "message": "cannot import name 'Foo' from 'asyncnet.compat.core' (x.py)"},
            ("compat-api", "core.Foo"),
        ),
        (
            {
                "exc_type": "TypeError",
                "message": "CreateNet() got an unexpected keyword argument 'zz'",
                "asyncnet_frame": "compat/workspace.py:CreateNet",
            },
            ("compat-api", "CreateNet(zz=)"),
        ),
        ({"exc_type": "Failed", "message": "Timeout (>120.0s) from pytest-timeout."}, ("timeout", "per-test timeout")),
        (
            {"exc_type": "AssertionError", "message": "Not equal", "nodeid": "a/b/x_test.py::T::t"},
            ("wrong-result", "x_test.py"),
        ),
    ],
)
def test_classify(rec: dict[str, Any], expected: tuple[str, str]) -> None:
    rec = {"nodeid": "a/b/x_test.py::T::t", "when": "call", "outcome": "failed", **rec}
    assert suite.classify(rec) == expected


@pytest.mark.timeout(120)
def test_end_to_end_on_synthetic_tree(fake_upstream: Path, tmp_path: Path) -> None:
    report = tmp_path / "r.md"
    results = tmp_path / "r.jsonl"
    cmd = [sys.executable, str(TOOLS / "caffe2_suite.py"), "--upstream", str(fake_upstream)]
    cmd += ["--results", str(results), "--report", str(report), "--timeout", "60"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=110)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(report.with_suffix(".json").read_text())
    assert data["collected"] == 4
    assert (data["passed"], data["failed"], data["skipped_accelerator"]) == (1, 2, 1)
    # broken_test.py fails to import: its one `def test_` counts as an error.
    assert data["uncollected"] == 1
    assert data["denominator"] == 4 + 1 - 1
    classes = {(c["category"], c["key"]): c["tests"] for c in data["classes"]}
    assert classes[("missing-op", "NoSuchOpAtAll")] == 1
    assert classes[("wrong-result", "toy_test.py")] == 1
    # The module exists neither in asyncnet.compat nor in the (synthetic) wheel.
    assert classes[("environment", "not in the wheel: caffe2.python.no_such_module_here")] == 1
    assert "metric: 1 / 4 = 25.0%" in report.read_text()


def test_classify_environment_failures_only_outside_asyncnet() -> None:
    rec = {"nodeid": "x_test.py::T::t", "when": "call", "outcome": "failed", "exc_type": "ValueError"}
    rec["message"] = "setting an array element with a sequence."
    assert suite.classify(rec) == ("environment", "numpy 2: array-to-scalar assignment")
    rec["asyncnet_frame"] = "ops/sparse.py:run"
    assert suite.classify(rec)[0] == "asyncnet-error"


def test_modules_missing_from_the_wheel_are_environment(fake_upstream: Path) -> None:
    shipped = suite.shipped_modules(fake_upstream)
    assert shipped is not None and "caffe2.python.helper_util" in shipped and "caffe2.python" in shipped
    rec = {"nodeid": "x_test.py", "when": "collect", "outcome": "failed"}
    rec["message"] = "E   ImportError: cannot import name 'hsm_pb2' from 'caffe2.proto' (unknown location)"
    assert suite.classify(rec, shipped) == ("environment", "not in the wheel: caffe2.proto.hsm_pb2")
    rec["message"] = "E   ImportError: cannot import name 'helper_util' from 'caffe2.python' (unknown location)"
    assert suite.classify(rec, shipped)[0] == "compat-api"


@pytest.mark.timeout(120)
def test_a_hung_test_is_recorded_and_the_rest_still_runs(tmp_path: Path) -> None:
    up = tmp_path / "up"
    ops = up / "caffe2" / "python" / "operator_test"
    ops.mkdir(parents=True)
    (ops / "__init__.py").write_text("")
    # test_a swallows pytest-timeout's exception (as a deadlocked plan's wait loop did).
    (ops / "hang_test.py").write_text(
        "import threading\n\n"
        "def test_a():\n"
        "    ev = threading.Event()\n"
        "    while True:\n"
        "        try:\n"
        "            ev.wait()\n"
        "        except BaseException:\n"
        "            pass\n\n"
        "def test_b():\n"
        "    assert True\n"
    )
    report = tmp_path / "r.md"
    cmd = [sys.executable, str(TOOLS / "caffe2_suite.py"), "--upstream", str(up), "--timeout", "1"]
    cmd += ["--hang-grace", "2", "--results", str(tmp_path / "r.jsonl"), "--report", str(report)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=100)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(report.with_suffix(".json").read_text())
    assert data["tests"]["caffe2/python/operator_test/hang_test.py::test_b"]["status"] == "passed"
    hung = data["tests"]["caffe2/python/operator_test/hang_test.py::test_a"]
    assert (hung["status"], hung["category"], hung["key"]) == ("failed", "timeout", "hung (test process ended)")
