"""Built-in loaders for PDF (pypdfium2), Word, Excel and PowerPoint (python-docx, openpyxl, python-pptx) and HTML
(selectolax): the `[documents]` extra. Each runs in a bounded child process (see `bigrag_mcp.loading`)."""

from __future__ import annotations

import importlib
import io
from collections.abc import Callable, Iterable
from types import ModuleType
from typing import Any

from bigrag_mcp.errors import InvalidArgument, Unavailable
from bigrag_mcp.hookspecs import hookimpl
from bigrag_mcp.loading.sniff import DOCX, PDF, PPTX, XLSX
from bigrag_mcp.types import DocumentLoader, Extracted

EXTRA = "documents"
PAGE_BREAK = "\n\n"
_HTML_DROP = "script, style, noscript, template, nav, header, footer, aside, form, svg, iframe, button"
_HTML_BLOCKS = frozenset(
    {"p", "div", "br", "li", "tr", "section", "article", "main", "pre", "blockquote", "table", "ul", "ol", "dl", "dt", "dd"}
    | {f"h{i}" for i in range(1, 7)}
)


def _library(module: str, what: str) -> ModuleType:
    try:
        return importlib.import_module(module)
    except ImportError:
        raise Unavailable(f"reading {what} needs the [{EXTRA}] extra: pip install 'bigrag-mcp[{EXTRA}]'") from None


def _name(filename: str | None) -> str:
    return repr(filename) if filename else "the document"


def paged(pages: Iterable[str]) -> Extracted:
    """Join page texts with a blank line, remembering where each page starts."""
    text, starts, pos = [], [], 0
    for page in pages:
        starts.append(pos)
        text.append(page)
        pos += len(page) + len(PAGE_BREAK)
    return Extracted(PAGE_BREAK.join(text), tuple(starts))


def _needs_text(found: Extracted, filename: str | None, hint: str) -> Extracted:
    if not found.text.strip():
        raise InvalidArgument(f"{_name(filename)} has no extractable text: {hint}")
    return found


def load_pdf(data: bytes, *, filename: str | None, mime_type: str | None) -> Extracted:
    """The text of each page, in reading order as PDFium extracts it."""
    pdfium = _library("pypdfium2", "PDF")
    try:
        pdf = pdfium.PdfDocument(data)
    except pdfium.PdfiumError as exc:
        if "password" in str(exc).lower():
            raise InvalidArgument(f"{_name(filename)} is encrypted (password protected); upload an unlocked copy") from None
        raise InvalidArgument(f"{_name(filename)} is not a readable PDF: {exc}") from None
    try:
        pages = []
        for index in range(len(pdf)):
            page = pdf[index]
            textpage = page.get_textpage()
            pages.append(textpage.get_text_range().replace("\r\n", "\n").replace("\r", "\n").replace("\x00", ""))
            textpage.close()
            page.close()
    except pdfium.PdfiumError as exc:
        raise InvalidArgument(f"{_name(filename)} is a damaged PDF: {exc}") from None
    finally:
        pdf.close()
    return _needs_text(paged(pages), filename, "scanned PDF? (images only; run OCR first)")


def _docx_blocks(document: Any) -> Iterable[str]:
    docx_table = importlib.import_module("docx.table")
    docx_text = importlib.import_module("docx.text.paragraph")
    for element in document.element.body.iterchildren():
        tag = element.tag.rsplit("}", 1)[-1]
        if tag == "p":
            paragraph = docx_text.Paragraph(element, document)
            style = (paragraph.style.name if paragraph.style is not None else "") or ""
            level = style.removeprefix("Heading ").strip()
            prefix = "#" * int(level) + " " if style.startswith("Heading ") and level.isdigit() else ""
            if paragraph.text.strip():
                yield prefix + paragraph.text
        elif tag == "tbl":
            table = docx_table.Table(element, document)
            yield "\n".join(" | ".join(cell.text.strip() for cell in row.cells) for row in table.rows)


def load_docx(data: bytes, *, filename: str | None, mime_type: str | None) -> Extracted:
    """Paragraphs, headings (as `#` lines) and tables (cells joined by ` | `) in document order."""
    docx = _library("docx", "Word documents")
    document = docx.Document(io.BytesIO(data))
    return _needs_text(Extracted("\n\n".join(_docx_blocks(document))), filename, "the document is empty")


def load_xlsx(data: bytes, *, filename: str | None, mime_type: str | None) -> Extracted:
    """One page per sheet: a `# sheet` line, then each non-empty row's cells joined by tabs."""
    openpyxl = _library("openpyxl", "Excel workbooks")
    book = openpyxl.load_workbook(io.BytesIO(data), read_only=True, data_only=True)
    try:
        sheets = []
        for sheet in book.worksheets:
            rows = ("\t".join("" if v is None else str(v) for v in row) for row in sheet.iter_rows(values_only=True))
            sheets.append("\n".join([f"# {sheet.title}", *(r for r in rows if r.strip())]))
    finally:
        book.close()
    return _needs_text(paged(sheets), filename, "the workbook is empty")


def load_pptx(data: bytes, *, filename: str | None, mime_type: str | None) -> Extracted:
    """One page per slide: the text of its shapes (tables cell by cell), then its notes."""
    pptx = _library("pptx", "PowerPoint presentations")
    deck = pptx.Presentation(io.BytesIO(data))
    slides = []
    for slide in deck.slides:
        parts = []
        for shape in slide.shapes:
            if shape.has_text_frame and shape.text_frame.text.strip():
                parts.append(shape.text_frame.text)
            elif getattr(shape, "has_table", False) and shape.has_table:
                parts.extend(" | ".join(c.text for c in row.cells) for row in shape.table.rows)
        if slide.has_notes_slide and slide.notes_slide.notes_text_frame is not None:
            parts.append(slide.notes_slide.notes_text_frame.text)
        slides.append("\n".join(p for p in parts if p.strip()))
    return _needs_text(paged(slides), filename, "the slides have no text")


def load_html(data: bytes, *, filename: str | None, mime_type: str | None) -> Extracted:
    """The main text: `<main>` or `<article>` if present, else `<body>`, without scripts, styles and navigation."""
    lexbor = _library("selectolax.lexbor", "HTML")
    tree = lexbor.LexborHTMLParser(data)
    for node in tree.css(_HTML_DROP):
        node.decompose()
    root = tree.css_first("main") or tree.css_first("article") or tree.body or tree.root
    if root is None:
        return Extracted("")
    parts: list[str] = []
    for node in root.traverse(include_text=True):
        if node.tag == "-text":
            parts.append(node.text_content or "")
        elif node.tag in _HTML_BLOCKS:
            parts.append("\n\n")
    return Extracted("".join(parts).strip())


LOADERS: dict[str, Callable[..., Extracted]] = {
    PDF: load_pdf,
    DOCX: load_docx,
    XLSX: load_xlsx,
    PPTX: load_pptx,
    "text/html": load_html,
    "application/xhtml+xml": load_html,
}


@hookimpl
def register_document_loaders(register: Callable[[str, DocumentLoader], None]) -> None:
    for mime, loader in LOADERS.items():
        register(mime, loader)
