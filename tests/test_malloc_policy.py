"""The malloc policy: steady-state allocation patterns stop page-faulting once it is applied."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from asyncnet import malloc_policy

pytestmark = pytest.mark.timeout(120)

# Two ~700 KiB arrays allocated and freed per iteration: with glibc's dynamic thresholds the
# second free pushes the heap's free top past the trim threshold, so every iteration maps and
# faults its pages afresh (what im2col columns and padded copies of a conv did per run).
_PROBE = textwrap.dedent(
    """
    import json, resource, sys
    import numpy as np
    from asyncnet import malloc_policy
    mode = sys.argv[1]
    def make_net():
        from asyncnet.proto import caffe2_pb2 as pb
        from asyncnet.workspace import Workspace
        ws = Workspace()
        ws.feed("x", np.ones(3, np.float32))
        net = pb.NetDef(name="n", external_input=["x"])
        net.op.add(type="Relu", input=["x"], output=["y"])
        ws.create_net(net)
        ws.run_net("n")
    if mode == "net":
        make_net()
    elif mode == "disabled-net":
        malloc_policy.disable()
        make_net()
    elif mode == "policy":
        malloc_policy.retain_freed_memory()
    def step():
        a = np.ones(180_000, np.float32)
        b = np.ones(180_000, np.float32)
        return float(a[0] + b[-1])
    for _ in range(5):
        step()
    r0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(200):
        step()
    r1 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    print(json.dumps({"state": malloc_policy.state(), "faults_per_iter": (r1 - r0) / 200}))
    """
)


def _probe(mode: str) -> dict[str, object]:
    out = subprocess.run([sys.executable, "-c", _PROBE, mode], capture_output=True, text=True, check=True, timeout=100)
    result: dict[str, object] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


glibc_only = pytest.mark.skipif(malloc_policy._glibc() is None, reason="the policy applies to glibc's malloc only")


@glibc_only
def test_policy_stops_steady_state_page_faults() -> None:
    default = _probe("default")
    applied = _probe("policy")
    assert default["state"] == "pending"
    assert applied["state"] == "applied"
    # Without the policy each iteration faults its two arrays' pages in again (~350 pages).
    assert float(default["faults_per_iter"]) > 50  # type: ignore[arg-type]
    assert float(applied["faults_per_iter"]) < 1  # type: ignore[arg-type]


@glibc_only
def test_preparing_a_net_applies_it_once() -> None:
    assert _probe("net")["state"] == "applied"
    assert float(_probe("net")["faults_per_iter"]) < 1  # type: ignore[arg-type]


def test_disable_before_the_first_net_keeps_glibc_defaults() -> None:
    result = _probe("disabled-net")
    assert result["state"] == "disabled"


def test_retain_is_idempotent_in_this_process() -> None:
    first = malloc_policy.retain_freed_memory()
    assert malloc_policy.retain_freed_memory() == first
    malloc_policy.disable()  # too late once applied: the state does not change
    assert malloc_policy.state() in ("applied", "unavailable")
