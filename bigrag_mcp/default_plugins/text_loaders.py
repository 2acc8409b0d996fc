"""Built-in document loaders for text formats: plain text, Markdown, CSV and JSON (pure Python, run in process)."""

from __future__ import annotations

import json
from collections.abc import Callable

from bigrag_mcp.errors import InvalidArgument
from bigrag_mcp.hookspecs import hookimpl
from bigrag_mcp.types import DocumentLoader


def _decode(data: bytes, filename: str | None) -> str:
    """UTF-8 (with or without a BOM), or UTF-16 with its BOM; text holding NUL characters is binary."""
    encoding = "utf-16" if data.startswith((b"\xff\xfe", b"\xfe\xff")) else "utf-8-sig"
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError:
        text = "\x00"
    if "\x00" in text:
        raise InvalidArgument(
            f"{filename or 'the document'} is not UTF-8 or UTF-16 text nor a supported format (PDF, DOCX, XLSX, PPTX, HTML)"
        )
    return text


def load_text(data: bytes, *, filename: str | None, mime_type: str | None) -> str:
    return _decode(data, filename)


def load_json(data: bytes, *, filename: str | None, mime_type: str | None) -> str:
    text = _decode(data, filename)
    try:
        return json.dumps(json.loads(text), indent=2, ensure_ascii=False)
    except json.JSONDecodeError as exc:
        raise InvalidArgument(f"{filename or 'the document'} is not valid JSON: {exc}") from None
    except RecursionError:
        raise InvalidArgument(f"{filename or 'the document'} is JSON nested too deeply to load") from None


LOADERS: dict[str, Callable[..., str]] = {
    "text/plain": load_text,
    "text/markdown": load_text,
    "text/csv": load_text,
    "application/json": load_json,
}


for _loader in LOADERS.values():
    _loader.in_process = True  # type: ignore[attr-defined]


@hookimpl
def register_document_loaders(register: Callable[[str, DocumentLoader], None]) -> None:
    for mime, loader in LOADERS.items():
        register(mime, loader)
