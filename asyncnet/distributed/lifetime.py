"""What a process with common worlds does when it fails or ends.

Tearing Gloo down at interpreter exit while a peer is failing can abort the process inside
torch, so worlds are kept alive until DestroyCommonWorld or the end of the process, and a
process with worlds ends through :func:`exit_process` (no Gloo teardown). A failing rank
announces why in the store, so its peers' errors name it.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, NoReturn

if TYPE_CHECKING:
    from asyncnet.distributed.comm import CommonWorld


def pid_alive(pid: int) -> bool:
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
LIVE: set[CommonWorld] = set()
# Destroyed worlds' process groups: never released from one of Gloo's own threads (a group
# destructed on its worker thread joins itself and aborts the process).
GRAVE: list[Any] = []
_hook_lock = threading.Lock()
_hook_installed = False


def announce_failure(error: BaseException) -> None:
    """Tell the peers of every live common world of this process why this rank is failing.

    Their collectives then name this rank and the reason instead of only a closed connection.
    Called automatically for an uncaught exception (see :func:`exit_process`).
    """
    text = f"{type(error).__name__}: {first_line(error)}"[:400]
    for world in list(LIVE):
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
    if not LIVE and not GRAVE:
        sys.exit(code)
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


def install_excepthook() -> None:
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


def first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
