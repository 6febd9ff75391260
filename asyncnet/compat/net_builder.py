"""Caffe2's ``net_builder``: ``NetBuilder`` and ``ops``, scope-driven building of nets, loops and branches.

Two kinds of control flow, as in Caffe2:

* execution-step based (``ops.loop``, ``ops.If``/``Elif``/``Else``, ``ops.stop_if``,
  ``ops.stop_guard``): each builder becomes an :class:`~asyncnet.compat.plan.ExecutionStep`
  whose ``should_stop_blob`` is its stop blob; :func:`to_execution_step` turns a builder into
  one for a plan;
* control-op based (``ops.IfNet``/``ops.Else``, ``ops.WhileNet``/``ops.Condition``): the block
  becomes one net holding an ``If`` / ``While`` op over Do-wrapped sub-nets
  (:mod:`asyncnet.compat.control_ops_util`), so it also runs inside an ordinary net and has
  gradients.

Example::

    with NetBuilder() as nb:
        x = ops.Const(0)
        y = ops.Const(0)
        with ops.WhileNet():
            with ops.Condition():
                ops.Add([x, ops.Const(1)], [x])
                ops.LT([x, ops.Const(7)])
            ops.Add([x, y], [y])
    plan = core.Plan("p"); plan.AddStep(to_execution_step(nb)); workspace.RunPlan(plan)

Caffe2's task hooks (``task_init``, ``task_group``, reporters...) need its Task/Session layer,
which asyncnet.compat does not have; they raise :class:`~asyncnet.errors.UnsupportedError`.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from typing import Any, TypeVar

from asyncnet.compat.control_ops_util import add_if_op, add_while_op
from asyncnet.compat.core import BlobReference, Net
from asyncnet.compat.plan import ExecutionStep, execution_step
from asyncnet.errors import NetDefinitionError, UnsupportedError

__all__ = ["NetBuilder", "Operations", "ops", "to_execution_step"]

_local = threading.local()


def _stack() -> list[NetBuilder]:
    stack: list[NetBuilder] | None = getattr(_local, "stack", None)
    if stack is None:
        stack = []
        _local.stack = stack
    return stack


def _used_blob_names(net: Net) -> set[str]:
    return {str(b) for op in net.Proto().op for b in (*op.input, *op.output)}


class NetBuilder:
    """Collects nets and nested builders in order; ``with NetBuilder() as nb:`` makes it current.

    Args:
        name: the builder's name (nested builders are named ``parent/name``).
        initial_scope: blobs visible to the control-op blocks inside (their lexical scope).
    """

    name: str
    _lexical_scope: set[str]

    def __init__(
        self,
        name: str | None = None,
        initial_scope: Iterable[Any] | None = None,
        _stop_blob_required: bool = False,
        _stop_blob: BlobReference | None = None,
        _fullname: str | None = None,
        _use_control_ops: bool = False,
    ) -> None:
        parent = NetBuilder.current(required=False)
        if _fullname and name:
            raise NetDefinitionError("NetBuilder: give either name or _fullname, not both")
        if _use_control_ops and (_stop_blob_required or _stop_blob is not None):
            raise NetDefinitionError("NetBuilder: control-op builders use no stop blobs")
        self.name = _fullname or "/".join(n for n in (parent.name if parent else None, name) if n)
        self._frozen = False
        self._current_net: Net | None = None
        self._children: list[Net | NetBuilder] = []
        if parent is not None:
            parent._update_lexical_scope()
        self._init_lexical_scope: set[str] = set(parent._lexical_scope) if parent else set()
        if initial_scope:
            self._init_lexical_scope |= {str(b) for b in initial_scope}
        self._lexical_scope = set(self._init_lexical_scope)
        self._stop_blob = _stop_blob
        self._stop_blob_required = _stop_blob_required
        self._use_control_ops = _use_control_ops

    # -- the current builder ---------------------------------------------------------------

    @classmethod
    def current(cls, required: bool = True) -> NetBuilder | None:
        """The innermost active builder of this thread (None, or an error when ``required``)."""
        stack = _stack()
        if stack:
            return stack[-1]
        if required:
            raise NetDefinitionError("no NetBuilder is active: use `with NetBuilder():`")
        return None

    @classmethod
    def _require(cls) -> NetBuilder:
        b = cls.current()
        assert b is not None  # current() raised otherwise
        return b

    def __enter__(self) -> NetBuilder:
        _stack().append(self)
        return self

    def __exit__(self, etype: object, *args: object) -> None:
        stack = _stack()
        if not stack or stack[-1] is not self:
            raise NetDefinitionError(f"NetBuilder '{self.name}' exited out of order")
        stack.pop()
        if self._use_control_ops and self._children:
            children = self._children
            self._reset_children()
            merged = NetBuilder.merge_nets(children, self._lexical_scope)
            if merged is not None:
                self._children = [merged]
        self.freeze()
        if etype is not None:
            return
        if self._stop_blob_required and self._stop_blob is None:
            raise NetDefinitionError(
                f"NetBuilder '{self.name}' needs a stop condition: call ops.stop() or ops.stop_if(...) inside it"
            )

    # -- children ---------------------------------------------------------------------------

    def stop_blob(self) -> BlobReference:
        """This builder's stop blob, created (False) in the current net on first use."""
        if self._use_control_ops:
            raise NetDefinitionError(f"NetBuilder '{self.name}': control-op blocks use no stop blobs")
        if self._stop_blob is None:
            net = self.current_net()
            self._stop_blob = BlobReference(net.NextName("stop_blob"), net=net)
            net.Const(False, blob_out=self._stop_blob)
            if self._current_net is not self._children[0]:
                init = Net("stop_blob_init")
                init.Const(False, blob_out=self._stop_blob)
                self._children.insert(0, init)
        return self._stop_blob

    def stop_if(self, blob: Any) -> None:
        stop = self.stop_blob()
        ops.Or([stop, blob], [stop])
        self._current_net = None  # the stop blob is checked after each net: start a new one

    def _assert_mutable(self) -> None:
        if self._frozen:
            raise NetDefinitionError(f"NetBuilder '{self.name}' has been built already")

    def _update_lexical_scope(self) -> None:
        self._lexical_scope = set(self._init_lexical_scope)
        for child in self._children:
            if isinstance(child, Net):
                self._lexical_scope |= _used_blob_names(child)
            elif child._use_control_ops:
                self._lexical_scope |= child._lexical_scope

    def _reset_children(self) -> None:
        self._current_net = None
        self._children = []
        self._lexical_scope = set(self._init_lexical_scope)

    def add(self, child: Net | NetBuilder) -> Net | NetBuilder:
        """Append a net or a nested builder (a net becomes the current net)."""
        self._assert_mutable()
        if self._use_control_ops and not (
            isinstance(child, Net) or (isinstance(child, NetBuilder) and child._use_control_ops)
        ):
            raise NetDefinitionError(
                f"NetBuilder '{self.name}': a control-op block holds nets and control-op blocks only, got {child}"
            )
        self._current_net = None
        self._children.append(child)
        if isinstance(child, Net):
            self._current_net = child
        self._update_lexical_scope()
        return child

    def current_net(self, name: str | None = None) -> Net:
        """The net new ops go to (a new one when there is none or ``name`` is given)."""
        self._assert_mutable()
        if self._current_net is None or name is not None:
            self.add(Net(name or (self.name or "net_builder") + "/net"))
        assert self._current_net is not None
        return self._current_net

    def freeze(self) -> None:
        for child in self._children:
            if isinstance(child, NetBuilder):
                child.freeze()
        self._current_net = None
        self._frozen = True

    def get(self) -> list[Net | NetBuilder]:
        """The children, after freezing the builder."""
        self.freeze()
        return list(self._children)

    @staticmethod
    def merge_nets(nets_or_builders: Sequence[Net | NetBuilder], outer_blob_names: Iterable[str]) -> Net | None:
        """One net holding the ops of the children in order; external outputs limited to outer blobs."""
        net: Net | None = None
        for n in nets_or_builders:
            if isinstance(n, NetBuilder):
                got = n.get()
                if not n._use_control_ops or len(got) != 1 or not isinstance(got[0], Net):
                    raise NetDefinitionError(f"NetBuilder '{n.name}': only control-op blocks can be merged into a net")
                cur = got[0]
            else:
                cur = n
            if net is None:
                net = cur
            else:
                net.AppendNet(cur)
        if net is not None:
            outer = {str(b) for b in outer_blob_names}
            keep = [o for o in net.Proto().external_output if o in outer]
            del net.Proto().external_output[:]
            net.Proto().external_output.extend(keep)
        return net

    def __str__(self) -> str:
        return self.name or "Un-named NetBuilder"


