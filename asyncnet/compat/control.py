"""Caffe2's ``control``: Do, DoParallel, For, While, Until, DoWhile, DoUntil, Switch, If as plan steps.

Each helper returns an :class:`~asyncnet.compat.plan.ExecutionStep` (nets or steps in, a step
out), built from ``should_stop_blob`` / ``only_once`` / ``concurrent_substeps`` exactly as Caffe2
built them; run it with ``workspace.RunPlan``. A condition is a scalar bool blob, or a Net whose
*last external output* is that blob (the net runs first, each time the condition is needed).
These loops are plan steps: for loops *inside* a net (and their gradients) use the ``While`` /
``If`` operators, e.g. through :mod:`asyncnet.compat.control_ops_util` or ``net_builder``'s
``WhileNet`` / ``IfNet``.
"""

from __future__ import annotations

import itertools
from typing import Any

from asyncnet.compat.core import BlobReference, DataType, Net
from asyncnet.compat.plan import ExecutionStep, execution_step
from asyncnet.compat.scope import CurrentNameScope
from asyncnet.errors import ArgumentError, NetDefinitionError

__all__ = [
    "BoolNet",
    "CombineConditions",
    "Do",
    "DoParallel",
    "DoUntil",
    "DoWhile",
    "For",
    "GetConditionBlobFromNet",
    "If",
    "IfNot",
    "MergeConditionNets",
    "NotNet",
    "Switch",
    "SwitchNot",
    "Until",
    "While",
]

_used_names: set[str] = set()
_counter = itertools.count(1)


def _step_name(control: str, base: str) -> str:
    name = f"{base}/{control}"
    while name in _used_names:
        name = f"{base}/{control}_{next(_counter)}"
    _used_names.add(name)
    return name


def _scoped_step(name: str, nets_or_steps: Any, **kwargs: Any) -> ExecutionStep:
    return execution_step(CurrentNameScope() + name, nets_or_steps, **kwargs)


def _as_list(items: tuple[Any, ...]) -> list[Any]:
    if not items:
        raise ArgumentError("control: give at least one net or step")
    if len(items) == 1:
        return list(items[0]) if isinstance(items[0], list) else [items[0]]
    return list(items)


def _all_nets(nets_or_steps: Any) -> bool:
    if isinstance(nets_or_steps, list):
        return all(isinstance(n, Net) for n in nets_or_steps)
    return isinstance(nets_or_steps, Net)


def _prepend(nets_or_steps: Any, *nets: Net) -> list[Any]:
    body = _as_list((nets_or_steps,))
    return [*nets, *body] if _all_nets(body) else [Do("prepend", list(nets)), *body]


def _append(nets_or_steps: Any, *nets: Net) -> list[Any]:
    body = _as_list((nets_or_steps,))
    return [*body, *nets] if _all_nets(body) else [*body, Do("append", list(nets))]


def GetConditionBlobFromNet(condition_net: Net) -> BlobReference:
    """The condition of a condition net: its last external output (a scalar bool)."""
    outs = condition_net.Proto().external_output
    if not outs:
        raise NetDefinitionError(
            f"condition net '{condition_net.Name()}' has no external output; its last one must be the bool condition"
        )
    return BlobReference(outs[-1])


def BoolNet(*blobs_with_bool_value: Any) -> Net:
    """A net setting each ``(blob, bool)`` pair's blob to that scalar bool."""
    net = Net("bool_net")
    for blob, value in _as_list(blobs_with_bool_value):
        out = net.ConstantFill([], [blob], shape=[], value=bool(value), dtype=DataType.BOOL)
        net.AddExternalOutput(out)
    return net


def NotNet(condition_blob_or_net: Any) -> tuple[Net, BlobReference]:
    """(a net computing NOT of the condition, its output blob)."""
    cond = (
        GetConditionBlobFromNet(condition_blob_or_net)
        if isinstance(condition_blob_or_net, Net)
        else condition_blob_or_net
    )
    net = Net("not_net")
    out = net.Not(cond)
    net.AddExternalOutput(out)
    return net, out


def _copy_condition_net(condition_blob: Any) -> tuple[Net, BlobReference]:
    net = Net("copy_condition_blob_net")
    out = net.Copy(condition_blob)
    net.AddExternalOutput(out)
    return net, out


