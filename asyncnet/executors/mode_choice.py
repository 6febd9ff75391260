"""Choosing among ways of running the same work by timing them: the measured BLAS policy.

How BLAS-heavy operators should run -- side by side with one BLAS thread each, one after the
other with every BLAS thread, or everything on one BLAS thread -- depends on the machine and on
its load, not on the net alone. On an idle 2-vCPU machine OpenBLAS's own two threads scaled the
WIDE bench's 256^3 GEMMs 1.43x while two Python threads with one BLAS thread each reached 1.55x,
and a 2-layer LSTM's timestep GEMMs scaled better inside BLAS than across timesteps; on the same
machine under load (other processes on the cores), two-thread GEMMs became 1.6-7x slower than
one-thread ones, and only single-threaded BLAS kept its speed.

A :class:`ModeChooser` therefore times runs of each way and keeps the fastest: it runs each mode
in turn for ``samples`` timed runs, keeps the one with the lowest median, and every
``explore_every`` runs re-times one of the others (in turn), so a change of load or of input
shapes is followed (a mode that lost by more than ``LOST_BY`` is re-timed half as often each
time, down to every ``MAX_BACKOFF * explore_every`` runs, and its re-timing stops after one such
run: under load, multi-threaded BLAS can be 15x slower, and re-timing it must stay cheap) -- sooner when the chosen mode's runs become ``slowdown`` times slower than
when it was chosen (multi-threaded BLAS on a machine that became busy: that is when waiting for
the periodic re-timing would cost most). The first run after a change of mode (and the first ``warmup`` runs of all) is not timed: it
pays for the switch (buffers, caches, and OpenBLAS's worker threads, which spin for a while after
a multi-threaded call and take a core from concurrent single-threaded work). The chosen mode (at
first the preferred one, listed first) is kept unless another is faster by more than ``margin``.
Runs that failed or were stopped are not recorded, and a failed run of a mode other than the
preferred one rules that mode out for good (the preferred mode is what the caller would do
without the policy; the others must never be the reason a run fails).

Nothing here is a knob for users: the policy is what executors do by default, and
``ExecutorOptions(blas_threads=N)`` (a fixed count) turns it off.
"""

from __future__ import annotations

import statistics
import threading
from collections import deque
from collections.abc import Sequence

# Untimed runs at the start, for executors (see ModeChooser's ``warmup``).
WARMUP_RUNS = 2
# Timed runs per mode before choosing, and kept per mode (the median of these decides).
SAMPLES = 3
# Runs of the chosen mode between two re-timings of another one. With that one 1.7x slower,
# re-timing costs about (SAMPLES + 1) * 0.7 / EXPLORE_EVERY = 3% of the runs' time.
EXPLORE_EVERY = 100
# Another mode must beat the chosen one by this fraction to replace it (noise guard).
MARGIN = 0.03
# A re-timed mode whose run is this many times slower than the chosen one's median stops being
# re-timed at once, and is re-timed half as often from then on, down to MAX_BACKOFF times less.
LOST_BY = 2.0
MAX_BACKOFF = 16
# Two runs in a row this many times slower than the chosen mode's median at its choice re-time
# another mode at once.
SLOWDOWN = 1.5


