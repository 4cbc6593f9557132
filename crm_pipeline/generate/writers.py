"""Writing the landing zone: daily CSV and JSONL files, reference files and the shop database.

Also breaks files on purpose (truncated, renamed column, non-UTF-8 bytes), since a delivery
can be damaged as a whole and not only record by record.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import sqlalchemy as sa

from crm_pipeline.generate.defects import ABSENT
from crm_pipeline.generate.world import Frame
from crm_pipeline.landing import ShopTable

LATIN_TEXT = "Schöne Grüße – café crème, très bien"
FLOAT_COLUMNS = {"total_amount", "unit_price", "discount", "income", "unit_cost"}
INT_COLUMNS = {"quantity", "line_no"}


def _column(values: np.ndarray) -> list:
    if values.dtype.kind == "f":
        return [
            None if gap else v
            for v, gap in zip(values.tolist(), np.isnan(values).tolist(), strict=True)
        ]
    return values.tolist()


def csv_lines(columns: tuple[str, ...], frame: Frame) -> list[str]:
    """Header and one line per row, standard CSV quoting, no line terminators."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(columns)
    if frame and len(frame[columns[0]]):
        writer.writerows(zip(*(_column(frame[c]) for c in columns), strict=True))
    return buf.getvalue().split("\n")[:-1]


def jsonl_lines(columns: tuple[str, ...], frame: Frame) -> list[str]:
    if not frame or not len(frame[columns[0]]):
        return []
    rows = zip(*(_column(frame[c]) for c in columns), strict=True)
    return [
        json.dumps(
            {c: v for c, v in zip(columns, row, strict=True) if v != ABSENT}, ensure_ascii=False
        )
        for row in rows
    ]


def write_lines(
    path: Path, lines: list[str], *, truncate: bool = False, latin: tuple[int, ...] = ()
) -> None:
    """Write lines, optionally cutting the last one in half or encoding some as cp1252 (0-based)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if truncate:
        lines = lines[:-1] + [lines[-1][: len(lines[-1]) // 2]]
    chunks = [
        (line.encode("cp1252", errors="replace") if k in latin else line.encode("utf-8"))
        + (b"" if truncate and k == len(lines) - 1 else b"\n")
        for k, line in enumerate(lines)
    ]
    path.write_bytes(b"".join(chunks))


class ShopDatabase:
    """The online shop's tables, written through SQLAlchemy Core with no keys: a raw export."""

    CHUNK = 50_000

    def __init__(self, url: str, tables: tuple[ShopTable, ...]) -> None:
        if url.startswith("sqlite:///") and url != "sqlite:///:memory:":
            # A fresh file, not dropped tables in an old one, keeps the bytes reproducible.
            Path(url.removeprefix("sqlite:///")).unlink(missing_ok=True)
            Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        self.engine = sa.create_engine(url)
        meta = sa.MetaData()
        self.tables = {
            t.name: sa.Table(t.name, meta, *(sa.Column(c, self._type(c)) for c in t.columns))
            for t in tables
        }
        meta.drop_all(self.engine, checkfirst=True)
        meta.create_all(self.engine)
        self.conn = self.engine.connect()
        self.tx = self.conn.begin()

    @staticmethod
    def _type(column: str) -> sa.types.TypeEngine:
        if column in FLOAT_COLUMNS:
            return sa.Float()
        if column in INT_COLUMNS:
            return sa.Integer()
        return sa.Text()

    def insert(self, name: str, frame: Frame) -> int:
        """Append rows with the driver's executemany; SQLAlchemy's per-row binding is slow."""
        compiled = self.tables[name].insert().compile(dialect=self.engine.dialect)
        if compiled.positional:
            cols = [str(c) for c in compiled.positiontup or ()]
            rows: list = list(zip(*(_column(frame[c]) for c in cols), strict=True))
        else:
            cols = list(compiled.params)
            rows = [
                dict(zip(cols, r, strict=True))
                for r in zip(*(_column(frame[c]) for c in cols), strict=True)
            ]
        for k in range(0, len(rows), self.CHUNK):
            self.conn.exec_driver_sql(str(compiled), rows[k : k + self.CHUNK])
        return len(rows)

    def close(self) -> None:
        self.tx.commit()
        self.conn.close()
        self.engine.dispose()
