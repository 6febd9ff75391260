"""``asyncnet launch -n N TARGET ...``: start N local workers of a script or an asyncnet command.

TARGET is a Python script (run with this interpreter) or an asyncnet subcommand such as
``run-plan`` or ``train-digits``. Each worker gets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR,
MASTER_PORT (as torchrun sets them) and ASYNCNET_STORE / ASYNCNET_RUN_ID; ``{rank}`` in any
argument is replaced by the worker's rank (e.g. ``--outputs out_{rank}.npz``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from asyncnet.errors import ArgumentError


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "launch",
        help="start N data-parallel workers of a script or asyncnet command (FileStore or TCP rendezvous)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("-n", "--nprocs", type=int, required=True, help="workers on this machine")
    p.add_argument("--nnodes", type=int, default=1, help="machines in the job (default 1)")
    p.add_argument("--node-rank", type=int, default=0, help="this machine's index, 0..nnodes-1")
    p.add_argument("--master-addr", default="", help="TCP rendezvous: address of the machine of rank 0")
    p.add_argument("--master-port", type=int, default=29500, help="TCP rendezvous port (default %(default)s)")
    p.add_argument("--store", default=None, help="FileStore directory for a one-machine job (default: a temp dir)")
    p.add_argument("--timeout-ms", type=int, default=30_000, help="rendezvous and collective timeout")
    p.add_argument("target", help="a Python script, or an asyncnet subcommand (run-plan, train-digits, ...)")
    p.add_argument("args", nargs=argparse.REMAINDER, help="arguments of the target")
    p.set_defaults(func=run)


def target_command(target: str, args: list[str]) -> list[str]:
    """The command line one worker runs."""
    if target.endswith(".py") or Path(target).is_file():
        if not Path(target).is_file():
            raise ArgumentError(f"launch: script '{target}' does not exist")
        return [sys.executable, target, *args]
    from asyncnet.cli import build_parser

    commands = sorted(
        name
        for action in build_parser()._actions
        if isinstance(action, argparse._SubParsersAction)
        for name in action.choices
    )
    if target not in commands:
        raise ArgumentError(f"launch: '{target}' is neither a script nor an asyncnet command; commands: {commands}")
    return [sys.executable, "-m", "asyncnet", target, *args]


def run(args: argparse.Namespace) -> int:
    from asyncnet.distributed.launch import launch

    command = target_command(args.target, list(args.args))
    result = launch(
        command,
        args.nprocs,
        nnodes=args.nnodes,
        node_rank=args.node_rank,
        master_addr=args.master_addr,
        master_port=args.master_port if args.master_addr else 0,
        store_dir=args.store,
        timeout_ms=args.timeout_ms,
        per_rank_args=True,
    )
    if not result.ok:
        sys.stderr.write(
            f"asyncnet launch: rank {result.first_failed} failed first; exit codes by rank: {result.returncodes}\n"
        )
        return 1
    return 0