def to_execution_step(step_or_nets: Any, default_name: str | None = None) -> ExecutionStep:
    """A plan step from a NetBuilder (its stop blob ends it), a Net, a step or a list of them (Caffe2's core helper)."""
    if isinstance(step_or_nets, ExecutionStep):
        return step_or_nets
    stop_blob = None
    if not default_name and isinstance(step_or_nets, NetBuilder):
        default_name = step_or_nets.name
    if isinstance(step_or_nets, NetBuilder):
        stop_blob = step_or_nets._stop_blob
        step_or_nets = step_or_nets.get()
    items = step_or_nets if isinstance(step_or_nets, (list, tuple)) else [step_or_nets]
    if not all(isinstance(i, Net) for i in items):
        items = [to_execution_step(i) for i in items]
    return execution_step(default_name or "step", items, should_stop_blob=stop_blob)


class Operations:
    """``ops``: ops added to the current builder's current net, and the control-flow blocks."""

    def net(self, net: Net | None = None, name: str | None = None) -> Net:
        """Add ``net`` to the current builder, or return its current net (a new one named ``name``)."""
        if name is not None and net is not None:
            raise NetDefinitionError("ops.net: give either net or name, not both")
        builder = NetBuilder._require()
        if net is not None:
            builder.add(net)
            return net
        return builder.current_net(name=name)

    def __getattr__(self, op_type: str) -> Any:
        if op_type.startswith("__"):
            raise AttributeError(op_type)
        if NetBuilder.current(required=False) is None:
            raise AttributeError(f"ops.{op_type}: no active NetBuilder")
        return getattr(self.net(), op_type)

    def stop(self) -> None:
        """Stop the current step after this point (its later nets do not run)."""
        self.stop_if(self.Const(True))

    def stop_if(self, blob: Any) -> None:
        """Stop the current step when the scalar bool ``blob`` is true."""
        NetBuilder._require().stop_if(blob)

    def loop(self, iters: Any = None, name: str | None = None) -> _Loop:
        """A block run repeatedly: ``iters`` times (a number or a blob), or until ``ops.stop_if``."""
        return _add(_Loop(iters, name=name))

    def stop_guard(self, has_stopped_blob: Any = None, name: str | None = None) -> _StopGuard:
        """A block run once; ``has_stopped()`` tells whether it was stopped early."""
        return _add(_StopGuard(has_stopped_blob=has_stopped_blob, name=name))

    def If(self, cond: Any, name: str | None = None) -> _RunIf:
        """A block run once when ``cond`` is true (``Elif``/``Else`` on the returned block)."""
        return _add(_RunIf(cond, name=name))

    def IfNet(self, cond: Any, name: str | None = None) -> _RunIfNet:
        """Like If, but one ``If`` op over Do-wrapped branches (runs inside a net; differentiable)."""
        return _add(_RunIfNet(cond, name=name))

    def Else(self, name: str | None = None) -> _RunElseNet:
        """The else branch of the IfNet just before it."""
        return _RunElseNet(name=name)

    def WhileNet(self, name: str | None = None) -> _RunWhileNet:
        """A block compiled to one ``While`` op; its first child must be ``ops.Condition()``."""
        return _add(_RunWhileNet(name=name))

    def Condition(self, name: str | None = None) -> _RunWhileCondition:
        """The WhileNet's condition: its last op writes the scalar bool condition."""
        if not isinstance(NetBuilder.current(), _RunWhileNet):
            raise NetDefinitionError("ops.Condition() is used outside of ops.WhileNet()")
        return _RunWhileCondition(name=name)

    def _unsupported(self, what: str) -> Any:
        raise UnsupportedError(
            f"net_builder.ops.{what}: Caffe2's Task/TaskGroup/Session layer is not part of asyncnet.compat; "
            "available: net, stop, stop_if, loop, stop_guard, If, IfNet, Else, WhileNet, Condition and op types"
        )

    def task_group(self) -> Any:
        return self._unsupported("task_group")

    def task_init(self) -> Any:
        return self._unsupported("task_init")

    def task_exit(self) -> Any:
        return self._unsupported("task_exit")

    def task_instance_init(self) -> Any:
        return self._unsupported("task_instance_init")

    def task_instance_exit(self) -> Any:
        return self._unsupported("task_instance_exit")

    def local_init(self) -> Any:
        return self._unsupported("local_init")

    def local_exit(self, name: str | None = None) -> Any:
        return self._unsupported("local_exit")

    def task_reporter(self, interval_ms: int = 1000, name: str | None = None) -> Any:
        return self._unsupported("task_reporter")

    def local_reporter(self, interval_ms: int = 1000, name: str | None = None) -> Any:
        return self._unsupported("local_reporter")


