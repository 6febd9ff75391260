"""The table of file-touching ops, the audit built on it, and the workspace policy in subnets and plans."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from google.protobuf import text_format

from asyncnet import Workspace
from asyncnet.errors import FileAccessError
from asyncnet.fileaccess import (
    check_accesses,
    file_ops,
    format_accesses,
    net_file_accesses,
    plan_file_accesses,
)
from asyncnet.iopolicy import IOPolicy
from asyncnet.plan import PlanRunner
from asyncnet.proto import caffe2_pb2 as pb
from asyncnet.registry import default_registry


def _net(text: str) -> pb.NetDef:
    return text_format.Parse(text, pb.NetDef())


def _save(db: str, *, absolute: int = 1) -> str:
    return (
        f'op {{ input: "x" type: "Save" arg {{ name: "db" s: "{db}" }} '
        f'arg {{ name: "db_type" s: "minidb" }} arg {{ name: "absolute_path" i: {absolute} }} }}'
    )


def _if_net(inner: str) -> pb.NetDef:
    return _net(
        'external_input: "c" external_input: "x" '
        f'op {{ input: "c" input: "x" type: "If" arg {{ name: "then_net" n {{ name: "t" {inner} }} }} }}'
    )


def test_every_declared_path_argument_is_in_the_op_schema() -> None:
    reg = default_registry()
    table = file_ops()
    assert {"Save", "Load", "DBExists", "Checkpoint", "Snapshot", "AsyncReadFile"} <= set(table)
    for op_type, paths in table.items():
        names = set(reg.schema(op_type).arg_map)
        assert paths and all(p.name in names for p in paths), (op_type, [p.name for p in paths], sorted(names))


def test_audit_resolves_db_paths_like_the_ops(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tmp_path = tmp_path.resolve()
    monkeypatch.chdir(tmp_path)
    net = _net(
        _save("rel.minidb", absolute=0)
        + 'op { output: "a" output: "b" type: "Load" arg { name: "dbs" strings: "one.minidb" strings: "../two.minidb" }'
        ' arg { name: "db_type" s: "minidb" } }'
    )
    got = [(a.mode, a.arg, a.path, a.resolved) for a in net_file_accesses(net)]
    assert got == [
        ("write", "db", "./rel.minidb", str(tmp_path / "rel.minidb")),
        ("read", "dbs", "./one.minidb", str(tmp_path / "one.minidb")),
        ("read", "dbs", "./../two.minidb", str(tmp_path.parent / "two.minidb")),
    ]
    assert [a.path for a in net_file_accesses(net, root="/data")][0] == "/data/rel.minidb"
    policy = IOPolicy.restricted(read=[tmp_path], write=[tmp_path])
    lines = format_accesses(net_file_accesses(net), policy)
    assert lines[0] == "file access (3):" and sum("REFUSED" in ln for ln in lines) == 1
    with pytest.raises(FileAccessError, match=r"1 file access\(es\).*op #1 Load would read './../two.minidb'"):
        check_accesses(net_file_accesses(net), policy)


def test_plan_audit_walks_every_net_and_subnet(tmp_path: Path) -> None:
    plan = pb.PlanDef(name="p")
    plan.network.add().CopyFrom(_if_net(_save(str(tmp_path / "a.minidb"))))
    plan.network[0].name = "n0"
    where = [a.where for a in plan_file_accesses(plan)]
    assert where == ["plan net 'n0': op #0 If then_net 't': op #0 Save"]


def test_workspace_policy_reaches_if_branches_and_plans(tmp_path: Path) -> None:
    inside, outside = tmp_path / "in", tmp_path / "out.minidb"
    inside.mkdir()
    policy = IOPolicy.restricted(read=[inside], write=[inside])
    feeds = {"c": np.array(True), "x": np.ones(2, np.float32)}
    ws = Workspace(io_policy=policy)
    for k, v in feeds.items():
        ws.feed(k, v)
    with pytest.raises(FileAccessError, match=r"Save.*refusing to write"):
        ws.run_net_once(_if_net(_save(str(outside))))
    plan = pb.PlanDef(name="p")
    plan.network.add().CopyFrom(_net('name: "w" external_input: "x" ' + _save(str(outside))))
    plan.execution_step.add(name="s", network=["w"])
    with pytest.raises(FileAccessError, match="refusing to write"):
        PlanRunner(ws, plan).run()
    child = Workspace(parent=ws)
    with pytest.raises(FileAccessError):
        child.run_net_once(_if_net(_save(str(outside))))
    assert not outside.exists()
    # The Python default stays Caffe2's: any path.
    free = Workspace()
    for k, v in feeds.items():
        free.feed(k, v)
    free.run_net_once(_if_net(_save(str(outside))))
    PlanRunner(free, plan).run()
    assert outside.exists()


def test_unresolvable_paths_are_refused_not_crashes(tmp_path: Path) -> None:
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    policy = IOPolicy.restricted(read=[tmp_path], write=[tmp_path])
    for bad in ("a\0b", loop / "x"):
        with pytest.raises(FileAccessError, match="cannot resolve the path"):
            policy.check_write(bad)
    with pytest.raises(FileAccessError, match="cannot resolve"):
        net_file_accesses(_net(_save("x\\000y")))


def test_ops_added_later_join_the_table_print_to_file_and_text_reader(tmp_path: Path) -> None:
    net = pb.NetDef(name="n")
    p = net.op.add(type="Print", input=["x"])
    p.arg.add(name="to_file", i=1)
    net.op.add(type="Print", input=["y"])  # logs only: no file
    r = net.op.add(type="CreateTextFileReader", output=["h"])
    r.arg.add(name="filename", s=b"/etc/passwd")
    got = [(a.op_type, a.mode, a.path) for a in net_file_accesses(net)]
    assert got == [("Print", "write", "x.log"), ("CreateTextFileReader", "read", "/etc/passwd")]
    policy = IOPolicy.restricted(read=[tmp_path], write=[tmp_path])
    with pytest.raises(FileAccessError, match=r"CreateTextFileReader.*would read '/etc/passwd'"):
        check_accesses(net_file_accesses(net), policy)
