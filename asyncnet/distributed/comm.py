"""CommonWorld: a Gloo process group whose collectives return futures and hold no thread.

Each collective is issued with torch's asynchronous work handles; completion arrives
through the work's future callback (on Gloo's own thread), which completes the
``concurrent.futures.Future`` an executor waits on. No Python thread blocks while the
network works, so the async_scheduling executor keeps computing meanwhile.

Before every collective the ranks exchange a short descriptor (the op, dtypes, shapes):
a rank whose tensors differ, or that issued a different collective on this world,
makes every rank fail with one error that says who had what — never a hang and never
silently mixed data. Collectives of one world run one after another in the order they
are issued (Gloo pairs them by order); independent ops should use cloned worlds.
"""

from __future__ import annotations

import functools
import logging
import os
import socket
import sys
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, InvalidStateError
from datetime import timedelta
from pathlib import Path
from types import TracebackType
from typing import Any, NoReturn

import numpy as np

from asyncnet.distributed._torch import CollectiveError, torch_dist
from asyncnet.distributed.store import StoreHandler
from asyncnet.errors import ArgumentError
from asyncnet.executors.pools import shared_timer

log = logging.getLogger(__name__)

DESCRIPTOR_BYTES = 512
_LOOPBACK = ("127.0.0.1", "localhost", "::1")


def _descriptor(label: str, arrays: Sequence[np.ndarray]) -> str:
    return label + "|" + ";".join(f"{a.dtype}{list(a.shape)}" for a in arrays)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a killed child its parent has not reaped yet is a zombie: dead for us
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rpartition(")")[2].split()[0] != "Z"
    except (OSError, IndexError):
        return True


# Strong references: a world must not be torn down by the garbage collector while a peer fails
# (that can abort inside torch); it lives until DestroyCommonWorld or the process ends.
_LIVE: set[CommonWorld] = set()
# Destroyed worlds' process groups: never released from one of Gloo's own threads (a group
# destructed on its worker thread joins itself and aborts the process).
_GRAVE: list[Any] = []
_hook_lock = threading.Lock()
_hook_installed = False


def announce_failure(error: BaseException) -> None:
    """Tell the peers of every live common world of this process why this rank is failing.

    Their collectives then name this rank and the reason instead of only a closed connection.
    Called automatically for an uncaught exception (see :func:`exit_process`).
    """
    text = f"{type(error).__name__}: {_first_line(error)}"[:400]
    for world in list(_LIVE):
        try:
            world.store.set(f"failed/{world.rank}", text)
        except (RuntimeError, OSError):
            pass  # the store may be gone too; the peers still fail on the closed connection


def exit_process(code: int, error: BaseException | None = None) -> NoReturn:
    """Leave the process with ``code`` without tearing down Gloo (after announcing ``error``).

    Tearing down Gloo's connections at interpreter exit while a peer is failing can abort
    the process inside torch (SIGABRT instead of a clean exit code). When this process has
    common worlds, this flushes the standard streams and logging and ends it with
    ``os._exit``; otherwise it is ``sys.exit(code)``.
    """
    if error is not None:
        announce_failure(error)
    if not _LIVE and not _GRAVE:
        sys.exit(code)
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


def _install_excepthook() -> None:
    """An uncaught exception announces itself to the peers, prints as usual, then exits 1."""
    global _hook_installed
    with _hook_lock:
        if _hook_installed:
            return
        _hook_installed = True
    previous = sys.excepthook

    def hook(kind: type[BaseException], value: BaseException, tb: TracebackType | None) -> None:
        previous(kind, value, tb)
        if isinstance(value, Exception):
            exit_process(1, value)

    sys.excepthook = hook


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


