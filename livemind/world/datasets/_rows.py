"""Row parsing shared by the loaders: typed columns, file:line errors, optional skipping."""

from __future__ import annotations

import csv
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from livemind.errors import DataError


def parse_int(raw: str) -> int:
    return int(raw)


def parse_float(raw: str) -> float:
    x = float(raw)
    if not math.isfinite(x):
        raise ValueError(raw)
    return x


_WHAT = {parse_int: "an integer", parse_float: "a finite number", str: "text"}


@dataclass(frozen=True)
class Col:
    name: str  # name in the returned columns
    parse: Callable[[str], object]
    aliases: tuple[str, ...] = ()  # header names accepted for it (the name itself always is)
    required: bool = True


class RowReader:
    """Reads rows into typed columns; counts skipped rows when `skip_bad`."""

    def __init__(self, path: Path, cols: list[Col], skip_bad: bool) -> None:
        self.path, self.cols, self.skip_bad = path, cols, skip_bad
        self.skipped = 0

    def bad(self, line: int, message: str) -> None:
        if not self.skip_bad:
            raise DataError(f"{self.path}:{line}: {message}")
        self.skipped += 1

    def read(self, rows: Iterator[tuple[int, list[str]]], positions: list[int | None],
             check: Callable[[dict[str, object]], str | None] | None = None) -> dict[str, np.ndarray]:
        """`positions[i]` is the field index of `cols[i]` (None: optional column absent)."""
        out: dict[str, list[object]] = {c.name: [] for c in self.cols}
        n_fields = max((p for p in positions if p is not None), default=-1) + 1
        for line, fields in rows:
            if not fields or (len(fields) == 1 and not fields[0].strip()):
                continue  # blank line
            if len(fields) < n_fields:
                self.bad(line, f"expected at least {n_fields} fields, got {len(fields)}: {fields!r}")
                continue
            row: dict[str, object] = {}
            for col, pos in zip(self.cols, positions):
                if pos is None:
                    row[col.name] = None
                    continue
                raw = fields[pos].strip()
                try:
                    row[col.name] = col.parse(raw)
                except ValueError:
                    self.bad(line, f"column {col.name!r} = {raw!r} is not {_WHAT[col.parse]}")
                    break
            else:
                problem = check(row) if check else None
                if problem:
                    self.bad(line, problem)
                    continue
                for k, v in row.items():
                    out[k].append(v)
        return {k: np.array(v) if v and v[0] is not None else np.array(v, dtype=object) for k, v in out.items()}


def read_headerless(path: Path, cols: list[Col], skip_bad: bool, delimiter: str | None = ",",
                    check: Callable[[dict[str, object]], str | None] | None = None) -> tuple[dict[str, np.ndarray], int]:
    """Columns in file order; `delimiter=None` splits on whitespace."""
    reader = RowReader(path, cols, skip_bad)
    with _open(path) as fh:
        if delimiter is None:
            rows = ((i, ln.split()) for i, ln in enumerate(fh, start=1))
            data = reader.read(rows, list(range(len(cols))), check)
        else:
            data = reader.read(enumerate(csv.reader(fh, delimiter=delimiter), start=1), list(range(len(cols))), check)
    return data, reader.skipped


def read_with_header(path: Path, cols: list[Col], skip_bad: bool,
                     check: Callable[[dict[str, object]], str | None] | None = None) -> tuple[dict[str, np.ndarray], int]:
    """Columns found by header name (or an alias); extra columns are ignored."""
    reader = RowReader(path, cols, skip_bad)
    with _open(path) as fh:
        rows = csv.reader(fh)
        try:
            header = [h.strip() for h in next(rows)]
        except StopIteration:
            raise DataError(f"{path}: empty file, expected a header with {[c.name for c in cols]}") from None
        positions: list[int | None] = []
        for col in cols:
            names = (col.name, *col.aliases)
            pos = next((header.index(n) for n in names if n in header), None)
            if pos is None and col.required:
                raise DataError(f"{path}:1: header lacks column {col.name!r} (or {list(col.aliases)}); found {header}")
            positions.append(pos)
        data = reader.read(enumerate(rows, start=2), positions, check)
    return data, reader.skipped


def _open(path: Path):
    if not path.is_file():
        raise DataError(f"{path}: file does not exist")
    return path.open(newline="", encoding="utf-8")
