"""CommonWorld: a Gloo process group whose collectives return futures and hold no thread.

Each collective is issued with torch's asynchronous work handles; completion arrives
through the work's future callback (on Gloo's own thread), which completes the
``concurrent.futures.Future`` an executor waits on. No Python thread blocks while the
network works, so the async_scheduling executor keeps computing meanwhile.

Ranks agree on each collective (the op, dtypes, shapes) before its data moves — exchanged
the first time and whenever a rank's collective differs from the agreed schedule, on a
process group of its own (see :mod:`asyncnet.distributed.checking`): a rank whose tensors
differ, or that issued a different collective on this world, makes every rank fail with a
clear error that says who had what — never a hang, never a Gloo abort, never silently mixed
data. Collectives of one world run one after another in the order they are issued (Gloo pairs
them by order); independent ops should use cloned worlds.
"""

from __future__ import annotations

import functools
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, InvalidStateError
from datetime import timedelta
from typing import Any

import numpy as np

from asyncnet.distributed._torch import CollectiveError, torch_dist
from asyncnet.distributed.checking import (
    CHECK_CHANGED,
    CHECK_MODES,
    DESCRIPTOR_BYTES,
    CheckSchedule,
    describe,
    wire,
)
from asyncnet.distributed.lifetime import (
    GRAVE,
    LIVE,
    announce_failure,
    exit_process,
    first_line,
    install_excepthook,
    pid_alive,
)
from asyncnet.distributed.store import StoreHandler
from asyncnet.errors import ArgumentError
from asyncnet.executors.pools import shared_timer

log = logging.getLogger(__name__)

__all__ = ["CommonWorld", "announce_failure", "exit_process"]

