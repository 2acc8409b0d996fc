"""Document loaders: real files of each format in, pages and exact offsets out; type from bytes; bounds; fuzzing."""

from __future__ import annotations

import base64
import io
import zipfile
from typing import Any

import pytest
from conftest import call, make_docx, make_pdf, make_pptx, make_xlsx, refused
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from loader_probes import crash, hog, spin
from mcp import Client

from bigrag_mcp.errors import BigRagError, InvalidArgument
from bigrag_mcp.loading import Bounds, extract, resolve_type
from bigrag_mcp.loading.sniff import DOCX, PDF, PPTX, XLSX
from bigrag_mcp.services import documents
from bigrag_mcp.services.runtime import Runtime

pytestmark = pytest.mark.anyio
PAGES = ["The harbour opens at dawn for fishing boats.", "Tariffs for zeppelin mooring are billed monthly.", "Closing notes on the tide tables and the harbour master."]
HTML = (
    b"<!DOCTYPE html><html><head><title>t</title><style>.x{color:red}</style><script>var leak='scriptword';</script>"
    b"</head><body><nav>Home navigationword About</nav><main><h1>Lighthouse keepers</h1><p>Keepers trim the "
    b"<b>wicks</b> nightly.</p></main><footer>footerword</footer></body></html>"
)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


async def upload(client: Client, data: bytes, **args: Any) -> dict[str, Any]:
    return (await call(client, "documents_upload", collection="docs", content_base64=b64(data), **args))["document"]


async def top(client: Client, text: str) -> dict[str, Any]:
    rows = (await call(client, "query", collection="docs", query=text, top_k=1))["results"]
    return rows[0]


async def test_each_format_through_mcp_with_pages_and_exact_offsets(admin: Client) -> None:
    await call(admin, "collections_create", collection="docs", chunk_size=64, chunk_overlap=0)
    pdf = await upload(admin, make_pdf(PAGES), filename="harbour.pdf")
    assert pdf["mime_type"] == PDF
    hit = await top(admin, "zeppelin mooring tariffs")
    assert hit["document_id"] == pdf["id"] and hit["page"] == 2
    page = (await call(admin, "documents_get", collection="docs", document_id=pdf["id"], page=2))
    assert page["page"]["text"] == PAGES[1]
    assert [c["page"] for c in page["chunks"]] == [2] * len(page["chunks"]) and page["chunks"]
    for chunk in page["chunks"]:  # offsets index the extracted text, whose page 2 starts at page.char_start
        start = chunk["char_start"] - page["page"]["char_start"]
        assert page["page"]["text"][start : start + chunk["char_end"] - chunk["char_start"]] == chunk["text"]
    assert "no page 9" in await refused(admin, "documents_get", collection="docs", document_id=pdf["id"], page=9)

    word = await upload(admin, make_docx("Quarterly plan", ["Budget for lanterns rises."], [["region", "north"]]), filename="p.docx")
    whole = await call(admin, "documents_get", collection="docs", document_id=word["id"])
    text = "\n\n".join(c["text"] for c in whole["chunks"])
    assert "# Quarterly plan" in text and "region | north" in text and whole["chunks"][0]["page"] is None
    assert (await top(admin, "lanterns budget"))["document_id"] == word["id"]

    sheet = await upload(admin, make_xlsx({"Costs": [["item", "cost"], ["anchor chain", 12], ["sail cloth", 40]], "Crew": [["name"], ["Ishmael"]]}))
    assert sheet["mime_type"] == XLSX
    crew = await top(admin, "Ishmael")
    assert crew["document_id"] == sheet["id"] and crew["page"] == 2 and "Ishmael" in crew["text"]

    deck = await upload(admin, make_pptx(["Opening slide: the annual bird survey", "Seagull census results for the northern cliffs"]), filename="deck.pptx")
    census = await top(admin, "seagull census")
    assert census["document_id"] == deck["id"] and census["page"] == 2

    html = await upload(admin, HTML, filename="page.html")
    got = await call(admin, "documents_get", collection="docs", document_id=html["id"])
    body = " ".join(c["text"] for c in got["chunks"])
    assert "Keepers trim the wicks nightly." in body and "Lighthouse keepers" in body
    assert not any(w in body for w in ("scriptword", "navigationword", "footerword", "color:red"))


