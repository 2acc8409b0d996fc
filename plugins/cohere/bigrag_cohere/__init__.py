"""bigrag-mcp plugin: Cohere embeddings, rerank and chat through the cohere SDK's v2 client."""

from bigrag_cohere.chat import CohereChat
from bigrag_cohere.client import CohereService
from bigrag_cohere.embeddings import KNOWN_MODELS, CohereEmbeddings
from bigrag_cohere.rerank import CohereReranker
from bigrag_cohere.settings import CohereSettings

__all__ = ["KNOWN_MODELS", "CohereChat", "CohereEmbeddings", "CohereReranker", "CohereService", "CohereSettings"]
