"""`asyncnet serve` in a subprocess (SIGTERM with requests in flight) and `asyncnet predict`."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("grpc", reason="the serve extra (grpcio) is a test dependency")

from asyncnet.cli import main  # noqa: E402
from asyncnet.errors import RemoteError  # noqa: E402
from asyncnet.serving.client import Client  # noqa: E402
from serving.models import batch, heavy_reference, reference, weights, write_heavy_model, write_model  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


def _start(*args: str) -> tuple[subprocess.Popen[str], int]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "asyncnet", "serve", *args, "--port", "0", "--host", "127.0.0.1"],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("serving"):
        proc.kill()
        raise AssertionError(f"server did not start: {line!r} {proc.communicate(timeout=10)}")
    return proc, int(line.split("127.0.0.1:")[1].split()[0])


@pytest.mark.timeout(120)
@pytest.mark.parametrize("workers", [1, 2])
def test_sigterm_with_requests_in_flight_loses_none(tmp_path: Path, workers: int) -> None:
    d = write_heavy_model(tmp_path / "heavy")
    proc, port = _start(str(d), "--concurrency", "2", "--grace", "20", "--workers", str(workers))
    n = 6
    xs = [batch(64, seed=i) for i in range(n)]  # ~0.25 s each with one BLAS thread
    results: list[object] = [None] * n
    # One connection per caller: with several workers the kernel spreads connections over them.
    clients = [Client(f"127.0.0.1:{port}", timeout=30) for _ in range(n)]
    try:
        for c in clients:
            c.wait_ready()

        def call(i: int) -> None:
            try:
                results[i] = clients[i].predict({"data": xs[i]})["out"]
            except RemoteError as e:
                results[i] = e

        threads = [threading.Thread(target=call, args=(i,)) for i in range(n)]
        for t in threads:
            t.start()
        time.sleep(0.1)  # some computing, the rest queued
        proc.send_signal(signal.SIGTERM)
        for t in threads:
            t.join(30)
        out, err = proc.communicate(timeout=60)
    finally:
        for c in clients:
            c.close()
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=10)
    for i, r in enumerate(results):
        assert isinstance(r, np.ndarray), (i, r)
        np.testing.assert_allclose(r, heavy_reference(xs[i]), rtol=1e-4, atol=1e-6)
    assert proc.returncode == 0, err
    assert "shutting down" in out and f"stopped after {n} request(s)" in out


def _children(pid: int) -> list[int]:
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        out += [int(c) for c in (task / "children").read_text().split()]
    return out


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split(") ")[-1][:1] != "Z"


@pytest.mark.timeout(60)
def test_a_worker_whose_supervisor_died_before_it_started_stops_at_once(tmp_path: Path) -> None:
    """The supervisor's pid comes on the command line: a worker reparented while still starting up
    (its supervisor SIGKILLed then) must not take its new parent for the supervisor."""
    d = write_model(tmp_path / "m")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait(timeout=10)  # a pid that is not this worker's parent
    proc, _port = _start(str(d), "--reuse-port", "--workers", "1", "--supervisor-pid", str(dead.pid))
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "shutting down" in out and "stopped after 0 request(s)" in out


@pytest.mark.timeout(90)
@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="reads worker pids from /proc")
def test_workers_stop_by_themselves_when_the_supervisor_is_killed(tmp_path: Path) -> None:
    d = write_model(tmp_path / "m")
    proc, port = _start(str(d), "--workers", "2")
    workers = _children(proc.pid)
    assert len(workers) == 2
    proc.kill()  # SIGKILL: the supervisor cannot forward anything
    proc.communicate(timeout=10)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and any(_alive(w) for w in workers):
        time.sleep(0.2)
    left = [w for w in workers if _alive(w)]
    for w in left:
        os.kill(w, signal.SIGKILL)
    assert not left, f"worker processes {left} outlived their killed supervisor"


@pytest.mark.timeout(90)
def test_predict_command_against_a_server_and_locally(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = write_model(tmp_path / "dense")
    x = batch(3)
    np.savez(tmp_path / "in.npz", data=x)
    np.savez(tmp_path / "bad.npz", data=x.astype(np.float64))
    proc, port = _start(str(d))
    try:
        server = f"127.0.0.1:{port}"
        out_npz = tmp_path / "out.npz"
        assert (
            main(["predict", "--server", server, "--inputs", str(tmp_path / "in.npz"), "--outputs", str(out_npz)]) == 0
        )
        with np.load(out_npz) as got:
            np.testing.assert_allclose(got["prob"], reference(x, weights()), rtol=1e-5, atol=1e-6)
        capsys.readouterr()
        assert main(["predict", "--server", server, "--inputs", str(tmp_path / "bad.npz")]) == 1
        remote = capsys.readouterr().err
        assert main(["predict", str(d), "--inputs", str(tmp_path / "bad.npz")]) == 1
        local = capsys.readouterr().err
        assert remote.count("\n") == 1 and local.count("\n") == 1
        assert "INVALID_ARGUMENT" in remote and "has dtype float64, expected float32" in remote
        # The server's message is the local check's message.
        assert remote.split("INVALID_ARGUMENT: ")[1] == local.split("error: ")[1]
        assert main(["predict", "--server", server, "--model", "nope", "--inputs", str(tmp_path / "in.npz")]) == 1
        assert "NOT_FOUND" in capsys.readouterr().err
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=30)
    assert proc.returncode == 0
    # Nobody listening: one line, exit 1.
    assert main(["predict", "--server", server, "--inputs", str(tmp_path / "in.npz"), "--timeout", "2"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "UNAVAILABLE" in err


@pytest.mark.timeout(30)
def test_serve_refuses_a_model_that_writes_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from executors.helpers import op

    save = op("Save", ["prob"], [], absolute_path=1, db=str(tmp_path / "leak.pb"), db_type="minidb")
    d = write_model(tmp_path / "saver", extra=[save])
    assert main(["serve", str(d), "--port", "0"]) == 1
    err = capsys.readouterr().err
    assert "refusing to write" in err and "--allow-write" in err


@pytest.mark.timeout(30)
def test_predict_needs_exactly_one_target(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    np.savez(tmp_path / "in.npz", data=batch(1))
    assert main(["predict", "--inputs", str(tmp_path / "in.npz")]) == 1
    assert "either MODEL_DIR" in capsys.readouterr().err