ops = Operations()


_B = TypeVar("_B", bound=NetBuilder)


def _add(child: _B) -> _B:
    NetBuilder._require().add(child)
    return child


# -- blocks ----------------------------------------------------------------------------------


class _RunOnce(NetBuilder):
    def __exit__(self, etype: object, *args: object) -> None:
        if etype is None and self._stop_blob is not None:
            ops.stop()  # a stop blob makes the step loop: stop it after one pass
        NetBuilder.__exit__(self, etype, *args)


class _StopGuard(_RunOnce):
    def __init__(self, has_stopped_blob: Any = None, name: str | None = None) -> None:
        _RunOnce.__init__(self, name)
        self._stopped = has_stopped_blob
        self._ran = False

    def __enter__(self) -> _StopGuard:
        _RunOnce.__enter__(self)
        self._stopped = ops.Const(True, blob_out=self._stopped)
        return self

    def __exit__(self, etype: object, *args: object) -> None:
        if etype is None:
            self._ran = True
            ops.Const(False, blob_out=self._stopped)
        _RunOnce.__exit__(self, etype, *args)

    def has_stopped(self) -> BlobReference:
        """A scalar bool blob: true after the block ran iff it was stopped early."""
        if not self._ran:
            raise NetDefinitionError(f"stop_guard '{self.name}': has_stopped() is known only after the block")
        return BlobReference(str(self._stopped))


