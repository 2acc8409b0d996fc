"""bigrag-mcp's Weaviate vector backend: collections and tenants as tenants of one Weaviate class per vector shape."""

from typing import TYPE_CHECKING

from bigrag_mcp.plugins import exports_on_demand

if TYPE_CHECKING:
    from bigrag_weaviate.backend import WeaviateBackend
    from bigrag_weaviate.settings import WeaviateSettings

__all__ = ["WeaviateBackend", "WeaviateSettings"]
__getattr__ = exports_on_demand(__name__, {"WeaviateBackend": "backend", "WeaviateSettings": "settings"})
