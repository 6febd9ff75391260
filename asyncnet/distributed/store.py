"""Rendezvous store handlers: where the ranks of a common world find each other.

A :class:`StoreHandler` is what ``FileStoreHandlerCreate`` / ``TCPStoreHandlerCreate``
put into their output blob. It only *describes* the store; the torch store is opened by
``CreateCommonWorld``, which knows the rank (rank 0 hosts a TCP store's server, as the
master of a ``torch.distributed.TCPStore``). Caffe2 used a Redis server for the TCP case
(``RedisStoreHandlerCreate``); ``TCPStoreHandlerCreate`` needs no server of its own.

File stores: ``path`` names a directory (created if missing) or a file. Keys of one run
are kept apart from those of a crashed earlier run by ``prefix`` plus the launch's run id
(``ASYNCNET_RUN_ID``, set by ``asyncnet launch``), so a rerun reconnects through the same
path.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from asyncnet.distributed._torch import CollectiveError, torch_dist
from asyncnet.errors import ArgumentError

RUN_ID_ENV = "ASYNCNET_RUN_ID"
STORE_FILE = "asyncnet_store"
DEFAULT_TIMEOUT = 60.0


@dataclass
class StoreHandler:
    """A file or TCP rendezvous store, opened lazily and once per process.

    Attributes:
        kind: ``"file"`` or ``"tcp"``.
        path: FileStore directory or file.
        host / port: TCP store address (rank 0 listens there).
        prefix: namespace of every key (several jobs can share one store).
        timeout: seconds a rendezvous waits for missing ranks.
    """

    kind: str
    path: str = ""
    host: str = ""
    port: int = 0
    prefix: str = ""
    timeout: float = DEFAULT_TIMEOUT
    _opened: dict[int, Any] = field(default_factory=dict, repr=False, compare=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.kind not in ("file", "tcp"):
            raise ArgumentError(f"store handler kind must be 'file' or 'tcp', got '{self.kind}'")
        if self.kind == "file" and not self.path:
            raise ArgumentError("a file store handler needs a non-empty 'path'")
        if self.kind == "tcp" and (not self.host or not 0 < self.port < 65536):
            raise ArgumentError(f"a TCP store handler needs 'host' and a port in 1..65535, got {self.host}:{self.port}")
        if not self.timeout > 0:
            raise ArgumentError(f"store handler timeout must be > 0 seconds, got {self.timeout}")

    def describe(self) -> str:
        where = self.path if self.kind == "file" else f"{self.host}:{self.port}"
        return f"{self.kind} store {where}" + (f" (prefix '{self.prefix}')" if self.prefix else "")

    def key_prefix(self) -> str:
        run_id = os.environ.get(RUN_ID_ENV, "")
        return "/".join(p for p in (self.prefix, run_id) if p) + "/"

    def open(self, rank: int, size: int) -> Any:
        """The torch store for ``rank`` of a world of ``size`` (prefixed; cached per handler)."""
        _, dist = torch_dist()
        with self._lock:
            base = self._opened.get(0)
            if base is None:
                base = self._open_base(dist, rank, size)
                self._opened[0] = base
        return dist.PrefixStore(self.key_prefix(), base)

    def _open_base(self, dist: Any, rank: int, size: int) -> Any:
        td = timedelta(seconds=self.timeout)
        try:
            if self.kind == "file":
                p = Path(self.path)
                if p.is_dir() or not p.suffix:
                    p.mkdir(parents=True, exist_ok=True)
                    p = p / STORE_FILE
                store = dist.FileStore(str(p), -1)
            else:
                store = dist.TCPStore(
                    self.host, self.port, size, rank == 0, timeout=td, wait_for_workers=False, use_libuv=True
                )
            store.set_timeout(td)
            return store
        except (RuntimeError, OSError) as e:
            raise CollectiveError(f"rank {rank}: cannot open the {self.describe()}: {e}") from e
