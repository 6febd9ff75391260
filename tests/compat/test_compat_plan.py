"""core.Plan / core.ExecutionStep / core.execution_step and workspace.RunPlan."""

from __future__ import annotations

import numpy as np
import pytest

from asyncnet.compat import core, workspace
from asyncnet.errors import ArgumentError, NetDefinitionError


def _counter_nets() -> tuple[core.Net, core.Net]:
    init = core.Net("plan_init")
    init.ConstantFill([], "count", shape=[1], value=0.0)
    init.ConstantFill([], "one", shape=[1], value=1.0)
    step = core.Net("plan_step")
    step.Add(["count", "one"], "count")
    return init, step


def test_plan_runs_steps_in_order_with_iterations() -> None:
    init, step = _counter_nets()
    plan = core.Plan("counting")
    plan.AddStep(core.ExecutionStep("init", init))
    plan.AddStep(core.ExecutionStep("train", step, num_iter=5))
    proto = plan.Proto()
    assert [n.name for n in proto.network] == [init.Name(), step.Name()]
    assert [(s.name, list(s.network), s.num_iter) for s in proto.execution_step] == [
        ("init", [init.Name()], 0),
        ("train", [step.Name()], 5),
    ]
    assert workspace.RunPlan(plan) is True
    np.testing.assert_array_equal(workspace.FetchBlob("count"), [5.0])
    # As in Caffe2, the plan's nets stay in the workspace afterwards.
    workspace.RunNet(step.Name())
    np.testing.assert_array_equal(workspace.FetchBlob("count"), [6.0])


def test_run_plan_takes_a_step_or_a_plandef() -> None:
    init, step = _counter_nets()
    workspace.RunNetOnce(init)
    workspace.RunPlan(core.execution_step("three", step, num_iter=3))
    np.testing.assert_array_equal(workspace.FetchBlob("count"), [3.0])
    plan = core.Plan("again")
    plan.AddStep(core.ExecutionStep("two", [step], num_iter=2))
    workspace.RunPlan(plan.Proto())
    np.testing.assert_array_equal(workspace.FetchBlob("count"), [5.0])
    with pytest.raises(RuntimeError, match="RunPlan takes"):
        workspace.RunPlan(step)  # type: ignore[arg-type]


def test_substeps_share_nets_once_and_should_stop_blob() -> None:
    init, step = _counter_nets()
    check = core.Net("plan_check")
    check.ConstantFill([], "limit", shape=[1], value=4.0)
    check.GE(["count", "limit"], "stop")
    loop = core.execution_step("loop", [core.ExecutionStep("inc", step), check], should_stop_blob="stop")
    assert loop.HasSubsteps() and not loop.HasNets()
    plan = core.Plan(core.ExecutionStep("init", init))
    plan.AddStep(loop)
    assert plan.Name() == "init"
    assert [n.Name() for n in plan.Nets()] == [init.Name(), step.Name(), check.Name()]
    workspace.RunPlan(plan)
    np.testing.assert_array_equal(workspace.FetchBlob("count"), [4.0])
    # Adding a step that reuses nets does not duplicate them.
    plan.AddStep(core.ExecutionStep("more", step, num_iter=1))
    assert len(plan.Proto().network) == 3


def test_substep_iterations_are_not_capped_by_the_parent() -> None:
    init, step = _counter_nets()
    workspace.RunNetOnce(init)
    # A common plan shape: a top step (one iteration) holding a longer training loop.
    workspace.RunPlan(core.execution_step("top", [core.ExecutionStep("train", step, num_iter=5)]))
    np.testing.assert_array_equal(workspace.FetchBlob("count"), [5.0])


def test_execution_step_refuses_mixing_and_bad_arguments() -> None:
    _, step = _counter_nets()
    s = core.ExecutionStep("nets", step)
    with pytest.raises(NetDefinitionError, match="either nets or substeps"):
        s.AddSubstep(core.ExecutionStep("sub", step))
    with pytest.raises(ArgumentError, match="num_iter or should_stop_blob"):
        core.execution_step("both", step, num_iter=2, should_stop_blob="stop")
    with pytest.raises(ArgumentError, match="Nets or ExecutionSteps"):
        core.execution_step("bad", ["not a net"])
    with pytest.raises(ArgumentError, match="report_interval"):
        core.execution_step("report", step, report_net=step)


def test_step_options_reach_the_proto() -> None:
    _, step = _counter_nets()
    s = core.execution_step(
        "opts", [core.ExecutionStep("a", step)], concurrent_substeps=True, num_concurrent_instances=2, num_iter=3
    )
    s.RunEveryMillis(50)
    p = s.Proto()
    assert (p.concurrent_substeps, p.num_concurrent_instances, p.num_iter, p.run_every_ms) == (True, 2, 3, 50)
    report = core.Net("report")
    s.SetReportNet(report, 7)
    assert (p.report_net, p.report_interval) == ("report", 7)
    assert [n.Name() for n in s.all_nets()] == ["report", step.Name()]


def test_add_net_returns_the_step_for_chaining() -> None:
    # Caffe2's dataset code writes plan.AddStep(read_step.AddNet(process_net)).
    read = core.Net("read")
    read.ConstantFill([], ["x"], shape=[1], value=2.0)
    process = core.Net("process")
    process.Scale(["x"], ["y"], scale=3.0)
    step = core.execution_step("read_step", read)
    plan = core.Plan("chained")
    plan.AddStep(step.AddNet(process))
    workspace.RunPlan(plan)
    assert workspace.FetchBlob("y").tolist() == [6.0]
