"""Worker pools keyed by device, and a shared timer for async operators.

Process-wide pools live as long as the process; their threads are named
``asyncnet-shared-...``. Per-net pools are owned by one executor and stopped by
``close()``. Workers block on a queue (no polling).

Bounds (a hostile or careless net file must not create unbounded threads):

* a pool never has more than :func:`max_threads` workers (4x the usable CPUs);
  :func:`clamp_threads` reduces larger ``num_workers`` / ``--threads`` with a warning;
* shared pools are keyed by device only (not by size): a pool grows to the largest
  size asked of it, up to the cap. The default device (cpu:0) and the first
  :data:`MAX_DEVICE_POOLS` other distinct devices get a pool of their own; every further
  device shares one overflow pool (``...-devother``). The same rule applies to the
  pools of one net.

So the shared pools hold at most ``(MAX_DEVICE_POOLS + 2) * max_threads()`` threads
for the life of the process, and one net's own pools as many until it is closed.
Sharing a pool across devices changes no result: a pool task carries its device's
queue, and each run still limits how many chains of one device run at once.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Collection, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from asyncnet.errors import ExecutorError, UnsupportedError
from asyncnet.opinfo import DeviceKey

log = logging.getLogger(__name__)

SHARED_PREFIX = "asyncnet-shared"

# Distinct devices that get a pool of their own (per process for shared pools, per net for
# private ones); Caffe2 machines have at most 8 or 16 accelerators and rarely that many NUMA nodes.
MAX_DEVICE_POOLS = 8

# A device key standing for "every device beyond MAX_DEVICE_POOLS".
OVERFLOW_DEVICE = DeviceKey(-1, -1, -1)
_DEFAULT_DEVICE = DeviceKey()

_STOP: Any = object()


def default_threads() -> int:
    """Worker count when neither the net nor the options say: the usable CPUs."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def max_threads() -> int:
    """The most workers one pool may have: 4x the usable CPUs (pure-Python ops gain nothing beyond)."""
    return 4 * default_threads()


def clamp_threads(threads: int, owner: str) -> int:
    """``threads`` reduced to :func:`max_threads`, with a warning naming ``owner`` when reduced."""
    cap = max_threads()
    if threads > cap:
        log.warning("%s asks for %d worker threads; using %d (4x the %d usable CPUs)", owner, threads, cap, cap // 4)
        return cap
    return threads


def _device_tag(device: DeviceKey) -> str:
    if device == OVERFLOW_DEVICE:
        return "other"
    tag = f"{device.type}.{device.id}"
    return tag + (f"n{device.numa}" if device.numa >= 0 else "")


class WorkerPool:
    """A set of at most ``size`` named worker threads running submitted callables.

    Threads start lazily (one more per submission while fewer than ``size`` run);
    :meth:`grow_to` raises ``size`` (never past :func:`max_threads`).
    Callables must not raise; an exception is logged and the worker continues.
    """

    def __init__(self, size: int, name: str) -> None:
        if size < 1:
            raise ExecutorError(f"worker pool '{name}' needs at least 1 thread, got {size}")
        self.size = size
        self.name = name
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._closed = False

    def grow_to(self, size: int) -> None:
        """Allow up to ``size`` workers (capped at max_threads(); never shrinks)."""
        size = min(size, max_threads())
        if size > self.size:
            with self._lock:
                self.size = max(self.size, size)

    def submit(self, fn: Callable[[], None]) -> None:
        """Queue ``fn`` to run on a worker."""
        if len(self._threads) < self.size:
            self._grow()
        self._queue.put(fn)

    def _grow(self) -> None:
        with self._lock:
            if self._closed:
                raise ExecutorError(f"worker pool '{self.name}' is closed")
            if len(self._threads) < self.size:
                t = threading.Thread(target=self._work, name=f"{self.name}-w{len(self._threads)}", daemon=True)
                t.start()
                self._threads.append(t)

    def _work(self) -> None:
        get = self._queue.get
        while True:
            fn = get()
            if fn is _STOP:
                return
            try:
                fn()
            except BaseException:  # a worker must survive anything a task does
                log.exception("uncaught exception in worker of pool '%s'", self.name)
            # An idle worker must not keep its last task (and the run state it closes over) alive.
            del fn

    @property
    def threads(self) -> list[threading.Thread]:
        return list(self._threads)

    def close(self, timeout: float | None = None) -> None:
        """Stop the workers after the queued work; joins them (not from a worker)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            threads = list(self._threads)
        for _ in threads:
            self._queue.put(_STOP)
        me = threading.current_thread()
        for t in threads:
            if t is not me:
                t.join(timeout)


_shared: dict[DeviceKey, WorkerPool] = {}
_shared_lock = threading.Lock()


def pool_device(device: DeviceKey, have: Collection[DeviceKey]) -> DeviceKey:
    """The pool key for ``device`` given the keys that already have pools: itself, or the overflow key."""
    # The default device always has its own pool: a file full of odd devices loaded first must not
    # push every later plain CPU net onto the overflow pool for the rest of the process.
    if device in have or device == _DEFAULT_DEVICE or sum(d != _DEFAULT_DEVICE for d in have) < MAX_DEVICE_POOLS:
        return device
    return OVERFLOW_DEVICE


def shared_pool(device: DeviceKey, size: int) -> WorkerPool:
    """The process-wide pool serving ``device``, grown to ``size`` workers (see the module bounds)."""
    pool = _shared.get(device)
    if pool is None:
        with _shared_lock:
            key = pool_device(device, _shared)
            pool = _shared.get(key)
            if pool is None:
                pool = WorkerPool(min(size, max_threads()), f"{SHARED_PREFIX}-dev{_device_tag(key)}")
                _shared[key] = pool
    pool.grow_to(size)
    return pool


def private_pool(device: DeviceKey, size: int, owner: str) -> WorkerPool:
    """A pool owned by one net (close it when done)."""
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in owner)[:40]
    return WorkerPool(min(size, max_threads()), f"asyncnet-net-{safe}-dev{_device_tag(device)}")


class TimerService:
    """One thread firing callbacks at deadlines, for timer-based async operators.

    Waiting happens on a condition with the next deadline as timeout, never by polling.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self._heap: list[tuple[float, int, Callable[[], None]]] = []
        self._cond = threading.Condition()
        self._ids = itertools.count()
        self._thread: threading.Thread | None = None

    def call_at(self, deadline: float, fn: Callable[[], None]) -> int:
        """Run ``fn`` on the timer thread at ``time.monotonic() >= deadline``; returns a handle."""
        with self._cond:
            handle = next(self._ids)
            heapq.heappush(self._heap, (deadline, handle, fn))
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name=self.name, daemon=True)
                self._thread.start()
            self._cond.notify()
        return handle

    def call_later(self, delay: float, fn: Callable[[], None]) -> int:
        return self.call_at(time.monotonic() + delay, fn)

    def cancel(self, handle: int) -> None:
        """Forget a pending callback (no effect when it already ran).

        The entry leaves the heap at once so that the callback, and whatever run state it
        closes over, is released now rather than at its (possibly distant) deadline.
        """
        with self._cond:
            kept = [e for e in self._heap if e[1] != handle]
            if len(kept) != len(self._heap):
                heapq.heapify(kept)
                self._heap = kept
                self._cond.notify()

    def _loop(self) -> None:
        while True:
            with self._cond:
                while True:
                    if not self._heap:
                        self._cond.wait()
                        continue
                    # Peek at the deadline only: holding the callback while waiting would keep it alive
                    # after a cancel.
                    wait = self._heap[0][0] - time.monotonic()
                    if wait > 0:
                        self._cond.wait(wait)
                        continue
                    fn = heapq.heappop(self._heap)[2]
                    break
            try:
                fn()
            except BaseException:
                log.exception("uncaught exception in timer callback")
            del fn