class CommonWorld:
    """``size`` ranks connected through Gloo, created by rendezvous on a store handler.

    Args:
        handler: where the ranks meet.
        rank / size: this process's rank and the number of ranks.
        name: the world's name (keys in the store are namespaced by it; must match across ranks).
        timeout: seconds any rendezvous or collective may wait for a peer before failing.
    """

    def __init__(self, handler: StoreHandler, rank: int, size: int, name: str, timeout: float) -> None:
        if size < 1 or not 0 <= rank < size:
            raise ArgumentError(f"common world '{name}': need 0 <= rank < size, got rank {rank}, size {size}")
        if not timeout > 0:
            raise ArgumentError(f"common world '{name}': timeout must be > 0 seconds, got {timeout}")
        _, dist = torch_dist()
        self.handler = handler
        self.rank, self.size, self.name, self.timeout = rank, size, name, float(timeout)
        self._dist = dist
        self._lock = threading.Lock()
        self._tail: Future[Any] | None = None
        self._clones = 0
        self.closed = False
        # Start the timer thread from a Python thread now: completions are handed to it from
        # Gloo's threads, which must not create Python threads (they would appear as "Dummy").
        shared_timer().call_later(0.0, lambda: None)
        base = handler.open(rank, size)
        self.store = dist.PrefixStore(f"{name}/", base)
        td = timedelta(seconds=self.timeout)
        try:
            self.store.set_timeout(td)
            self.store.set(f"member/{rank}", f"{socket.gethostname()}:{os.getpid()}")
            opts = dist.ProcessGroupGloo._Options()
            opts._timeout = td
            opts._devices = [self._device(dist)]
            self.pg = dist.ProcessGroupGloo(dist.PrefixStore("gloo/", self.store), rank, size, opts)
        except (RuntimeError, OSError) as e:
            raise CollectiveError(self._rendezvous_failure(e)) from e
        _LIVE.add(self)
        _install_excepthook()
        log.debug("common world '%s': rank %d of %d connected via %s", name, rank, size, handler.describe())

    def _device(self, dist: Any) -> Any:
        iface = os.environ.get("GLOO_SOCKET_IFNAME", "")
        if iface:
            return dist.ProcessGroupGloo.create_device(interface=iface)
        if self.handler.kind == "file" or self.handler.host in _LOOPBACK:
            return dist.ProcessGroupGloo.create_device(hostname="127.0.0.1")
        return dist.ProcessGroupGloo.create_default_device()

    def describe(self) -> str:
        return f"communicator '{self.name}' (rank {self.rank} of {self.size})"

    # -- diagnostics -------------------------------------------------------------

    def _members(self) -> dict[int, str]:
        found: dict[int, str] = {}
        for r in range(self.size):
            try:
                if self.store.check([f"member/{r}"]):
                    found[r] = self.store.get(f"member/{r}").decode()
            except (RuntimeError, OSError):
                break  # the store itself is gone (a TCP store dies with rank 0)
        return found

    def _failed_peers(self) -> list[str]:
        found = []
        for r in range(self.size):
            try:
                if r != self.rank and self.store.check([f"failed/{r}"]):
                    found.append(f"peer rank {r} failed: {self.store.get(f'failed/{r}').decode(errors='replace')}")
            except (RuntimeError, OSError):
                break
        return found

    def _peer_report(self) -> str:
        members = self._members()
        host = socket.gethostname()
        gone = self._failed_peers()
        for r, where in sorted(members.items()):
            h, _, pid = where.rpartition(":")
            if any(g.startswith(f"peer rank {r} ") for g in gone):
                continue
            if r != self.rank and h == host and pid.isdigit() and not _pid_alive(int(pid)):
                gone.append(f"peer rank {r} (pid {pid}) has exited")
        missing = [r for r in range(self.size) if r not in members]
        parts = gone + ([f"ranks {missing} never joined"] if missing and members else [])
        return "; ".join(parts) if parts else "peer rank unknown (a peer raised, hung or was killed)"

    def _rendezvous_failure(self, exc: BaseException) -> str:
        return (
            f"CreateCommonWorld {self.describe()} failed within {self.timeout:g} s on the "
            f"{self.handler.describe()}: {self._peer_report()}: {_first_line(exc)}"
        )

    def _failure(self, what: str, label: str, exc: BaseException) -> CollectiveError:
        return CollectiveError(
            f"{label}: collective {what} on {self.describe()} failed (timeout {self.timeout:g} s): "
            f"{self._peer_report()}: {_first_line(exc)}"
        )

    # -- issuing -----------------------------------------------------------------

    def _submit(
        self,
        what: str,
        label: str,
        arrays: Sequence[np.ndarray],
        start: Callable[[], Any],
        finish: Callable[[], Any],
        *,
        check: bool = True,
    ) -> Future[Any]:
        """Queue one collective: descriptor exchange, then ``start()``'s work, then ``finish()``.

        The exchange costs one small round trip before the collective. It cannot run alongside:
        Gloo aborts the whole process (not an exception) when the ranks' message sizes differ,
        so sizes must be agreed before any data moves. ``check=False`` skips it (Caffe2 had no
        such check): a mismatch then aborts inside Gloo.
        """
        if self.closed:
            raise CollectiveError(f"{label}: {self.describe()} was destroyed (DestroyCommonWorld)")
        result: Future[Any] = Future()
        _timer = shared_timer()
        desc = _descriptor(f"{what} {label}", arrays)

        def fail(exc: BaseException) -> None:
            err = exc if isinstance(exc, CollectiveError) else self._failure(what, label, exc)
            if exc is not err:
                err.__cause__ = exc
            _timer.call_later(0.0, functools.partial(_settle, result, None, err))

        def on_main(tf: Any) -> None:
            try:
                tf.value()
                value = finish()
            except Exception as e:
                fail(e)
                return
            # Completion runs the executor's callbacks: do that on a Python thread of ours, not on
            # Gloo's (a foreign thread would also show up as a never-ending "Dummy" thread).
            _timer.call_later(0.0, functools.partial(_settle, result, value, None))

        def run_main() -> None:
            try:
                work = start()
            except Exception as e:
                fail(e)
                return
            work.get_future().add_done_callback(on_main)

        def on_meta(tf: Any, gathered: list[Any]) -> None:
            try:
                tf.value()
                self._check(what, label, desc, gathered)
            except Exception as e:
                fail(e)
                return
            run_main()

        def begin(_: Any = None) -> None:
            if result.done():
                return
            if not check or self.size == 1:
                run_main()
                return
            try:
                torch, _ = torch_dist()
                raw = desc.encode()
                if len(raw) > DESCRIPTOR_BYTES:
                    raw = raw[: DESCRIPTOR_BYTES - 20] + b"...(truncated)"
                mine = torch.zeros(DESCRIPTOR_BYTES, dtype=torch.uint8)
                mine[: len(raw)] = torch.frombuffer(bytearray(raw), dtype=torch.uint8)
                gathered = [torch.zeros(DESCRIPTOR_BYTES, dtype=torch.uint8) for _ in range(self.size)]
                work = self.pg.allgather([gathered], [mine])
            except Exception as e:
                fail(e)
                return
            work.get_future().add_done_callback(lambda tf: on_meta(tf, gathered))

        with self._lock:
            prev, self._tail = self._tail, result
        if prev is None:
            begin()
        else:
            prev.add_done_callback(begin)
        return result

    def _check(self, what: str, label: str, desc: str, gathered: list[Any]) -> None:
        descs = [bytes(t.numpy()).rstrip(b"\0").decode(errors="replace") for t in gathered]
        if all(d == descs[0] for d in descs):
            return
        listing = "; ".join(f"rank {r}: {d}" for r, d in enumerate(descs))
        raise CollectiveError(
            f"{label}: collective {what} on {self.describe()}: ranks disagree on the op, dtypes or shapes "
            f"(every rank must issue the same collectives in the same order with equal tensors): {listing}"
        )

    # -- collectives ---------------------------------------------------------------

    def allreduce(
        self, arrays: Sequence[np.ndarray], label: str, *, inplace: bool = False, check: bool = True
    ) -> Future[Any]:
        """Sum of all local ``arrays`` over all ranks, returned once per input (Caffe2 semantics)."""
        torch, dist = torch_dist()
        first = arrays[0]
        for a in arrays[1:]:
            if a.shape != first.shape or a.dtype != first.dtype:
                raise ArgumentError(
                    f"{label}: Allreduce inputs must share one shape and dtype; "
                    f"got {first.dtype}{list(first.shape)} and {a.dtype}{list(a.shape)}"
                )
        own = inplace and len(arrays) == 1 and first.flags.c_contiguous and first.flags.writeable
        buf = first if own else np.array(sum(arrays[1:], first.copy()) if len(arrays) > 1 else first, copy=True)
        buf = np.ascontiguousarray(buf)
        tensor = torch.from_numpy(buf)
        n = len(arrays)

        def start() -> Any:
            return self.pg.allreduce([tensor], dist.AllreduceOptions())

        def finish() -> list[np.ndarray]:
            return [buf] + [buf.copy() for _ in range(n - 1)]

        return self._submit("Allreduce", label, arrays, start, finish, check=check)

    def broadcast(self, arrays: Sequence[np.ndarray], root: int, label: str, *, check: bool = True) -> Future[Any]:
        """Every output is the root's corresponding input."""
        torch, dist = torch_dist()
        if not 0 <= root < self.size:
            raise ArgumentError(f"{label}: Broadcast root must be in 0..{self.size - 1}, got {root}")
        bufs = [np.array(a, copy=True, order="C") for a in arrays]
        tensors = [torch.from_numpy(b) for b in bufs]
        opts = dist.BroadcastOptions()
        opts.rootRank = root
        opts.rootTensor = 0

        def start() -> Any:
            # One tensor per call keeps Gloo's single-tensor broadcast path; the pair resolves together.
            works = [self.pg.broadcast([t], opts) for t in tensors]
            return _AllWorks(torch, works)

        return self._submit("Broadcast", label, arrays, start, lambda: bufs, check=check)

    def allgather(self, arrays: Sequence[np.ndarray], label: str, *, check: bool = True) -> Future[Any]:
        """One 1-D output: every rank's inputs, flattened, rank after rank (Caffe2's Allgather)."""
        torch, _ = torch_dist()
        flat = np.concatenate([np.ascontiguousarray(a).reshape(-1) for a in arrays])
        out = np.empty(flat.size * self.size, dtype=flat.dtype)
        parts = [torch.from_numpy(out[r * flat.size : (r + 1) * flat.size]) for r in range(self.size)]
        src = torch.from_numpy(flat)

        def start() -> Any:
            return self.pg.allgather([parts], [src])

        return self._submit("Allgather", label, arrays, start, lambda: [out], check=check)

    def reduce_scatter(self, array: np.ndarray, label: str, *, check: bool = True) -> Future[Any]:
        """This rank's block (along axis 0) of the sum over ranks; axis 0 must divide by size."""
        torch, dist = torch_dist()
        if array.ndim == 0 or array.shape[0] % self.size:
            raise ArgumentError(
                f"{label}: ReduceScatter needs a first dimension divisible by the world size {self.size}, "
                f"got shape {list(array.shape)}"
            )
        buf = np.array(array, copy=True, order="C")
        tensor = torch.from_numpy(buf)
        block = array.shape[0] // self.size

        def start() -> Any:
            return self.pg.allreduce([tensor], dist.AllreduceOptions())

        def finish() -> list[np.ndarray]:
            return [buf[self.rank * block : (self.rank + 1) * block].copy()]

        return self._submit("ReduceScatter", label, [array], start, finish, check=check)

    def barrier(self, label: str) -> Future[Any]:
        """Completes when every rank has reached the barrier."""
        torch, dist = torch_dist()
        token = torch.zeros(1, dtype=torch.uint8)

        def start() -> Any:
            return self.pg.allreduce([token], dist.AllreduceOptions())

        return self._submit("Barrier", label, [], start, lambda: [])

    # -- lifetime --------------------------------------------------------------------

    def clone(self, name: str = "") -> CommonWorld:
        """A new world of the same ranks on the same store (Gloo pairs of its own)."""
        with self._lock:
            self._clones += 1
            k = self._clones
        return CommonWorld(self.handler, self.rank, self.size, name or f"{self.name}.clone{k}", self.timeout)

    def destroy(self) -> None:
        """Close the Gloo connections; later collectives on this world fail clearly."""
        if self.closed:
            return
        self.closed = True
        _LIVE.discard(self)
        _GRAVE.append(self.pg)
        try:
            self.pg.shutdown()
        except (RuntimeError, AttributeError) as e:  # an older torch, or already torn down
            log.debug("%s: shutdown: %s", self.describe(), e)

    def __repr__(self) -> str:
        return f"<CommonWorld {self.describe()} on {self.handler.describe()}>"


def _settle(fut: Future[Any], value: Any, exc: BaseException | None) -> None:
    try:
        if exc is not None:
            fut.set_exception(exc)
        else:
            fut.set_result(value)
    except InvalidStateError:  # cancelled by the executor meanwhile
        pass


class _AllWorks:
    """Several work handles seen as one (its future completes when all have)."""

    def __init__(self, torch: Any, works: list[Any]) -> None:
        self._fut = torch.futures.collect_all([w.get_future() for w in works])
        self._works = works

    def get_future(self) -> Any:
        def unwrap(fut: Any) -> Any:
            for f in fut.value():
                f.value()  # re-raises the first failure
            return None

        return self._fut.then(unwrap)