class _Loop(NetBuilder):
    def __init__(self, iters: Any = None, name: str | None = None) -> None:
        NetBuilder.__init__(self, name, _stop_blob_required=True)
        self._iter: Any = None
        self._num_iters: Any = None
        if iters is not None:
            self._inc = ops.Const(1)
            self._iter = ops.Const(0)
            self._num_iters = iters if isinstance(iters, BlobReference) else ops.Const(iters)

    def iter(self) -> Any:
        """The blob counting iterations from 0 (loops with a number of iterations only)."""
        if self._num_iters is None:
            raise NetDefinitionError(f"loop '{self.name}' has no number of iterations, hence no iter()")
        return self._iter

    def __enter__(self) -> _Loop:
        NetBuilder.__enter__(self)
        if self._num_iters is not None:
            ops.stop_if(ops.GE([self._iter, self._num_iters]))
        return self

    def __exit__(self, etype: object, *args: object) -> None:
        if etype is None and self._num_iters is not None:
            self.current_net().Add([self._iter, self._inc], [self._iter])
        NetBuilder.__exit__(self, etype, *args)


class _RunIf(_RunOnce):
    def __init__(self, cond_blob: Any = None, name: str | None = None, _already_ran: Any = None) -> None:
        _RunOnce.__init__(self, name)
        if cond_blob is None and _already_ran is None:
            raise NetDefinitionError("ops.If needs a condition blob")
        self._is_else = cond_blob is None
        if _already_ran is None:
            self._else_blob = ops.Not(cond_blob)
            self._already_ran = ops.Const(False)
        else:
            self._already_ran = _already_ran
            self._else_blob = _already_ran if cond_blob is None else ops.Or([_already_ran, ops.Not(cond_blob)])

    def __enter__(self) -> _RunIf:
        _RunOnce.__enter__(self)
        ops.stop_if(self._else_blob)
        ops.Const(True, blob_out=self._already_ran)
        return self

    def Elif(self, cond: Any, name: str | None = None) -> _RunIf:
        if self._is_else:
            raise NetDefinitionError("Elif is not allowed after Else")
        return _add(_RunIf(cond, name=name or self.name, _already_ran=self._already_ran))

    def Else(self, name: str | None = None) -> _RunIf:
        if self._is_else:
            raise NetDefinitionError("Else is not allowed after Else")
        return _add(_RunIf(name=name or self.name, _already_ran=self._already_ran))