_timer: TimerService | None = None
_io: ThreadPoolExecutor | None = None


def shared_timer() -> TimerService:
    """The process-wide timer thread."""
    global _timer
    if _timer is None:
        with _shared_lock:
            if _timer is None:
                _timer = TimerService(f"{SHARED_PREFIX}-timer")
    return _timer


def shared_io() -> ThreadPoolExecutor:
    """The process-wide pool for blocking I/O of async operators."""
    global _io
    if _io is None:
        with _shared_lock:
            if _io is None:
                _io = ThreadPoolExecutor(max_workers=4, thread_name_prefix=f"{SHARED_PREFIX}-io")
    return _io


def timer_future(delay: float, value: Any) -> Future[Any]:
    """A future resolving to ``value`` after ``delay`` seconds; cancellable until then."""
    fut: Future[Any] = Future()

    def fire() -> None:
        if fut.set_running_or_notify_cancel():
            fut.set_result(value)

    handle = shared_timer().call_later(delay, fire)

    def forget(f: Future[Any]) -> None:
        if f.cancelled():
            shared_timer().cancel(handle)

    fut.add_done_callback(forget)
    return fut


_blas_controller: Any = None


def check_blas_limit(threads: int | None) -> None:
    """Raise unless ``ExecutorOptions.blas_threads`` can be honoured."""
    if threads is None:
        return
    if threads < 1:
        raise ExecutorError(f"blas_threads must be at least 1, got {threads}")
    try:
        import threadpoolctl  # noqa: F401
    except ImportError:
        raise UnsupportedError("blas_threads needs the threadpoolctl package (pip install threadpoolctl)") from None


@contextlib.contextmanager
def blas_limit(threads: int | None) -> Iterator[None]:
    """Limit BLAS threads for the duration (no-op for None); the controller is built once."""
    if threads is None:
        yield
        return
    global _blas_controller
    if _blas_controller is None:
        from threadpoolctl import ThreadpoolController

        # Building a controller scans the loaded libraries (milliseconds); limiting with it is cheap.
        _blas_controller = ThreadpoolController()
    with _blas_controller.limit(limits=threads, user_api="blas"):
        yield
