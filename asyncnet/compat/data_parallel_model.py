"""Caffe2's ``data_parallel_model`` for CPU devices and multiple processes.

``Parallelize(model, input_builder_fun, forward_pass_builder_fun, optimizer_builder_fun=...,
rendezvous={...}, cpu_device=True)`` builds, as Caffe2's CPU path did: the input and forward
pass under ``NameScope("cpu_<d>")`` with ``loss_scale = 1 / (devices * num_shards)`` passed to
the forward builder (which scales its loss), the backward pass, the gradient all-reduces over
``max_concurrent_distributed_ops`` common worlds created from the ``rendezvous['kv_handler']``
store handler blob, the optimizer or parameter update, and a
``Broadcast`` of every parameter from shard 0 at the end of ``param_init_net``.

Gradient all-reduces are bucketed (asyncnet extension, as PyTorch's DDP; see
:mod:`asyncnet.distributed.buckets`): ``allreduce_bucket_bytes`` / ``allreduce_first_bucket_bytes``
cap the buckets, each all-reduced by one ``AllreduceCoalesced``; ``allreduce_bucket_bytes=0``
gives Caffe2's layout, one ``Allreduce`` per gradient. The result is the same either way.

One CPU device per process is supported (the usual multi-process layout; Caffe2's several
local devices per process are refused clearly). The idiomatic API is
:mod:`asyncnet.distributed.data_parallel`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from asyncnet.compat import core
from asyncnet.compat.model_helper import ModelHelper
from asyncnet.compat.scope import DeviceScope, NameScope
from asyncnet.distributed.buckets import DEFAULT_BUCKET_BYTES, DEFAULT_FIRST_BUCKET_BYTES, gradient_bytes
from asyncnet.distributed.data_parallel import add_gradient_allreduce, gradient_buckets
from asyncnet.errors import ArgumentError, UnsupportedError
from asyncnet.serde import make_argument

log = logging.getLogger(__name__)

_NET_TYPES = {"dag": "async_scheduling", "async_dag": "async_scheduling", "simple": "simple"}


def _check_rendezvous(rendezvous: Mapping[str, Any] | None) -> tuple[int, int, str, Any]:
    if rendezvous is None:
        return 1, 0, "GLOO", None
    missing = [k for k in ("kv_handler", "shard_id", "num_shards") if k not in rendezvous]
    if missing:
        raise ArgumentError(f"Parallelize: rendezvous needs {missing}; got keys {sorted(rendezvous)}")
    num_shards, shard_id = int(rendezvous["num_shards"]), int(rendezvous["shard_id"])
    if num_shards < 1 or not 0 <= shard_id < num_shards:
        raise ArgumentError(f"Parallelize: need 0 <= shard_id < num_shards, got {shard_id} of {num_shards}")
    engine = str(rendezvous.get("engine", "GLOO"))
    if engine != "GLOO":
        raise UnsupportedError(f"Parallelize: rendezvous engine '{engine}' is not supported; only GLOO")
    return num_shards, shard_id, engine, rendezvous["kv_handler"]


def Parallelize(
    model_helper_obj: ModelHelper,
    input_builder_fun: Callable[[ModelHelper], Any],
    forward_pass_builder_fun: Callable[[ModelHelper, float], Sequence[Any]],
    param_update_builder_fun: Callable[[ModelHelper], Any] | None = None,
    optimizer_builder_fun: Callable[[ModelHelper], Any] | None = None,
    post_sync_builder_fun: Callable[[ModelHelper], Any] | None = None,
    pre_grad_net_transformer_fun: Callable[[ModelHelper], Any] | None = None,
    net_transformer_fun: Callable[..., Any] | None = None,
    devices: Sequence[int] | None = None,
    rendezvous: Mapping[str, Any] | None = None,
    net_type: str = "dag",
    broadcast_computed_params: bool = True,
    optimize_gradient_memory: bool = False,
    dynamic_memory_management: bool = False,
    blobs_to_keep: Any = None,
    use_nccl: bool = False,
    max_concurrent_distributed_ops: int = 16,
    cpu_device: bool = False,
    num_threads_per_device: int = 4,
    shared_model: bool = False,
    combine_spatial_bn: bool = False,
    barrier_net_timeout_sec: int = 300,
    allreduce_bucket_bytes: int = DEFAULT_BUCKET_BYTES,
    allreduce_first_bucket_bytes: int = DEFAULT_FIRST_BUCKET_BYTES,
) -> None:
    """Make ``model_helper_obj`` train data-parallel (Caffe2's CPU path; see the module doc).

    Exactly one of ``param_update_builder_fun`` / ``optimizer_builder_fun`` is required.
    GPU-only options (``use_nccl``, memory optimizations, ``combine_spatial_bn``) must keep
    their defaults. ``allreduce_bucket_bytes`` / ``allreduce_first_bucket_bytes`` are asyncnet's
    gradient bucket caps (0: one Allreduce per gradient, as Caffe2).
    """
    model = model_helper_obj
    if (param_update_builder_fun is None) == (optimizer_builder_fun is None):
        raise ArgumentError("Parallelize: give exactly one of param_update_builder_fun and optimizer_builder_fun")
    if use_nccl or optimize_gradient_memory or dynamic_memory_management or combine_spatial_bn or shared_model:
        raise UnsupportedError(
            "Parallelize: use_nccl, optimize_gradient_memory, dynamic_memory_management, combine_spatial_bn "
            "and shared_model are GPU/memory options asyncnet does not support"
        )
    if not cpu_device:
        log.info("Parallelize: no GPUs here; running on CPU as with cpu_device=True")
    devices = list(devices) if devices is not None else [0]
    if len(devices) != 1:
        raise UnsupportedError(
            f"Parallelize: one CPU device per process is supported, got devices {devices}; "
            "run one process per device with rendezvous num_shards instead"
        )
    if max_concurrent_distributed_ops < 1:
        raise ArgumentError(
            f"Parallelize: max_concurrent_distributed_ops must be >= 1, got {max_concurrent_distributed_ops}"
        )
    num_shards, shard_id, engine, kv_handler = _check_rendezvous(rendezvous)
    device = devices[0]
    scope = f"cpu_{device}"
    model._device_type = 0  # type: ignore[attr-defined]
    model._device_prefix = "cpu"  # type: ignore[attr-defined]
    model._devices = devices  # type: ignore[attr-defined]
    model._shards = num_shards  # type: ignore[attr-defined]
    model._rendezvous = rendezvous  # type: ignore[attr-defined]
    loss_scale = 1.0 / (len(devices) * num_shards)
    option = core.DeviceOption(0, device)

    with DeviceScope(option), NameScope(scope):
        input_builder_fun(model)
        losses = forward_pass_builder_fun(model, loss_scale)
    if not losses:
        raise ArgumentError("Parallelize: forward_pass_builder_fun returned no losses")
    if pre_grad_net_transformer_fun is not None:
        pre_grad_net_transformer_fun(model)
    model.AddGradientOperators(list(losses))
    grads = {str(p): str(g) for p, g in model.param_to_grad.items()}

    worlds: list[str] = []
    if num_shards > 1:
        caps: dict[str, Any] = {
            "grad_bytes": gradient_bytes(model.param_init_net.Proto(), grads),
            "bucket_bytes": allreduce_bucket_bytes,
            "first_bucket_bytes": allreduce_first_bucket_bytes,
        }
        n_collectives = len(gradient_buckets(model.net.Proto(), grads, **caps))
        worlds = _add_common_worlds(
            model, str(kv_handler), num_shards, shard_id, engine, max_concurrent_distributed_ops, n_collectives
        )
        # The forward builder already scaled its loss by loss_scale (Caffe2's contract).
        add_gradient_allreduce(model.net.Proto(), grads, worlds, size=num_shards, scale_loss=False, **caps)
        model.net._RecreateLookupTables()

    with DeviceScope(option), NameScope(scope):
        update = param_update_builder_fun or optimizer_builder_fun
        if update is not None:  # always: exactly one was given (checked above)
            update(model)
        if post_sync_builder_fun is not None:
            post_sync_builder_fun(model)

    if num_shards > 1:
        params = [str(p) for p in model.GetParams()]
        if broadcast_computed_params:
            params += [str(p) for p in model.GetComputedParams()]
        init = model.param_init_net.Proto()
        for p in params:
            op = init.op.add(type="Broadcast", input=[worlds[0], p], output=[p], engine=engine, name=f"broadcast_{p}")
            op.arg.append(make_argument("root", 0))
        model.param_init_net._RecreateLookupTables()
    if net_transformer_fun is not None:
        net_transformer_fun(model)
    proto = model.net.Proto()
    proto.type = _NET_TYPES.get(net_type, net_type)
    proto.num_workers = num_threads_per_device * len(devices)


def _add_common_worlds(
    model: ModelHelper, kv_handler: str, size: int, rank: int, engine: str, max_ops: int, n_collectives: int
) -> list[str]:
    """CreateCommonWorld (+ clones) in param_init_net, as Caffe2's ``_CreateOrCloneCommonWorld``."""
    init = model.param_init_net.Proto()
    base = f"{model.net.Name()}_allreduce_cw"
    worlds = [base] + [f"{base}_{k}" for k in range(1, max(1, min(max_ops, n_collectives)))]
    op = init.op.add(type="CreateCommonWorld", input=[kv_handler], output=[base], engine=engine, name=base)
    op.arg.extend([make_argument("size", size), make_argument("rank", rank)])
    for w in worlds[1:]:
        init.op.add(type="CloneCommonWorld", input=[base], output=[w], engine=engine, name=w)
    if kv_handler not in init.external_input:
        init.external_input.append(kv_handler)
    model.param_init_net._RecreateLookupTables()
    return worlds


def GetDevices(model: ModelHelper) -> list[int]:
    """The devices Parallelize placed the model on (Caffe2's helper)."""
    devices = getattr(model, "_devices", None)
    if devices is None:
        raise ArgumentError(f"model '{model.name}' was not parallelized (call Parallelize first)")
    return list(devices)
