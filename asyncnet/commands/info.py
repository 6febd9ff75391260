"""``asyncnet info NET``: describe a NetDef without running it."""

from __future__ import annotations

import argparse
import sys
from collections import Counter

from asyncnet.commands._common import add_io_policy_args, file_access_report, io_policy_from_args, read_net_or_plan
from asyncnet.net import net_inputs
from asyncnet.proto import caffe2_pb2 as pb
from asyncnet.registry import default_registry
from asyncnet.serde import arguments_to_dict


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("info", help="describe a net: ops, inputs/outputs, devices, arguments")
    p.add_argument("net", help="NetDef file (.pb or .pbtxt)")
    p.add_argument("--graph", action="store_true", help="also print the dependency graph and chains")
    p.add_argument("--plan", action="store_true", help="the file is a PlanDef (tried anyway when NET is not a NetDef)")
    add_io_policy_args(p)
    p.set_defaults(func=run)


def _device(opt: pb.DeviceOption) -> str:
    text = f"type {opt.device_type} id {opt.device_id}"
    if opt.HasField("numa_node_id"):
        text += f" numa {opt.numa_node_id}"
    return text


def describe_net(net: pb.NetDef, source: str = "") -> list[str]:
    """Lines describing ``net`` (works for op types that are not implemented)."""
    reg = default_registry()
    lines = [f"net '{net.name}'" + (f" from {source}" if source else "")]
    lines.append(f"  type: '{net.type}'" + (f", num_workers {net.num_workers}" if net.HasField("num_workers") else ""))
    if net.HasField("device_option"):
        lines.append(f"  net device_option: {_device(net.device_option)}")
    if net.arg:
        args = arguments_to_dict(net.arg, owner=f"net '{net.name}'")
        lines.append("  net args: " + ", ".join(f"{k}={_short(v)}" for k, v in args.items()))
    lines.append(f"  {len(net.op)} operators")
    counts = Counter(op.type for op in net.op)
    for t, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
        mark = "" if reg.has(t) else "   [unsupported]"
        lines.append(f"    {t:32s} {n:5d}{mark}")
    unsupported = sorted(t for t in counts if not reg.has(t))
    if unsupported:
        lines.append(f"  unsupported op types: {', '.join(unsupported)}")
    ext_in = list(net.external_input)
    lines.append(f"  external inputs ({len(ext_in)}): {', '.join(ext_in) if ext_in else '-'}")
    implicit = [n for n in net_inputs(net) if n not in set(ext_in)]
    if implicit:
        lines.append(f"  undeclared inputs ({len(implicit)}): {', '.join(implicit)}")
    lines.append(f"  external outputs ({len(net.external_output)}): {', '.join(net.external_output) or '-'}")
    devices = Counter(_device(op.device_option) for op in net.op if op.HasField("device_option"))
    if devices:
        lines.append("  op device options: " + ", ".join(f"{d} x{n}" for d, n in sorted(devices.items())))
    engines = Counter(op.engine for op in net.op if op.engine)
    if engines:
        lines.append("  engines: " + ", ".join(f"{e} x{n}" for e, n in sorted(engines.items())))
    arg_names: Counter[str] = Counter(a.name for op in net.op for a in op.arg)
    if arg_names:
        lines.append("  op arguments: " + ", ".join(f"{a} x{n}" for a, n in sorted(arg_names.items())))
    return lines


def _short(v: object) -> str:
    text = repr(v) if not isinstance(v, pb.NetDef) else f"<NetDef '{v.name}' {len(v.op)} ops>"
    return text if len(text) <= 60 else text[:57] + "..."


def describe_plan(plan: pb.PlanDef, source: str = "") -> list[str]:
    """Lines describing a PlanDef: its steps and each of its nets."""
    lines = [f"plan '{plan.name}'" + (f" from {source}" if source else "")]
    lines.append(f"  {len(plan.network)} net(s), {len(plan.execution_step)} top-level step(s)")
    for step in plan.execution_step:
        lines.append(f"  step '{step.name}': nets {list(step.network)}, {len(step.substep)} substep(s)")
    for net in plan.network:
        lines.extend("  " + line for line in describe_net(net))
    return lines


def run(args: argparse.Namespace) -> int:
    target = read_net_or_plan(args.net, plan=args.plan)
    if isinstance(target, pb.PlanDef):
        out = describe_plan(target, args.net)
    else:
        out = describe_net(target, args.net)
        if args.graph:
            from asyncnet.graph import describe_graph  # provided by the executor layer

            out.extend(describe_graph(target))
    # Listed with the policy `asyncnet run` would apply, so a downloaded net can be audited first.
    lines, _ = file_access_report(target, io_policy_from_args(args, args.net))
    out.extend(lines)
    sys.stdout.write("\n".join(out) + "\n")
    return 0
