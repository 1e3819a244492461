"""Public QA data read into `QATask`s, from ../shared/data (or any path given).

- MuSiQue (Trivedi et al., TACL 2022; CC BY 4.0): JSON lines with `id`, 20 `paragraphs`
  ({idx, title, paragraph_text, is_supporting}), `question`, `answer`, `answer_aliases`. Every
  paragraph is a document ("title: text"); gold references are the answer and its aliases,
  scored by EM/F1. `paragraphs="supporting"` keeps only the paragraphs marked as supporting (the
  gold-paragraph setting: about 270 prompt tokens instead of about 2,100, for CPU-sized runs).
- Amazon contextual product QA (hetPQA answer generation; CDLA-Sharing-1.0): tab-separated
  `ASIN, question, candidate, answer, source`; the candidate evidence is the document and the
  written answer the reference.
A row with a missing field is an error naming the file and line.
"""

from __future__ import annotations

import csv
from pathlib import Path

from livemind.errors import DataError
from livemind.think.tasks import QATask, iter_jsonl


def load_musique(path: str | Path, limit: int | None = None, paragraphs: str = "all") -> list[QATask]:
    if paragraphs not in ("all", "supporting"):
        raise DataError(f"paragraphs must be 'all' or 'supporting', got {paragraphs!r}")
    out = []
    for where, row in iter_jsonl(path, "MuSiQue file"):
        missing = [k for k in ("id", "paragraphs", "question", "answer") if k not in row]
        if missing:
            raise DataError(f"{where}: missing field(s) {missing}")
        docs = tuple(f"{p.get('title', '')}: {p['paragraph_text']}" for p in row["paragraphs"]
                     if paragraphs == "all" or p.get("is_supporting"))
        answers = [row["answer"], *row.get("answer_aliases", [])]
        out.append(QATask(str(row["id"]), "musique", docs, row["question"], {"answers": answers}))
        if limit is not None and len(out) >= limit:
            break
    return out


def load_product_qa(path: str | Path, limit: int | None = None) -> list[QATask]:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"product-QA file {str(path)!r} does not exist")
    out = []
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f, delimiter="\t")
        need = ("ASIN", "question", "candidate", "answer")
        if reader.fieldnames is None or any(k not in reader.fieldnames for k in need):
            raise DataError(f"{path}: header {reader.fieldnames} lacks some of {list(need)}")
        for i, row in enumerate(reader, 2):
            empty = [k for k in need if not (row.get(k) or "").strip()]
            if empty:
                raise DataError(f"{path}:{i}: empty field(s) {empty}")
            out.append(QATask(f"{row['ASIN']}-{i}", "product_qa", (row["candidate"],), row["question"],
                              {"answers": [row["answer"]]}))
            if limit is not None and len(out) >= limit:
                break
    return out
