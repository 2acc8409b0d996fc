"""An in-process fake Weaviate for tests: REST and gRPC on free 127.0.0.1 ports, spoken to by the real client.

It models what the backend relies on and the rules of the real server (weaviate/weaviate v1.38; the plugin's
README names the source files): tenants and their activity status, offloaded tenants that onload asynchronously,
"tenant not found", "tenant not active", multi-tenancy without a tenant, property names unique ignoring case,
unknown properties, per-object batch failures, `field` tokenization trimming white space, QUERY_MAXIMUM_RESULTS,
BM25 over Unicode words without English stop words in the query, and `Not`/`ContainsNone` only from 1.33.
Faults can be injected per REST route or gRPC method, and other replicas' writes slipped in before a call.
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
from bigrag_weaviate.testing.state import Fault, Hook, State, StoredObject, TenantShard

__all__ = ["FakeWeaviate", "RecordedSleeps", "StoredObject", "TenantShard"]


class RecordedSleeps(list[float]):
    """Stands in for asyncio.sleep in a backend under test: remembers each requested delay, returns at once.

    Its `now` is a fake clock that only these sleeps advance; give it to `FakeWeaviate(clock=...)` so the
    server's timed behaviour (onloading a tenant) passes exactly as fast as the backend waits.
    """

    async def __call__(self, seconds: float) -> None:
        self.append(seconds)

    def now(self) -> float:
        return sum(self)


def _health(request: bytes, context: grpc.ServicerContext) -> health_weaviate_pb2.WeaviateHealthCheckResponse:
    return health_weaviate_pb2.WeaviateHealthCheckResponse(status=health_weaviate_pb2.WeaviateHealthCheckResponse.SERVING)


class FakeWeaviate:
    """Start with `with FakeWeaviate() as fake:`; connect the client to `fake.http_port` and `fake.grpc_port`."""

    def __init__(
        self, version: str = "1.33.0", *, clock: Callable[[], float] | None = None, onload_seconds: float = 0.0
    ) -> None:
        """`onload_seconds`: how long an OFFLOADED tenant stays ONLOADING after activation, on `clock`."""
        self.state = State(version, onload_seconds=onload_seconds, **({"clock": clock} if clock else {}))
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

    def before(self, key: str, action: Callable[[], None], *, skip: int = 0) -> None:
        """Run `action` (under the fake's lock) just before answering the call after `skip` matching calls."""
        self.state.hooks.append(Hook(key, action, skip))

    def add_property(self, class_name: str, prop: dict[str, Any]) -> None:
        """Add a property as another client (another replica) would: `{"name": ..., "dataType": [...]}`."""
        with self.state.lock:
            self.state.add_property(class_name, prop)

    def property_names(self, class_name: str) -> list[str]:
        with self.state.lock:
            return list(self.state.get_class(class_name).properties)

    def reject_objects(self, rule: Callable[[str, dict[str, Any]], str | None] | None) -> None:
        """Make BatchObjects refuse the objects for which `rule(uuid, properties)` returns an error text."""
        self.state.reject = rule

    def calls(self, key: str) -> int:
        """How many REST or gRPC calls whose name starts with `key` the fake received."""
        return sum(n for call, n in self.state.calls.items() if call.startswith(key))

    def tenants(self, class_name: str) -> dict[str, TenantShard]:
        with self.state.lock:
            return dict(self.state.get_class(class_name).tenants)

    def tenant_status(self, class_name: str, tenant: str) -> str:
        """The tenant's status as the server would report it now."""
        with self.state.lock:
            return self.state.status(self.state.get_class(class_name).tenants[tenant])

    def set_tenant_status(self, class_name: str, tenant: str, status: str) -> None:
        """Set a tenant's status (ACTIVE, INACTIVE, OFFLOADED, OFFLOADING...) behind the client's back."""
        with self.state.lock:
            self.state.get_class(class_name).tenants[tenant].status = status

    def class_names(self) -> list[str]:
        with self.state.lock:
            return list(self.state.classes)
