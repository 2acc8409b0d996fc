"""The plugin manager: built-in defaults and entry-point plugins, registered through the same hooks."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import pluggy

from bigrag_mcp import hookspecs
from bigrag_mcp.errors import InvalidArgument
from bigrag_mcp.types import (
    BillingExporterFactory,
    ChatProviderFactory,
    DocumentLoader,
    EmbeddingProviderFactory,
    RerankerFactory,
    VectorBackendFactory,
)

ENTRY_POINT_GROUP = "bigrag"
DEFAULT_PLUGINS = (
    "bigrag_mcp.default_plugins.hash_embedder",
    "bigrag_mcp.default_plugins.local_embedder",
    "bigrag_mcp.default_plugins.memory_backend",
    "bigrag_mcp.default_plugins.jsonl_billing",
    "bigrag_mcp.default_plugins.text_loaders",
    "bigrag_mcp.default_plugins.document_loaders",
)


@dataclass
class Registry:
    """What the loaded plugins offer, by name."""

    embedding_providers: dict[str, EmbeddingProviderFactory] = field(default_factory=dict)
    vector_backends: dict[str, VectorBackendFactory] = field(default_factory=dict)
    chat_providers: dict[str, ChatProviderFactory] = field(default_factory=dict)
    rerankers: dict[str, RerankerFactory] = field(default_factory=dict)
    billing_exporters: dict[str, BillingExporterFactory] = field(default_factory=dict)
    document_loaders: dict[str, DocumentLoader] = field(default_factory=dict)

    def embedding_provider(self, name: str) -> EmbeddingProviderFactory:
        return _lookup(self.embedding_providers, name, "embedding provider")

    def vector_backend(self, name: str) -> VectorBackendFactory:
        return _lookup(self.vector_backends, name, "vector backend")

    def chat_provider(self, name: str) -> ChatProviderFactory:
        return _lookup(self.chat_providers, name, "chat provider")

    def reranker(self, name: str) -> RerankerFactory:
        return _lookup(self.rerankers, name, "reranker")


def _lookup(table: dict[str, Any], name: str, kind: str) -> Any:
    try:
        return table[name]
    except KeyError:
        known = ", ".join(sorted(table)) or "none"
        raise InvalidArgument(f"unknown {kind} {name!r}; installed: {known}") from None


def plugin_manager(load_plugins: str | None = None, extra: Iterable[object] = ()) -> pluggy.PluginManager:
    """Built-in defaults, then entry points in group `bigrag` (only those named in the allow-list, when given)."""
    pm = pluggy.PluginManager(ENTRY_POINT_GROUP)
    pm.add_hookspecs(hookspecs)
    for module_name in DEFAULT_PLUGINS:
        pm.register(importlib.import_module(module_name), name=module_name)
    allow = {n.strip() for n in load_plugins.split(",") if n.strip()} if load_plugins is not None else None
    if allow is None:
        pm.load_setuptools_entrypoints(ENTRY_POINT_GROUP)
    else:
        for name in sorted(allow):
            pm.load_setuptools_entrypoints(ENTRY_POINT_GROUP, name=name)
    for plugin in extra:
        pm.register(plugin)
    pm.check_pending()
    return pm


def _collect(hook: Callable[..., Any]) -> dict[str, Any]:
    found: dict[str, Any] = {}

    def register(name: str, thing: Any) -> None:
        found.setdefault(name, thing)  # first registration wins: pluggy calls later-registered plugins first

    hook(register=register)
    return found


def exports_on_demand(package: str, names: Mapping[str, str]) -> Callable[[str], Any]:
    """A package's module `__getattr__` (PEP 562) importing each public name from its submodule (`names`: name ->
    submodule) on first use, so loading a plugin's entry point imports no client library before a factory runs."""

    def __getattr__(name: str) -> Any:
        if name not in names:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(f"{package}.{names[name]}"), name)

    return __getattr__


def build_registry(pm: pluggy.PluginManager) -> Registry:
    hooks = pm.hook
    return Registry(
        embedding_providers=_collect(hooks.register_embedding_providers),
        vector_backends=_collect(hooks.register_vector_backends),
        chat_providers=_collect(hooks.register_chat_providers),
        rerankers=_collect(hooks.register_rerankers),
        billing_exporters=_collect(hooks.register_billing_exporters),
        document_loaders=_collect(hooks.register_document_loaders),
    )


def describe(pm: pluggy.PluginManager) -> list[dict[str, Any]]:
    """One entry per loaded plugin: its name, its package version (if any) and the hooks it implements."""
    dists = {id(plugin): dist for plugin, dist in pm.list_plugin_distinfo()}
    rows = []
    for name, plugin in pm.list_name_plugin():
        if plugin is None:
            continue
        dist = dists.get(id(plugin))
        rows.append(
            {
                "name": name,
                "module": plugin.__name__ if isinstance(plugin, ModuleType) else type(plugin).__name__,
                "version": dist.version if dist is not None else None,
                "hooks": sorted(impl.name for impl in pm.get_hookcallers(plugin) or []),
            }
        )
    return sorted(rows, key=lambda r: r["name"])
