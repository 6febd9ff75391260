"""Caffe2's ``core.Plan``, ``core.ExecutionStep`` and ``core.execution_step`` (re-exported by core).

They build a PlanDef: execution steps that run nets (or substeps) ``num_iter``
times, until a ``should_stop_blob`` is true, or concurrently. ``workspace.RunPlan``
runs one through :func:`asyncnet.plan.run_plan`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from asyncnet.compat.core import BlobReference, Net
from asyncnet.errors import ArgumentError, NetDefinitionError
from asyncnet.proto import caffe2_pb2 as pb

__all__ = ["ExecutionStep", "Plan", "execution_step"]


class ExecutionStep:
    """One step of a plan: either nets or substeps, with iteration and stop settings.

    Args:
        name: the step name.
        nets: nets (``core.Net``) the step runs in order, each iteration.
        num_iter: iterations (Caffe2's default: 1).
    """

    def __init__(self, name: str, nets: Net | Sequence[Net] | None = None, num_iter: int | None = None) -> None:
        self._step = pb.ExecutionStep(name=name)
        self._nets: list[Net] = []
        self._substeps: list[ExecutionStep] = []
        self._report_net: Net | None = None
        if nets is not None:
            for net in [nets] if isinstance(nets, Net) else list(nets):
                self.AddNet(net)
        if num_iter is not None:
            self.SetIter(num_iter)

    def Name(self) -> str:
        return self._step.name

    def __repr__(self) -> str:
        return f"ExecutionStep({self.Name()!r})"

    def Proto(self) -> pb.ExecutionStep:
        return self._step

    def Nets(self) -> list[Net]:
        return list(self._nets)

    def Substeps(self) -> list[ExecutionStep]:
        return list(self._substeps)

    def HasNets(self) -> bool:
        return bool(self._nets)

    def HasSubsteps(self) -> bool:
        return bool(self._substeps)

    def AddNet(self, net: Net) -> ExecutionStep:
        """Add a net to run in this step; returns the step (chainable, as Caffe2's)."""
        if not isinstance(net, Net):
            raise ArgumentError(f"step '{self.Name()}': AddNet takes a core.Net, got {type(net).__name__}")
        if self._substeps:
            raise NetDefinitionError(f"step '{self.Name()}' has substeps; a step holds either nets or substeps")
        self._step.network.append(net.Name())
        self._nets.append(net)
        return self

    def AddSubstep(self, substep: ExecutionStep | Net) -> ExecutionStep:
        """Add a substep (a Net becomes a one-net step of the same name)."""
        if self._nets:
            raise NetDefinitionError(f"step '{self.Name()}' has nets; a step holds either nets or substeps")
        step = substep if isinstance(substep, ExecutionStep) else ExecutionStep(substep.Name(), substep)
        if not isinstance(step, ExecutionStep):
            raise ArgumentError(f"step '{self.Name()}': AddSubstep takes a step or a Net, got {type(substep).__name__}")
        self._step.substep.add().CopyFrom(step.Proto())
        self._substeps.append(step)
        return self

    def SetIter(self, num_iter: int) -> None:
        self._step.num_iter = int(num_iter)

    def SetOnlyOnce(self, only_once: bool) -> None:
        self._step.only_once = bool(only_once)

    def SetShouldStopBlob(self, should_stop_blob: str | BlobReference) -> None:
        self._step.should_stop_blob = str(should_stop_blob)

    def SetConcurrentSubsteps(self, concurrent_substeps: bool) -> None:
        self._step.concurrent_substeps = bool(concurrent_substeps)

    def SetNumConcurrentInstances(self, num_concurrent_instances: int) -> None:
        self._step.num_concurrent_instances = int(num_concurrent_instances)

    def SetCreateWorkspace(self, create_workspace: bool) -> None:
        self._step.create_workspace = bool(create_workspace)

    def RunEveryMillis(self, interval: int) -> None:
        self._step.run_every_ms = int(interval)

    def SetReportNet(self, report_net: Net, report_interval: int) -> None:
        if not isinstance(report_net, Net):
            raise ArgumentError(f"step '{self.Name()}': report_net must be a core.Net, got {type(report_net).__name__}")
        self._report_net = report_net
        self._step.report_net = report_net.Name()
        self._step.report_interval = int(report_interval)

    def all_nets(self) -> list[Net]:
        """Every net this step and its substeps use (report nets included), first use first."""
        out: list[Net] = []
        if self._report_net is not None:
            out.append(self._report_net)
        out.extend(self._nets)
        for s in self._substeps:
            out.extend(s.all_nets())
        return out


def execution_step(
    default_name: str,
    steps_or_nets: Any,
    num_iter: int | None = None,
    report_net: Net | None = None,
    report_interval: int | None = None,
    concurrent_substeps: bool | None = None,
    should_stop_blob: str | BlobReference | None = None,
    only_once: bool | None = None,
    num_concurrent_instances: int | None = None,
    create_workspace: bool = False,
) -> ExecutionStep:
    """An ExecutionStep from a Net, a step, or a list of either (as Caffe2's helper)."""
    if should_stop_blob is not None and num_iter is not None:
        raise ArgumentError(f"step '{default_name}': give either num_iter or should_stop_blob, not both")
    step = ExecutionStep(default_name)
    items = steps_or_nets if isinstance(steps_or_nets, (list, tuple)) else [steps_or_nets]
    if all(isinstance(i, Net) for i in items):
        for net in items:
            step.AddNet(net)
    elif all(isinstance(i, (ExecutionStep, Net)) for i in items):
        for i in items:
            step.AddSubstep(i)
    else:
        kinds = sorted({type(i).__name__ for i in items})
        raise ArgumentError(f"step '{default_name}': expected Nets or ExecutionSteps, got {kinds}")
    if num_iter is not None:
        step.SetIter(num_iter)
    if should_stop_blob is not None:
        step.SetShouldStopBlob(should_stop_blob)
    if only_once is not None:
        step.SetOnlyOnce(only_once)
    if concurrent_substeps is not None:
        step.SetConcurrentSubsteps(concurrent_substeps)
    if num_concurrent_instances is not None:
        step.SetNumConcurrentInstances(num_concurrent_instances)
    if create_workspace:
        step.SetCreateWorkspace(True)
    if report_net is not None:
        if report_interval is None:
            raise ArgumentError(f"step '{default_name}': report_net needs a report_interval")
        step.SetReportNet(report_net, report_interval)
    return step


class Plan:
    """A PlanDef under construction: the steps to run and the nets they name."""

    def __init__(self, name_or_step: str | ExecutionStep) -> None:
        self._plan = pb.PlanDef()
        self._net_dict: dict[str, Net] = {}
        self._steps: list[ExecutionStep] = []
        if isinstance(name_or_step, ExecutionStep):
            self._plan.name = name_or_step.Name()
            self.AddStep(name_or_step)
        elif isinstance(name_or_step, str):
            self._plan.name = name_or_step
        else:
            raise ArgumentError(f"Plan takes a name or an ExecutionStep, got {type(name_or_step).__name__}")

    def Name(self) -> str:
        return self._plan.name

    def __str__(self) -> str:
        return self.Name()

    def Proto(self) -> pb.PlanDef:
        return self._plan

    def Steps(self) -> list[ExecutionStep]:
        return list(self._steps)

    def Nets(self) -> list[Net]:
        return list(self._net_dict.values())

    def AddNets(self, nets: Sequence[Net]) -> None:
        """Add nets to the plan; a net already added under that name is kept, not duplicated."""
        for net in nets:
            if not isinstance(net, Net):
                raise ArgumentError(f"plan '{self.Name()}': AddNets takes core.Nets, got {type(net).__name__}")
            if net.Name() not in self._net_dict:
                self._net_dict[net.Name()] = net
                self._plan.network.add().CopyFrom(net.ToNetDef())

    def AddStep(self, step: ExecutionStep) -> None:
        """Add a step and every net it (or a substep) runs."""
        if not isinstance(step, ExecutionStep):
            raise ArgumentError(f"plan '{self.Name()}': AddStep takes an ExecutionStep, got {type(step).__name__}")
        self._plan.execution_step.add().CopyFrom(step.Proto())
        self._steps.append(step)
        self.AddNets(step.all_nets())
