"""Data-parallel training across processes (FileStore rendezvous): equivalence, overlap, faults.

Each test launches real worker processes (tests/distributed/worker.py) through
asyncnet.distributed.launch, so the launcher, rendezvous, collectives and clean-up are all
exercised; every test checks that no process of the run is left alive.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from asyncnet.training import DigitsConfig, build_nets, load_digits_split
from asyncnet.workspace import Workspace
from tests.distributed.conftest import leftover_threads, require_torch, run_workers
from tests.distributed.worker import STEPS, _cfg

pytestmark = pytest.mark.usefixtures("no_thread_leak")


def _reference(cfg: DigitsConfig) -> list[dict[str, np.ndarray]]:
    """One process on the concatenated (global) batch: parameters after each step."""
    x_tr, y_tr, _, _ = load_digits_split(cfg.seed)
    init, train, _, params = build_nets(cfg)
    order = np.random.default_rng(cfg.seed).permutation(len(y_tr))
    out = []
    with Workspace("reference") as ws:
        ws.run_net_once(init)
        for k in range(STEPS):
            idx = order[k * cfg.batch_size : (k + 1) * cfg.batch_size]
            ws.feed("data", x_tr[idx])
            ws.feed("label", y_tr[idx])
            ws.run_net_once(train)
            out.append({p: np.array(ws.fetch(p)) for p in params})
    return out


def _check_equivalence(out: Path, size: int) -> None:
    for model in ("mlp", "lenet"):
        ref = _reference(_cfg(model, 8 * size))
        for step in range(1, STEPS + 1):
            ranks = [np.load(out / f"{model}_rank{r}_step{step}.npz") for r in range(size)]
            for p, want in ref[step - 1].items():
                for r in range(1, size):
                    assert np.array_equal(ranks[r][p], ranks[0][p]), f"{model} step {step}: {p} differs on rank {r}"
                np.testing.assert_allclose(
                    ranks[0][p], want, rtol=1e-5, atol=1e-6, err_msg=f"{model} step {step}: {p} vs one process"
                )


def _spans(trace: dict[str, object]) -> list[tuple[str, float, float]]:
    events = trace["traceEvents"]
    assert isinstance(events, list)
    return [(e["name"], e["ts"], e["ts"] + e["dur"]) for e in events if e.get("ph") == "X"]


def _check_overlap(trace_path: Path) -> None:
    """Some gradient all-reduce ran while a backward (gradient) op computed."""
    spans = _spans(json.loads(trace_path.read_text()))
    reduces = [s for s in spans if "Allreduce" in s[0]]
    grads = [s for s in spans if "Gradient" in s[0]]
    assert reduces and grads, f"trace lacks Allreduce or gradient ops: {sorted({s[0] for s in spans})[:20]}"
    overlapping = [(a, g) for a in reduces for g in grads if a[1] < g[2] and g[1] < a[2]]
    assert overlapping, "no Allreduce span overlaps a gradient op span"


@pytest.mark.timeout(240)
def test_two_ranks_match_one_process_and_overlap(tmp_path: Path) -> None:
    require_torch()
    result, reports = run_workers("equivalence", tmp_path, 2)
    assert result.ok, (result, reports)
    assert all(reports[r]["status"] == "ok" for r in range(2)), reports
    assert all(not leftover_threads(reports[r]) for r in range(2)), reports
    _check_equivalence(tmp_path, 2)
    _check_overlap(tmp_path / "lenet_rank0_trace.json")


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_four_ranks_match_one_process(tmp_path: Path) -> None:
    require_torch()
    result, reports = run_workers("equivalence", tmp_path, 4, timeout_ms=60_000)
    assert result.ok, (result, reports)
    _check_equivalence(tmp_path, 4)


TIMEOUT_MS = 8_000


def _survivor_error(reports: dict[int, dict[str, object]], rank: int) -> str:
    rep = reports[rank]
    assert rep["status"] == "error", rep
    assert rep["type"] == "OperatorError" or rep["type"] == "CollectiveError", rep
    # Within the communicator timeout (plus start-up and one step).
    assert float(rep["seconds"]) < TIMEOUT_MS / 1000 + 15, rep
    assert not leftover_threads(rep), rep
    return str(rep["error"]) + " " + str(rep["cause"])


@pytest.mark.timeout(180)
def test_rank_raising_mid_training_fails_the_others(tmp_path: Path) -> None:
    require_torch()
    result, reports = run_workers("raise", tmp_path, 2, timeout_ms=TIMEOUT_MS)
    assert not result.ok and result.returncodes == [1, 1], result
    assert "raises on purpose" in reports[1]["error"]
    err = _survivor_error(reports, 0)
    assert "Allreduce" in err and "peer rank 1" in err, err


@pytest.mark.timeout(240)
def test_rank_killed_fails_the_others_and_next_run_reconnects(tmp_path: Path) -> None:
    require_torch()
    store = tmp_path / "store"
    result, reports = run_workers("kill", tmp_path / "a", 2, timeout_ms=TIMEOUT_MS, store_dir=store)
    assert result.returncodes[1] == -9, result
    assert 1 not in reports
    err = _survivor_error(reports, 0)
    assert "Allreduce" in err and "peer rank 1" in err and "exited" in err, err
    # Same store directory, fresh run: the ranks meet again.
    result, reports = run_workers("reconnect", tmp_path / "b", 2, timeout_ms=TIMEOUT_MS, store_dir=store)
    assert result.ok, (result, reports)
    assert [reports[r]["sum"] for r in range(2)] == [3.0, 3.0]


@pytest.mark.timeout(180)
def test_rank_that_never_joins_fails_rendezvous(tmp_path: Path) -> None:
    require_torch()
    # Only rank 0 of a world of 2 is started: rank 1 never arrives.
    result, reports = run_workers("never", tmp_path, 1, timeout_ms=TIMEOUT_MS, world_size=2)
    assert not result.ok
    err = _survivor_error(reports, 0)
    assert "CreateCommonWorld" in err and "never joined" in err and "[1]" in err, err


@pytest.mark.timeout(180)
def test_mismatched_shapes_fail_every_rank_clearly(tmp_path: Path) -> None:
    require_torch()
    result, reports = run_workers("mismatch", tmp_path, 2, timeout_ms=TIMEOUT_MS)
    assert result.returncodes == [1, 1], result
    for r in range(2):
        err = _survivor_error(reports, r)
        assert "Broadcast" in err and "disagree" in err and "[32, 64]" in err and "[16, 64]" in err, err


@pytest.mark.timeout(180)
def test_shape_changing_on_one_rank_later_fails_every_rank_clearly(tmp_path: Path) -> None:
    """Rank 1's input grows at step 3, after the descriptors were agreed and are no longer exchanged.

    Rank 1 re-checks alone on the check group while rank 0 sends data: both must end with an
    error naming the op and the mismatch within the timeout — not a Gloo abort (SIGABRT), not a hang.
    """
    require_torch()
    result, reports = run_workers("reshape", tmp_path, 2, timeout_ms=TIMEOUT_MS)
    assert result.returncodes == [1, 1], result
    for r in range(2):
        steps = json.loads((tmp_path / f"rank{r}_steps.json").read_text())
        assert steps["sums"] == [3.0, 3.0], steps  # steps 1-2 ran
        # Step 1 checked, step 2 once more (after-the-last-collective is new), then nothing.
        assert steps["checks"] == 2, steps
    err0, err1 = _survivor_error(reports, 0), _survivor_error(reports, 1)
    for err in (err0, err1):
        assert "Allreduce 'sum_x'" in err and "mismatch suspected" in err, err
    assert "peer rank 1 re-checked" in err0 and "float32[5]" in err0 and "float32[4]" in err0, err0
    assert "re-checked, but the peers did not join" in err1 and "float32[5]" in err1, err1


@pytest.mark.timeout(180)
def test_collectives_swapped_on_one_rank_fail_every_rank_clearly(tmp_path: Path) -> None:
    """Both collectives were agreed before; only their order changes on rank 1 (a per-op cache would
    send both unchecked and Gloo would abort on the different sizes)."""
    require_torch()
    result, reports = run_workers("swap", tmp_path, 2, timeout_ms=TIMEOUT_MS)
    assert result.returncodes == [1, 1], result
    for r in range(2):
        assert json.loads((tmp_path / f"rank{r}_steps.json").read_text())["steps"] == [1, 2]
    err0, err1 = _survivor_error(reports, 0), _survivor_error(reports, 1)
    assert "peer rank 1 re-checked" in err0 and "second" in err0 and "mismatch suspected" in err0, err0
    assert "AllreduceCoalesced second" in err1 and "mismatch suspected" in err1, err1


@pytest.mark.timeout(180)
def test_compat_parallelize_two_processes_match_one(tmp_path: Path) -> None:
    require_torch()
    from tests.distributed.worker import compat_train

    result, reports = run_workers("compat", tmp_path, 2)
    assert result.ok, (result, reports)
    reference = compat_train(0, 2, None)
    for step, want in enumerate(reference, start=1):
        got = [np.load(tmp_path / f"compat_rank{r}_step{step}.npz") for r in range(2)]
        assert sorted(want) == ["cpu_0/fc1_b", "cpu_0/fc1_w", "cpu_0/fc2_b", "cpu_0/fc2_w"]
        for p, value in want.items():
            assert np.array_equal(got[0][p], got[1][p]), f"step {step}: {p} differs across ranks"
            np.testing.assert_allclose(got[0][p], value, rtol=1e-5, atol=1e-6, err_msg=f"step {step}: {p}")
