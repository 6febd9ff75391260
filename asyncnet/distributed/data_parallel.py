"""Data-parallel training nets: each rank runs forward and backward on its shard of the batch,
gradients are summed with ``Allreduce`` and every rank applies the same update.

Works on plain NetDefs, without torch (torch is needed only to *run* the result):

1. :func:`add_rendezvous` appends to the init net a store handler, ``CreateCommonWorld``
   and ``CloneCommonWorld`` ops (several worlds, so all-reduces of different gradients
   run concurrently, as Caffe2's ``max_concurrent_distributed_ops``), then a
   ``Broadcast`` of every parameter from rank 0, so all ranks start identical.
2. :func:`add_gradient_allreduce` groups the gradients into buckets in the order the backward
   pass writes them (:mod:`asyncnet.distributed.buckets`, as DDP) and inserts one
   ``AllreduceCoalesced`` per bucket right after its last gradient is written (or, with
   ``bucket_bytes=0``, one ``Allreduce`` per gradient as Caffe2), and scales the loss gradient
   seed by ``1 / world size`` (Caffe2's ``loss_scale``), so the summed gradient is the gradient
   of the mean loss over the global batch. With the async_scheduling executor the all-reduce of
   the late layers' bucket overlaps the backward pass of earlier layers.

Call these between :func:`asyncnet.training.gradients.add_gradient_ops` and the optimizer
(e.g. :func:`asyncnet.training.optimizers.add_sgd`), which then updates from the averaged gradients.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from asyncnet.distributed.buckets import DEFAULT_BUCKET_BYTES, DEFAULT_FIRST_BUCKET_BYTES, plan_buckets
from asyncnet.errors import ArgumentError
from asyncnet.proto import caffe2_pb2 as pb
from asyncnet.serde import make_argument

ENGINE = "GLOO"
STORE_BLOB = "dp_store_handler"
WORLD_PREFIX = "dp_comm_world"


@dataclass(frozen=True)
class Rendezvous:
    """Where and how the ranks meet.

    Attributes:
        rank / size: this process's rank and the number of ranks.
        path: FileStore path (directory); or ``host``/``port`` of a TCP store.
        prefix: key namespace in the store.
        timeout_ms: rendezvous and collective timeout.
        num_worlds: common worlds to cycle the gradient all-reduces through.
    """

    rank: int
    size: int
    path: str = ""
    host: str = ""
    port: int = 0
    prefix: str = ""
    timeout_ms: int = 30_000
    num_worlds: int = 4

    def __post_init__(self) -> None:
        if self.size < 1 or not 0 <= self.rank < self.size:
            raise ArgumentError(f"rendezvous: need 0 <= rank < size, got rank {self.rank}, size {self.size}")
        if bool(self.path) == bool(self.host):
            raise ArgumentError("rendezvous: give exactly one of a FileStore 'path' or a TCP 'host' (with 'port')")
        if self.num_worlds < 1:
            raise ArgumentError(f"rendezvous: num_worlds must be >= 1, got {self.num_worlds}")

    def store_op(self, output: str = STORE_BLOB) -> pb.OperatorDef:
        """The store handler op (FileStoreHandlerCreate or TCPStoreHandlerCreate)."""
        seconds = self.timeout_ms / 1000.0
        if self.path:
            op = pb.OperatorDef(type="FileStoreHandlerCreate", output=[output])
            args: dict[str, object] = {"path": self.path, "prefix": self.prefix, "timeout": seconds}
        else:
            op = pb.OperatorDef(type="TCPStoreHandlerCreate", output=[output])
            args = {"host": self.host, "port": self.port, "prefix": self.prefix, "timeout": seconds}
        for k, v in args.items():
            op.arg.append(make_argument(k, v))
        return op


def world_blobs(num_worlds: int, prefix: str = WORLD_PREFIX) -> list[str]:
    """Names of the common-world blobs add_rendezvous creates."""
    return [prefix] + [f"{prefix}_{k}" for k in range(1, num_worlds)]


def add_rendezvous(
    init_net: pb.NetDef,
    rdv: Rendezvous,
    params: Sequence[str],
    *,
    world_prefix: str = WORLD_PREFIX,
    broadcast: bool = True,
) -> list[str]:
    """Append rendezvous, common worlds and the parameter broadcast from rank 0 to ``init_net``.

    Returns the common-world blob names (the first is the world created by rendezvous).
    """
    store = rdv.store_op()
    init_net.op.append(store)
    worlds = world_blobs(rdv.num_worlds, world_prefix)
    cw = init_net.op.add(type="CreateCommonWorld", input=[store.output[0]], output=[worlds[0]], engine=ENGINE)
    cw.name = worlds[0]
    cw.arg.extend(
        [make_argument("size", rdv.size), make_argument("rank", rdv.rank), make_argument("timeout_ms", rdv.timeout_ms)]
    )
    for w in worlds[1:]:
        init_net.op.add(type="CloneCommonWorld", input=[worlds[0]], output=[w], engine=ENGINE, name=w)
    if broadcast:
        for p in params:
            op = init_net.op.add(type="Broadcast", input=[worlds[0], p], output=[p], engine=ENGINE)
            op.arg.append(make_argument("root", 0))
    init_net.external_output.extend(worlds)
    return worlds


def scale_loss_gradients(train_net: pb.NetDef, scale: float, loss_grads: Sequence[str] = ()) -> list[str]:
    """Set the value of the loss-gradient seeds (``ConstantFill -> <loss>_autogen_grad``) to ``scale``."""
    seeds = []
    for op in train_net.op:
        if op.type != "ConstantFill" or not op.output:
            continue
        out = op.output[0]
        if (loss_grads and out in loss_grads) or (not loss_grads and out.endswith("_autogen_grad")):
            kept = [a for a in op.arg if a.name != "value"]
            del op.arg[:]
            op.arg.extend(kept)
            op.arg.append(make_argument("value", float(scale)))
            seeds.append(out)
    if not seeds:
        raise ArgumentError(
            f"net '{train_net.name}': found no loss-gradient seed to scale "
            f"(looked for {list(loss_grads) or 'ConstantFill ops writing *_autogen_grad'})"
        )
    return seeds


def _last_writers(net: pb.NetDef) -> dict[str, int]:
    return {o: i for i, op in enumerate(net.op) for o in op.output}


def gradient_buckets(
    train_net: pb.NetDef,
    grads: Mapping[str, str] | Sequence[str],
    *,
    grad_bytes: Mapping[str, int] | None = None,
    bucket_bytes: int = DEFAULT_BUCKET_BYTES,
    first_bucket_bytes: int = DEFAULT_FIRST_BUCKET_BYTES,
) -> list[list[str]]:
    """The gradient buckets :func:`add_gradient_allreduce` would all-reduce, in the order they become ready."""
    names = list(grads.values()) if isinstance(grads, Mapping) else list(grads)
    last_writer = _last_writers(train_net)
    missing = [g for g in names if g not in last_writer]
    if missing:
        raise ArgumentError(
            f"net '{train_net.name}': gradients {missing} are written by no op; "
            "add the gradient ops (add_gradient_ops) before add_gradient_allreduce"
        )
    groups: dict[int, list[str]] = {}
    for g in sorted(dict.fromkeys(names), key=lambda g: last_writer[g]):
        groups.setdefault(last_writer[g], []).append(g)
    return plan_buckets(
        list(groups.values()), grad_bytes or {}, bucket_bytes=bucket_bytes, first_bucket_bytes=first_bucket_bytes
    )


def add_gradient_allreduce(
    train_net: pb.NetDef,
    grads: Mapping[str, str] | Sequence[str],
    worlds: Sequence[str],
    *,
    size: int,
    scale_loss: bool = True,
    grad_bytes: Mapping[str, int] | None = None,
    bucket_bytes: int = DEFAULT_BUCKET_BYTES,
    first_bucket_bytes: int = DEFAULT_FIRST_BUCKET_BYTES,
) -> list[pb.OperatorDef]:
    """Insert the gradient all-reduces: one per bucket, right after its last gradient is written.

    Args:
        train_net: the net with the backward pass (changed in place).
        grads: the gradient blobs (or parameter -> gradient).
        worlds: common-world blobs; buckets use them round-robin in the order they become
            ready, and the all-reduces sharing a world are chained with ``control_input`` so
            every rank issues them in the same order.
        size: the number of ranks (the loss-gradient seed is scaled by ``1 / size``).
        scale_loss: scale the loss-gradient seed (off when the forward pass already did).
        grad_bytes: bytes of each gradient (:func:`asyncnet.distributed.buckets.gradient_bytes`);
            a gradient without a size closes its bucket.
        bucket_bytes / first_bucket_bytes: bucket caps (see :mod:`asyncnet.distributed.buckets`);
            ``bucket_bytes=0``: one ``Allreduce`` per gradient, as Caffe2's data_parallel_model.

    Returns:
        The inserted ops: ``AllreduceCoalesced`` for a bucket of several gradients, ``Allreduce``
        for a single one.
    """
    if not worlds:
        raise ArgumentError("add_gradient_allreduce: needs at least one common-world blob")
    buckets = gradient_buckets(
        train_net, grads, grad_bytes=grad_bytes, bucket_bytes=bucket_bytes, first_bucket_bytes=first_bucket_bytes
    )
    if scale_loss and size > 1:
        scale_loss_gradients(train_net, 1.0 / size)
    last_writer = _last_writers(train_net)
    after: dict[int, list[pb.OperatorDef]] = {}
    prev_on_world: dict[str, str] = {}
    inserted = []
    for k, bucket in enumerate(buckets):
        w = worlds[k % len(worlds)]
        if len(bucket) == 1:
            g = bucket[0]
            op = pb.OperatorDef(type="Allreduce", input=[w, g], output=[g], engine=ENGINE, name=f"allreduce_{g}")
        else:
            op = pb.OperatorDef(
                type="AllreduceCoalesced", input=[w, *bucket], output=bucket, engine=ENGINE, name=f"allreduce_bucket{k}"
            )
        if w in prev_on_world:
            op.control_input.append(prev_on_world[w])
        prev_on_world[w] = bucket[0]
        after.setdefault(max(last_writer[g] for g in bucket), []).append(op)
        inserted.append(op)
    ops = list(train_net.op)
    del train_net.op[:]
    for i, op in enumerate(ops):
        train_net.op.append(op)
        train_net.op.extend(after.get(i, []))
    for w in worlds:
        if w not in train_net.external_input:
            train_net.external_input.append(w)
    return inserted
