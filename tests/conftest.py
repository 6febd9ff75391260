"""Shared fixtures: the real-net corpus, hypothesis profiles, thread-leak checks."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

ROOT = Path(__file__).resolve().parents[1]
REALNETS = Path(os.environ.get("ASYNCNET_REALNETS", ROOT.parent / "shared" / "realnets"))

settings.register_profile(
    "ci",
    derandomize=True,
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile("dev", max_examples=200, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

# Threads of the process-wide shared pools live as long as the process by design.
SHARED_THREAD_PREFIXES = ("asyncnet-shared",)


def realnets_path(*parts: str) -> Path:
    """A path under ../shared/realnets; skips the test when the corpus is absent."""
    p = REALNETS.joinpath(*parts)
    if not p.exists():
        pytest.skip(f"real-net corpus not available at {p}")
    return p


@pytest.fixture
def realnets() -> Path:
    """Root of ../shared/realnets (skips when absent)."""
    return realnets_path()


def _live_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.is_alive() and not t.name.startswith(SHARED_THREAD_PREFIXES)}


@pytest.fixture
def no_thread_leak() -> Iterator[None]:
    """Fail the test if it leaves threads running (shared pool threads excepted)."""
    before = _live_threads()
    yield
    deadline = time.monotonic() + 5.0
    extra = _live_threads() - before
    while extra and time.monotonic() < deadline:
        time.sleep(0.02)
        extra = {t for t in extra if t.is_alive()}
    assert not extra, f"threads leaked: {sorted(t.name for t in extra)}"
