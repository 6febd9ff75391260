"""Dependency analysis (asyncnet.graph): hazards, pruning, chains, the readable dump."""

from __future__ import annotations

from pathlib import Path

import pytest

from asyncnet.cli import main
from asyncnet.graph import OpNode, analyze, build_graph, dependencies, describe_graph, nodes_of, prune
from asyncnet.opinfo import DeviceKey
from asyncnet.proto import caffe2_pb2 as pb
from asyncnet.serde import read_net

NETS = Path(__file__).resolve().parents[1] / "nets"


def n(ins: str = "", outs: str = "", ctl: str = "", dev: int = 0) -> OpNode:
    return OpNode(tuple(ins.split()), tuple(outs.split()), tuple(ctl.split()), DeviceKey(dev))


def test_read_after_write() -> None:
    assert dependencies([n("", "a"), n("a", "b"), n("b", "c")]) == [[], [0], [1]]


def test_write_after_write_and_write_after_read() -> None:
    # 1 reads a; 2 overwrites a: must wait for the reader (WAR) and the first writer (WAW)
    deps = dependencies([n("", "a"), n("a", "b"), n("", "a")])
    assert deps == [[], [0], [0, 1]]
    # after pruning the WAW edge 0->2 is implied by 0->1->2
    assert prune(deps) == [[], [0], [1]]


def test_in_place_op_is_not_its_own_parent_or_reader() -> None:
    deps = dependencies([n("", "x"), n("x", "x"), n("x", "x"), n("x", "y")])
    assert deps == [[], [0], [1], [2]]
    g = build_graph([n("", "x"), n("x", "x"), n("x", "x"), n("x", "y")])
    assert g.chains == ((0, 1, 2, 3),)


def test_readers_since_last_write_only() -> None:
    # reader 1 of the old a is not a parent of 4 (3 rewrote a after it, and 3 waits for 1)
    deps = dependencies([n("", "a"), n("a", "b"), n("a", "c"), n("", "a"), n("", "a")])
    assert deps[3] == [0, 1, 2]
    assert deps[4] == [3]


def test_control_input_orders_like_a_read() -> None:
    deps = dependencies([n("", "a"), n("", "b", ctl="a"), n("", "a")])
    assert deps == [[], [0], [0, 1]]


def test_independent_ops_have_no_edges() -> None:
    g = build_graph([n("x", "a"), n("x", "b"), n("a b", "c")])
    assert g.parents == ((), (), (0, 1))
    assert g.children == ((2,), (2,), ())
    assert len(g.chains) == 3 and g.roots() == [0, 1]


def test_prune_removes_only_implied_edges() -> None:
    assert prune([[], [0], [0, 1], [0, 2]]) == [[], [0], [1], [2]]
    assert prune([[], [], [0, 1]]) == [[], [], [0, 1]]


def test_chains_break_at_fan_out_fan_in_device_and_breaks() -> None:
    nodes = [n("x", "a"), n("a", "b"), n("b", "c"), n("b", "d"), n("c d", "e"), n("e", "f", dev=1), n("f", "g", dev=1)]
    g = build_graph(nodes)
    assert g.chains == ((0, 1), (2,), (3,), (4,), (5, 6))
    assert g.chain_parents == ((), (0,), (0,), (1, 2), (3,))
    assert g.chain_of == (0, 0, 1, 2, 3, 4, 4)
    g2 = build_graph([n("x", "a"), n("a", "b"), n("b", "c")], chain_breaks={1})
    assert g2.chains == ((0, 1), (2,))


def test_every_edge_respects_netdef_order_and_chains_cover_ops() -> None:
    nodes = [n("x", "a"), n("a", "a"), n("x", "b", ctl="a"), n("a b", "x"), n("x", "y")]
    g = build_graph(nodes)
    for i, ps in enumerate(g.parents):
        assert all(p < i for p in ps)
    assert sorted(i for c in g.chains for i in c) == list(range(len(nodes)))


def _net(*ops: tuple[str, list[str], list[str]]) -> pb.NetDef:
    net = pb.NetDef(name="g")
    for t, ins, outs in ops:
        net.op.add(type=t, input=ins, output=outs)
    return net


def test_nodes_of_uses_net_device_and_op_device() -> None:
    net = _net(("Relu", ["x"], ["y"]), ("Relu", ["y"], ["z"]))
    net.device_option.device_type = 1
    net.op[1].device_option.device_type = 0
    nodes = nodes_of(net)
    assert nodes[0].device == DeviceKey(1, 0) and nodes[1].device == DeviceKey(0, 0)
    assert analyze(net).chains == ((0,), (1,))


def test_describe_graph_lists_edges_and_chains_even_for_unknown_ops() -> None:
    net = _net(("NoSuchOp", ["x"], ["a"]), ("Relu", ["a"], ["b"]), ("Relu", ["a"], ["c"]), ("Sum", ["b", "c"], ["d"]))
    lines = describe_graph(net)
    assert lines[0].startswith("dependency graph: 4 ops, 4 edges")
    assert any("#3 Sum" in ln and "after: #1, #2" in ln for ln in lines)
    assert "chains:" in lines
    assert any(ln.strip().startswith("c0 on cpu:0, 1 op(s): #0 NoSuchOp") for ln in lines)
    long = describe_graph(_net(*[("Relu", [f"a{i}"], [f"a{i + 1}"]) for i in range(30)]))
    assert any(
        "c0 on cpu:0, 30 op(s): #0 Relu -> #1 Relu" in ln and "... 24 more ... -> #28 Relu -> #29 Relu" in ln
        for ln in long
    )


def test_info_graph_cli(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info", "--graph", str(NETS / "branches.pbtxt")]) == 0
    out = capsys.readouterr().out
    assert "dependency graph: 17 ops" in out
    assert "#16 Sum 'join'" in out and "after: #3, #7, #11, #15" in out


def test_bundled_branches_net_has_four_parallel_branches() -> None:
    g = analyze(read_net(NETS / "branches.pbtxt"))
    join = g.chain_of[16]
    assert len(g.chain_parents[join]) == 4