async def test_type_comes_from_the_bytes_and_a_contradicting_declaration_is_refused(admin: Client) -> None:
    await call(admin, "collections_create", collection="docs")
    pdf = make_pdf(["Some words here."])
    doc = await upload(admin, pdf, filename="notes.txt")  # the bytes decide, not the name
    assert doc["mime_type"] == PDF
    said = await refused(admin, "documents_upload", collection="docs", content_base64=b64(pdf), mime_type="text/plain")
    assert said.startswith("invalid_argument:") and "bytes are application/pdf" in said
    said = await refused(admin, "documents_upload", collection="docs", content_base64=b64(b"plain words"), mime_type=PDF)
    assert said.startswith("invalid_argument:") and "not a application/pdf file" in said
    said = await refused(admin, "documents_upload", collection="docs", content_base64=b64(b"\x89PNG\r\n\x1a\n" + bytes(40)))
    assert said.startswith("invalid_argument:") and "image/png" in said
    said = await refused(admin, "documents_upload", collection="docs", text="hello", mime_type=DOCX)
    assert said.startswith("invalid_argument:")
    listed = await call(admin, "documents_list", collection="docs")
    assert [d["id"] for d in listed["documents"]] == [doc["id"]]  # nothing else was written


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (make_pdf(["", ""]), "no extractable text: scanned PDF?"),
        (make_pdf(["secret"], password="pw"), "encrypted"),
        (make_pdf(["Intact text."])[:400], "not a readable PDF"),
    ],
    ids=["scanned", "encrypted", "truncated"],
)
async def test_unreadable_pdfs_are_refused_with_a_specific_message(rt: Runtime, data: bytes, message: str) -> None:
    await _create(rt)
    with pytest.raises(InvalidArgument, match=message):
        await documents.upload(rt, "docs", content_base64=b64(data), filename="x.pdf")


def _bomb(inflated: int) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr(zipfile.ZipInfo("word/document.xml"), b"<w/>")
        archive.writestr("word/media/zeros.bin", bytes(inflated), compress_type=zipfile.ZIP_DEFLATED)
    return out.getvalue()


async def test_zip_bombs_are_refused_before_parsing(rt: Runtime) -> None:
    data = _bomb(3 << 20)
    assert len(data) < 10_000 and resolve_type(data, None, "x.docx") == DOCX
    with pytest.raises(InvalidArgument, match="zip bomb"):
        await extract(rt.registry.document_loaders, data, mime=DOCX, filename="x.docx", bounds=Bounds(unzipped_mb=2))


@pytest.mark.parametrize(
    ("loader", "message"),
    [(spin, "took longer than 0.5 s"), (hog, "needs more than 512 MB"), (crash, "its parser stopped")],
    ids=["hang", "memory", "crash"],
)
async def test_loaders_run_in_a_bounded_process(loader: Any, message: str) -> None:
    bounds = Bounds(seconds=0.5, memory_mb=512)
    with pytest.raises(InvalidArgument, match=message):
        await extract({"application/x-test": loader}, b"data", mime="application/x-test", filename=None, bounds=bounds)


SAMPLES = {
    PDF: make_pdf(PAGES),
    DOCX: make_docx("H", ["p"], [["a", "b"]]),
    XLSX: make_xlsx({"S": [["a", 1]]}),
    PPTX: make_pptx(["slide"]),
    "text/html": HTML,
    "application/json": b'{"a": [1, 2, {"b": "c"}]}',
    "text/plain": "plain text \u00e9".encode(),
    "text/markdown": b"# md\n\ntext",
    "text/csv": b"a,b\n1,2\n",
}


@st.composite
def fuzzed(draw: st.DrawFn) -> tuple[str, bytes]:
    mime = draw(st.sampled_from(sorted(SAMPLES)))
    sample = bytearray(SAMPLES[mime])
    kind = draw(st.sampled_from(["random", "flip", "cut"]))
    if kind == "random":
        return mime, draw(st.binary(max_size=2048))
    if kind == "cut":
        return mime, bytes(sample[: draw(st.integers(0, len(sample)))])
    for _ in range(draw(st.integers(1, 16))):
        at = draw(st.integers(0, len(sample) - 1))
        sample[at] = draw(st.integers(0, 255))
    return mime, bytes(sample)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(case=fuzzed())
def test_fuzzed_bytes_give_only_invalid_argument(rt_registry: dict[str, Any], case: tuple[str, bytes]) -> None:
    import anyio

    mime, data = case
    bounds = Bounds(seconds=20)

    async def attempt() -> None:
        try:
            await extract(rt_registry, data, mime=mime, filename="fuzz", bounds=bounds)
        except BigRagError as exc:
            assert exc.code == "invalid_argument", exc

    anyio.run(attempt)


@pytest.fixture(scope="module")
def rt_registry() -> dict[str, Any]:
    from bigrag_mcp.plugins import build_registry, plugin_manager

    return build_registry(plugin_manager("")).document_loaders


async def _create(rt: Runtime) -> None:
    from bigrag_mcp.services import collections

    await collections.create(rt, name="docs")


async def test_a_missing_parser_names_the_extra(rt: Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "pypdfium2", None)  # as if the [documents] extra were not installed
    from bigrag_mcp.default_plugins.document_loaders import load_pdf

    with pytest.raises(BigRagError, match=r"unavailable: reading PDF needs the \[documents\] extra: pip install"):
        load_pdf(make_pdf(["x"]), filename="x.pdf", mime_type=PDF)
