"""A process SIGKILLed while saving leaves the previous checkpoint complete and readable."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from asyncnet.db import load_checkpoint

# The child saves versions 1, 2, 3, ... forever; every blob of version v is filled with v.
WRITER = """
import sys
import numpy as np
from asyncnet.db import save_checkpoint
path, db_type = sys.argv[1], sys.argv[2]
v = 0
while True:
    v += 1
    blobs = {f"w{i}": np.full((200, 250 + i), v, dtype=np.float32) for i in range(6)}
    blobs["version"] = np.array([v], np.int64)
    sys.stdout.write(f"start {v}\\n")
    sys.stdout.flush()
    save_checkpoint(path, blobs, db_type, chunk_size=20000)
    sys.stdout.write(f"done {v}\\n")
    sys.stdout.flush()
"""


def kill_and_check(path: Path, db_type: str, rng: np.random.Generator) -> tuple[int, bool]:
    """Start a writer, SIGKILL it during a save, verify the file.

    Returns the version found and whether the kill really interrupted a save.
    """
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path), db_type],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        # Let one to three saves finish, then kill a few milliseconds into the next one.
        done = 0
        want = int(rng.integers(1, 4))
        while True:
            line = proc.stdout.readline()
            assert line, f"writer failed: {proc.stderr.read() if proc.stderr else ''}"
            if line.startswith("done"):
                done += 1
            elif done >= want:
                break
        time.sleep(float(rng.uniform(0.0, 0.004)))
        os.kill(proc.pid, signal.SIGKILL)
        interrupted = not any(rest.startswith("done") for rest in proc.stdout.read().splitlines())
    finally:
        proc.kill()
        proc.wait(timeout=30)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()
    blobs = load_checkpoint(path, db_type)
    assert sorted(blobs) == sorted([f"w{i}" for i in range(6)] + ["version"])
    version = int(blobs["version"][0])
    for i in range(6):
        w = blobs[f"w{i}"]
        assert w.shape == (200, 250 + i)
        assert (w == version).all(), "blobs from different saves mixed in one checkpoint"
    return version, interrupted


@pytest.mark.timeout(120)
@pytest.mark.parametrize("db_type", ["minidb", "protodb"])
def test_sigkill_during_save_keeps_a_complete_checkpoint(tmp_path: Path, db_type: str) -> None:
    rng = np.random.default_rng(1234)
    path = tmp_path / f"ckpt.{db_type}"
    results = [kill_and_check(path, db_type, rng) for _ in range(5)]
    assert all(v >= 1 for v, _ in results)
    assert sum(interrupted for _, interrupted in results) >= 3, results
    if db_type == "minidb":
        # minidb streams into its temp file, so kills mid-save leave that file behind.
        assert list(tmp_path.glob(".ckpt.minidb.*.tmp"))
