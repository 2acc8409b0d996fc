"""Make a BEIR-format collection from reStructuredText sources: question headings are the queries.

Usage: python benchmarks/rst_to_beir.py OUT_DIR RST_FILE_OR_DIR...
Every section becomes a document (its heading is the title, its body the text). A heading that ends with "?"
is also a query whose one relevant document is its own section (the title then left empty, so the question
is not in its answer). With Debian's `python3-doc` installed, the Python FAQ plus the HOWTOs as distractors:
  python benchmarks/rst_to_beir.py /tmp/pyfaq /usr/share/doc/python3*/html/_sources/{faq,howto}
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

UNDERLINE = re.compile(r"^([=\-~^\"'`#*+.:_])\1{2,}\s*$")


def sections(text: str) -> list[tuple[str, str]]:
    """(heading, body) of every section, in order."""
    lines = text.splitlines()
    found: list[tuple[str, int]] = []
    for i in range(1, len(lines)):
        heading = lines[i - 1].strip()
        if UNDERLINE.match(lines[i]) and heading and not UNDERLINE.match(heading) and len(lines[i].strip()) >= len(heading):
            found.append((heading, i + 1))
    out = []
    for n, (heading, start) in enumerate(found):
        end = found[n + 1][1] - 2 if n + 1 < len(found) else len(lines)
        body = "\n".join(line for line in lines[start:end] if not UNDERLINE.match(line)).strip()
        if body:
            out.append((heading, body))
    return out


def main() -> None:
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    out, sources = Path(sys.argv[1]), [Path(p) for p in sys.argv[2:]]
    files = sorted(f for s in sources for f in ([s] if s.is_file() else s.rglob("*.rst*")))
    if not files:
        sys.exit(f"no reStructuredText files under {' '.join(map(str, sources))}")
    out.mkdir(parents=True, exist_ok=True)
    corpus, queries, qrels = [], [], []
    for path in files:
        for heading, body in sections(path.read_text(encoding="utf-8", errors="replace")):
            doc_id = f"d{len(corpus)}"
            question = heading.endswith("?")
            corpus.append({"_id": doc_id, "title": "" if question else heading, "text": body})
            if question:
                queries.append({"_id": f"q{len(queries)}", "text": heading})
                qrels.append((queries[-1]["_id"], doc_id))
    with (out / "corpus.jsonl").open("w", encoding="utf-8") as f:
        f.writelines(json.dumps(d) + "\n" for d in corpus)
    with (out / "queries.jsonl").open("w", encoding="utf-8") as f:
        f.writelines(json.dumps(q) + "\n" for q in queries)
    (out / "qrels.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(f"{q}\t{d}\t1\n" for q, d in qrels))
    print(json.dumps({"documents": len(corpus), "queries": len(queries), "out": str(out)}))


if __name__ == "__main__":
    main()
