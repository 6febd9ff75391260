"""The descriptor-check schedule (no torch): when a collective must be agreed before its data moves."""

from __future__ import annotations

import numpy as np

from asyncnet.distributed.checking import (
    CHECK_ALWAYS,
    CHECK_CHANGED,
    CHECK_NONE,
    DESCRIPTOR_BYTES,
    MAX_TRANSITIONS,
    CheckSchedule,
    describe,
    wire,
)


def _run(schedule: CheckSchedule, descs: list[str], mode: int = CHECK_CHANGED) -> list[bool]:
    """Which of ``descs`` (issued in order, all ranks agreeing) were checked."""
    checked = []
    for d in descs:
        need = schedule.needs_check(d, mode)
        if need:
            schedule.agreed(d)
        else:
            schedule.sent_unchecked(d, mode)
        checked.append(need)
    return checked


def test_a_steady_schedule_is_checked_once_then_never() -> None:
    s = CheckSchedule()
    step = ["a|f[3]", "b|f[5]", "c|f[2]"]
    assert _run(s, step) == [True, True, True]
    assert _run(s, step) == [True, False, False]  # c -> a was not known yet
    assert _run(s, step * 3) == [False] * 9
    assert s.exchanges == 4


def test_changes_order_and_repeats_are_checked() -> None:
    s = CheckSchedule()
    _run(s, ["a|f[3]", "b|f[5]"] * 2)
    # A changed shape, a swapped order, an extra collective: each is not the predicted successor.
    assert _run(s, ["a|f[4]"]) == [True]
    s2 = CheckSchedule()
    _run(s2, ["a|f[3]", "b|f[5]"] * 2)
    assert _run(s2, ["b|f[5]", "a|f[3]"]) == [True, True]
    s3 = CheckSchedule()
    _run(s3, ["a|f[3]", "b|f[5]"] * 2)
    assert _run(s3, ["a|f[3]", "a|f[3]"]) == [False, True]
    # A descriptor followed by different successors (A A B ...) keeps being checked where ambiguous.
    s4 = CheckSchedule()
    assert _run(s4, ["x", "x", "y"] * 3)[3:] == [True, True, True, False, True, True]


def test_modes_and_reset() -> None:
    s = CheckSchedule()
    assert _run(s, ["a", "a", "a"], CHECK_ALWAYS) == [True, True, True]
    assert _run(s, ["a", "b"], CHECK_NONE) == [False, False]
    # After an unchecked collective (which may differ across ranks) nothing is predicted from it.
    assert _run(s, ["a"]) == [True]
    assert _run(s, ["b"], CHECK_NONE) == [False]
    assert _run(s, ["a"]) == [False]  # learned: after an unchecked one, 'a' followed
    s.reset()
    assert s.expected() is None and _run(s, ["a"]) == [True]


def test_the_table_is_bounded() -> None:
    s = CheckSchedule()
    _run(s, [f"d{i}" for i in range(MAX_TRANSITIONS + 10)])
    assert len(s._next) <= MAX_TRANSITIONS


def test_descriptors_fit_the_wire_and_long_ones_stay_distinct() -> None:
    short = describe("Allreduce op #1", [np.zeros((2, 3), np.float32), np.zeros(4, np.int64)])
    assert short == "Allreduce op #1|float32[2, 3];int64[4]"
    assert wire(short) == short.encode()
    many = [np.zeros((i, 7), np.float32) for i in range(1, 60)]
    a, b = describe("AllreduceCoalesced op #9", many), describe("AllreduceCoalesced op #9", [*many[:-1], np.zeros(1)])
    assert len(a) > DESCRIPTOR_BYTES and a[:400] == b[:400]
    assert len(wire(a)) <= DESCRIPTOR_BYTES and wire(a) != wire(b)  # the digest covers the cut-off tail
    assert wire(a).startswith(a[:300].encode())
