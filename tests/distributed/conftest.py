"""Helpers for the multi-process tests: launching workers, reading their reports, leak checks."""

from __future__ import annotations

import json
import os
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from asyncnet.distributed.launch import LaunchResult, launch
from tests.conftest import ROOT


def require_torch() -> None:
    """Skip cleanly when the ``distributed`` extra is not installed."""
    pytest.importorskip("torch", reason="needs the 'distributed' extra (torch)")


def _processes_with_run_id(run_id: str) -> list[int]:
    found = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            env = (d / "environ").read_bytes()
        except OSError:
            continue
        if f"ASYNCNET_RUN_ID={run_id}".encode() in env.split(b"\0"):
            found.append(int(d.name))
    return found


def run_workers(
    scenario: str, out: Path, nprocs: int, *, timeout_ms: int = 20_000, store_dir: Path | None = None, **kw: Any
) -> tuple[LaunchResult, dict[int, dict[str, Any]]]:
    """Launch ``nprocs`` workers of ``scenario``; returns the launch result and each rank's report.

    Fails the test when any process of the run is still alive afterwards (process-leak check).
    """
    out.mkdir(parents=True, exist_ok=True)
    run_id = uuid.uuid4().hex[:12]
    env = {"PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    result = launch(
        [sys.executable, "-m", "tests.distributed.worker", scenario, str(out)],
        nprocs,
        timeout_ms=timeout_ms,
        run_id=run_id,
        store_dir=str(store_dir or out / "store"),
        extra_env=env,
        **kw,
    )
    leaked = _processes_with_run_id(run_id)
    assert not leaked, f"processes of run {run_id} still alive: {leaked}"
    reports = {}
    for r in range(nprocs):
        p = out / f"rank{r}.json"
        if p.exists():
            reports[r] = json.loads(p.read_text())
    return result, reports


def leftover_threads(report: dict[str, Any]) -> list[str]:
    """Threads a worker still had at exit, beyond the shared pools that live by design."""
    return [t for t in report.get("threads", []) if not t.startswith("asyncnet-shared")]
