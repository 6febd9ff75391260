"""The inference options shared by ``run`` and ``bench``: graph rewrites and onnxruntime offload."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from asyncnet.proto import caffe2_pb2 as pb

if TYPE_CHECKING:
    from asyncnet.commands._common import NetSetup
    from asyncnet.workspace import Workspace

OFFLOAD_BACKENDS = ("onnxruntime",)


def add_inference_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--no-optimize",
        action="store_true",
        help="do not rewrite the net for inference (by default, when --init provides the parameters, "
        "BN/AffineChannel/constant Mul+Add fold into Conv/FC, Relu fuses into its producer, identities go)",
    )
    p.add_argument(
        "--offload",
        choices=OFFLOAD_BACKENDS,
        metavar="BACKEND",
        help="run maximal runs of ONNX-exportable ops as Onnxifi ops in BACKEND (onnxruntime; needs the 'onnx' "
        "extra). Off by default: numpy kernels.",
    )


@dataclass
class Prepared:
    """The net to run and what was done to it.

    Attributes:
        net_def: the net after the rewrites / offload.
        summary: short lines (op counts per rewrite family, Onnxifi ops).
        details: every rewrite that ran, one line each.
    """

    net_def: pb.NetDef
    summary: list[str] = field(default_factory=list)
    details: list[str] = field(default_factory=list)


def prepare_for_inference(
    args: argparse.Namespace, setup: NetSetup, workspace: Workspace, *, keep: Sequence[str] = ()
) -> Prepared:
    """The net to run after the rewrites/offload the options ask for, and lines saying what ran.

    ``workspace`` must hold the parameters and data; new parameter blobs are fed into it.
    """
    from asyncnet.net import net_inputs
    from asyncnet.transforms import offload_to_onnxruntime, optimize_for_inference

    net_def = setup.net_def
    data = list(setup.data_inputs)
    if setup.init_def is not None:
        # Parameters are what the init net makes; any other input is data, whoever fed it.
        made = {o for op in setup.init_def.op for o in op.output}
        data += [n for n in net_inputs(net_def) if n not in made and n not in data]
    out = Prepared(net_def)
    if args.no_optimize:
        out.summary.append("rewrites: off (--no-optimize)")
    elif setup.init_def is None:
        out.summary.append("rewrites: off (no --init: the parameters are not known constants)")
    else:
        res = optimize_for_inference(net_def, workspace=workspace, data_inputs=data, keep=keep)
        res.apply(workspace)
        out.net_def = res.predict_net
        lines = res.summary_lines()
        out.summary.append(lines[0])
        out.details.extend(lines)
    if args.offload == "onnxruntime":
        off = offload_to_onnxruntime(out.net_def, workspace=workspace, data_inputs=data)
        out.net_def = off.predict_net
        out.summary.extend(off.summary_lines())
        out.details.extend(off.summary_lines())
    return out
