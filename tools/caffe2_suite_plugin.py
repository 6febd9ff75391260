"""pytest plugin for tools/caffe2_suite.py: Caffe2's Python modules served by asyncnet.compat.

Loaded with ``-p caffe2_suite_plugin`` (tools/ on PYTHONPATH) in the pytest subprocess that runs
Caffe2's own operator tests unmodified. It

* installs a meta-path finder that serves ``caffe2.python.core``, ``workspace``, ``brew``, ...
  and ``caffe2.proto.caffe2_pb2`` from :mod:`asyncnet.compat`, the C extension
  (``caffe2.python._import_c_extension``) and ``dyndep`` from small stand-ins, and everything
  else (hypothesis_test_util, gradient_checker, serialized_test, the test files) from the
  upstream tree given by ``CAFFE2_SUITE_UPSTREAM``; the ``caffe2`` / ``caffe2.python`` /
  ``caffe2.proto`` packages are created empty (their upstream ``__init__`` loads torch's build);
* restores what the suite's 2022 environment had: numpy's removed aliases (np.float, np.int,
  np.object, np.str, np.asscalar; numpy < 1.24) and the ``future`` / ``past`` py2-compat
  helpers it imports (``viewitems``, ``basestring``) when they are not installed;
* appends one JSON line per test phase to ``CAFFE2_SUITE_RESULTS`` (outcome, exception type and
  message, the innermost asyncnet frame, skip reason) for the report.
"""

from __future__ import annotations

import builtins
import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import json
import os
import sys
import traceback
import types
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

# caffe2 module name -> asyncnet module serving it (used only when that asyncnet module exists).
COMPAT_MODULES: dict[str, str] = {
    "caffe2.proto.caffe2_pb2": "asyncnet.compat.caffe2_pb2",
    "caffe2.python.core": "asyncnet.compat.core",
    "caffe2.python.workspace": "asyncnet.compat.workspace",
    "caffe2.python.brew": "asyncnet.compat.brew",
    "caffe2.python.model_helper": "asyncnet.compat.model_helper",
    "caffe2.python.optimizer": "asyncnet.compat.optimizer",
    "caffe2.python.scope": "asyncnet.compat.scope",
    "caffe2.python.rnn_cell": "asyncnet.compat.rnn_cell",
    "caffe2.python.recurrent": "asyncnet.compat.recurrent",
    "caffe2.python.control_ops_util": "asyncnet.compat.control_ops_util",
    "caffe2.python.data_parallel_model": "asyncnet.compat.data_parallel_model",
    "caffe2.python.net_builder": "asyncnet.compat.net_builder",
    "caffe2.python.control": "asyncnet.compat.control",
    "caffe2.python.control_ops_grad": "asyncnet.compat.control_ops_grad",
    "caffe2.python.modeling.initializers": "asyncnet.compat.initializers",
    "caffe2.python._import_c_extension": "caffe2_suite_plugin:c_extension",
    "caffe2.python.caffe2_pybind11_state": "caffe2_suite_plugin:c_extension",
    "caffe2.python.dyndep": "caffe2_suite_plugin:dyndep",
}
# Packages created empty, searched in the upstream tree.
SYNTHETIC_PACKAGES = {"caffe2": "caffe2", "caffe2.python": "caffe2/python", "caffe2.proto": "caffe2/proto"}