class _RunIfNet(NetBuilder):
    def __init__(self, cond_blob: Any, name: str | None = None) -> None:
        NetBuilder.__init__(self, name=name, _use_control_ops=True)
        if cond_blob is None:
            raise NetDefinitionError("ops.IfNet needs a condition blob")
        self._cond_blob = cond_blob
        self._then_net: Net | None = None
        self._else_net: Net | None = None

    def __exit__(self, etype: object, *args: object) -> None:
        if etype is None:
            then_nets = self._children
            self._reset_children()
            self._then_net = NetBuilder.merge_nets(then_nets, self._lexical_scope) or Net("empty_then_net")
            if_net = Net(self.name + "/if_net")
            add_if_op(if_net, self._cond_blob, self._lexical_scope, self._then_net, self._else_net)
            self._current_net = if_net
            self._children = [if_net]
        NetBuilder.__exit__(self, etype, *args)


class _RunElseNet(NetBuilder):
    def __init__(self, name: str | None = None) -> None:
        NetBuilder.__init__(self, name=name, _use_control_ops=True)
        parent = NetBuilder.current(required=False)
        if parent is None or not parent._children or not isinstance(parent._children[-1], _RunIfNet):
            raise NetDefinitionError("ops.Else() must come right after an ops.IfNet(...) block")
        self._if_builder: _RunIfNet = parent._children[-1]

    def __exit__(self, etype: object, *args: object) -> None:
        if etype is None:
            else_nets = self._children
            self._reset_children()
            ifb = self._if_builder
            ifb._else_net = NetBuilder.merge_nets(else_nets, self._lexical_scope)
            if ifb._else_net is not None and ifb._then_net is not None:
                if_else_net = Net(self.name + "/if_else_net")
                add_if_op(if_else_net, ifb._cond_blob, self._lexical_scope, ifb._then_net, ifb._else_net)
                ifb._current_net = if_else_net
                ifb._children = [if_else_net]
        NetBuilder.__exit__(self, etype, *args)


class _RunWhileNet(NetBuilder):
    def __init__(self, name: str | None = None) -> None:
        NetBuilder.__init__(self, name=name, _use_control_ops=True)
        self._cond_builder: _RunWhileCondition | None = None

    def __exit__(self, etype: object, *args: object) -> None:
        if etype is None:
            if self._cond_builder is None:
                raise NetDefinitionError(f"WhileNet '{self.name}' needs an ops.Condition() block")
            body = self._children
            self._reset_children()
            body_net = NetBuilder.merge_nets(body, self._lexical_scope) or Net("empty_loop_body_net")
            while_net = Net(self.name + "/while_net")
            add_while_op(
                while_net, self._cond_builder._cond_blob, self._lexical_scope, body_net, self._cond_builder._cond_net
            )
            self._current_net = while_net
            self._children = [while_net]
        NetBuilder.__exit__(self, etype, *args)


class _RunWhileCondition(NetBuilder):
    def __init__(self, name: str | None = None) -> None:
        NetBuilder.__init__(self, name=name, _use_control_ops=True)
        parent = NetBuilder.current(required=False)
        if not isinstance(parent, _RunWhileNet):
            raise NetDefinitionError("ops.Condition() is used outside of ops.WhileNet()")
        if parent._cond_builder is not None:
            raise NetDefinitionError(f"WhileNet '{parent.name}' has two Condition blocks")
        if parent._children:
            raise NetDefinitionError(f"WhileNet '{parent.name}': the Condition block must come before the body")
        parent._cond_builder = self
        self._cond_blob: Any = None
        self._cond_net: Net | None = None

    def __exit__(self, etype: object, *args: object) -> None:
        if etype is None:
            body = self._children
            self._reset_children()
            self._cond_net = NetBuilder.merge_nets(body, self._lexical_scope)
            if self._cond_net is None or not self._cond_net.Proto().op:
                raise NetDefinitionError(f"Condition '{self.name}' holds no op")
            last = self._cond_net.Proto().op[-1]
            if len(last.output) != 1:
                raise NetDefinitionError(
                    f"Condition '{self.name}': its last op ({last.type}) must write one scalar bool, "
                    f"it writes {list(last.output)}"
                )
            self._cond_blob = BlobReference(last.output[0])
            self._current_net = self._cond_net
            self._children = [self._cond_net]
        NetBuilder.__exit__(self, etype, *args)
