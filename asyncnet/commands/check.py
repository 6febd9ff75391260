"""``asyncnet check NET``: static checks, inferred shapes, devices and file access, without running."""

from __future__ import annotations

import argparse
import sys

from asyncnet.checker import check_net
from asyncnet.commands._common import (
    add_io_policy_args,
    file_access_report,
    io_policy_from_args,
    parse_shape_specs,
    read_net_or_plan,
)
from asyncnet.commands._shapes import (
    add_shape_arguments,
    check_names,
    param_infos,
    resolve_shapes,
    settle_placeholders,
    unknown_shape_lines,
)
from asyncnet.iopolicy import IOPolicy
from asyncnet.proto import caffe2_pb2 as pb
from asyncnet.schema import TensorInfo
from asyncnet.serde import read_net


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "check",
        help="check a net statically: schemas, undefined blobs, unused outputs, shapes, devices, file access",
        description="Exit status 1 when the net has errors (including file accesses the policy refuses), "
        "0 when it has only warnings (listed).",
    )
    p.add_argument("net", help="NetDef file (.pb or .pbtxt), or a PlanDef with --plan")
    p.add_argument("--init", metavar="INIT_NET", help="parameter net run before NET (its outputs count as inputs)")
    p.add_argument(
        "--input-shape",
        action="append",
        default=[],
        type=_shape_spec,
        metavar="NAME=D0,D1,...",
        help="shape of an input blob (float32); repeatable; wins over value_info and init-net placeholders",
    )
    add_shape_arguments(p, input_shape=False)
    p.add_argument("--plan", action="store_true", help="NET is a PlanDef (tried anyway when it is not a NetDef)")
    add_io_policy_args(p)
    p.set_defaults(func=run)


def _shape_spec(text: str) -> tuple[str, tuple[int, ...]]:
    # Parsed by argparse so that a malformed spec is a usage error (exit 2), not a traceback.
    ((name, shape),) = parse_shape_specs([text]).items()
    return name, shape


def run(args: argparse.Namespace) -> int:
    target = read_net_or_plan(args.net, plan=args.plan)
    init = read_net(args.init) if args.init else None
    policy = io_policy_from_args(args, args.net, args.init)
    if isinstance(target, pb.PlanDef):
        return _check_plan(target, policy)
    net = target
    shapes = resolve_shapes(
        args.net,
        input_specs=[f"{n}={','.join(map(str, s))}" for n, s in args.input_shape],
        value_info=args.value_info,
        param_specs=args.param_shape,
        param_file=args.param_shapes,
    )
    check_names(net, args.net, shapes)
    init = settle_placeholders(init, net, {n: f"shape {list(t.shape or ())}" for n, t in shapes.data.items()})
    inputs: dict[str, TensorInfo] = {**param_infos(shapes.params), **shapes.data}
    report = check_net(net, inputs=inputs, init_net=init)
    if not report.net_name:
        report.net_name = args.net
    lines = report.lines()
    if report.unknown_inputs:
        # Replace the checker's generic line with one that says why each shape is unknown and how to give it.
        lines = [ln for ln in lines if "input(s) of unknown shape" not in ln]
        at = lines.index("devices:") if "devices:" in lines else len(lines)
        lines[at:at] = unknown_shape_lines(net, report.unknown_inputs, have_init=init is not None)
    access, refused = file_access_report(net, policy, init=init)
    lines.extend(access)
    sys.stdout.write("\n".join(lines) + "\n")
    return 0 if report.ok and not refused else 1


def _check_plan(plan: pb.PlanDef, policy: IOPolicy) -> int:
    lines = [f"plan '{plan.name}': {len(plan.network)} net(s), {len(plan.execution_step)} step(s)"]
    ok = True
    # Nets run in the plan's workspace one after another: what one makes, the next may read.
    known: dict[str, TensorInfo] = {}
    for net in plan.network:
        report = check_net(net, inputs=dict(known))
        ok = ok and report.ok
        lines.append(f"  net '{net.name}': {len(report.errors)} error(s), {len(report.warnings)} warning(s)")
        lines.extend(f"    {issue}" for issue in report.issues)
        known.update({o: report.shapes.get(o, TensorInfo()) for op in net.op for o in op.output})
    access, refused = file_access_report(plan, policy)
    lines.extend(access)
    sys.stdout.write("\n".join(lines) + "\n")
    return 0 if ok and not refused else 1
