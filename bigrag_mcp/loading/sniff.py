"""The type of a document from its bytes (magic numbers) first; a declared type or file name may only agree."""

from __future__ import annotations

import io
import mimetypes
import zipfile

from bigrag_mcp.errors import InvalidArgument

PDF = "application/pdf"
DOCX = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
PPTX = "application/vnd.openxmlformats-officedocument.presentationml.presentation"
ZIP = "application/zip"
OLE = "application/x-ole-storage"
TEXT_LIKE = frozenset({"application/json", "application/xml", "application/x-ndjson", "application/yaml"})
OPAQUE = frozenset({"application/octet-stream", "binary/octet-stream"})

_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"%PDF-", PDF),
    (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", OLE),
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
    (b"\x1f\x8b", "application/gzip"),
    (b"BZh", "application/x-bzip2"),
    (b"\xfd7zXZ\x00", "application/x-xz"),
    (b"7z\xbc\xaf\x27\x1c", "application/x-7z-compressed"),
    (b"Rar!\x1a\x07", "application/vnd.rar"),
    (b"\x7fELF", "application/x-executable"),
    (b"MZ", "application/x-msdownload"),
    (b"SQLite format 3\x00", "application/vnd.sqlite3"),
    (b"PK\x03\x04", ZIP),
    (b"PK\x05\x06", ZIP),
)
_KNOWN_BINARY = frozenset({mime for _, mime in _MAGIC} | {DOCX, XLSX, PPTX, "application/msword", "application/vnd.ms-excel"})
_OOXML = (("word/document.xml", DOCX), ("xl/workbook.xml", XLSX), ("ppt/presentation.xml", PPTX))
_HTML_STARTS = (b"<!doctype html", b"<html")


def _zip_kind(data: bytes) -> str:
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            names = set(archive.namelist())
    except (zipfile.BadZipFile, ValueError, OSError, EOFError):
        return ZIP
    return next((mime for part, mime in _OOXML if part in names), ZIP)


def sniff(data: bytes) -> str | None:
    """The binary type the bytes announce (PDF, an OOXML zip, an image, ...), or None for anything else."""
    head = data[:1024]
    pdf_at = head.find(b"%PDF-")
    if 0 <= pdf_at < 1024 and not head[:pdf_at].strip(b"\x00\t\n\r\x0c "):  # readers accept leading junk whitespace
        return PDF
    for magic, mime in _MAGIC:
        if data.startswith(magic):
            return _zip_kind(data) if mime == ZIP else mime
    return None


def _looks_like_html(data: bytes) -> bool:
    head = data[:512].lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    return head.startswith(_HTML_STARTS)


def normalise(mime: str | None) -> str | None:
    """`Text/HTML; charset=utf-8` -> `text/html`; empty -> None."""
    return (mime or "").split(";")[0].strip().lower() or None


def is_text_type(mime: str) -> bool:
    return mime.startswith("text/") or mime in TEXT_LIKE or mime.endswith(("+json", "+xml"))


def resolve_type(data: bytes, declared: str | None, filename: str | None) -> str:
    """The type to load `data` as: what the bytes announce, else the declared type, else the file name's, else text.

    A declared type that contradicts what the bytes announce is refused, and so is a binary type (declared or
    named by the file's extension) for bytes that do not carry its magic number.
    """
    declared = normalise(declared)
    found = sniff(data)
    if found is not None:
        if declared and declared != found and declared not in OPAQUE:
            raise InvalidArgument(f"the declared type is {declared} but the bytes are {found}; refused")
        return found
    claimed = declared or normalise(mimetypes.guess_type(filename)[0] if filename else None)
    if claimed in _KNOWN_BINARY:
        source = "declared type" if declared else "file name"
        raise InvalidArgument(f"the {source} says {claimed} but the bytes are not a {claimed} file; refused")
    if claimed and claimed not in OPAQUE:
        return claimed
    return "text/html" if _looks_like_html(data) else "text/plain"
