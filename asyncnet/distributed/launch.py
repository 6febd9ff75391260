"""Starting N local workers, and reading a worker's place in the world from its environment.

``asyncnet launch -n N ...`` starts N processes with the variables torch.distributed's own
launcher (``torchrun``) sets — ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``,
``MASTER_PORT`` — plus ``ASYNCNET_STORE`` (a FileStore directory, single machine) and
``ASYNCNET_RUN_ID`` (so a rerun never reads a crashed run's keys). It needs no torch
itself. On several machines run it once per machine with ``--nnodes``, ``--node-rank``
and a TCP rendezvous ``--master-addr``/``--master-port`` (rank 0's machine serves the store).

When one worker fails, the others get ``grace`` seconds to fail on their own (their
collectives time out or see the closed connection), then are terminated, then killed:
the launcher never leaves a process behind.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from asyncnet.distributed.data_parallel import Rendezvous
from asyncnet.distributed.store import RUN_ID_ENV, StoreHandler
from asyncnet.errors import ArgumentError

log = logging.getLogger(__name__)

STORE_ENV = "ASYNCNET_STORE"
TIMEOUT_ENV = "ASYNCNET_TIMEOUT_MS"


@dataclass(frozen=True)
class WorldEnv:
    """A worker's place in the world, as the launcher (or torchrun) described it."""

    rank: int
    size: int
    store_path: str = ""
    master_addr: str = ""
    master_port: int = 0
    timeout_ms: int = 30_000

    def rendezvous(self, *, prefix: str = "", num_worlds: int = 4) -> Rendezvous:
        if self.store_path:
            return Rendezvous(
                self.rank,
                self.size,
                path=self.store_path,
                prefix=prefix,
                timeout_ms=self.timeout_ms,
                num_worlds=num_worlds,
            )
        return Rendezvous(
            self.rank,
            self.size,
            host=self.master_addr,
            port=self.master_port,
            prefix=prefix,
            timeout_ms=self.timeout_ms,
            num_worlds=num_worlds,
        )

    def store_handler(self) -> StoreHandler:
        if self.store_path:
            return StoreHandler("file", path=self.store_path, timeout=self.timeout_ms / 1000)
        return StoreHandler("tcp", host=self.master_addr, port=self.master_port, timeout=self.timeout_ms / 1000)


def world_from_env(env: Mapping[str, str] | None = None) -> WorldEnv | None:
    """The world described by ``RANK``/``WORLD_SIZE``/... in ``env``; None when not launched."""
    e = os.environ if env is None else env
    if "WORLD_SIZE" not in e or "RANK" not in e:
        return None
    try:
        rank, size = int(e["RANK"]), int(e["WORLD_SIZE"])
        port = int(e.get("MASTER_PORT", "0") or 0)
        timeout = int(e.get(TIMEOUT_ENV, "30000"))
    except ValueError as err:
        raise ArgumentError(
            f"malformed launch environment (RANK, WORLD_SIZE, MASTER_PORT must be integers): {err}"
        ) from None
    store = e.get(STORE_ENV, "")
    addr = e.get("MASTER_ADDR", "")
    if not store and not (addr and port):
        raise ArgumentError(f"launch environment has neither {STORE_ENV} nor MASTER_ADDR and MASTER_PORT")
    return WorldEnv(rank, size, store, addr, port, timeout)


@dataclass
class LaunchResult:
    """Exit codes by rank, and the rank that failed first (None when all succeeded)."""

    returncodes: list[int]
    first_failed: int | None

    @property
    def ok(self) -> bool:
        return self.first_failed is None