def c_extension() -> types.ModuleType:
    """Glue for ``caffe2.python._import_c_extension``: the pybind functions upstream modules call,
    forwarded to asyncnet.compat (``workspace.C`` is asyncnet.compat.c_ext)."""
    from asyncnet.compat import c_ext, workspace

    mod = types.ModuleType("caffe2.python._import_c_extension")
    mod.__dict__.update({k: v for k, v in vars(c_ext).items() if not k.startswith("_")})
    forwards = {
        "blobs": workspace.Blobs,
        "create_blob": workspace.CreateBlob,
        "current_workspace": workspace.CurrentWorkspace,
        "global_init": workspace.GlobalInit,
        "has_blob": workspace.HasBlob,
        "registered_operators": workspace.RegisteredOperators,
        "switch_workspace": workspace.SwitchWorkspace,
        "root_folder": workspace.RootFolder,
        "workspaces": workspace.Workspaces,
        "reset_workspace": workspace.ResetWorkspace,
        "fetch_blob": workspace.FetchBlob,
        "num_cuda_devices": workspace.NumCudaDevices,
        "num_hip_devices": workspace.NumHipDevices,
    }
    mod.__dict__.update(forwards)
    mod.has_cuda_support = mod.has_hip_support = mod.has_gpu_support = False
    return mod


def dyndep() -> types.ModuleType:
    """Glue for ``caffe2.python.dyndep``: every op lives in asyncnet's registry, so loading an ops
    library is a no-op."""
    mod = types.ModuleType("caffe2.python.dyndep")

    def InitOpsLibrary(name: str, trigger_lazy: bool = True) -> None:
        return None

    mod.InitOpsLibrary = InitOpsLibrary  # type: ignore[attr-defined]
    mod.GetImportedOpsLibraries = lambda: set()  # type: ignore[attr-defined]
    return mod


