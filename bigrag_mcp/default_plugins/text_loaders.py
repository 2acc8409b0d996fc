"""Built-in document loaders for text formats: plain text, Markdown, CSV, JSON and HTML."""

from __future__ import annotations

import json
from collections.abc import Callable
from html.parser import HTMLParser
from typing import ClassVar

from bigrag_mcp.errors import InvalidArgument
from bigrag_mcp.hookspecs import hookimpl
from bigrag_mcp.types import DocumentLoader


def _decode(data: bytes, filename: str | None) -> str:
    for encoding in ("utf-8-sig", "utf-16"):
        try:
            text = data.decode(encoding)
        except UnicodeDecodeError:
            continue
        if "\x00" not in text:
            return text
    raise InvalidArgument(f"{filename or 'the document'} is not UTF-8 or UTF-16 text; send text or a supported format")


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


class _TextOfHtml(HTMLParser):
    BLOCK: ClassVar[frozenset[str]] = frozenset({"p", "div", "br", "li", "h1", "h2", "h3", "h4", "h5", "h6", "tr", "section", "article", "pre"})

    def __init__(self) -> None:
        super().__init__()
        self.parts: list[str] = []
        self.skip = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("script", "style"):
            self.skip += 1
        elif tag in self.BLOCK:
            self.parts.append("\n\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style") and self.skip:
            self.skip -= 1

    def handle_data(self, data: str) -> None:
        if not self.skip:
            self.parts.append(data)


def load_html(data: bytes, *, filename: str | None, mime_type: str | None) -> str:
    parser = _TextOfHtml()
    parser.feed(_decode(data, filename))
    return "".join(parser.parts)


LOADERS: dict[str, Callable[..., str]] = {
    "text/plain": load_text,
    "text/markdown": load_text,
    "text/csv": load_text,
    "application/json": load_json,
    "text/html": load_html,
}


@hookimpl
def register_document_loaders(register: Callable[[str, DocumentLoader], None]) -> None:
    for mime, loader in LOADERS.items():
        register(mime, loader)
