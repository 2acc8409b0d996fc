"""bigrag-mcp plugin: Cohere embeddings, rerank and chat through the cohere SDK's v2 client."""

from typing import TYPE_CHECKING

from bigrag_mcp.plugins import exports_on_demand

if TYPE_CHECKING:
    from bigrag_cohere.chat import CohereChat
    from bigrag_cohere.client import CohereService
    from bigrag_cohere.embeddings import KNOWN_MODELS, CohereEmbeddings
    from bigrag_cohere.rerank import CohereReranker
    from bigrag_cohere.settings import CohereSettings

__all__ = ["KNOWN_MODELS", "CohereChat", "CohereEmbeddings", "CohereReranker", "CohereService", "CohereSettings"]
__getattr__ = exports_on_demand(
    __name__,
    {
        "KNOWN_MODELS": "embeddings",
        "CohereChat": "chat",
        "CohereEmbeddings": "embeddings",
        "CohereReranker": "rerank",
        "CohereService": "client",
        "CohereSettings": "settings",
    },
)
