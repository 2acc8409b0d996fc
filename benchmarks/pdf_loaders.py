"""PDF text extraction: pypdfium2 (the built-in loader's library) against pypdf, on speed and on damaged copies.

Usage: python benchmarks/pdf_loaders.py FILE.pdf... (needs `pip install pypdf` for the comparison)
Prints JSON per file: seconds, pages and characters for each library, and of 40 damaged copies (alternately
truncated and with 20 flipped bytes) how many each still read, and the characters it recovered.
"""

from __future__ import annotations

import io
import json
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


def with_pdfium(data: bytes) -> list[str]:
    import pypdfium2 as pdfium

    pdf = pdfium.PdfDocument(data)
    try:
        return [pdf[i].get_textpage().get_text_range() for i in range(len(pdf))]
    finally:
        pdf.close()


def with_pypdf(data: bytes) -> list[str]:
    import pypdf

    return [page.extract_text() or "" for page in pypdf.PdfReader(io.BytesIO(data)).pages]


def damaged(data: bytes, count: int = 40, seed: int = 1) -> list[bytes]:
    rnd = random.Random(seed)
    copies = []
    for k in range(count):
        copy = bytearray(data)
        if k % 2:
            copy = copy[: rnd.randrange(len(copy))]
        else:
            for _ in range(20):
                copy[rnd.randrange(len(copy))] = rnd.randrange(256)
        copies.append(bytes(copy))
    return copies


def measure(read: Callable[[bytes], list[str]], data: bytes) -> dict[str, Any]:
    started = time.perf_counter()
    pages = read(data)
    seconds = time.perf_counter() - started
    ok = chars = 0
    for copy in damaged(data):
        try:
            chars += sum(map(len, read(copy)))
        except Exception:  # noqa: BLE001, S112 - counting failures is the point
            continue
        ok += 1
    return {"seconds": round(seconds, 3), "pages": len(pages), "chars": sum(map(len, pages)),
            "damaged_read": ok, "damaged_of": 40, "damaged_chars": chars}


def main() -> None:
    results: dict[str, Any] = {}
    for name in sys.argv[1:]:
        data = Path(name).read_bytes()
        row = {"pypdfium2": measure(with_pdfium, data)}
        try:
            row["pypdf"] = measure(with_pypdf, data)
            row["speedup"] = round(row["pypdf"]["seconds"] / max(row["pypdfium2"]["seconds"], 1e-9), 1)
        except ImportError:
            row["pypdf"] = "not installed"
        results[name] = row
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
