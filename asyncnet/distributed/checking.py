"""Agreeing on each collective before its data moves, without a round trip per collective.

Gloo aborts the whole process (not an exception) when ranks send different byte counts to
one collective, so a mismatch must be caught *before* the data moves. Exchanging a short
descriptor (collective, op, dtypes, shapes) before every collective does that but costs one
round trip each time. The policy here (``check=1``, the default) pays it only when something
may have changed:

* Every world keeps, identically on every rank, the descriptor agreed last and a table
  "after descriptor A, the ranks agreed on B". A collective whose descriptor is the one the
  table predicts after the previous one is sent straight away; any other (the first of its
  kind, a shape that changed, a different order) is checked first. A steady training step
  checks its collectives in the first step (and once at the second step's start), then never.
* The check travels on a *separate* process group of the world. So when one rank re-checks
  alone (its shape changed, the peers' did not) it waits on the check group while the peers
  wait for its data on the data group: no sizes are ever mixed, and every rank fails within
  the communicator timeout. The re-checking rank leaves its descriptor in the store first, so
  the peers' errors say which rank changed what ("mismatch suspected") instead of only "timed out".
* Why a table of successors and not one cache entry per op: two collectives that each were
  checked before but are issued in a different order on two ranks would otherwise both be
  "known", skip the check, and abort inside Gloo. With the successor table the swapped order is
  not the predicted one, so it is checked (or makes the ranks time out), never sent unchecked.

Why this is safe: ranks start with identical (empty) tables and only change them at an agreed
check (all ranks, same values), so all ranks always predict the same descriptor. A rank sends
unchecked only when its descriptor equals that prediction, so all ranks that send unchecked send
the same thing; a rank whose descriptor differs goes to the check group instead, where the
others never come, and everyone times out cleanly.

``check=2`` exchanges descriptors before every collective (the earlier behaviour); ``check=0``
never does (Caffe2's behaviour: a size mismatch aborts inside Gloo).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np

CHECK_NONE, CHECK_CHANGED, CHECK_ALWAYS = 0, 1, 2
CHECK_MODES = (CHECK_NONE, CHECK_CHANGED, CHECK_ALWAYS)
DESCRIPTOR_BYTES = 512
# The table is cleared (on every rank at the same collective) when it grows past this: a net whose
# shapes keep changing must not grow memory without bound.
MAX_TRANSITIONS = 4096
_UNCHECKED = "\0unchecked"


def describe(what: str, arrays: Sequence[np.ndarray]) -> str:
    """The descriptor of one collective: what it is, then each tensor's dtype and shape."""
    return what + "|" + ";".join(f"{a.dtype}{list(a.shape)}" for a in arrays)


def wire(desc: str) -> bytes:
    """``desc`` as at most DESCRIPTOR_BYTES bytes; a longer one keeps its start and a digest of the whole."""
    raw = desc.encode()
    if len(raw) <= DESCRIPTOR_BYTES:
        return raw
    digest = hashlib.sha256(raw).hexdigest()[:32]
    return raw[: DESCRIPTOR_BYTES - 48] + b"...#" + digest.encode()


class CheckSchedule:
    """Which collectives of one world must exchange descriptors first (same state on every rank)."""

    def __init__(self) -> None:
        self._last: str | None = None
        self._next: dict[str | None, str] = {}
        self.exchanges = 0

    def expected(self) -> str | None:
        """The descriptor the ranks agreed follows the previous collective (None: nothing known)."""
        return self._next.get(self._last)

    def needs_check(self, desc: str, mode: int) -> bool:
        if mode == CHECK_NONE:
            return False
        return mode == CHECK_ALWAYS or self.expected() != desc

    def sent_unchecked(self, desc: str, mode: int) -> None:
        # An unchecked (check=0) descriptor may differ across ranks: remember a common sentinel.
        self._last = _UNCHECKED if mode == CHECK_NONE else desc

    def agreed(self, desc: str) -> None:
        self.exchanges += 1
        if len(self._next) >= MAX_TRANSITIONS:
            self._next.clear()
        self._next[self._last] = desc
        self._last = desc

    def reset(self) -> None:
        """After a failure nothing is known any more: check the next collective."""
        self._last = None
        self._next.clear()
