"""bigrag-mcp's Weaviate vector backend: collections and tenants as tenants of one Weaviate class per vector shape."""

from bigrag_weaviate.backend import WeaviateBackend
from bigrag_weaviate.settings import WeaviateSettings

__all__ = ["WeaviateBackend", "WeaviateSettings"]