def MergeConditionNets(name: str, condition_nets: Any, relation: str) -> Any:
    """One condition net running all of ``condition_nets`` and combining their conditions with And/Or."""
    if not isinstance(condition_nets, list):
        return condition_nets
    if len(condition_nets) <= 1:
        return condition_nets[0] if condition_nets else None
    merged = Net(name)
    last: Any = None
    for i, cn in enumerate(condition_nets):
        merged.Proto().op.extend(cn.Proto().op)
        merged.Proto().external_input.extend(cn.Proto().external_input)
        cur = GetConditionBlobFromNet(cn)
        last = cur if i == 0 else getattr(merged, relation)([last, cur])
    merged.AddExternalOutput(last)
    return merged


def CombineConditions(name: str, condition_nets: Any, relation: str) -> Net | None:
    """A net combining the conditions of ``condition_nets`` (without running them) with And/Or."""
    if not condition_nets:
        return None
    if not isinstance(condition_nets, list):
        raise ArgumentError("CombineConditions: condition_nets must be a list of nets")
    if len(condition_nets) == 1:
        net, _ = _copy_condition_net(GetConditionBlobFromNet(condition_nets[0]))
        return net
    combined = Net(name)
    last: Any = None
    for i, cn in enumerate(condition_nets):
        cur = GetConditionBlobFromNet(cn)
        last = cur if i == 0 else getattr(combined, relation)([last, cur])
    combined.AddExternalOutput(last)
    return combined


def Do(name: str, *nets_or_steps: Any) -> ExecutionStep:
    """Run the nets or steps once, in order."""
    items = _as_list(nets_or_steps)
    if len(items) == 1 and isinstance(items[0], ExecutionStep):
        return items[0]
    return _scoped_step(_step_name("Do", name), items)


def DoParallel(name: str, *nets_or_steps: Any) -> ExecutionStep:
    """Run the nets or steps once, concurrently, and wait for all of them."""
    items = _as_list(nets_or_steps)
    if len(items) == 1 and isinstance(items[0], ExecutionStep):
        return items[0]
    return _scoped_step(_step_name("DoParallel", name), items, concurrent_substeps=True)


def _run_once_if(name: str, condition: Any, nets_or_steps: Any) -> ExecutionStep:
    not_net, stop = NotNet(condition)
    body = (
        _prepend(nets_or_steps, condition, not_net) if isinstance(condition, Net) else _prepend(nets_or_steps, not_net)
    )

    def step(control: str) -> ExecutionStep:
        return _scoped_step(_step_name(control, name), body, should_stop_blob=stop, only_once=True)

    if _all_nets(body):
        return Do(name + "/_RunOnceIf", BoolNet((stop, False)), step("_RunOnceIf-inner"))
    return step("_RunOnceIf")


def _run_once_if_not(name: str, condition: Any, nets_or_steps: Any) -> ExecutionStep:
    if isinstance(condition, Net):
        blob = GetConditionBlobFromNet(condition)
        body = _prepend(nets_or_steps, condition)
    else:
        copy_net, blob = _copy_condition_net(condition)
        body = _prepend(nets_or_steps, copy_net)
    return _scoped_step(_step_name("_RunOnceIfNot", name), body, should_stop_blob=blob, only_once=True)


def For(name: str, nets_or_steps: Any, iter_num: int) -> ExecutionStep:
    """Run the nets or steps ``iter_num`` times."""
    init = Net("init-net")
    counter = init.CreateCounter([], init_count=iter_num)
    tick = Net("For-iter")
    done = tick.CountDown([counter])
    loop = _scoped_step(_step_name("For-inner", name), _prepend(nets_or_steps, tick), should_stop_blob=done)
    return Do(name + "/For", Do(name + "/For-init-net", init), loop)


def While(name: str, condition_blob_or_net: Any, nets_or_steps: Any) -> ExecutionStep:
    """Run the nets or steps while the condition holds (checked before each pass)."""
    not_net, stop = NotNet(condition_blob_or_net)
    if isinstance(condition_blob_or_net, Net):
        body = _prepend(nets_or_steps, condition_blob_or_net, not_net)
    else:
        body = _prepend(nets_or_steps, not_net)

    def step(control: str) -> ExecutionStep:
        return _scoped_step(_step_name(control, name), body, should_stop_blob=stop)

    if _all_nets(body):
        # A stop blob left true by an earlier run would end the loop after the condition net.
        return Do(name + "/While", BoolNet((stop, False)), step("While-inner"))
    return step("While")


