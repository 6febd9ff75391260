"""A small client of the prediction server (``asyncnet serve``)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from asyncnet.errors import RemoteError
from asyncnet.serving.server import DEFAULT_MAX_MESSAGE_BYTES, SERVICE, import_grpc
from asyncnet.serving.wire import decode, encode


class Client:
    """Calls a prediction server.

    Args:
        target: ``HOST:PORT``.
        timeout: default deadline of each call in seconds (None: no deadline).
        max_message_bytes: largest request / response this client sends or accepts.

    Raises (from every call):
        RemoteError: the server answered with an error status (``code`` names it).

    Example:
        >>> with Client("127.0.0.1:50051") as c:
        ...     prob = c.predict({"data": x})["prob"]
    """

    def __init__(
        self, target: str, *, timeout: float | None = None, max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    ) -> None:
        grpc = import_grpc()
        from asyncnet.proto import serving_pb2 as spb

        self.target = target
        self.timeout = timeout
        self._spb = spb
        self._channel = grpc.insecure_channel(
            target,
            options=[
                ("grpc.max_receive_message_length", max_message_bytes),
                ("grpc.max_send_message_length", max_message_bytes),
                # A connection of its own: channels to one target otherwise share one, and a
                # multi-process server spreads connections, not requests, over its workers.
                ("grpc.use_local_subchannel_pool", 1),
            ],
        )
        self._predict_raw = self._channel.unary_unary(
            f"/{SERVICE}/Predict", request_serializer=None, response_deserializer=spb.PredictResponse.FromString
        )
        self._list = self._channel.unary_unary(
            f"/{SERVICE}/ListModels",
            request_serializer=spb.ListModelsRequest.SerializeToString,
            response_deserializer=spb.ListModelsResponse.FromString,
        )
        self._info = self._channel.unary_unary(
            f"/{SERVICE}/ModelInfo",
            request_serializer=spb.ModelInfoRequest.SerializeToString,
            response_deserializer=spb.ModelInfoResponse.FromString,
        )

    def _call(self, fn: Callable[..., Any], request: Any, timeout: float | None) -> Any:
        grpc = import_grpc()
        try:
            return fn(request, timeout=timeout if timeout is not None else self.timeout)
        except grpc.RpcError as e:
            code = e.code().name if e.code() is not None else "UNKNOWN"
            details = e.details() or ""
            raise RemoteError(f"server {self.target}: {code}: {details}", code=code, details=details) from None

    def predict(
        self,
        inputs: Mapping[str, Any],
        *,
        model: str = "",
        outputs: Sequence[str] | None = None,
        timeout: float | None = None,
    ) -> dict[str, np.ndarray]:
        """Run ``model`` (optional when the server holds one) on named inputs; returns named outputs."""
        request = self._spb.PredictRequest(model=model, inputs=encode(inputs), output_names=list(outputs or []))
        return self.predict_bytes(request.SerializeToString(), timeout=timeout)

    def predict_bytes(self, payload: bytes, *, timeout: float | None = None) -> dict[str, np.ndarray]:
        """Send an already serialized PredictRequest (tests and load generators reuse one)."""
        response = self._call(self._predict_raw, payload, timeout)
        return decode(response.outputs, f"response from {self.target}")

    def list_models(self, *, timeout: float | None = None) -> list[str]:
        return list(self._call(self._list, self._spb.ListModelsRequest(), timeout).models)

    def model_info(self, model: str = "", *, timeout: float | None = None) -> Any:
        """The ModelInfoResponse of ``model`` (inputs and outputs with dtypes and shapes)."""
        return self._call(self._info, self._spb.ModelInfoRequest(model=model), timeout)

    def health(self, service: str = "", *, timeout: float | None = None) -> str:
        """The grpc health status name of ``service`` ("" is the whole server): SERVING, NOT_SERVING..."""
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        stub = health_pb2_grpc.HealthStub(self._channel)
        response = self._call(stub.Check, health_pb2.HealthCheckRequest(service=service), timeout)
        return str(health_pb2.HealthCheckResponse.ServingStatus.Name(response.status))

    def wait_ready(self, timeout: float = 10.0) -> None:
        """Block until the channel connects (RemoteError UNAVAILABLE after ``timeout``)."""
        grpc = import_grpc()
        try:
            grpc.channel_ready_future(self._channel).result(timeout=timeout)
        except grpc.FutureTimeoutError:
            raise RemoteError(
                f"server {self.target}: UNAVAILABLE: not reachable within {timeout:g} s", code="UNAVAILABLE"
            ) from None

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
