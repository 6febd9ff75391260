"""Running a recurrent network: step workspaces, links, aliases, forward and backward passes.

Each timestep t has its own workspace (kept after the forward pass, as Caffe2's step
workspaces, so the backward step net finds that step's intermediate blobs). A step workspace
sees the outer workspace only through the blobs its step nets read and nothing produces
(parameters, sequence lengths): they are bound to the outer cells, everything else is local.

Sequential mode runs the step nets through :mod:`asyncnet.subnet` one timestep after another;
the threaded mode (``enable_rnn_executor``) hands the same prepared ops to
:mod:`asyncnet.recurrent.timesteps`. With ``enable_rnn_executor`` each pass times both modes and
keeps the faster (:mod:`asyncnet.executors.mode_choice`): on an idle machine where BLAS's own
threads already use every core, sequential timesteps can win; under load, threaded ones do.
Both give bitwise the same results.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable, Hashable, Sequence
from typing import Any

import numpy as np

from asyncnet.cancellation import check_stopped
from asyncnet.errors import ArgumentError, BlobNotFoundError, TensorError
from asyncnet.executors.mode_choice import WARMUP_RUNS, ModeChooser
from asyncnet.executors.pools import default_threads
from asyncnet.net import EMPTY, Blob, PreparedOp
from asyncnet.opinfo import OpInfo
from asyncnet.proto import caffe2_pb2 as pb
from asyncnet.recurrent.spec import Link, RNNSpec
from asyncnet.recurrent.timesteps import Task, dependencies, run_tasks
from asyncnet.subnet import Subnet
from asyncnet.workspace import Workspace

__all__ = ["RecurrentRunner", "StepWorkspaces"]


def _produced(net: pb.NetDef | None) -> set[str]:
    return set() if net is None else {o for op in net.op for o in op.output}


def _read(net: pb.NetDef | None) -> list[str]:
    if net is None:
        return []
    seen: dict[str, None] = dict.fromkeys(net.external_input)
    for op in net.op:
        for n in (*op.input, *op.control_input):
            seen.setdefault(n)
    return list(seen)


class StepSlot:
    """The workspace of one timestep and the step nets prepared in it."""

    __slots__ = ("workspace", "forward", "backward", "timestep")

    def __init__(self, workspace: Workspace, forward: Subnet, timestep: Blob) -> None:
        self.workspace = workspace
        self.forward = forward
        self.backward: Subnet | None = None
        self.timestep = timestep


class StepWorkspaces:
    """The last output of RecurrentNetwork: its per-timestep workspaces, read by the gradient op."""

    def __init__(self, owner: str) -> None:
        self.owner = owner
        self.slots: list[StepSlot] = []
        # recompute_blobs_on_backward: one cell per name for every timestep (Caffe2 kept them in
        # a workspace shared by the steps), so the forward pass keeps only the last step's value.
        self.shared: dict[str, Blob] = {}
        self.lock = threading.Lock()

    def __len__(self) -> int:
        return len(self.slots)

    def retained_bytes(self) -> int:
        """Bytes of the arrays the step workspaces hold (each array counted once)."""
        seen: set[int] = set()
        total = 0
        for slot in self.slots:
            for name in slot.workspace.local_blobs():
                value = slot.workspace.fetch(name)
                if isinstance(value, np.ndarray):
                    base = value if value.base is None else value.base
                    if id(base) not in seen and isinstance(base, np.ndarray):
                        seen.add(id(base))
                        total += base.nbytes
        return total

    def __repr__(self) -> str:
        return f"StepWorkspaces({self.owner}: {len(self.slots)} timestep(s))"


def _overlapping(links: Sequence[Link], written: Sequence[Link]) -> bool:
    """Whether a written link's rows overlap another link's rows of the same external within one step."""
    for w in written:
        for r in links:
            if r.internal != w.internal and r.external == w.external:
                if w.offset < r.offset + r.window and r.offset < w.offset + w.window:
                    return True
    return False


def _initial_state(op: OpInfo, name: str, value: Any, steps: int, batch: int) -> np.ndarray:
    """The (T + L, N, D) state tensor with its first L rows from the initial-state input."""
    init = np.asarray(value)
    if not 1 <= init.ndim <= 3:
        raise TensorError(f"{op.label()}: initial state '{name}' must have 1 to 3 dims, got shape {init.shape}")
    d = init.shape[-1]
    length = init.shape[0] if init.ndim == 3 else 1
    state = np.zeros((steps + length, batch, d), dtype=init.dtype)
    if init.ndim >= 2:
        if init.shape[-2] != batch:
            raise TensorError(
                f"{op.label()}: initial state '{name}' {init.shape} has batch {init.shape[-2]}, the input has {batch}"
            )
        state[:length] = init.reshape(length, batch, d)
    else:
        state[0] = init  # one initial state shared by the whole batch
    return state


class RecurrentRunner:
    """The forward and backward passes of one RecurrentNetwork op (shared with its gradient op)."""

    def __init__(self, op: OpInfo, spec: RNNSpec, workspace: Workspace) -> None:
        self.op = op
        self.spec = spec
        self.ws = workspace
        self.label = op.label()
        internal_f = {link.internal for link in spec.links}
        internal_b = {link.internal for link in spec.backward_links}
        made_f = _produced(spec.step_net)
        made_b = _produced(spec.backward_step_net)
        self.written_f = [link for link in spec.links if link.internal in made_f]
        self.written_b = [link for link in spec.backward_links if link.internal in made_b]
        if spec.backward_step_net is not None:
            stale = [n for n in spec.recompute if n not in made_b]
            if stale:
                raise ArgumentError(
                    f"{op.label()}: recompute_blobs_on_backward names {stale}, which the backward_step_net does not "
                    "recompute (its ops must write them before they are read); the forward pass keeps only the "
                    "last timestep's value of those blobs"
                )
        local = internal_f | internal_b | made_f | made_b | {spec.timestep}
        self.refs_f = [n for n in _read(spec.step_net) if n not in local]
        self.refs_b = [n for n in _read(spec.backward_step_net) if n not in local]
        self.threads = spec.num_threads or default_threads()
        # A step that writes a link window another link of the same step also views (a window over the
        # last k rows that includes the row being written) must see the write at once, as Caffe2's
        # memory-sharing links did: such nets run op by op with per-op copy-back.
        self.aliased_f = _overlapping(spec.links, self.written_f)
        # enable_rnn_executor asks for concurrent timesteps; whether they beat sequential timesteps with
        # every BLAS thread depends on the machine and its load, so both are timed and the faster kept.
        self.chooser = (
            ModeChooser(("threaded", "sequential"), warmup=WARMUP_RUNS) if spec.threaded and self.threads > 1 else None
        )

    def _threaded(self, steps_n: int) -> str:
        """How this pass runs its timesteps: "threaded", "sequential", or "" (sequential, not timed)."""
        if self.chooser is None or steps_n < 2:
            return ""
        return self.chooser.pick()

    # -- step workspaces -----------------------------------------------------------------

    def slots(self, steps: StepWorkspaces, count: int) -> list[StepSlot]:
        """The first ``count`` step slots, created (and their step nets prepared) as needed."""
        with steps.lock:
            while len(steps.slots) < count:
                t = len(steps.slots)
                sw = Workspace(f"{self.ws.name}/{self.label}/step{t}", io_policy=self.ws.io_policy)
                for name in self.refs_f:
                    sw.bind(name, self.ws.cell(name))
                for name in self.spec.recompute:
                    sw.bind(name, steps.shared.setdefault(name, Blob(name)))
                ts = sw.cell(self.spec.timestep)
                ts.value = np.array([t], np.int32)
                # Step nets run op by op, as Caffe2 ran them without its RNN executor (exports may
                # carry a net type such as "rnn" that names no executor here).
                sub = Subnet(
                    self.spec.step_net, sw, owner=self.label, role=f"step_net (timestep {t})", executor="simple"
                )
                steps.slots.append(StepSlot(sw, sub, ts))
            return steps.slots[:count]

    def _backward_net(self, slot: StepSlot, t: int) -> Subnet:
        if slot.backward is None:
            net = self.spec.backward_step_net
            if net is None:
                raise BlobNotFoundError(f"{self.label}: no backward_step_net argument; the gradient cannot run")
            sw = slot.workspace
            for name in self.refs_b:
                if name not in sw.local_blobs():
                    sw.bind(name, self.ws.cell(name))
            slot.backward = Subnet(
                net, sw, owner=self.label, role=f"backward_step_net (timestep {t})", executor="simple"
            )
        return slot.backward

    # -- externals -----------------------------------------------------------------------

    def _external(self, name: str, named: dict[str, Any]) -> np.ndarray:
        if name in named:
            return np.asarray(named[name])
        value = self.ws.cell(name).value
        if value is EMPTY:
            raise BlobNotFoundError(
                f"{self.label}: link external '{name}' is neither an input of the op nor a blob of workspace "
                f"'{self.ws.name}'; inputs: {', '.join(named) or 'none'}"
            )
        return np.asarray(value)

    def _views(self, links: Sequence[Link], ext: dict[str, np.ndarray], slot: StepSlot, t: int) -> None:
        ws = slot.workspace
        for link in links:
            arr = ext[link.external]
            lo = t + link.offset
            if lo < 0 or lo + link.window > arr.shape[0]:
                raise TensorError(
                    f"{self.label}: link '{link.internal}' needs rows [{lo}, {lo + link.window}) of "
                    f"'{link.external}' at timestep {t}, which has {arr.shape[0]} rows"
                )
            ws.cell(link.internal).value = arr[lo : lo + link.window]

    def _copy_back(self, link: Link, ext: dict[str, np.ndarray], cell: Blob, t: int) -> None:
        dst = ext[link.external][t + link.offset : t + link.offset + link.window]
        value = cell.value
        if value is dst:
            return
        src = np.asarray(value)
        if src.size != dst.size:
            raise TensorError(
                f"{self.label}: step net output '{link.internal}' {src.shape} does not fit rows "
                f"[{t + link.offset}, {t + link.offset + link.window}) of '{link.external}' {dst.shape} at timestep {t}"
            )
        np.copyto(dst, src.reshape(dst.shape), casting="same_kind")

    # -- forward ---------------------------------------------------------------------------

    def forward(self, ins: Sequence[Any], steps: StepWorkspaces) -> list[Any]:
        """Run every timestep; returns the alias outputs (views of the states) then ``steps``."""
        spec = self.spec
        x = np.asarray(ins[0])
        if x.ndim < 2:
            raise TensorError(f"{self.label}: input 0 must be a (T, N, ...) sequence, got shape {x.shape}")
        steps_n, batch = x.shape[0], x.shape[1]
        named = dict(zip(self.op.inputs, ins))
        ext: dict[str, np.ndarray] = {}
        for state, idx in zip(spec.recurrent_states, spec.initial_ids):
            ext[state] = _initial_state(self.op, self.op.inputs[idx], ins[idx], steps_n, batch)
            self.ws.cell(state).value = ext[state]
        for link in spec.links:
            if link.external not in ext:
                ext[link.external] = self._external(link.external, named)
        slots = self.slots(steps, steps_n)
        for t, slot in enumerate(slots):
            self._views(spec.links, ext, slot, t)
        mode = self._threaded(steps_n)
        t0 = time.perf_counter()
        if mode == "threaded" or self.aliased_f:
            slots[0].forward.net.check_inputs()  # what Net.run checks, once: the slots share their sources
            tasks = self._tasks(slots, [slot.forward.net.ops for slot in slots], spec.links, self.written_f, ext)
            threads = self.threads if mode == "threaded" else 1
            run_tasks(tasks, dependencies(tasks), threads=threads, owner=self.label)
        else:
            for t, slot in enumerate(slots):
                check_stopped(f"in {self.label} before timestep {t}")
                slot.forward.run()
                for link in self.written_f:
                    self._copy_back(link, ext, slot.workspace.cell(link.internal), t)
        if mode:
            assert self.chooser is not None
            self.chooser.record(mode, time.perf_counter() - t0)
        outs: list[Any] = []
        for alias in spec.aliases:
            src = ext[alias.src]
            start = alias.offset if alias.offset >= 0 else src.shape[0] + alias.offset
            outs.append(src[max(start, 0) :])
        outs.append(steps)
        return outs

    # -- backward --------------------------------------------------------------------------

    def backward(
        self,
        gos: Sequence[Any],
        fwd_ins: Sequence[Any],
        fwd_in_names: Sequence[str],
        steps: StepWorkspaces,
        out_names: Sequence[str],
    ) -> list[Any]:
        """Gradients of input 0, the params and the initial states (the gradient op's outputs)."""
        spec = self.spec
        x = np.asarray(fwd_ins[0])
        steps_n = x.shape[0]
        if len(steps) < steps_n:
            raise TensorError(f"{self.label}: the forward pass kept {len(steps)} step workspace(s), need {steps_n}")
        named = dict(zip(fwd_in_names, fwd_ins))
        ext: dict[str, np.ndarray] = {}
        for state in spec.recurrent_states:
            value = self.ws.cell(state).value
            if value is EMPTY:
                raise BlobNotFoundError(f"{self.label}: recurrent state '{state}' is missing; run the forward op first")
            ext[state] = np.asarray(value)
            grad = np.zeros_like(ext[state])
            ext[state + "_grad"] = grad
            self.ws.cell(state + "_grad").value = grad
        seq_grad = np.zeros_like(x)
        ext[out_names[0]] = seq_grad
        for link in spec.links:
            if link.external not in ext:
                ext[link.external] = self._external(link.external, named)
        for link in spec.backward_links:
            if link.external not in ext:
                ext[link.external] = self._external(link.external, named)
        per_step: list[tuple[np.ndarray, np.ndarray, int]] = []
        for k, j in enumerate(spec.outputs_with_grads):
            if k >= len(gos) or j >= len(spec.aliases):
                continue
            alias = spec.aliases[j]
            g = ext[alias.src + "_grad"]
            go = np.asarray(gos[k])
            if alias.offset < 0:
                start = g.shape[0] + alias.offset
                g[start:] += go.reshape(g[start:].shape)
            else:
                per_step.append((g, go, alias.offset))
        slots = self.slots(steps, steps_n)
        nets = [self._backward_net(slot, t) for t, slot in enumerate(slots)]

        def accumulate(t: int) -> None:
            # Caffe2 adds step t's external output gradient just before running step t backward.
            for g, go, offset in per_step:
                if t < go.shape[0]:
                    g[t + offset] += go[t].reshape(g[t + offset].shape)

        for t, slot in enumerate(slots):
            self._views(spec.links, ext, slot, t)
            self._views(spec.backward_links, ext, slot, t)
        order = list(reversed(range(steps_n)))
        mode = self._threaded(steps_n)
        t0 = time.perf_counter()
        if mode == "threaded":
            nets[-1].net.check_inputs()
            tasks = self._tasks(
                slots,
                [n.net.ops for n in nets],
                spec.backward_links,
                self.written_b,
                ext,
                order=order,
                before=accumulate,
                before_keys=lambda t: [(id(g), t + o) for g, _go, o in per_step],
            )
            run_tasks(tasks, dependencies(tasks), threads=self.threads, owner=self.label)
        else:
            for t in order:
                check_stopped(f"in {self.label} before backward timestep {t}")
                accumulate(t)
                nets[t].run()
                for link in self.written_b:
                    self._copy_back(link, ext, slots[t].workspace.cell(link.internal), t)
        if mode:
            assert self.chooser is not None
            self.chooser.record(mode, time.perf_counter() - t0)
        param_grads: list[np.ndarray] = []
        cell_names = spec.param_grads or [f"{fwd_in_names[p]}_grad" for p in spec.params]
        for p, name in zip(spec.params, cell_names):
            acc = np.zeros_like(np.asarray(fwd_ins[p]))
            for t in order:  # Caffe2's accumulation order: last timestep first
                value = slots[t].workspace.cell(name).value
                if value is EMPTY:
                    raise BlobNotFoundError(
                        f"{self.label}: the backward step net produced no '{name}' (gradient of param "
                        f"'{fwd_in_names[p]}') at timestep {t}"
                    )
                acc += np.asarray(value).reshape(acc.shape)
            for t in order:
                # Summed: the per-timestep copies are dead (the next backward pass rewrites them).
                slots[t].workspace.cell(name).value = EMPTY
            param_grads.append(acc)
        init_grads: list[np.ndarray] = []
        for state, idx in zip(spec.recurrent_states, spec.initial_ids):
            g = ext[state + "_grad"]
            init = np.asarray(fwd_ins[idx])
            if init.ndim >= 2:
                length = init.shape[0] if init.ndim == 3 else 1
                init_grads.append(g[:length].reshape(init.shape).copy())
            else:
                init_grads.append(g[0].sum(axis=0).astype(init.dtype))
        return [seq_grad, *param_grads, *init_grads]

    # -- threaded --------------------------------------------------------------------------

    def _tasks(
        self,
        slots: Sequence[StepSlot],
        ops_per_step: Sequence[Sequence[PreparedOp]],
        links: Sequence[Link],
        written: Sequence[Link],
        ext: dict[str, np.ndarray],
        *,
        order: Sequence[int] | None = None,
        before: Callable[[int], None] | None = None,
        before_keys: Callable[[int], list[Hashable]] | None = None,
    ) -> list[Task]:
        """Tasks of every (timestep, op) in sequential order, keyed for :func:`dependencies`."""
        all_links = [*self.spec.links, *([] if links is self.spec.links else links)]
        link_of: dict[str, Link] = {}
        for link in all_links:
            link_of.setdefault(link.internal, link)
        ext_id = {name: id(arr) for name, arr in ext.items()}
        # Recomputed blobs are one cell for all timesteps: their accesses are ordered like a param's.
        shared = set(self.refs_f) | set(self.refs_b) | set(self.spec.recompute)
        copy_for = {link.internal: link for link in written}
        tasks: list[Task] = []

        def keys(names: Sequence[str], t: int) -> list[Hashable]:
            out: list[Hashable] = []
            for n in names:
                link = link_of.get(n)
                if link is not None:
                    base = ext_id[link.external]
                    out.extend((base, t + link.offset + r) for r in range(link.window))
                elif n in shared:
                    out.append(("shared", n))
                else:
                    out.append((t, n))
            return out

        for t in order if order is not None else range(len(slots)):
            if before is not None and before_keys is not None:
                bk = before_keys(t)
                if bk:
                    tasks.append(
                        Task(run=functools.partial(before, t), reads=bk, writes=bk, timestep=t, label="accumulate")
                    )
            cells = slots[t].workspace
            for op in ops_per_step[t]:
                info = op.info
                copies = [(copy_for[o], cells.cell(o)) for o in info.outputs if o in copy_for]
                tasks.append(
                    Task(
                        run=self._op_runner(op, copies, ext, t),
                        reads=keys([*info.inputs, *info.control_inputs], t),
                        writes=keys(info.outputs, t),
                        op=op,
                        timestep=t,
                    )
                )
        return tasks

    def _op_runner(
        self, op: PreparedOp, copies: list[tuple[Link, Blob]], ext: dict[str, np.ndarray], t: int
    ) -> Callable[[], None]:
        if op.is_async:
            step = op.run
        else:
            step = op.step
        if not copies:
            return step

        def run() -> None:
            step()
            for link, cell in copies:
                self._copy_back(link, ext, cell, t)

        return run
