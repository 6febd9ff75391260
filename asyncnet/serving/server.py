"""The gRPC prediction server: translates requests to Predictor calls and errors to statuses.

Bounds: at most ``concurrency`` requests compute at once (batched models: their batches), at
most ``queue_limit`` more wait; beyond that a request is answered RESOURCE_EXHAUSTED at once, so
memory never grows with the load. A request whose deadline passes while it waits is answered
DEADLINE_EXCEEDED and never computed. ``stop`` refuses new requests and lets running ones finish
within the grace period.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, cast

from asyncnet.errors import (
    AsyncNetError,
    DeadlineError,
    InputError,
    OverloadedError,
    ParseError,
    ServingError,
)
from asyncnet.serving.predictor import Predictor
from asyncnet.serving.wire import decode, encode

log = logging.getLogger(__name__)

SERVICE = "asyncnet.serving.PredictionService"
DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024


def import_grpc() -> Any:
    """The grpc module, or one clear error naming the extra to install."""
    try:
        import grpc
    except ImportError as e:
        raise ServingError("the gRPC server and client need grpcio: pip install 'asyncnet[serve]'") from e
    return grpc


@dataclass
class ServerOptions:
    """How the server listens and how much work it takes on.

    Attributes:
        host: address to bind (default loopback only).
        port: TCP port; 0 picks a free one (see ``PredictionServer.port``).
        concurrency: requests computed at once (default: the usable CPUs).
        queue_limit: requests waiting beyond ``concurrency``; more are refused (RESOURCE_EXHAUSTED).
        max_message_bytes: largest request and response accepted (bigger: RESOURCE_EXHAUSTED).
        grace_s: on stop, how long running requests may take to finish.
        blas_threads: BLAS threads per request while the server runs (process-wide, through
            threadpoolctl); default 1. Multi-threaded GEMMs oversubscribe the cores as soon as
            anything else runs — concurrent requests, or other processes (measured on a shared
            2-core machine, SqueezeNet: 17.5 req/s with 1 thread, 3.5 req/s with 2, one client).
            Requests run concurrently instead. 0 leaves BLAS alone.
        reuse_port: share the port with other server processes (SO_REUSEPORT; the kernel spreads
            connections over them). Off: binding a port in use fails.
    """

    host: str = "127.0.0.1"
    port: int = 0
    concurrency: int | None = None
    queue_limit: int = 64
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    grace_s: float = 30.0
    blas_threads: int | None = None
    reuse_port: bool = False


class PredictionServer:
    """Serves Predictors over gRPC (``asyncnet.serving.PredictionService`` + grpc health).

    Args:
        models: name -> Predictor (or a sequence, keyed by each Predictor's name).
        options: listening address and limits.
        own_models: close the Predictors when the server stops.
    """

    def __init__(
        self,
        models: Mapping[str, Predictor] | Sequence[Predictor],
        options: ServerOptions | None = None,
        *,
        own_models: bool = False,
    ) -> None:
        from asyncnet.executors.pools import default_threads

        self.models: dict[str, Predictor] = dict(models) if isinstance(models, Mapping) else {p.name: p for p in models}
        if not self.models:
            raise ServingError("a prediction server needs at least one model")
        self.options = options or ServerOptions()
        self.concurrency = self.options.concurrency or default_threads()
        if self.concurrency < 1 or self.options.queue_limit < 0:
            raise ServingError(
                f"concurrency must be >= 1 and queue_limit >= 0, got {self.concurrency} and {self.options.queue_limit}"
            )
        self._own = own_models
        self._slots = threading.BoundedSemaphore(self.concurrency)
        self._admit_lock = threading.Lock()
        self._admitted = 0
        self._limit = self.concurrency + self.options.queue_limit
        self.computed = 0  # requests that ran their model (for tests and stats)
        self._server: Any = None
        self._pool: ThreadPoolExecutor | None = None
        self._health: Any = None
        self.port = 0
        self._stopped = threading.Event()
        self._blas_limit: Any = None

    # -- lifetime --------------------------------------------------------------------------

    def start(self) -> int:
        """Bind and start serving; returns the port."""
        grpc = import_grpc()
        from grpc_health.v1 import health, health_pb2, health_pb2_grpc

        from asyncnet.proto import serving_pb2 as spb

        # One thread per admitted request (it may wait in the queue) plus a few for info/health.
        threads = self._limit + 4
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="asyncnet-serve")
        size = self.options.max_message_bytes
        self._server = grpc.server(
            self._pool,
            options=[
                ("grpc.max_receive_message_length", size),
                ("grpc.max_send_message_length", size),
                ("grpc.so_reuseport", int(self.options.reuse_port)),
            ],
            maximum_concurrent_rpcs=threads,
        )
        handlers = {
            # Raw bytes in: a request that does not parse gets INVALID_ARGUMENT, not INTERNAL.
            "Predict": grpc.unary_unary_rpc_method_handler(
                self._predict, response_serializer=spb.PredictResponse.SerializeToString
            ),
            "ListModels": grpc.unary_unary_rpc_method_handler(
                self._list_models,
                request_deserializer=spb.ListModelsRequest.FromString,
                response_serializer=spb.ListModelsResponse.SerializeToString,
            ),
            "ModelInfo": grpc.unary_unary_rpc_method_handler(
                self._model_info,
                request_deserializer=spb.ModelInfoRequest.FromString,
                response_serializer=spb.ModelInfoResponse.SerializeToString,
            ),
        }
        self._server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
        self._health = health.HealthServicer(experimental_non_blocking=False)
        health_pb2_grpc.add_HealthServicer_to_server(self._health, self._server)
        address = f"{self.options.host}:{self.options.port}"
        try:
            self.port = self._server.add_insecure_port(address)
        except RuntimeError as e:
            self._pool.shutdown(wait=False)
            raise ServingError(f"cannot listen on {address}: {e}") from e
        if self.port == 0:
            self._pool.shutdown(wait=False)
            raise ServingError(f"cannot listen on {address} (address in use or not available)")
        self._limit_blas()
        self._server.start()
        for name in ["", SERVICE, *self.models]:
            self._health.set(name, health_pb2.HealthCheckResponse.SERVING)
        log.info("serving %s on %s:%d", ", ".join(self.models), self.options.host, self.port)
        return int(self.port)

    def stop(self, grace: float | None = None) -> None:
        """Refuse new requests, let running ones finish (up to ``grace`` s), release threads."""
        if self._server is None or self._stopped.is_set():
            return
        self._stopped.set()
        if self._health is not None:
            self._health.enter_graceful_shutdown()
        self._server.stop(self.options.grace_s if grace is None else grace).wait()
        if self._pool is not None:
            self._pool.shutdown(wait=True)
        if self._blas_limit is not None:
            self._blas_limit.restore_original_limits()
            self._blas_limit = None
        if self._own:
            for p in self.models.values():
                p.close()

    def _limit_blas(self) -> None:
        n = 1 if self.options.blas_threads is None else self.options.blas_threads
        if n <= 0:
            return
        try:
            from threadpoolctl import threadpool_limits
        except ImportError:
            log.warning("threadpoolctl is not installed: BLAS threads are not limited (pip install 'asyncnet[serve]')")
            return
        self._blas_limit = threadpool_limits(limits=n, user_api="blas")

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the server has stopped (or ``timeout``); True when stopped."""
        return self._stopped.wait(timeout)

    def __enter__(self) -> PredictionServer:
        if self._server is None:
            self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- handlers --------------------------------------------------------------------------

    def _model(self, name: str) -> Predictor:
        if not name:
            if len(self.models) == 1:
                return next(iter(self.models.values()))
            raise InputError(f"this server holds {len(self.models)} models; name one: {', '.join(sorted(self.models))}")
        try:
            return self.models[name]
        except KeyError:
            raise LookupError(f"no model '{name}' on this server; models: {', '.join(sorted(self.models))}") from None

    def _abort(self, context: Any, exc: BaseException) -> Any:
        grpc = import_grpc()
        code = grpc.StatusCode.INTERNAL
        if isinstance(exc, InputError | ParseError):
            code = grpc.StatusCode.INVALID_ARGUMENT
        elif isinstance(exc, LookupError):
            code = grpc.StatusCode.NOT_FOUND
        elif isinstance(exc, DeadlineError):
            code = grpc.StatusCode.DEADLINE_EXCEEDED
        elif isinstance(exc, OverloadedError):
            code = grpc.StatusCode.RESOURCE_EXHAUSTED
        elif isinstance(exc, ServingError) and self._stopped.is_set():
            code = grpc.StatusCode.UNAVAILABLE
        if code == grpc.StatusCode.INTERNAL:
            log.error("request failed: %s", exc, exc_info=not isinstance(exc, AsyncNetError))
        context.abort(code, str(exc))

    def _predict(self, raw: bytes, context: Any) -> Any:
        from asyncnet.proto import serving_pb2 as spb

        with self._admit_lock:
            if self._admitted >= self._limit:
                busy = self._admitted
                over = True
            else:
                self._admitted += 1
                over = False
        if over:
            return self._abort(
                context,
                OverloadedError(
                    f"server busy: {busy} request(s) running or queued (concurrency {self.concurrency}, "
                    f"queue limit {self.options.queue_limit}); retry later"
                ),
            )
        try:
            return self._predict_admitted(raw, context, spb)
        finally:
            with self._admit_lock:
                self._admitted -= 1

    def _predict_admitted(self, raw: bytes, context: Any, spb: Any) -> Any:
        try:
            request = spb.PredictRequest.FromString(raw)
        except Exception as e:  # noqa: BLE001 - protobuf's DecodeError has no stable public base
            return self._abort(context, InputError(f"request is not a valid {SERVICE} PredictRequest: {e}"))
        try:
            model = self._model(request.model)
            inputs = decode(request.inputs, f"request for model '{model.name}'")
            arrays = model.check_inputs(inputs)
            outputs = list(request.output_names) or None
            remaining = context.time_remaining()
            deadline = None if remaining is None else time.monotonic() + remaining
            gated = not model.batching_enabled
            if gated and not self._slots.acquire(timeout=remaining if remaining is not None else -1):
                raise DeadlineError(f"model '{model.name}': deadline passed while queued; not computed")
            try:
                if not context.is_active():
                    raise DeadlineError(f"model '{model.name}': the client went away while queued; not computed")
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise DeadlineError(f"model '{model.name}': deadline passed while queued; not computed")
                result = cast(dict[str, Any], model.predict(arrays, outputs=outputs, timeout=left))
                with self._admit_lock:
                    self.computed += 1
            finally:
                if gated:
                    self._slots.release()
            return spb.PredictResponse(model=model.name, outputs=encode(result))
        except Exception as e:  # noqa: BLE001 - every failure becomes a status, the server keeps serving
            return self._abort(context, e)

    def _list_models(self, request: Any, context: Any) -> Any:
        from asyncnet.proto import serving_pb2 as spb

        return spb.ListModelsResponse(models=sorted(self.models))

    def _model_info(self, request: Any, context: Any) -> Any:
        from asyncnet.proto import serving_pb2 as spb

        try:
            model = self._model(request.model)
        except Exception as e:  # noqa: BLE001
            return self._abort(context, e)
        info = spb.ModelInfoResponse(name=model.name, batching=model.batching_enabled)
        if model.batching is not None and model.batching_enabled:
            info.max_batch = model.batching.max_batch
            info.max_delay_ms = model.batching.max_delay_ms
        for n in model.input_names:
            data_type, dims, has_shape = model.input_specs[n].to_proto_fields()
            info.inputs.add(name=n, data_type=data_type, dims=dims, has_shape=has_shape)
        for n in model.output_names:
            data_type, dims, has_shape = model.output_specs[n].to_proto_fields()
            info.outputs.add(name=n, data_type=data_type, dims=dims, has_shape=has_shape)
        return info
