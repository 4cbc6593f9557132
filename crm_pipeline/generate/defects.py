"""Record-level defects injected at known rates, each one logged for the manifest.

A `Damage` collects the defects of one file or table by row; line numbers are fixed only after
duplicate rows are inserted, so every logged defect points at the line a reader will see.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from crm_pipeline.generate.spelling import broken_phone, malformed_email, typo
from crm_pipeline.generate.world import Frame

# Probability per record (or per field) is defect_rate x weight.
WEIGHTS = {
    "duplicate_row": 0.5,
    "reexported_order": 0.5,
    "missing_required": 0.25,
    "missing_optional": 0.5,
    "negative_price": 0.25,
    "future_date": 0.15,
    "unknown_sku": 0.25,
    "malformed_email": 0.5,
    "name_typo": 1.0,
    "phone_format": 0.5,
    "impossible_birth_date": 0.25,
    "rating_off_scale": 0.5,
    "total_mismatch": 0.25,
}
ABSENT = "\x00absent"  # a JSON key left out altogether rather than null
DefectRow = tuple[str, str, str, str, object, str, str]


class Damage:
    """The defects of one delivered file or table."""

    def __init__(
        self, rng: np.random.Generator, rate: float, frame: Frame, key: str | None
    ) -> None:
        self.rng, self.rate = rng, rate
        self.ids = frame[key].copy() if key else None
        self.found: list[
            tuple[int, str, str, int]
        ] = []  # row, code, detail, lines after the row's own
        self.line_of: np.ndarray | None = None

    def rows(self, frame: Frame, code: str, column: str | None = None) -> np.ndarray:
        """Rows hit by a defect; a column, when given, must hold a value to be damaged."""
        n = len(next(iter(frame.values()))) if frame else 0
        if self.rate <= 0 or n == 0:
            return np.zeros(0, dtype=np.int64)
        hit = np.flatnonzero(self.rng.random(n) < self.rate * WEIGHTS[code])
        if column is not None:
            values = frame[column][hit]
            hit = hit[pd.notna(values) & (values != ABSENT)]
        return hit

    def log(self, rows: np.ndarray, code: str, details: list[str] | str) -> None:
        texts = [details] * len(rows) if isinstance(details, str) else details
        self.found.extend((int(r), code, t, 0) for r, t in zip(rows, texts, strict=True))

    def records(self, source: str, partition: str, file: str) -> list[DefectRow]:
        out = []
        for row, code, detail, after in sorted(self.found, key=lambda f: (f[0], f[3], f[1])):
            rid = "" if self.ids is None or self.ids[row] is None else str(self.ids[row])
            line = "" if self.line_of is None else int(self.line_of[row]) + after
            out.append((source, partition, file, rid, line, code, detail))
        return out


def blank(
    frame: Frame, dmg: Damage, columns: tuple[str, ...], code: str, absent: bool = False
) -> None:
    """Empty a required or optional field (in JSON, sometimes drop the key)."""
    for col in columns:
        rows = dmg.rows(frame, code, col)
        if len(rows) == 0:
            continue
        if frame[col].dtype.kind == "f":
            frame[col] = frame[col].copy()
            frame[col][rows] = np.nan
        else:
            frame[col] = frame[col].astype(object)
            frame[col][rows] = ABSENT if absent else None
        dmg.log(rows, code, f"{col} missing")


def negative_price(frame: Frame, dmg: Damage, col: str) -> None:
    rows = dmg.rows(frame, "negative_price", col)
    frame[col] = frame[col].astype(float)
    # The price negated, or a cent below zero (0 itself is a free gift, no defect).
    frame[col][rows] = np.where(dmg.rng.random(len(rows)) < 0.7, -frame[col][rows], -0.01)
    dmg.log(rows, "negative_price", [f"{col} = {v}" for v in frame[col][rows]])


def future_date(frame: Frame, dmg: Damage, col: str) -> None:
    """Move a timestamp 4 or 8 years ahead (a leap day stays a valid date)."""
    rows = dmg.rows(frame, "future_date", col)
    shift = 4 * dmg.rng.integers(1, 3, len(rows))
    for r, k in zip(rows, shift, strict=True):
        s = frame[col][r]
        frame[col][r] = f"{int(s[:4]) + k}{s[4:]}"
    dmg.log(rows, "future_date", [f"{col} = {frame[col][r]}" for r in rows])


def unknown_sku(frame: Frame, dmg: Damage) -> None:
    rows = dmg.rows(frame, "unknown_sku", "sku")
    frame["sku"][rows] = [f"SKU9{k:04d}" for k in dmg.rng.integers(0, 10_000, len(rows))]
    dmg.log(rows, "unknown_sku", [f"sku = {frame['sku'][r]}" for r in rows])


def bad_email(frame: Frame, dmg: Damage, col: str = "email") -> None:
    rows = dmg.rows(frame, "malformed_email", col)
    kinds = dmg.rng.integers(0, 4, len(rows))
    frame[col][rows] = [malformed_email(frame[col][r], k) for r, k in zip(rows, kinds, strict=True)]
    dmg.log(rows, "malformed_email", [f"{col} = {frame[col][r]}" for r in rows])


def bad_phone(frame: Frame, dmg: Damage, col: str = "phone") -> None:
    rows = dmg.rows(frame, "phone_format", col)
    kinds = dmg.rng.integers(0, 4, len(rows))
    frame[col][rows] = [broken_phone(frame[col][r], k) for r, k in zip(rows, kinds, strict=True)]
    dmg.log(rows, "phone_format", [f"{col} = {frame[col][r]}" for r in rows])


def name_typo(frame: Frame, dmg: Damage, col: str = "full_name") -> None:
    rows = dmg.rows(frame, "name_typo", col)
    pos, kinds = dmg.rng.random(len(rows)), dmg.rng.integers(0, 3, len(rows))
    before = frame[col][rows].copy()
    frame[col][rows] = [typo(frame[col][r], p, k) for r, p, k in zip(rows, pos, kinds, strict=True)]
    dmg.log(
        rows, "name_typo", [f"{b} -> {a}" for b, a in zip(before, frame[col][rows], strict=True)]
    )


def impossible_birth(frame: Frame, dmg: Damage, col: str = "birth_date") -> None:
    rows = dmg.rows(frame, "impossible_birth_date", col)
    years = np.where(dmg.rng.random(len(rows)) < 0.5, dmg.rng.integers(1800, 1900, len(rows)), 2090)
    frame[col][rows] = [
        f"{y}{frame[col][r][4:]}".replace("-02-29", "-02-28")
        for r, y in zip(rows, years, strict=True)
    ]
    dmg.log(rows, "impossible_birth_date", [f"{col} = {frame[col][r]}" for r in rows])


def off_scale(frame: Frame, dmg: Damage, columns: dict[str, tuple[int, int]]) -> None:
    for col, (low, high) in columns.items():
        rows = dmg.rows(frame, "rating_off_scale", col)
        frame[col][rows] = np.where(
            dmg.rng.random(len(rows)) < 0.5, low - 1, high + dmg.rng.integers(1, 6, len(rows))
        )
        dmg.log(rows, "rating_off_scale", [f"{col} = {frame[col][r]}" for r in rows])


def total_mismatch(frame: Frame, dmg: Damage) -> None:
    rows = dmg.rows(frame, "total_mismatch", "total_amount")
    before = frame["total_amount"][rows].copy()
    frame["total_amount"][rows] = np.round(
        before * dmg.rng.choice([0.5, 0.9, 1.1, 10.0], len(rows)), 2
    )
    dmg.log(
        rows,
        "total_mismatch",
        [
            f"total_amount {b} -> {a}"
            for b, a in zip(before, frame["total_amount"][rows], strict=True)
        ],
    )


def duplicate_rows(frame: Frame, dmg: Damage, header_lines: int) -> Frame:
    """Repeat some rows right after themselves; fixes every row's line number."""
    n = len(next(iter(frame.values())))
    twice = np.zeros(n, dtype=bool)
    twice[dmg.rows(frame, "duplicate_row")] = True
    reps = 1 + twice
    order = np.repeat(np.arange(n), reps)
    dmg.line_of = header_lines + (np.cumsum(reps) - reps) + 1
    copies = np.flatnonzero(twice)
    dmg.found.extend((int(r), "duplicate_row", f"repeats line {dmg.line_of[r]}", 1) for r in copies)
    return {c: v[order] for c, v in frame.items()}
