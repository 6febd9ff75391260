"""SIGKILL a process at random moments while it saves checkpoints; the file must stay complete.

Usage:
    .venv/bin/python bench/kill_checkpoint.py [--kills 50] [--db-type minidb] [--seed 0]

A child process saves versions 1, 2, 3, ... of a ~1.3 MB checkpoint (7 blobs,
chunked) in a loop, each version's arrays filled with its number. The parent
kills it with SIGKILL after a random delay, then loads the checkpoint: every
blob must be present, complete, and from one single version. Reports how many
kills landed mid-save (a temp file left behind) and the versions seen.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from asyncnet.db import load_checkpoint
from asyncnet.errors import AsyncNetError

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
    save_checkpoint(path, blobs, db_type, chunk_size=20000)
    sys.stdout.write(f"{v}\\n")
    sys.stdout.flush()
"""


def one_kill(path: Path, db_type: str, rng: random.Random) -> tuple[int | None, str]:
    """Returns (version found, problem or '')."""
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path), db_type], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        if not proc.stdout.readline().strip().isdigit():
            return None, "writer did not start"
        time.sleep(rng.uniform(0.0, 0.15))
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait(timeout=30)
        if proc.stdout is not None:
            proc.stdout.close()
    try:
        blobs = load_checkpoint(path, db_type)
    except AsyncNetError as e:
        return None, f"checkpoint unreadable after kill: {e}"
    names = sorted([f"w{i}" for i in range(6)] + ["version"])
    if sorted(blobs) != names:
        return None, f"blobs {sorted(blobs)} != {names}"
    v = int(blobs["version"][0])
    for i in range(6):
        if blobs[f"w{i}"].shape != (200, 250 + i) or not (blobs[f"w{i}"] == v).all():
            return v, f"blob w{i} is not entirely version {v}"
    return v, ""


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kills", type=int, default=50)
    ap.add_argument("--db-type", default="minidb", choices=["minidb", "protodb"])
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    rng = random.Random(args.seed)
    problems: list[str] = []
    versions: list[int] = []
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / f"ckpt.{args.db_type}"
        for k in range(args.kills):
            v, problem = one_kill(path, args.db_type, rng)
            if problem:
                problems.append(f"kill {k}: {problem}")
            if v is not None:
                versions.append(v)
        mid_save = len(list(Path(d).glob(f".ckpt.{args.db_type}.*.tmp")))
    sys.stdout.write(
        f"{args.kills} kills ({args.db_type}) in {time.perf_counter() - t0:.1f} s: {mid_save} landed mid-save "
        f"(temp file left), checkpoint complete after {args.kills - len(problems)}; versions seen "
        f"min {min(versions, default=0)} max {max(versions, default=0)}; problems {len(problems)}\n"
    )
    for p in problems[:10]:
        sys.stdout.write(f"  {p}\n")
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
