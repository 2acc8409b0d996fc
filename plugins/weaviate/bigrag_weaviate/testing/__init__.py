"""An in-process fake Weaviate for tests: REST and gRPC on free 127.0.0.1 ports, spoken to by the real client.

It models what the backend relies on and the errors Weaviate documents: tenants and their activity status,
"tenant not found", "tenant not active", multi-tenancy without a tenant, unknown properties, per-object batch
failures, and `Not`/`ContainsNone` only from version 1.33. Faults can be injected per REST route or gRPC method.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent import futures
from typing import Any, Self

import grpc
from weaviate.proto.v1 import health_weaviate_pb2, weaviate_pb2_grpc

from bigrag_weaviate.settings import WeaviateSettings
from bigrag_weaviate.testing.grpc_service import FakeWeaviateService
from bigrag_weaviate.testing.rest import FakeRestServer
from bigrag_weaviate.testing.state import Fault, State, StoredObject, TenantShard

__all__ = ["FakeWeaviate", "RecordedSleeps", "StoredObject", "TenantShard"]


class RecordedSleeps(list[float]):
    """Stands in for asyncio.sleep in a backend under test: remembers each requested delay, returns at once."""

    async def __call__(self, seconds: float) -> None:
        self.append(seconds)


def _health(request: bytes, context: grpc.ServicerContext) -> health_weaviate_pb2.WeaviateHealthCheckResponse:
    return health_weaviate_pb2.WeaviateHealthCheckResponse(status=health_weaviate_pb2.WeaviateHealthCheckResponse.SERVING)


class FakeWeaviate:
    """Start with `with FakeWeaviate() as fake:`; connect the client to `fake.http_port` and `fake.grpc_port`."""

    def __init__(self, version: str = "1.33.0") -> None:
        self.state = State(version)
        self._rest = FakeRestServer(self.state)
        self._grpc = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        weaviate_pb2_grpc.add_WeaviateServicer_to_server(FakeWeaviateService(self.state), self._grpc)
        health = grpc.unary_unary_rpc_method_handler(
            _health,
            request_deserializer=health_weaviate_pb2.WeaviateHealthCheckRequest.FromString,
            response_serializer=health_weaviate_pb2.WeaviateHealthCheckResponse.SerializeToString,
        )
        self._grpc.add_generic_rpc_handlers([grpc.method_handlers_generic_handler("grpc.health.v1.Health", {"Check": health})])
        self.grpc_port = self._grpc.add_insecure_port("127.0.0.1:0")
        self.http_port = self._rest.server_address[1]
        self._thread = threading.Thread(target=self._rest.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def settings(self, **overrides: Any) -> WeaviateSettings:
        """Backend settings that point at this fake."""
        return WeaviateSettings(url=self.url, grpc_port=self.grpc_port, **overrides)

    def start(self) -> Self:
        self._grpc.start()
        self._thread.start()
        return self

    def stop(self) -> None:
        self._rest.shutdown()
        self._rest.server_close()
        self._grpc.stop(grace=None)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def fail(self, key: str, status: int, *, times: int = 1, message: str = "injected failure") -> None:
        """Fail the next `times` calls whose name starts with `key` ("PUT /v1/schema/X/tenants", "grpc BatchDelete").

        REST faults answer with the HTTP `status`; gRPC faults abort with the status code whose number is `status`
        (14 is UNAVAILABLE).
        """
        self.state.faults.append(Fault(key, status, times, message))

    def reject_objects(self, rule: Callable[[str, dict[str, Any]], str | None] | None) -> None:
        """Make BatchObjects refuse the objects for which `rule(uuid, properties)` returns an error text."""
        self.state.reject = rule

    def calls(self, key: str) -> int:
        """How many REST or gRPC calls whose name starts with `key` the fake received."""
        return sum(n for call, n in self.state.calls.items() if call.startswith(key))

    def tenants(self, class_name: str) -> dict[str, TenantShard]:
        with self.state.lock:
            return dict(self.state.get_class(class_name).tenants)

    def set_tenant_status(self, class_name: str, tenant: str, status: str) -> None:
        """Flip a tenant to ACTIVE, INACTIVE or OFFLOADED behind the client's back, as an operator would."""
        with self.state.lock:
            self.state.get_class(class_name).tenants[tenant].status = status

    def class_names(self) -> list[str]:
        with self.state.lock:
            return list(self.state.classes)