def Until(name: str, condition_blob_or_net: Any, nets_or_steps: Any) -> ExecutionStep:
    """Run the nets or steps until the condition holds (checked after each net or step)."""
    if isinstance(condition_blob_or_net, Net):
        stop = GetConditionBlobFromNet(condition_blob_or_net)
        body = _prepend(nets_or_steps, condition_blob_or_net)
    else:
        stop = BlobReference(str(condition_blob_or_net))
        body = _as_list((nets_or_steps,))
    return _scoped_step(_step_name("Until", name), body, should_stop_blob=stop)


def DoWhile(name: str, condition_blob_or_net: Any, nets_or_steps: Any) -> ExecutionStep:
    """Run the nets or steps, then again while the condition holds."""
    not_net, stop = NotNet(condition_blob_or_net)
    if isinstance(condition_blob_or_net, Net):
        body = _append(nets_or_steps, condition_blob_or_net, not_net)
    else:
        body = _append(nets_or_steps, not_net)
    inner = _scoped_step(_step_name("DoWhile-inner", name), body, should_stop_blob=stop)
    return Do(name + "/DoWhile", BoolNet((stop, False)), inner)


def DoUntil(name: str, condition_blob_or_net: Any, nets_or_steps: Any) -> ExecutionStep:
    """Run the nets or steps, then again until the condition holds."""
    if not isinstance(condition_blob_or_net, Net):
        return _scoped_step(
            _step_name("DoUntil", name), nets_or_steps, should_stop_blob=BlobReference(str(condition_blob_or_net))
        )
    body = _append(nets_or_steps, condition_blob_or_net)
    stop = GetConditionBlobFromNet(condition_blob_or_net)
    inner = _scoped_step(_step_name("DoUntil-inner", name), body, should_stop_blob=stop)
    return Do(name + "/DoUntil", BoolNet((stop, False)), inner)


def Switch(name: str, *conditions: Any) -> ExecutionStep:
    """Run every ``(condition, nets_or_steps)`` whose condition holds (each condition net runs once)."""
    pairs = _as_list(conditions)
    return _scoped_step(_step_name("Switch", name), [_run_once_if(name + "/Switch", c, s) for c, s in pairs])


def SwitchNot(name: str, *conditions: Any) -> ExecutionStep:
    """Run every ``(condition, nets_or_steps)`` whose condition is false."""
    pairs = _as_list(conditions)
    return _scoped_step(_step_name("SwitchNot", name), [_run_once_if_not(name + "/SwitchNot", c, s) for c, s in pairs])


def If(
    name: str, condition_blob_or_net: Any, true_nets_or_steps: Any, false_nets_or_steps: Any = None
) -> ExecutionStep:
    """Run ``true_nets_or_steps`` when the condition holds, else ``false_nets_or_steps`` (if any)."""
    if not false_nets_or_steps:
        return _run_once_if(name + "/If", condition_blob_or_net, true_nets_or_steps)
    blob = (
        GetConditionBlobFromNet(condition_blob_or_net)
        if isinstance(condition_blob_or_net, Net)
        else condition_blob_or_net
    )
    return Do(
        name + "/If",
        _run_once_if(name + "/If-true", condition_blob_or_net, true_nets_or_steps),
        _run_once_if_not(name + "/If-false", blob, false_nets_or_steps),
    )


def IfNot(
    name: str, condition_blob_or_net: Any, true_nets_or_steps: Any, false_nets_or_steps: Any = None
) -> ExecutionStep:
    """Run ``true_nets_or_steps`` when the condition is false, else ``false_nets_or_steps`` (if any)."""
    if not false_nets_or_steps:
        return _run_once_if_not(name + "/IfNot", condition_blob_or_net, true_nets_or_steps)
    blob = (
        GetConditionBlobFromNet(condition_blob_or_net)
        if isinstance(condition_blob_or_net, Net)
        else condition_blob_or_net
    )
    return Do(
        name + "/IfNot",
        _run_once_if_not(name + "/IfNot-true", condition_blob_or_net, true_nets_or_steps),
        _run_once_if(name + "/IfNot-false", blob, false_nets_or_steps),
    )