class ModeChooser:
    """Picks one of several modes per run from measured run times (thread-safe).

    Args:
        modes: the mode names; the first is preferred on a tie.
        samples: timed runs per mode before choosing (after one untimed run each).
        explore_every: runs of the chosen mode between re-timings of another.
        margin: how much faster (as a fraction) another mode must be to replace the chosen one.
        slowdown: how much slower than at its choice the chosen mode's runs may get (two in a row)
            before another mode is re-timed early.
        warmup: untimed runs at the very start (a net's second run still settles buffers, conv plans
            and page faults: on an idle machine the first timed runs were up to 1.4x slower).
    """

    def __init__(
        self,
        modes: Sequence[str],
        *,
        samples: int = SAMPLES,
        explore_every: int = EXPLORE_EVERY,
        margin: float = MARGIN,
        slowdown: float = SLOWDOWN,
        warmup: int = 1,
    ) -> None:
        if len(modes) < 2 or len(set(modes)) != len(modes):
            raise ValueError(f"ModeChooser needs two or more different modes, got {list(modes)}")
        if samples < 1 or explore_every < 1 or margin < 0:
            raise ValueError(f"ModeChooser: bad samples={samples}, explore_every={explore_every}, margin={margin}")
        self.modes = tuple(modes)
        self._samples = samples
        self._explore_every = explore_every
        self._margin = margin
        self._slowdown = slowdown
        self._lock = threading.Lock()
        self._times: dict[str, deque[float]] = {m: deque(maxlen=samples) for m in self.modes}
        self._banned: set[str] = set()  # modes that failed a run: never picked again
        self._last: str | None = None  # the mode of the previous run
        self._cold = warmup - 1  # untimed runs at the start beyond the first
        self._chosen: str | None = None
        self._baseline = 0.0  # the chosen mode's median when it was chosen
        self._slow = 0  # consecutive runs of the chosen mode slower than slowdown * baseline
        self._exploring: str | None = None  # the mode being re-timed
        self._left = 0  # its timed runs still to do
        self._due = dict.fromkeys(self.modes, 0)  # runs of the chosen mode until each may be re-timed
        self._every = dict.fromkeys(self.modes, explore_every)  # its re-timing interval (backed off)
        self.switches = 0  # how often the choice changed (diagnostics)

    @property
    def chosen(self) -> str | None:
        """The mode chosen so far (None while the modes are still being timed)."""
        return self._chosen

    def pick(self) -> str:
        """The mode the next run should use."""
        with self._lock:
            if self._chosen is None:
                for m in self.modes:  # each mode's samples in turn
                    if m not in self._banned and len(self._times[m]) < self._samples:
                        return m
                return self.modes[0]  # not reached: the last sample decides
            return self._exploring or self._chosen

    def record(self, mode: str, seconds: float) -> None:
        """The run that :meth:`pick` gave ``mode`` took ``seconds`` (call only for completed runs)."""
        if mode not in self._times:
            raise ValueError(f"ModeChooser: unknown mode {mode!r}, expected one of {list(self.modes)}")
        with self._lock:
            if mode != self._last:
                self._last = mode  # the first run after a switch pays for it: not timed
                return
            if self._cold > 0:
                self._cold -= 1
                return
            self._times[mode].append(seconds)
            if self._chosen is None:
                if all(len(self._times[m]) >= self._samples for m in self.modes if m not in self._banned):
                    self._decide(self.modes[0], [m for m in self.modes if m not in self._banned])
                    self._stagger()
                return
            if mode == self._exploring:
                self._left -= 1
                ref = statistics.median(self._times[self._chosen])
                lost = seconds > LOST_BY * ref
                if self._left <= 0 or lost:
                    self._exploring = None
                    self._decide(self._chosen, [self._chosen, mode])
                    if self._chosen != mode and lost:
                        self._every[mode] = min(self._every[mode] * 2, MAX_BACKOFF * self._explore_every)
                    else:
                        self._every[mode] = self._explore_every
                    self._due[mode] = self._every[mode]
                return
            if mode != self._chosen:
                return
            for m in self._due:
                self._due[m] -= 1
            self._slow = self._slow + 1 if seconds > self._slowdown * self._baseline else 0
            if self._slow >= 2:
                self._slow = 0
                self._explore_next(force=True)
            else:
                self._explore_next(force=False)

    def failed(self, mode: str) -> None:
        """The run that :meth:`pick` gave ``mode`` failed: a failing non-preferred mode is never picked again."""
        with self._lock:
            if mode == self.modes[0] or mode in self._banned:
                return
            self._banned.add(mode)
            if self._exploring == mode:
                self._exploring = None
            if self._chosen == mode:
                self._chosen = self.modes[0]
            if self._chosen is None and all(
                len(self._times[m]) >= self._samples for m in self.modes if m not in self._banned
            ):
                self._decide(self.modes[0], [m for m in self.modes if m not in self._banned])
                self._stagger()

    def _stagger(self) -> None:
        # After the first choice the others come due one after another, not all at once.
        others = [m for m in self.modes if m != self._chosen and m not in self._banned]
        for k, m in enumerate(others):
            self._due[m] = self._explore_every * (k + 1) // len(others)

    def _explore_next(self, *, force: bool) -> None:
        # The other mode most overdue is re-timed (when forced, even if none is due yet).
        others = [m for m in self.modes if m != self._chosen and m not in self._banned]
        if not others:
            return
        m = min(others, key=lambda k: self._due[k])
        if force or self._due[m] <= 0:
            self._exploring = m
            self._left = self._samples

    def _decide(self, incumbent: str, candidates: Sequence[str]) -> None:
        medians = {m: statistics.median(self._times[m]) for m in candidates if self._times[m]}
        best = min(medians, key=lambda m: medians[m])
        keep = medians.get(incumbent)
        new = best if keep is None or medians[best] < keep * (1.0 - self._margin) else incumbent
        if self._chosen is not None and new != self._chosen:
            self.switches += 1
        self._chosen = new
        self._slow = 0
        self._baseline = medians[new]
