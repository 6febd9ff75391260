"""No code from files: a net naming Python code is refused and imports nothing."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from asyncnet.cli import main
from asyncnet.errors import UnknownOperatorError
from asyncnet.net import Net
from asyncnet.proto import caffe2_pb2 as pb
from asyncnet.serde import make_argument, write_message
from asyncnet.workspace import Workspace

HOSTILE_MODULE = "asyncnet_hostile_module_that_must_not_load"


def _hostile_net(op_type: str) -> pb.NetDef:
    net = pb.NetDef(name="hostile")
    op = net.op.add(type=op_type, input=["x"], output=["y"])
    op.arg.extend(
        [
            make_argument("func", "os.system"),
            make_argument("token", f"{HOSTILE_MODULE}:run"),
            make_argument("pickled_func", b"cos\nsystem\n(S'echo pwned'\ntR."),
        ]
    )
    net.external_input.append("x")
    return net


@pytest.mark.parametrize("op_type", ["Python", "PythonGradient", "PythonDLPack"])
def test_python_ops_are_unknown_and_import_nothing(op_type: str) -> None:
    before = set(sys.modules)
    ws = Workspace()
    ws.feed("x", np.ones(2, np.float32))
    with pytest.raises(UnknownOperatorError, match=op_type):
        Net(_hostile_net(op_type), ws)
    assert HOSTILE_MODULE not in sys.modules
    new = {m for m in set(sys.modules) - before if not m.startswith(("asyncnet", "numpy", "google"))}
    assert not new, f"preparing a hostile net imported {sorted(new)}"
    assert not ws.has("y")


def test_cli_refuses_python_op(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "hostile.pb"
    write_message(_hostile_net("Python"), path)
    inputs = tmp_path / "in.npz"
    np.savez(inputs, x=np.ones(2, np.float32))
    assert main(["run", str(path), "--inputs", str(inputs)]) == 1
    err = capsys.readouterr().err
    assert "unknown operator type 'Python'" in err
    assert HOSTILE_MODULE not in sys.modules


def test_npz_inputs_are_never_unpickled(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    net = pb.NetDef(name="copy")
    net.op.add(type="Copy", input=["x"], output=["y"])
    path = tmp_path / "copy.pbtxt"
    write_message(net, path)
    inputs = tmp_path / "obj.npz"
    np.savez(inputs, x=np.array([{"a": 1}], dtype=object))
    assert main(["run", str(path), "--inputs", str(inputs)]) == 1
    assert "object arrays are refused" in capsys.readouterr().err


def _scan(source: str, path: str) -> list[str]:
    """Places in library source that could run code taken from a file."""
    import ast

    found = []
    for node in ast.walk(ast.parse(source, path)):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            found += [f"{path}:{node.lineno} imports {n}" for n in names if n.split(".")[0] in UNSAFE_MODULES]
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
        if name in ("eval", "exec", "compile", "__import__") and isinstance(func, ast.Name):
            found.append(f"{path}:{node.lineno} calls {name}()")
        if name == "import_module":
            arg = node.args[0] if node.args else None
            fixed = (
                isinstance(arg, ast.Constant)
                or (
                    isinstance(arg, ast.JoinedStr)
                    and isinstance(arg.values[0], ast.Constant)
                    and str(arg.values[0].value).startswith("asyncnet.")
                )
                or (
                    isinstance(arg, ast.JoinedStr)
                    and isinstance(arg.values[0], ast.FormattedValue)
                    and ast.unparse(arg.values[0].value) == "__name__"
                )
            )
            if not fixed:
                found.append(f"{path}:{node.lineno} imports a module named at run time")
        if name == "load" and isinstance(func, ast.Attribute) and ast.unparse(func.value) in ("np", "numpy"):
            kw = {k.arg: k.value for k in node.keywords}
            if not (isinstance(kw.get("allow_pickle"), ast.Constant) and kw["allow_pickle"].value is False):
                found.append(f"{path}:{node.lineno} calls np.load without allow_pickle=False")
    return found


UNSAFE_MODULES = {"pickle", "cPickle", "dill", "marshal", "shelve", "yaml", "joblib", "cloudpickle"}


def test_library_source_never_runs_code_from_files() -> None:
    root = Path(__file__).resolve().parents[2] / "asyncnet"
    problems = []
    for path in sorted(root.rglob("*.py")):
        if path.name.endswith("_pb2.py"):
            continue
        problems += _scan(path.read_text(encoding="utf-8"), str(path.relative_to(root.parent)))
    assert not problems, problems


def test_scanner_catches_unsafe_code() -> None:
    bad = (
        "import pickle\nimport importlib\neval('1')\nimportlib.import_module(name)\n"
        "import numpy as np\nnp.load('x.npz')\n"
    )
    assert len(_scan(bad, "bad.py")) == 4
