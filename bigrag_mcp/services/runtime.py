"""The running application: settings, store, plugins, backend and the provider cache that services share."""

from __future__ import annotations

from typing import Any

import pluggy

from bigrag_mcp import compute
from bigrag_mcp.default_plugins.local_embedder import local_model_available
from bigrag_mcp.errors import InvalidArgument
from bigrag_mcp.limits.engine import Limits
from bigrag_mcp.limits.fastpath import SqliteFastPath
from bigrag_mcp.loading import Bounds
from bigrag_mcp.plugins import Registry, build_registry, plugin_manager
from bigrag_mcp.policy import Policy, load_policy
from bigrag_mcp.services.index import IndexGate
from bigrag_mcp.services.ledger import Ledger
from bigrag_mcp.services.lookups import Lookups
from bigrag_mcp.services.prices import load_prices
from bigrag_mcp.services.slots import WriteSlots
from bigrag_mcp.services.snapshots import SnapshotStore
from bigrag_mcp.services.usage_spool import UsageSpool
from bigrag_mcp.settings import Settings
from bigrag_mcp.store.db import Database
from bigrag_mcp.types import ChatProvider, EmbeddingProvider, GraphIndexed, Reranker


class Runtime:
    def __init__(
        self, settings: Settings, db: Database, pm: pluggy.PluginManager, registry: Registry, policy: Policy | None = None
    ) -> None:
        self.settings = settings
        self.policy = policy or load_policy(settings.policy_file)
        self.db = db
        self.pm = pm
        self.registry = registry
        self.backend = registry.vector_backend(settings.vector_backend)()
        snapshots = SnapshotStore(settings.data_dir / "index-snapshots") if settings.index_snapshots else None
        if isinstance(self.backend, GraphIndexed):
            self.backend.configure_ann(settings.ann_min_rows, snapshots.folder if snapshots else None, settings.ann_ef)
        self.fast = SqliteFastPath.for_url(db.url)  # small statements on the loop's thread (SQLite files only)
        self.index = IndexGate(db, self.backend, snapshots, self.fast)
        self.lookups = Lookups(db, self.fast)
        self.limits = Limits(db, self.policy.limits, lambda: load_prices(settings.price_file), fast=self.fast)
        spool = UsageSpool.beside(self.fast.path) if self.fast is not None else None
        self.ledger = Ledger(list(settings.billing_exporters), self.limits, spool)
        self.writes = WriteSlots(settings.write_concurrency)
        self.loader_bounds = Bounds(settings.loader_timeout_s, settings.loader_memory_mb, settings.loader_unzipped_mb)
        self._embedders: dict[tuple[str, str | None, int | None], EmbeddingProvider] = {}
        self._chat_providers: dict[tuple[str, str | None], ChatProvider] = {}
        self._rerankers: dict[str, Reranker] = {}
        self._closed = False

    @classmethod
    async def open(cls, settings: Settings | None = None, *, plugins: tuple[Any, ...] = ()) -> Runtime:
        """Load the policy and plugins, migrate the store to the newest schema, and connect the vector backend."""
        settings = settings or Settings()
        compute.configure(settings.compute_threads, settings.blas_threads)
        policy = load_policy(settings.policy_file)
        pm = plugin_manager(settings.load_plugins, extra=plugins)
        db = Database(settings.resolved_database_url)
        await db.migrate()
        runtime = cls(settings, db, pm, build_registry(pm), policy)
        if runtime.ledger.spool is not None:
            await runtime.ledger.spool.recover(db)  # usage rows of processes that died before writing them
        return runtime

    def default_embedding_provider(self) -> str:
        """BIGRAG_EMBEDDING_PROVIDER, else the offline local model when it is installed, else the `hash` embedder."""
        if self.settings.embedding_provider:
            return self.settings.embedding_provider
        if "local" in self.registry.embedding_providers and local_model_available() is None:
            return "local"
        return "hash"

    def embedder(self, provider: str, model: str | None, dimension: int | None) -> EmbeddingProvider:
        key = (provider, model, dimension)
        if key not in self._embedders:
            instance = self.registry.embedding_provider(provider)(model=model, dimension=dimension)
            if dimension is not None and instance.dimension != dimension:
                raise InvalidArgument(
                    f"embedding provider {provider!r} model {instance.model!r} gives {instance.dimension} dimensions, "
                    f"not {dimension}"
                )
            self._embedders[key] = instance
        return self._embedders[key]

    def chat_provider(self, name: str, model: str | None) -> ChatProvider:
        key = (name, model)
        if key not in self._chat_providers:
            self._chat_providers[key] = self.registry.chat_provider(name)(model=model)
        return self._chat_providers[key]

    def reranker(self, name: str) -> Reranker:
        if name not in self._rerankers:
            self._rerankers[name] = self.registry.reranker(name)(model=None)
        return self._rerankers[name]

    async def close(self) -> None:
        """Close providers (HTTP-based ones hold connection pools), the backend and the store; once."""
        if self._closed:
            return
        self._closed = True
        for provider in [*self._embedders.values(), *self._chat_providers.values(), *self._rerankers.values()]:
            close = getattr(provider, "aclose", None)
            if close is not None:
                await close()
        await self.ledger.close()  # usage rows waiting for the store, before it closes
        await self.backend.close()
        self.limits.close()
        await self.db.close()
