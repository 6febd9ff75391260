"""compat.control: Caffe2's control_test.py scenarios (loops, ifs, switches as plan steps)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from asyncnet.compat import control, core, workspace
from asyncnet.errors import NetDefinitionError

N = 10


@dataclass
class Nets:
    init: core.Net
    cnt: core.Net
    cnt2: core.Net
    cond: core.Net
    not_cond: core.Net
    true_cond: core.Net
    false_cond: core.Net
    idle: core.Net


@pytest.fixture
def nets() -> Nets:
    init = core.Net("init-net")
    counter = init.CreateCounter([], init_count=0)
    const_n = init.ConstantFill([], shape=[], value=N, dtype=core.DataType.INT64)
    const_0 = init.ConstantFill([], shape=[], value=0, dtype=core.DataType.INT64)
    cnt = core.Net("cnt-net")
    cnt.CountUp([counter])
    cur = cnt.RetrieveCount([counter])
    init.ConstantFill([], [cur], shape=[], value=0, dtype=core.DataType.INT64)
    cnt.AddExternalOutput(cur)
    cnt2 = core.Net("cnt-2-net")
    cnt2.CountUp([counter])
    cnt2.CountUp([counter])
    cur2 = cnt2.RetrieveCount([counter])
    init.ConstantFill([], [cur2], shape=[], value=0, dtype=core.DataType.INT64)
    cnt2.AddExternalOutput(cur2)

    def cond_net(name: str, op: str, a: Any, b: Any) -> core.Net:
        net = core.Net(name)
        net.AddExternalOutput(getattr(net, op)([a, b]))
        return net

    idle = core.Net("idle-net")
    idle.ConstantFill([], shape=[], value=0, dtype=core.DataType.INT64)
    return Nets(
        init,
        cnt,
        cnt2,
        cond_net("cond-net", "LT", cur, const_n),
        cond_net("not-cond-net", "GE", cur, const_n),
        cond_net("true-cond-net", "LT", const_0, const_n),
        cond_net("false-cond-net", "GT", const_0, const_n),
        idle,
    )


def _run(n: Nets, step: core.ExecutionStep) -> None:
    plan = core.Plan("test")
    plan.AddStep(control.Do("init", n.init))
    plan.AddStep(step)
    assert workspace.RunPlan(plan)


def _out(net: core.Net) -> Any:
    return workspace.FetchBlob(net.Proto().external_output[-1])


@pytest.mark.parametrize("kind", ["For", "While", "Until", "DoWhile", "DoUntil"])
def test_loops_count_to_n_with_nets_and_with_steps(nets: Nets, kind: str) -> None:
    def loop(body: Any) -> core.ExecutionStep:
        if kind == "For":
            return control.For("myFor", body, N)
        cond = nets.not_cond if kind in ("Until", "DoUntil") else nets.cond
        return getattr(control, kind)(f"my{kind}", cond, body)

    step = control.Do("count", nets.cnt)
    for body in (nets.cnt, [nets.cnt, nets.idle], step, [nets.idle, step]):
        _run(nets, loop(body))
        assert _out(nets.cnt) == N, body


@pytest.mark.parametrize("on_blob", [False, True])
def test_if_ifnot_with_and_without_else(nets: Nets, on_blob: bool) -> None:
    def build(fn: Any, name: str, cond_net: core.Net, *branches: core.Net) -> core.ExecutionStep:
        if on_blob:
            return control.Do(
                f"{name}-all",
                control.Do("count", cond_net),
                fn(name, cond_net.Proto().external_output[-1], *branches),
            )
        return fn(name, cond_net, *branches)

    cases = [
        (control.If, nets.true_cond, (nets.cnt,), nets.cnt, 1),
        (control.If, nets.false_cond, (nets.cnt,), nets.cnt, 0),
        (control.If, nets.true_cond, (nets.cnt, nets.cnt2), nets.cnt, 1),
        (control.If, nets.false_cond, (nets.cnt, nets.cnt2), nets.cnt2, 2),
        (control.IfNot, nets.true_cond, (nets.cnt,), nets.cnt, 0),
        (control.IfNot, nets.false_cond, (nets.cnt,), nets.cnt, 1),
        (control.IfNot, nets.true_cond, (nets.cnt, nets.cnt2), nets.cnt2, 2),
        (control.IfNot, nets.false_cond, (nets.cnt, nets.cnt2), nets.cnt, 1),
    ]
    for fn, cond, branches, watched, want in cases:
        _run(nets, build(fn, "myIf", cond, *branches))
        assert _out(watched) == want, (fn.__name__, cond.Name(), len(branches))


def test_switch_and_switch_not(nets: Nets) -> None:
    _run(nets, control.Switch("s", (nets.false_cond, nets.cnt), (nets.true_cond, nets.cnt2)))
    assert (_out(nets.cnt), _out(nets.cnt2)) == (0, 2)
    _run(nets, control.SwitchNot("s", (nets.false_cond, nets.cnt), (nets.true_cond, nets.cnt2)))
    assert (_out(nets.cnt), _out(nets.cnt2)) == (1, 0)


def test_bool_net_combine_and_merge_conditions(nets: Nets) -> None:
    for pairs in ((("a", True),), (("a", True), ("b", False)), ([("a", True), ("b", False)],)):
        bool_net = control.BoolNet(*pairs)
        _run(nets, control.Do("bool", bool_net))
        flat = pairs[0] if isinstance(pairs[0], list) else pairs
        assert [bool(workspace.FetchBlob(b)) for b, _ in flat] == [v for _, v in flat]
    for relation, want in (("Or", True), ("And", False)):
        combined = control.CombineConditions("c", [nets.true_cond, nets.false_cond], relation)
        assert combined is not None
        _run(nets, control.Do("combine", nets.true_cond, nets.false_cond, combined))
        assert bool(_out(combined)) is want
        merged = control.MergeConditionNets("m", [nets.true_cond, nets.false_cond], relation)
        _run(nets, control.Do("merge", merged))
        assert bool(_out(merged)) is want


def test_condition_net_without_output_is_refused() -> None:
    with pytest.raises(NetDefinitionError, match="no external output"):
        control.While("w", core.Net("no_out"), core.Net("body"))