def launch(
    command: Sequence[str],
    nprocs: int,
    *,
    nnodes: int = 1,
    node_rank: int = 0,
    master_addr: str = "",
    master_port: int = 0,
    store_dir: str | None = None,
    timeout_ms: int = 30_000,
    grace: float | None = None,
    run_id: str | None = None,
    extra_env: Mapping[str, str] | None = None,
    world_size: int | None = None,
    per_rank_args: bool = False,
) -> LaunchResult:
    """Run ``command`` in ``nprocs`` local processes, ranks ``node_rank * nprocs + i``.

    Without ``master_addr`` the ranks meet through a FileStore in ``store_dir`` (a fresh
    temporary directory by default); with it, through a TCP store on ``master_addr:master_port``.
    ``world_size`` overrides ``nprocs * nnodes`` (to start only some ranks of a world here).
    With ``per_rank_args``, ``{rank}`` in an argument becomes the worker's rank.
    """
    if nprocs < 1 or nnodes < 1 or not 0 <= node_rank < nnodes:
        raise ArgumentError(
            f"launch: need nprocs >= 1 and 0 <= node_rank < nnodes, got {nprocs}, {node_rank}, {nnodes}"
        )
    if nnodes > 1 and not master_addr:
        raise ArgumentError("launch: several machines need a TCP rendezvous (--master-addr and --master-port)")
    if master_addr and not 0 < master_port < 65536:
        raise ArgumentError(f"launch: --master-port must be in 1..65535, got {master_port}")
    size = nprocs * nnodes if world_size is None else world_size
    if size < node_rank * nprocs + nprocs:
        raise ArgumentError(f"launch: world size {size} is too small for ranks up to {node_rank * nprocs + nprocs - 1}")
    tmp: tempfile.TemporaryDirectory[str] | None = None
    if not master_addr and store_dir is None:
        tmp = tempfile.TemporaryDirectory(prefix="asyncnet_store_")
        store_dir = tmp.name
    run = run_id or os.environ.get(RUN_ID_ENV) or uuid.uuid4().hex[:12]
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for i in range(nprocs):
            env = dict(os.environ)
            env.update(extra_env or {})
            env.update(
                {
                    "RANK": str(node_rank * nprocs + i),
                    "WORLD_SIZE": str(size),
                    "LOCAL_RANK": str(i),
                    "LOCAL_WORLD_SIZE": str(nprocs),
                    RUN_ID_ENV: run,
                    TIMEOUT_ENV: str(timeout_ms),
                }
            )
            if master_addr:
                env.update({"MASTER_ADDR": master_addr, "MASTER_PORT": str(master_port)})
                env.pop(STORE_ENV, None)
            else:
                env[STORE_ENV] = str(store_dir)
            rank = node_rank * nprocs + i
            argv = [a.replace("{rank}", str(rank)) for a in command] if per_rank_args else list(command)
            procs.append(subprocess.Popen(argv, env=env))
        return _supervise(procs, node_rank * nprocs, timeout_ms / 1000 + 10 if grace is None else grace)
    finally:
        _reap(procs)
        if tmp is not None:
            tmp.cleanup()


def _supervise(procs: list[subprocess.Popen[bytes]], first_rank: int, grace: float) -> LaunchResult:
    first_failed: int | None = None
    failed_at = 0.0
    while True:
        codes = [p.poll() for p in procs]
        for i, c in enumerate(codes):
            if c not in (None, 0) and first_failed is None:
                first_failed, failed_at = first_rank + i, time.monotonic()
                log.error("rank %d exited with code %d; waiting up to %.0f s for the others", first_rank + i, c, grace)
        if all(c is not None for c in codes):
            break
        if first_failed is not None and time.monotonic() - failed_at > grace:
            log.error("terminating the remaining ranks after rank %d failed", first_failed)
            break
        time.sleep(0.05)
    _reap(procs)
    return LaunchResult([p.returncode if p.returncode is not None else -9 for p in procs], first_failed)


def _reap(procs: list[subprocess.Popen[bytes]]) -> None:
    """Terminate, then kill, whatever is still running; wait for all."""
    alive = [p for p in procs if p.poll() is None]
    for p in alive:
        p.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 5.0
    for p in alive:
        try:
            p.wait(timeout=max(deadline - time.monotonic(), 0.1))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
