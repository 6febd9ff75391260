"""Choosing between two ways of running the same work by timing both: the measured BLAS policy.

Whether BLAS-heavy operators should run side by side (one BLAS thread each) or one after the
other (each with every BLAS thread) depends on the machine and on its load, not on the net
alone. On an idle 2-vCPU machine OpenBLAS's own two threads scaled the WIDE bench's GEMMs
1.43x while two Python threads with one BLAS thread each reached 1.55x, and a 2-layer LSTM's
timestep GEMMs scaled better inside BLAS than across timesteps; on the same machine under load,
multi-threaded BLAS collapsed (5-25x slower) and only the concurrent way kept its speed.

A :class:`ModeChooser` therefore times runs of both ways and keeps the faster: it runs one mode
for ``samples`` timed runs, then the other, then keeps the one with the lower median, and every
``explore_every`` runs re-times the other for ``samples`` runs, so a change of load (or of input
shapes) is followed; sooner when the chosen mode's runs become ``slowdown`` times slower than
when it was chosen (multi-threaded BLAS on a machine that became busy: that is when waiting for
the periodic re-timing would cost most). The first run after a change of mode is not timed: it pays for the switch
(buffers, caches, and OpenBLAS's worker threads, which spin for a while after a multi-threaded
call and take a core from concurrent single-threaded work). The preferred mode (the first one) is
kept unless the other is faster by more than ``margin``. Runs that failed or were stopped are not
recorded, and a failed run of the other mode rules it out for good (the preferred mode is what
the caller would do without the policy; the other must never be the reason a run fails). Nothing here is a knob for users: the policy is what an executor does by default, and
``ExecutorOptions(blas_threads=N)`` (a fixed count) turns it off.
"""

from __future__ import annotations

import statistics
import threading
from collections import deque
from collections.abc import Sequence

# Timed runs per mode before choosing, and kept per mode (the median of these decides).
SAMPLES = 3
# Runs of the chosen mode between two re-timings of the other one. With the other mode 1.7x
# slower, re-timing costs about (SAMPLES + 1) * 0.7 / EXPLORE_EVERY = 3% of the runs' time.
EXPLORE_EVERY = 100
# The other mode must beat the preferred one by this fraction to be chosen (noise guard).
MARGIN = 0.03
# Two runs in a row this many times slower than the chosen mode's median at the choice re-time the
# other mode at once.
SLOWDOWN = 1.5


class ModeChooser:
    """Picks one of two modes per run from measured run times (thread-safe).

    Args:
        modes: the two mode names; the first is preferred on a tie.
        samples: timed runs per mode before choosing (after one untimed run each).
        explore_every: runs of the chosen mode between re-timings of the other.
        margin: how much faster (as a fraction) the other mode must be to be chosen.
        slowdown: how much slower than at its choice the chosen mode's runs may get (two in a row)
            before the other mode is re-timed early.
    """

    def __init__(
        self,
        modes: Sequence[str],
        *,
        samples: int = SAMPLES,
        explore_every: int = EXPLORE_EVERY,
        margin: float = MARGIN,
        slowdown: float = SLOWDOWN,
    ) -> None:
        if len(modes) != 2 or modes[0] == modes[1]:
            raise ValueError(f"ModeChooser needs two different modes, got {list(modes)}")
        if samples < 1 or explore_every < 1 or margin < 0:
            raise ValueError(f"ModeChooser: bad samples={samples}, explore_every={explore_every}, margin={margin}")
        self.modes = (modes[0], modes[1])
        self._samples = samples
        self._explore_every = explore_every
        self._margin = margin
        self._slowdown = slowdown
        self._baseline = 0.0  # the chosen mode's median when it was chosen
        self._slow = 0  # consecutive runs of the chosen mode slower than slowdown * baseline
        self._lock = threading.Lock()
        self._times: dict[str, deque[float]] = {m: deque(maxlen=samples) for m in self.modes}
        self._last: str | None = None  # the mode of the previous run
        self._chosen: str | None = None
        self._since = 0  # runs of the chosen mode since the last re-timing
        self._exploring = 0  # timed runs of the other mode still to do in this re-timing
        self._banned = False  # the other mode failed once: only the preferred one runs
        self.switches = 0  # how often the choice changed (diagnostics)

    @property
    def chosen(self) -> str | None:
        """The mode chosen so far (None while both are still being timed)."""
        return self._chosen

    def pick(self) -> str:
        """The mode the next run should use."""
        with self._lock:
            if self._chosen is None:
                # One mode's samples, then the other's.
                a, b = self.modes
                return a if len(self._times[a]) < self._samples else b
            if self._exploring:
                return self._other(self._chosen)
            return self._chosen

    def record(self, mode: str, seconds: float) -> None:
        """The run that :meth:`pick` gave ``mode`` took ``seconds`` (call only for completed runs)."""
        if mode not in self._times:
            raise ValueError(f"ModeChooser: unknown mode {mode!r}, expected one of {list(self.modes)}")
        with self._lock:
            if mode != self._last:
                self._last = mode  # the first run after a switch pays for it: not timed
                return
            self._times[mode].append(seconds)
            if self._banned:
                return
            if self._chosen is None:
                if all(len(t) >= self._samples for t in self._times.values()):
                    self._decide()
                return
            if mode != self._chosen:
                if self._exploring:
                    self._exploring -= 1
                    if not self._exploring:
                        self._decide()
                return
            self._since += 1
            self._slow = self._slow + 1 if seconds > self._slowdown * self._baseline else 0
            if (self._since >= self._explore_every or self._slow >= 2) and not self._banned:
                self._since = 0
                self._slow = 0
                self._exploring = self._samples

    def failed(self, mode: str) -> None:
        """The run that :meth:`pick` gave ``mode`` failed: a failing other mode is never picked again."""
        with self._lock:
            if mode != self.modes[0]:
                self._banned = True
                self._chosen = self.modes[0]
                self._exploring = 0

    def _other(self, mode: str) -> str:
        return self.modes[1] if mode == self.modes[0] else self.modes[0]

    def _decide(self) -> None:
        a, b = self.modes
        ma, mb = statistics.median(self._times[a]), statistics.median(self._times[b])
        new = b if mb < ma * (1.0 - self._margin) else a
        if new != self._chosen and self._chosen is not None:
            self.switches += 1
        self._chosen = new
        self._since = 0
        self._slow = 0
        self._baseline = statistics.median(self._times[new])