def _exists(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


class _AliasLoader(importlib.abc.Loader):
    def __init__(self, target: str) -> None:
        self.target = target

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType | None:
        return None

    def exec_module(self, module: types.ModuleType) -> None:
        if ":" in self.target:
            factory = getattr(sys.modules[__name__], self.target.split(":", 1)[1])
            real = factory()
        else:
            real = importlib.import_module(self.target)
        # importlib returns whatever sys.modules holds after exec_module: the asyncnet module itself.
        sys.modules[module.__name__] = real


class _PackageLoader(importlib.abc.Loader):
    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType | None:
        return None

    def exec_module(self, module: types.ModuleType) -> None:
        return None


class Caffe2Finder(importlib.abc.MetaPathFinder):
    """Serves caffe2 modules from asyncnet.compat, empty caffe2 packages, the rest from ``upstream``."""

    def __init__(self, upstream: Path, compat: dict[str, str] | None = None) -> None:
        self.upstream = upstream
        self.compat = dict(COMPAT_MODULES if compat is None else compat)
        for name, target in list(self.compat.items()):
            if ":" not in target and not _exists(target):
                del self.compat[name]  # asyncnet has no stand-in: the upstream module is used

    def find_spec(
        self, fullname: str, path: Sequence[str] | None = None, target: types.ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname in self.compat:
            return importlib.machinery.ModuleSpec(fullname, _AliasLoader(self.compat[fullname]))
        if fullname in SYNTHETIC_PACKAGES:
            spec = importlib.machinery.ModuleSpec(fullname, _PackageLoader(), is_package=True)
            spec.submodule_search_locations = [str(self.upstream / SYNTHETIC_PACKAGES[fullname])]
            return spec
        return None


def install(upstream: Path) -> Caffe2Finder:
    """Put the finder first on sys.meta_path (and the environment shims in place)."""
    finder = Caffe2Finder(upstream)
    sys.meta_path.insert(0, finder)
    _numpy_aliases()
    _py2_compat_modules()
    _hypothesis_arrays_positional_elements()
    _torch_ops()
    return finder


def _adjust_profile() -> None:
    """Keep the active hypothesis profile (the one upstream's hypothesis_test_util loaded: its
    max_examples and deadline) with two changes for this harness:

    * no shrink phase: shrinking only searches for a smaller failing example (it never turns a
      failure into a pass) and takes minutes per failing test on a busy machine
      (CAFFE2_SUITE_SHRINK=1 keeps it);
    * the ``differing_executors`` health check is suppressed: it came with hypothesis 6.70 (2023),
      after Caffe2's tests were written, and fails every test inherited by several TestCase classes.
    """
    import hypothesis

    name = getattr(hypothesis.settings, "_current_profile", None)
    if not name:
        return
    current = hypothesis.settings.get_profile(name)
    phases = current.phases
    if os.environ.get("CAFFE2_SUITE_SHRINK", "0") != "1":
        phases = tuple(p for p in phases if p is not hypothesis.Phase.shrink)
    suppress = list(current.suppress_health_check)
    differing = getattr(hypothesis.HealthCheck, "differing_executors", None)
    if differing is not None and differing not in suppress:
        suppress.append(differing)
    if phases == current.phases and suppress == list(current.suppress_health_check):
        return
    hypothesis.settings.register_profile(name, current, phases=phases, suppress_health_check=suppress)
    hypothesis.settings.load_profile(name)


def _hypothesis_arrays_positional_elements() -> None:
    """hypothesis.extra.numpy.arrays took ``elements`` as its third positional argument when the
    suite was written (keyword-only since hypothesis 6.x); accept both."""
    import hypothesis.extra.numpy as hnp

    original = hnp.arrays
    if getattr(original, "_caffe2_suite", False):
        return

    def arrays(dtype: Any, shape: Any, *args: Any, **kwargs: Any) -> Any:
        if args:
            kwargs.setdefault("elements", args[0])
            if len(args) > 1:
                kwargs.setdefault("fill", args[1])
        return original(dtype, shape, **kwargs)

    arrays._caffe2_suite = True  # type: ignore[attr-defined]
    hnp.arrays = arrays


def _torch_ops() -> None:
    """Caffe2-enabled torch builds had ``torch.ops._caffe2.*`` once caffe2 was loaded: define
    asyncnet's (asyncnet.compat.torch_ops) when torch is installed."""
    try:
        import torch  # noqa: F401
    except ImportError:
        return
    from asyncnet.compat.torch_ops import register_torch_ops

    register_torch_ops()


def _numpy_aliases() -> None:
    import numpy as np

    for name, value in {"float": float, "int": int, "object": object, "str": str, "bool": bool, "long": int}.items():
        if name not in np.__dict__:
            setattr(np, name, value)
    if "asscalar" not in np.__dict__:
        np.asscalar = lambda a: a.item()  # type: ignore[attr-defined]


def _py2_compat_modules() -> None:
    try:
        import future.utils  # noqa: F401
    except ImportError:
        future = types.ModuleType("future")
        utils = types.ModuleType("future.utils")
        utils.viewitems = lambda d: d.items()  # type: ignore[attr-defined]
        utils.viewkeys = lambda d: d.keys()  # type: ignore[attr-defined]
        utils.viewvalues = lambda d: d.values()  # type: ignore[attr-defined]
        future.utils = utils  # type: ignore[attr-defined]
        sys.modules["future"] = future
        sys.modules["future.utils"] = utils
    try:
        import past.builtins  # noqa: F401
    except ImportError:
        past = types.ModuleType("past")
        builtins = types.ModuleType("past.builtins")
        builtins.basestring = (str, bytes)  # type: ignore[attr-defined]
        past.builtins = builtins  # type: ignore[attr-defined]
        sys.modules["past"] = past
        sys.modules["past.builtins"] = builtins
    try:
        import six  # noqa: F401
    except ImportError:
        import io

        six_mod = types.ModuleType("six")
        six_mod.__dict__.update(
            integer_types=(int,), binary_type=bytes, text_type=str, string_types=(str,), StringIO=io.StringIO
        )
        sys.modules["six"] = six_mod


# ---------------------------------------------------------------- result recording


def _asyncnet_frame(tb: Any) -> str:
    """``path:function`` of the innermost traceback frame inside asyncnet ("" when none)."""
    last = ""
    for frame in traceback.extract_tb(tb):
        norm = frame.filename.replace(os.sep, "/")
        if "/asyncnet/" in norm:
            last = f"{norm.split('/asyncnet/', 1)[1]}:{frame.name}"
    return last


def _innermost_frame(tb: Any) -> str:
    frames = traceback.extract_tb(tb)
    if not frames:
        return ""
    f = frames[-1]
    return f"{Path(f.filename).name}:{f.name}"


def _root_exception(exc: BaseException) -> BaseException:
    """Hypothesis wraps several distinct failures in an ExceptionGroup: take the first leaf."""
    group = getattr(builtins, "BaseExceptionGroup", None)  # Python >= 3.11
    while group is not None and isinstance(exc, group) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


_results_path = os.environ.get("CAFFE2_SUITE_RESULTS", "")
_upstream = os.environ.get("CAFFE2_SUITE_UPSTREAM", "")
if _upstream:
    install(Path(_upstream))


def _write(record: dict[str, Any]) -> None:
    if _results_path:
        with open(_results_path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: Any, call: Any) -> Any:
    """Record each phase's outcome with its exception (pytest's own report stays untouched)."""
    outcome = yield
    report = outcome.get_result()
    if report.passed and call.when != "call":
        return
    rec: dict[str, Any] = {"nodeid": item.nodeid, "when": call.when, "duration": round(call.duration, 3)}
    rec["outcome"] = report.outcome
    if report.skipped:
        longrepr = report.longrepr
        rec["reason"] = str(longrepr[2] if isinstance(longrepr, tuple) else longrepr)[:300]
    elif report.failed and call.excinfo is not None:
        exc = _root_exception(call.excinfo.value)
        rec["exc_type"] = type(exc).__name__
        rec["exc_module"] = type(exc).__module__
        rec["message"] = str(exc)[:2000]
        tb = exc.__traceback__ or call.excinfo.tb
        rec["asyncnet_frame"] = _asyncnet_frame(tb)
        rec["frame"] = _innermost_frame(tb)
    elif report.failed:
        rec["exc_type"] = "Failed"
        rec["message"] = str(report.longrepr)[-2000:]
    _write(rec)


def pytest_configure(config: Any) -> None:
    _adjust_profile()


def pytest_collection_finish(session: Any) -> None:
    _adjust_profile()


_running: dict[str, Any] = {}


def _watchdog(limit: float) -> None:
    """pytest-timeout's SIGALRM cannot interrupt a main thread stuck waiting on other threads (a
    deadlocked plan); after ``limit`` seconds on one test, record it as a timeout and end the
    process (the harness resumes with the remaining tests)."""
    import time

    while True:
        time.sleep(2)
        current = dict(_running)
        if current and time.monotonic() - current["start"] > limit:
            _write(
                {
                    "nodeid": current["nodeid"],
                    "when": "call",
                    "outcome": "failed",
                    "exc_type": "Timeout",
                    "message": f"hung: no result after {limit:.0f} s (the test process was ended)",
                }
            )
            os._exit(3)


if os.environ.get("CAFFE2_SUITE_HARD_TIMEOUT"):
    import threading

    threading.Thread(
        target=_watchdog, args=(float(os.environ["CAFFE2_SUITE_HARD_TIMEOUT"]),), daemon=True, name="c2suite-watchdog"
    ).start()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: Any, nextitem: Any) -> Any:
    import time

    _running.update(nodeid=item.nodeid, start=time.monotonic())
    yield
    _running.clear()


def pytest_runtest_setup(item: Any) -> None:
    """Each test starts in the default workspace, as in a fresh process: upstream's temp_workspace()
    does not switch back when its body raises, which would leak one failure into later tests."""
    ws = sys.modules.get("caffe2.python.workspace")
    if ws is not None and ws.CurrentWorkspace() != "default":
        ws.SwitchWorkspace("default", True)


def pytest_collectreport(report: Any) -> None:
    if report.failed:
        _write(
            {
                "nodeid": report.nodeid,
                "when": "collect",
                "outcome": "failed",
                "message": str(report.longrepr)[-2000:],
            }
        )


def pytest_collection_modifyitems(items: list[Any]) -> None:
    for item in items:
        _write({"nodeid": item.nodeid, "when": "collected", "outcome": "collected"})
