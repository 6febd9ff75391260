"""Several server processes on one port (``asyncnet serve --workers N``).

Python kernels hold the GIL for much of a run, so threads of one process share about one core
(measured: 2 threads 1.1-1.2x one, 2 processes 1.8x). With ``--workers N`` a supervisor reserves
the port, starts N ``asyncnet serve`` processes bound to it with SO_REUSEPORT (the kernel spreads
client connections over them), forwards SIGTERM/SIGINT to them and waits until each has finished
its requests in flight. Each worker loads the models itself (parameters once per process).
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Sequence

from asyncnet.errors import ServingError

log = logging.getLogger(__name__)


def reserve_port(host: str, port: int) -> socket.socket:
    """A bound (not listening) SO_REUSEPORT socket holding ``port`` (0: a free one) for the workers."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise ServingError(f"cannot reserve {host}:{port} for the workers: {e}") from e
    return sock


class Workers:
    """N ``asyncnet serve`` worker processes sharing one port.

    Args:
        argv: the worker command line after ``python -m asyncnet`` (``serve ... --port P``).
        count: how many workers.
    """

    def __init__(self, argv: Sequence[str], count: int) -> None:
        self.argv = list(argv)
        self.count = count
        self.procs: list[subprocess.Popen[str]] = []
        self.banner: list[str] = []
        self._readers: list[threading.Thread] = []
        self.outputs: list[list[str]] = []

    def start(self) -> None:
        """Start the workers and wait until each serves (ServingError naming the first that failed)."""
        env = dict(os.environ)
        for i in range(self.count):
            proc = subprocess.Popen(
                [sys.executable, "-m", "asyncnet", *self.argv],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=env,
                start_new_session=True,  # signals come from us, not from the terminal's group
            )
            self.procs.append(proc)
            assert proc.stdout is not None
            lines = []
            line = proc.stdout.readline()
            if "serving on" not in line:
                self.stop(signal.SIGKILL)
                _, err = proc.communicate(timeout=30)
                last = (err.strip().splitlines() or [line.strip()])[-1]
                raise ServingError(f"worker {i} did not start: {last.removeprefix('asyncnet serve: error: ')}")
            lines.append(line.rstrip("\n"))
            if i == 0:
                self.banner = [line.rstrip("\n")]
            self.outputs.append(lines)
            reader = threading.Thread(target=self._drain, args=(proc, lines, i == 0), name=f"asyncnet-worker-{i}-out")
            reader.start()
            self._readers.append(reader)

    def _drain(self, proc: subprocess.Popen[str], lines: list[str], first: bool) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line.rstrip("\n"))
            if first and line.startswith("  model "):
                self.banner.append(line.rstrip("\n"))

    def stop(self, sig: int = signal.SIGTERM) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(sig)

    def wait(self) -> list[int]:
        """Wait for every worker; their exit statuses."""
        codes = [proc.wait() for proc in self.procs]
        for r in self._readers:
            r.join()
        for proc in self.procs:
            if proc.stderr is not None and not proc.stderr.closed:
                err = proc.stderr.read().strip()
                if err and proc.returncode:
                    log.error("worker %d: %s", proc.pid, err.splitlines()[-1])
                proc.stderr.close()
            if proc.stdout is not None and not proc.stdout.closed:
                proc.stdout.close()
        return codes

    def requests_served(self) -> int:
        total = 0
        for lines in self.outputs:
            for line in lines:
                if line.startswith("stopped after "):
                    total += int(line.split()[2])
        return total
