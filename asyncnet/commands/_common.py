"""Helpers shared by subcommands: loading inputs, writing outputs, summaries."""

from __future__ import annotations

import argparse
import os
import sys
import zipfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from asyncnet.errors import AsyncNetError, NetDefinitionError, ParseError
from asyncnet.schema import TensorInfo

if TYPE_CHECKING:
    from asyncnet.executors import ExecutorOptions
    from asyncnet.iopolicy import IOPolicy
    from asyncnet.proto import caffe2_pb2 as pb
    from asyncnet.workspace import Workspace


def load_npz(path: str | Path) -> dict[str, np.ndarray]:
    """Arrays of an .npz file; never unpickles (object arrays are refused)."""
    p = Path(path)
    if not p.exists():
        raise ParseError(f"{p}: no such file", source=str(p))
    if not zipfile.is_zipfile(p):
        raise ParseError(f"{p}: not an .npz archive (expected a zip of .npy arrays)", source=str(p))
    try:
        _check_npz_members(p)
        with np.load(p, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except AsyncNetError:
        raise
    except Exception as e:
        # numpy/zipfile/zlib raise a wide, version-dependent set of types on damaged archives.
        raise ParseError(
            f"{p}: not a readable .npz file (object arrays are refused): {type(e).__name__}: {e}", source=str(p)
        ) from e


def _check_npz_members(p: Path) -> None:
    """Refuse members whose .npy header claims more data than the member holds, before reading it."""
    from asyncnet.serde import checked_numel

    with zipfile.ZipFile(p) as zf:
        for info in zf.infolist():
            with zf.open(info) as f:
                version = np.lib.format.read_magic(f)
                if version == (1, 0):
                    shape, _, dtype = np.lib.format.read_array_header_1_0(f)
                else:
                    shape, _, dtype = np.lib.format.read_array_header_2_0(f)
                if dtype.hasobject:
                    raise ParseError(
                        f"{p}: member '{info.filename}' holds Python objects (object arrays are refused)", source=str(p)
                    )
                need = checked_numel(shape, f"{p} member '{info.filename}'") * dtype.itemsize
                if need > info.file_size:
                    raise ParseError(
                        f"{p}: member '{info.filename}' claims {need} bytes of data, holds {info.file_size}",
                        source=str(p),
                    )


def save_npz(path: str | Path, arrays: Mapping[str, Any]) -> None:
    """Write arrays to .npz (keys may contain '/')."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    with open(p, "wb") as f:
        np.savez(f, **{k: np.asarray(v) for k, v in arrays.items()})  # type: ignore[arg-type]


def describe_array(name: str, value: Any) -> str:
    """One summary line: name, shape, dtype, min/max/mean for numeric arrays."""
    if not isinstance(value, np.ndarray):
        return f"  {name}: {type(value).__name__}"
    text = f"  {name}: shape {tuple(value.shape)} {value.dtype}"
    if value.size and value.dtype.kind in "biuf":
        v = value.astype(np.float64)
        text += f"  min {v.min():.6g} max {v.max():.6g} mean {v.mean():.6g}"
    return text


def parse_shape_specs(specs: Iterable[str]) -> dict[str, tuple[int, ...]]:
    """``NAME=D0,D1,...`` strings to name -> shape."""
    out: dict[str, tuple[int, ...]] = {}
    for spec in specs:
        name, sep, dims = spec.rpartition("=")
        if not sep or not name:
            raise argparse.ArgumentTypeError(f"--input-shape expects NAME=D0,D1,..., got '{spec}'")
        try:
            out[name] = tuple(int(d) for d in dims.split(",") if d.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(f"--input-shape '{spec}': dims must be integers") from None
    return out


@dataclass
class NetSetup:
    """A net to run and what to feed it, read and checked from ``run``/``bench`` options.

    Attributes:
        net_def: the net to run.
        init_def: the net run once before it (parameters), or None; init-net placeholders of
            inputs whose shape was given are already dropped from it.
        feeds: arrays from ``--inputs``, keyed by input name.
        data_shapes: shapes of data inputs to generate (``--input-shape``, ``--value-info`` or the
            value_info.json beside the net), keyed by input name.
        data_infos: the same with dtypes (value_info may say int or uint8 data).
        param_shapes: ``--param-shape``/``--param-shapes``: shapes for random-init parameters.
    """

    net_def: pb.NetDef
    init_def: pb.NetDef | None
    feeds: dict[str, np.ndarray]
    data_shapes: dict[str, tuple[int, ...]]
    data_infos: dict[str, TensorInfo] = field(default_factory=dict)
    param_shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)

    @property
    def data_inputs(self) -> list[str]:
        """Names the user supplied as data (``--inputs`` keys and ``--input-shape`` names)."""
        return list(dict.fromkeys([*self.feeds, *self.data_shapes]))

    def fill(self, workspace: Workspace, *, random_init: bool, seed: int, options: ExecutorOptions) -> None:
        """Run the init net, feed ``feeds`` and generate ``--input-shape`` data (and, with ``random_init``,
        every other missing input) into ``workspace``. Guessed parameter dimensions are reported in one
        warning line."""
        from asyncnet.randinit import describe_guesses, fill_workspace

        if self.init_def is not None:
            workspace.run_net_once(self.init_def, options=options)
        for name, value in self.feeds.items():
            workspace.feed(name, value)
        if self.data_shapes or random_init:
            data: dict[str, tuple[int, ...] | TensorInfo] = {**self.data_shapes, **self.data_infos}
            guessed: dict[str, str] = {}
            fill_workspace(
                self.net_def,
                workspace,
                data,
                params=random_init,
                seed=seed,
                param_shapes=self.param_shapes,
                guessed=guessed,
            )
            if guessed:
                warn(describe_guesses(guessed))


def add_input_arguments(p: argparse.ArgumentParser) -> None:
    """The options that say what a net runs on (shared by `run` and `bench`)."""
    from asyncnet.commands._shapes import add_shape_arguments

    p.add_argument("--init", metavar="INIT_NET", help="net run once before NET (parameters)")
    p.add_argument("--inputs", metavar="IN.npz", help="arrays to feed, keyed by blob name")
    p.add_argument(
        "--input-shape",
        action="append",
        default=[],
        metavar="NAME=D0,D1,...",
        help="feed seeded random float32 data of this shape to input NAME (repeatable); wins over value_info and "
        "init-net placeholders",
    )
    add_shape_arguments(p, input_shape=False)
    p.add_argument(
        "--random-init",
        action="store_true",
        help="fill every other unfed input (parameters) with seeded random values shaped by shape inference",
    )
    p.add_argument("--seed", type=int, default=0, metavar="N", help="seed for --input-shape/--random-init (default 0)")


def read_net_setup(
    net_path: str,
    init_path: str | None,
    inputs_path: str | None,
    shape_specs: Iterable[str],
    *,
    value_info: str | None = None,
    param_specs: Iterable[str] = (),
    param_file: str | None = None,
) -> NetSetup:
    """Read the nets and inputs named on the command line and check that every fed name is a net input.

    Input shapes come from ``shape_specs``, then ``value_info`` (default: a value_info.json beside the
    net, picked up with a note); see :mod:`asyncnet.commands._shapes`.

    Raises:
        ParseError: a file is unreadable.
        NetDefinitionError: a bad ``--input-shape`` spec, or a fed / shaped name the net does not read.
    """
    from asyncnet.commands._shapes import check_names, resolve_shapes, settle_placeholders
    from asyncnet.net import net_inputs
    from asyncnet.serde import read_net

    net_def = read_net(net_path)
    init_def = read_net(init_path) if init_path else None
    feeds = load_npz(inputs_path) if inputs_path else {}
    shapes = resolve_shapes(
        net_path, input_specs=shape_specs, value_info=value_info, param_specs=param_specs, param_file=param_file
    )
    check_names(net_def, net_path, shapes)
    accepted = set(net_inputs(net_def))
    listing = ", ".join(sorted(accepted)) or "none"
    unknown = sorted(k for k in feeds if k not in accepted)
    if unknown:
        raise NetDefinitionError(
            f"{inputs_path}: key(s) {unknown} are not inputs of net '{net_def.name}' from {net_path}; its inputs: {listing}"
        )
    # Fed arrays need no generated data; a given shape or fed array beats an init-net placeholder.
    data = {n: t for n, t in shapes.data.items() if n not in feeds}
    given: dict[str, object] = {n: f"shape {list(t.shape or ())}" for n, t in data.items()}
    given.update({n: f"fed array of shape {list(v.shape)}" for n, v in feeds.items()})
    init_def = settle_placeholders(init_def, net_def, given)
    data_shapes = {n: tuple(int(d or 0) for d in t.shape or ()) for n, t in data.items()}
    return NetSetup(net_def, init_def, feeds, data_shapes, data, shapes.params)


def setup_from_args(args: argparse.Namespace) -> NetSetup:
    """:func:`read_net_setup` with the options of :func:`add_input_arguments`."""
    return read_net_setup(
        args.net,
        args.init,
        args.inputs,
        args.input_shape,
        value_info=args.value_info,
        param_specs=args.param_shape,
        param_file=args.param_shapes,
    )


# ---------------------------------------------------------------------------
# Messages on stderr (stdout stays the command's result)


def note(message: str) -> None:
    """One ``note:`` line on stderr."""
    sys.stderr.write(f"note: {message}\n")


def warn(message: str) -> None:
    """One ``warning:`` line on stderr."""
    sys.stderr.write(f"warning: {message}\n")


# ---------------------------------------------------------------------------
# File access policy (issue 16): which files the nets a command runs may read and write

IO_POLICY_HINT = "to allow it, pass --allow-read DIR / --allow-write DIR (or --allow-any-path to allow every path)"


def add_io_policy_args(
    p: argparse.ArgumentParser,
    description: str = "Ops of the net (Save, Load, file readers, ...) may read files under the net's folder and the "
    "current folder, and write under the current folder; anything else is refused before the net runs.",
) -> None:
    """``--allow-read DIR``, ``--allow-write DIR`` (repeatable) and ``--allow-any-path``; ``description``
    says what the command allows without them."""
    g = p.add_argument_group("file access", description)
    g.add_argument(
        "--allow-read", action="append", default=[], metavar="DIR", help="also let the net read under DIR (repeatable)"
    )
    g.add_argument(
        "--allow-write",
        action="append",
        default=[],
        metavar="DIR",
        help="also let the net write (and read) under DIR (repeatable)",
    )
    g.add_argument(
        "--allow-any-path",
        action="store_true",
        help="let the net read and write any file you can (Caffe2's behaviour; prints a warning)",
    )


def io_policy_from_args(args: argparse.Namespace, *net_paths: str | os.PathLike[str] | None) -> IOPolicy:
    """The policy of a command: reads under the folders of ``net_paths`` and the current folder, writes
    under the current folder, widened by ``--allow-read``/``--allow-write``; permissive (with a warning)
    under ``--allow-any-path``."""
    from asyncnet.iopolicy import IOPolicy

    if getattr(args, "allow_any_path", False):
        warn("--allow-any-path: the net may read and write any file you can (Caffe2's behaviour)")
        return IOPolicy.permissive()
    cwd = Path.cwd()
    folders = [Path(p).parent for p in net_paths if p]
    return IOPolicy.restricted(
        read=[*folders, cwd, *getattr(args, "allow_read", [])],
        write=[cwd, *getattr(args, "allow_write", [])],
        hint=IO_POLICY_HINT,
    )


def refuse_file_accesses(
    policy: IOPolicy, *, nets: Iterable[pb.NetDef | None] = (), plan: pb.PlanDef | None = None, what: str = "the net"
) -> None:
    """Check every file the nets (and plan) name against ``policy`` before anything runs.

    Raises:
        FileAccessError: one message listing each refused op and path.
    """
    from asyncnet.fileaccess import check_accesses, net_file_accesses, plan_file_accesses

    if policy.is_permissive:
        return
    accesses = [a for n in nets if n is not None for a in net_file_accesses(n, label=_net_label(n))]
    if plan is not None:
        accesses.extend(plan_file_accesses(plan))
    check_accesses(accesses, policy, what=what)


def _net_label(net: pb.NetDef) -> str:
    return f"net '{net.name}': " if net.name else ""


def read_net_or_plan(path: str, *, plan: bool = False) -> pb.NetDef | pb.PlanDef:
    """A NetDef, or a PlanDef when ``plan`` is set or the file is not a NetDef but is a PlanDef."""
    from asyncnet.serde import read_net, read_plan

    if plan:
        return read_plan(path)
    try:
        return read_net(path)
    except ParseError as first:
        try:
            return read_plan(path)
        except AsyncNetError:
            raise first from None


def file_access_report(
    target: pb.NetDef | pb.PlanDef, policy: IOPolicy, *, init: pb.NetDef | None = None
) -> tuple[list[str], int]:
    """Lines listing every file the net/plan (and init net) names, marked where ``policy`` refuses it,
    and the number refused."""
    from asyncnet.fileaccess import describe_policy, format_accesses, net_file_accesses, plan_file_accesses
    from asyncnet.proto import caffe2_pb2 as pb_

    accesses = net_file_accesses(init, label="init net: ") if init is not None else []
    if isinstance(target, pb_.PlanDef):
        accesses.extend(plan_file_accesses(target))
    else:
        accesses.extend(net_file_accesses(target))
    refused = sum(1 for a in accesses if not a.allowed(policy))
    lines = format_accesses(accesses, policy)
    if accesses:
        lines.append("  " + describe_policy(policy) + (f"; {refused} refused ({IO_POLICY_HINT})" if refused else ""))
    return lines, refused