_LOOPBACK = ("127.0.0.1", "localhost", "::1")


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
        self._issued = 0
        self._schedule = CheckSchedule()
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
            # Descriptor checks travel apart from the data, so a rank checking alone never meets
            # a peer's data (mixed sizes abort inside Gloo): it times out instead.
            check_opts = dist.ProcessGroupGloo._Options()
            check_opts._timeout = td
            check_opts._devices = opts._devices
            check_opts._threads = 1
            self.check_pg = dist.ProcessGroupGloo(dist.PrefixStore("check/", self.store), rank, size, check_opts)
        except (RuntimeError, OSError) as e:
            raise CollectiveError(self._rendezvous_failure(e)) from e
        LIVE.add(self)
        install_excepthook()
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

    def _peer_report(self, settle: float = 1.0) -> str:
        """Which peers failed or exited. A peer's connections close a moment before its death is
        visible (in /proc, or its note in the store): look again for up to ``settle`` seconds."""
        deadline = time.monotonic() + settle
        while True:
            report = self._peer_report_once()
            if report or time.monotonic() >= deadline:
                return report or "peer rank unknown (a peer raised, hung or was killed)"
            time.sleep(0.05)

    def _peer_report_once(self) -> str:
        members = self._members()
        host = socket.gethostname()
        gone = self._failed_peers()
        for r, where in sorted(members.items()):
            h, _, pid = where.rpartition(":")
            if any(g.startswith(f"peer rank {r} ") for g in gone):
                continue
            if r != self.rank and h == host and pid.isdigit() and not pid_alive(int(pid)):
                gone.append(f"peer rank {r} (pid {pid}) has exited")
        missing = [r for r in range(self.size) if r not in members]
        parts = gone + ([f"ranks {missing} never joined"] if missing and members else [])
        return "; ".join(parts)

    def _rendezvous_failure(self, exc: BaseException) -> str:
        return (
            f"CreateCommonWorld {self.describe()} failed within {self.timeout:g} s on the "
            f"{self.handler.describe()}: {self._peer_report()}: {first_line(exc)}"
        )

    @property
    def checks(self) -> int:
        """Descriptor exchanges this world has completed (see :mod:`asyncnet.distributed.checking`)."""
        return self._schedule.exchanges

    def _rechecks_of_peers(self, seq: int, desc: str) -> list[str]:
        found = []
        for r in range(self.size):
            try:
                if r != self.rank and self.store.check([f"check/{seq}/{r}"]):
                    theirs = self.store.get(f"check/{seq}/{r}").decode(errors="replace")
                    found.append(
                        f"peer rank {r} re-checked this collective as {theirs} while this rank sent {wire(desc).decode()} "
                        "(mismatch suspected: every rank must issue the same collectives in the same order "
                        "with equal dtypes and shapes)"
                    )
            except (RuntimeError, OSError):
                break
        return found

    def _failure(
        self, what: str, label: str, seq: int, desc: str, rechecked: str | None, exc: BaseException
    ) -> CollectiveError:
        if rechecked is not None:
            hint = [
                f"this rank's collective is {wire(desc).decode()} where the ranks had agreed on {wire(rechecked).decode()}"
                ", so it re-checked, but the peers did not join the check (they probably sent data for their "
                "unchanged collective; mismatch suspected: every rank must issue the same collectives in the same "
                "order with equal dtypes and shapes)"
            ]
        else:
            hint = self._rechecks_of_peers(seq, desc)
        report = self._peer_report_once() if hint else self._peer_report()
        text = "; ".join(p for p in (*hint, report) if p)
        return CollectiveError(
            f"{label}: collective {what} #{seq} on {self.describe()} failed (timeout {self.timeout:g} s): "
            f"{text}: {first_line(exc)}"
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
        check: int = CHECK_CHANGED,
        detail: str = "",
    ) -> Future[Any]:
        """Queue one collective: (descriptor check,) then ``start()``'s work, then ``finish()``.

        Whether the descriptor is exchanged first follows ``check`` (see
        :mod:`asyncnet.distributed.checking`): the check must come before the data because Gloo
        aborts the whole process (not an exception) when the ranks' message sizes differ.
        """
        if self.closed:
            raise CollectiveError(f"{label}: {self.describe()} was destroyed (DestroyCommonWorld)")
        if check not in CHECK_MODES:
            raise ArgumentError(f"{label}: argument 'check' must be one of {list(CHECK_MODES)}, got {check}")
        result: Future[Any] = Future()
        _timer = shared_timer()
        desc = describe(f"{what} {label}{detail}", arrays)
        with self._lock:
            seq = self._issued
            self._issued += 1
            prev, self._tail = self._tail, result

        def fail(exc: BaseException, rechecked: str | None = None) -> None:
            self._schedule.reset()
            err = exc if isinstance(exc, CollectiveError) else self._failure(what, label, seq, desc, rechecked, exc)
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

        def on_check(tf: Any, gathered: list[Any], expected: str | None) -> None:
            try:
                tf.value()
                self._agree(what, label, seq, gathered)
            except CollectiveError as e:
                fail(e)
                return
            except Exception as e:
                fail(e, rechecked=expected)
                return
            self._schedule.agreed(desc)
            run_main()

        def begin(_: Any = None) -> None:
            if result.done():  # cancelled: this rank skips the collective, so nothing is known any more
                self._schedule.reset()
                return
            if self.size == 1 or not self._schedule.needs_check(desc, check):
                self._schedule.sent_unchecked(desc, check)
                run_main()
                return
            expected = self._schedule.expected() if check == CHECK_CHANGED else None
            try:
                gathered, work = self._exchange(seq, desc, expected is not None)
            except Exception as e:
                fail(e, rechecked=expected)
                return
            work.get_future().add_done_callback(lambda tf: on_check(tf, gathered, expected))

        if prev is None:
            begin()
        else:
            prev.add_done_callback(begin)
        return result

    def _exchange(self, seq: int, desc: str, announce: bool) -> tuple[list[Any], Any]:
        """Start the descriptor allgather on the check group; ``announce``: leave it in the store first."""
        torch, _ = torch_dist()
        raw = wire(desc)
        if announce:
            # Only a rank that deviates from the agreed schedule can be checking alone; its note
            # lets the peers' timeouts say who changed what.
            self.store.set(f"check/{seq}/{self.rank}", raw)
        mine = torch.zeros(DESCRIPTOR_BYTES, dtype=torch.uint8)
        mine[: len(raw)] = torch.frombuffer(bytearray(raw), dtype=torch.uint8)
        gathered = [torch.zeros(DESCRIPTOR_BYTES, dtype=torch.uint8) for _ in range(self.size)]
        return gathered, self.check_pg.allgather([gathered], [mine])

    def _agree(self, what: str, label: str, seq: int, gathered: list[Any]) -> None:
        descs = [bytes(t.numpy()).rstrip(b"\0").decode(errors="replace") for t in gathered]
        if all(d == descs[0] for d in descs):
            return
        listing = "; ".join(f"rank {r}: {d}" for r, d in enumerate(descs))
        raise CollectiveError(
            f"{label}: collective {what} #{seq} on {self.describe()}: ranks disagree on the op, dtypes or shapes "
            f"(every rank must issue the same collectives in the same order with equal tensors): {listing}"
        )

    # -- collectives ---------------------------------------------------------------

    def allreduce(
        self, arrays: Sequence[np.ndarray], label: str, *, inplace: bool = False, check: int = CHECK_CHANGED
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

    def allreduce_coalesced(
        self, arrays: Sequence[np.ndarray], label: str, *, check: int = CHECK_CHANGED
    ) -> Future[Any]:
        """Each of ``arrays`` summed over all ranks (separately), moved as one message per dtype.

        Unlike :meth:`allreduce`, the inputs are different tensors (a bucket of gradients): they
        are packed into one flat buffer, all-reduced once and returned as views of it, so a few
        large messages replace many small ones (as DDP's gradient buckets).
        """
        torch, dist = torch_dist()
        groups: dict[np.dtype[Any], list[int]] = {}
        for i, a in enumerate(arrays):
            groups.setdefault(a.dtype, []).append(i)
        flats = [np.concatenate([np.asarray(arrays[i]).reshape(-1) for i in idx]) for idx in groups.values()]
        tensors = [torch.from_numpy(f) for f in flats]

        def start() -> Any:
            return _AllWorks(torch, [self.pg.allreduce([t], dist.AllreduceOptions()) for t in tensors])

        def finish() -> list[np.ndarray]:
            out: list[np.ndarray] = [np.empty(0)] * len(arrays)
            for flat, idx in zip(flats, groups.values(), strict=True):
                offset = 0
                for i in idx:
                    n = arrays[i].size
                    out[i] = flat[offset : offset + n].reshape(arrays[i].shape)
                    offset += n
            return out

        return self._submit("AllreduceCoalesced", label, arrays, start, finish, check=check)

    def broadcast(
        self, arrays: Sequence[np.ndarray], root: int, label: str, *, check: int = CHECK_CHANGED
    ) -> Future[Any]:
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

        return self._submit("Broadcast", label, arrays, start, lambda: bufs, check=check, detail=f" root {root}")

    def allgather(self, arrays: Sequence[np.ndarray], label: str, *, check: int = CHECK_CHANGED) -> Future[Any]:
        """One 1-D output: every rank's inputs, flattened, rank after rank (Caffe2's Allgather)."""
        torch, _ = torch_dist()
        flat = np.concatenate([np.ascontiguousarray(a).reshape(-1) for a in arrays])
        out = np.empty(flat.size * self.size, dtype=flat.dtype)
        parts = [torch.from_numpy(out[r * flat.size : (r + 1) * flat.size]) for r in range(self.size)]
        src = torch.from_numpy(flat)

        def start() -> Any:
            return self.pg.allgather([parts], [src])

        return self._submit("Allgather", label, arrays, start, lambda: [out], check=check)

    def reduce_scatter(self, array: np.ndarray, label: str, *, check: int = CHECK_CHANGED) -> Future[Any]:
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
        LIVE.discard(self)
        for pg in (self.pg, self.check_pg):
            GRAVE.append(pg)
            try:
                pg.shutdown()
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
