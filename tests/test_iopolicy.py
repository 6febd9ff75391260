"""IOPolicy: path resolution, escapes refused, permissive default; child workspaces."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from asyncnet import Workspace
from asyncnet.errors import AsyncNetError, FileAccessError
from asyncnet.iopolicy import IOPolicy
from asyncnet.proto import caffe2_pb2 as pb


def _save_op(db: str) -> pb.OperatorDef:
    op = pb.OperatorDef(type="Save", input=["x"])
    op.arg.add(name="db", s=db.encode())
    op.arg.add(name="db_type", s=b"minidb")
    op.arg.add(name="absolute_path", i=1)
    return op


def test_restricted_policy_refuses_escapes(tmp_path: Path) -> None:
    inside = tmp_path / "in"
    inside.mkdir()
    (tmp_path / "secret").write_text("x")
    os.symlink(tmp_path / "secret", inside / "link")
    policy = IOPolicy.restricted(read=[inside], write=[inside])
    assert policy.check_read(inside / "a.minidb") == str((inside / "a.minidb").resolve())
    for bad in (inside / ".." / "secret", tmp_path / "secret", inside / "link"):
        with pytest.raises(FileAccessError, match="outside the folders allowed"):
            policy.check_read(bad, who="op #0 Load")
        assert not policy.allows_write(bad)
    assert isinstance(FileAccessError("m"), AsyncNetError) and isinstance(FileAccessError("m"), PermissionError)


def test_workspace_policy_applies_to_save_and_default_is_permissive(tmp_path: Path) -> None:
    target = tmp_path / "out.minidb"
    ws = Workspace(io_policy=IOPolicy.restricted(read=[tmp_path / "only"], write=[tmp_path / "only"]))
    ws.feed("x", np.ones(2, np.float32))
    with pytest.raises(FileAccessError, match=r"Save.*refusing to write"):
        ws.run_operator_once(_save_op(str(target)))
    assert not target.exists()
    free = Workspace()
    free.feed("x", np.ones(2, np.float32))
    free.run_operator_once(_save_op(str(target)))
    assert target.exists()


def test_child_workspace_shares_parent_blobs_and_keeps_its_own() -> None:
    parent = Workspace(io_policy=IOPolicy.restricted(read=["."], write=["."]))
    w = np.arange(3, dtype=np.float32)
    parent.feed("w", w)
    child = Workspace(parent=parent)
    assert child.io_policy is parent.io_policy
    assert child.fetch("w") is w and child.cell("w") is parent.cell("w")
    child.feed("y", np.zeros(1))
    assert child.has("y") and not parent.has("y")
    assert child.blobs() == ["w", "y"] and child.local_blobs() == ["y"]
    with pytest.raises(KeyError, match="parent workspace"):
        child.remove("w")
