"""bigrag-mcp plugin: embeddings and chat over the OpenAI API and OpenAI-compatible servers."""

from typing import TYPE_CHECKING

from bigrag_mcp.plugins import exports_on_demand

if TYPE_CHECKING:
    from bigrag_openai.chat import OpenAIChat
    from bigrag_openai.client import OpenAIClient
    from bigrag_openai.embeddings import KNOWN_MODELS, OpenAIEmbeddings
    from bigrag_openai.settings import OpenAISettings

__all__ = ["KNOWN_MODELS", "OpenAIChat", "OpenAIClient", "OpenAIEmbeddings", "OpenAISettings"]
__getattr__ = exports_on_demand(
    __name__,
    {
        "KNOWN_MODELS": "embeddings",
        "OpenAIChat": "chat",
        "OpenAIClient": "client",
        "OpenAIEmbeddings": "embeddings",
        "OpenAISettings": "settings",
    },
)
