"""Input and parameter shapes for every command that needs them (run, bench, check, draw, to-onnx).

Where a data input's shape comes from, first match wins: ``--input-shape``, ``--value-info FILE``,
a ``value_info.json`` beside the net (model-zoo convention, picked up with a note), and last an
init net's own blob. An init-net placeholder (``ConstantFill shape=[1]`` for the data input, as
many Caffe2 exports have) never beats a given shape: it is dropped from the init net, with a note.
Parameter shapes come from ``--param-shape NAME=D0,...`` and ``--param-shapes FILE.json``.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from asyncnet.commands._common import note, parse_shape_specs
from asyncnet.errors import NetDefinitionError
from asyncnet.proto import caffe2_pb2 as pb
from asyncnet.schema import TensorInfo

VALUE_INFO = "value_info.json"


def add_shape_arguments(p: argparse.ArgumentParser, *, input_shape: bool = True, params: bool = True) -> None:
    """``--value-info`` (and ``--input-shape``, ``--param-shape``, ``--param-shapes`` unless turned off)."""
    if input_shape:
        p.add_argument(
            "--input-shape",
            action="append",
            default=[],
            metavar="NAME=D0,D1,...",
            help="shape of data input NAME (float32; repeatable); wins over value_info and init-net placeholders",
        )
    p.add_argument(
        "--value-info",
        metavar="JSON",
        help=f"model-zoo value_info.json giving input dtypes and shapes (default: {VALUE_INFO} beside NET, if any)",
    )
    if params:
        p.add_argument(
            "--param-shape",
            action="append",
            default=[],
            metavar="NAME=D0,D1,...",
            help="shape of parameter NAME when there are no weights for it (repeatable)",
        )
        p.add_argument(
            "--param-shapes",
            metavar="FILE.json",
            help='parameter shapes as JSON: {"NAME": [D0, D1, ...], ...} (value_info style is accepted too)',
        )


def _specs(specs: Iterable[str], flag: str) -> dict[str, tuple[int, ...]]:
    try:
        return parse_shape_specs(specs)
    except argparse.ArgumentTypeError as e:
        raise NetDefinitionError(str(e).replace("--input-shape", flag)) from None


@dataclass
class Shapes:
    """Shapes a command was given or found.

    Attributes:
        data: data input -> info (dtype float32 unless value_info says otherwise).
        params: parameter -> shape (``--param-shape``/``--param-shapes``).
        origin: name -> where its shape came from (an option or a file), for messages.
    """

    data: dict[str, TensorInfo] = field(default_factory=dict)
    params: dict[str, tuple[int, ...]] = field(default_factory=dict)
    origin: dict[str, str] = field(default_factory=dict)
    found_beside: str = ""


def resolve_shapes(
    net_path: str | None,
    *,
    input_specs: Iterable[str] = (),
    value_info: str | None = None,
    param_specs: Iterable[str] = (),
    param_file: str | None = None,
) -> Shapes:
    """Collect the shapes of data inputs and parameters from the options (and value_info.json)."""
    from asyncnet.modelinputs import read_param_shapes
    from asyncnet.shapes import read_value_info

    out = Shapes()
    path = value_info
    if path is None and net_path:
        beside = Path(net_path).parent / VALUE_INFO
        if beside.is_file():
            path = out.found_beside = str(beside)
            note(f"input shapes from {beside} (the {VALUE_INFO} beside the net; --value-info FILE picks another)")
    if path:
        for name, info in read_value_info(path).items():
            out.data[name], out.origin[name] = info, str(path)
    for name, shape in _specs(input_specs, "--input-shape").items():
        out.data[name], out.origin[name] = TensorInfo(shape, np.dtype(np.float32)), "--input-shape"
    if param_file:
        for name, dims in read_param_shapes(param_file).items():
            out.params[name], out.origin[name] = dims, param_file
    for name, dims in _specs(param_specs, "--param-shape").items():
        out.params[name], out.origin[name] = dims, "--param-shape"
    return out


def check_names(net: pb.NetDef, net_path: str, shapes: Shapes) -> None:
    """Every given data or parameter name must be an input of ``net``.

    Raises:
        NetDefinitionError: naming the unknown names and listing the net's inputs.
    """
    from asyncnet.net import net_inputs

    accepted = set(net_inputs(net))
    listing = ", ".join(sorted(accepted)) or "none"
    # A value_info.json found beside the net (not asked for) may describe another net of the folder.
    stray = [
        k for k in shapes.data if k not in accepted and shapes.found_beside and shapes.origin[k] == shapes.found_beside
    ]
    if stray:
        note(f"ignoring {stray} from {shapes.found_beside}: not inputs of net '{net.name}'")
        for k in stray:
            del shapes.data[k]
    bad = [k for k in (*shapes.data, *shapes.params) if k not in accepted]
    if bad:
        source = shapes.origin.get(bad[0], "a shape option")
        names = sorted(k for k in bad if shapes.origin.get(k) == source)
        raise NetDefinitionError(
            f"{source} names {names}, which are not inputs of net '{net.name}' from {net_path}; its inputs: {listing}"
        )


def settle_placeholders(init: pb.NetDef | None, predict: pb.NetDef, given: Mapping[str, object]) -> pb.NetDef | None:
    """``init`` without the placeholders of data inputs in ``given`` (name -> the shape or value given,
    each mentioned once in a note); placeholders left in place get a note saying how to give the real shape."""
    from asyncnet.modelinputs import drop_init_outputs, init_placeholders

    if init is None:
        return None
    found = init_placeholders(init, predict)
    if not found:
        return init
    overridden = [n for n in found if n in given]
    for name in overridden:
        note(f"the init net's '{name}' is a placeholder ({found[name]}); the given {given[name]} wins")
    for name in (n for n in found if n not in given):
        note(
            f"the init net's '{name}' looks like a placeholder ({found[name]}); if the net fails on its shape, "
            f"give the real one: --input-shape {name}=D0,D1,... or --value-info FILE"
        )
    return drop_init_outputs(init, overridden) if overridden else init


def unknown_shape_lines(net: pb.NetDef, unknown: Iterable[str], *, have_init: bool) -> list[str]:
    """Lines for ``check``: which inputs have no shape, split into data and parameters, and how to supply them."""
    from asyncnet.modelinputs import classify_inputs

    names = list(unknown)
    if not names:
        return []
    _, params = classify_inputs(net)
    param_set = set(params)
    data = [n for n in names if n not in param_set]
    weights = [n for n in names if n in param_set]
    lines = []
    if data:
        lines.append(
            f"  {len(data)} data input(s) of unknown shape: {_short(data)}; give --input-shape NAME=D0,D1,... "
            f"or --value-info FILE ({VALUE_INFO} beside the net is read by default)"
        )
    if weights:
        why = "the init net does not make them" if have_init else "their weights are missing (no --init INIT_NET)"
        lines.append(
            f"  {len(weights)} parameter(s) of unknown shape because {why}: {_short(weights)}; give the init net "
            "(--init), or their shapes with --param-shape NAME=D0,D1,... or --param-shapes FILE.json "
            "('asyncnet run --random-init' derives most of them and lists the dimensions it has to guess)"
        )
    return lines


def _short(names: list[str], limit: int = 8) -> str:
    return ", ".join(names[:limit]) + (f" ... ({len(names) - limit} more)" if len(names) > limit else "")


def param_infos(params: Mapping[str, tuple[int, ...]]) -> dict[str, TensorInfo]:
    """Parameter shapes as float32 infos (for shape inference)."""
    return {n: TensorInfo(s, np.dtype(np.float32)) for n, s in params.items()}
