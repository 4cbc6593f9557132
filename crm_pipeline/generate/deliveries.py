"""Each source's delivery: damage the records, write the file or table, log it in the manifest.

Broken files are placed deterministically: each kind is planned for a fixed fraction of the
range and lands on the first day from then on whose file has at least two records.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from crm_pipeline.generate import defects as dx
from crm_pipeline.generate.manifest import Manifest
from crm_pipeline.generate.world import Frame
from crm_pipeline.generate.writers import (
    LATIN_TEXT,
    ShopDatabase,
    csv_lines,
    jsonl_lines,
    write_lines,
)
from crm_pipeline.landing import FEEDBACK, INQUIRIES, NEED_DIMENSIONS, STORE_PURCHASES, FileSource

BROKEN_AT = {  # kind of broken file -> where in the range it is planned
    "pos_truncated": 0.15,
    "jsonl_truncated": 0.3,
    "renamed_column": 0.45,
    "csv_non_utf8": 0.6,
    "jsonl_non_utf8": 0.75,
}
SOURCE_TAGS = {
    "accounts": 1,
    "loyalty_members": 2,
    "orders": 3,
    "store_purchases": 4,
    "inquiries": 5,
    "feedback": 6,
}
RATINGS = {
    "satisfaction_rating": (1, 5),
    "nps": (0, 10),
    f"need_{NEED_DIMENSIONS[0]}_importance": (1, 5),
}


def _id(value: object) -> str:
    return "" if value is None or value == dx.ABSENT else str(value)


class Deliveries:
    """Writes every source's records for one run; holds the broken-file plan."""

    def __init__(
        self, out: Path, manifest: Manifest, shop: ShopDatabase, seed: int, rate: float, days: int
    ) -> None:
        self.out, self.manifest, self.shop, self.seed, self.rate = out, manifest, shop, seed, rate
        self.pending = (
            {k: int(days * f) for k, f in BROKEN_AT.items()} if rate > 0 and days >= 7 else {}
        )

    def damage(self, source: str, d: int, frame: Frame, key: str | None) -> dx.Damage:
        seq = np.random.SeedSequence([self.seed, SOURCE_TAGS[source], d])
        return dx.Damage(np.random.Generator(np.random.PCG64(seq)), self.rate, frame, key)

    def _due(self, kind: str, d: int, rows: int) -> bool:
        if kind in self.pending and self.pending[kind] <= d and rows >= 2:
            del self.pending[kind]
            return True
        return False

    def accounts(self, frame: Frame, chunk: int) -> None:
        dmg = self.damage("accounts", chunk, frame, "account_id")
        dx.blank(frame, dmg, ("created_at",), "missing_required")
        dx.blank(frame, dmg, ("phone",), "missing_optional")
        dx.name_typo(frame, dmg)
        dx.bad_email(frame, dmg)
        dx.bad_phone(frame, dmg)
        dx.impossible_birth(frame, dmg)
        frame = dx.duplicate_rows(frame, dmg, 0)
        dmg.line_of = None
        self.manifest.defects(dmg.records("accounts", "", "accounts"))
        self.manifest.delivered("accounts", None, self.shop.insert("accounts", frame))

    def loyalty(self, frame: Frame, columns: tuple[str, ...], relpath: str) -> None:
        dmg = self.damage("loyalty_members", 0, frame, "card_no")
        dx.name_typo(frame, dmg)
        dx.bad_email(frame, dmg)
        dx.bad_phone(frame, dmg)
        dx.impossible_birth(frame, dmg)
        frame = dx.duplicate_rows(frame, dmg, 1)
        self.manifest.defects(dmg.records("loyalty_members", "", relpath))
        self.reference(frame, columns, relpath, "loyalty_members")

    def reference(self, frame: Frame, columns: tuple[str, ...], relpath: str, source: str) -> None:
        lines = csv_lines(columns, frame)
        write_lines(self.out / relpath, lines)
        self.manifest.delivered(source, None, len(lines) - 1, relpath)

    def orders(self, d: int, day: str, orders: Frame, items: Frame) -> None:
        dmg = self.damage("orders", d, orders, "order_id")
        dx.blank(orders, dmg, ("account_id", "ordered_at"), "missing_required")
        dx.future_date(orders, dmg, "ordered_at")
        dx.total_mismatch(orders, dmg)
        twice = dmg.rows(orders, "reexported_order")
        chosen = np.zeros(len(orders["order_id"]), dtype=bool)
        chosen[twice] = True
        again = chosen[pd.Index(orders["order_id"]).get_indexer(items["order_id"])]
        dmg.log(
            twice,
            "reexported_order",
            [
                f"order and its {k} items exported twice"
                for k in np.bincount(
                    np.searchsorted(orders["order_id"][twice], items["order_id"][again]),
                    minlength=len(twice),
                )
            ],
        )
        idmg = self.damage("orders", d + 100_000, items, "order_id")
        dx.blank(items, idmg, ("sku",), "missing_required")
        dx.negative_price(items, idmg, "unit_price")
        dx.unknown_sku(items, idmg)
        orders = {c: np.concatenate([v, v[twice]]) for c, v in orders.items()}
        items = {c: np.concatenate([v, v[again]]) for c, v in items.items()}
        self.manifest.defects(
            dmg.records("orders", day, "orders") + idmg.records("order_items", day, "order_items")
        )
        self.manifest.delivered("orders", day, self.shop.insert("orders", orders))
        self.manifest.delivered("order_items", day, self.shop.insert("order_items", items))

    def receipts(self, d: int, day: str, frame: Frame) -> None:
        dmg = self.damage("store_purchases", d, frame, "receipt_id")
        dx.blank(frame, dmg, ("receipt_id", "purchased_at", "sku"), "missing_required")
        dx.negative_price(frame, dmg, "unit_price")
        dx.future_date(frame, dmg, "purchased_at")
        dx.unknown_sku(frame, dmg)
        dx.bad_phone(frame, dmg)
        frame = dx.duplicate_rows(frame, dmg, 1)
        self._file(STORE_PURCHASES, "pos_export.csv", d, day, frame, dmg, truncate="pos_truncated")

    def inquiries(self, d: int, day: str, frame: Frame) -> None:
        dmg = self.damage("inquiries", d, frame, "inquiry_id")
        dx.blank(frame, dmg, ("inquiry_id", "opened_at"), "missing_required", absent=True)
        dx.blank(frame, dmg, ("email", "phone"), "missing_optional")
        dx.future_date(frame, dmg, "opened_at")
        dx.unknown_sku(frame, dmg)
        dx.bad_email(frame, dmg)
        dx.bad_phone(frame, dmg)
        frame = dx.duplicate_rows(frame, dmg, 0)
        self._file(
            INQUIRIES,
            "helpdesk.jsonl",
            d,
            day,
            frame,
            dmg,
            truncate="jsonl_truncated",
            latin="jsonl_non_utf8",
            text="text",
        )

    def feedback(self, d: int, day: str, frame: Frame) -> None:
        dmg = self.damage("feedback", d, frame, "response_id")
        dx.blank(frame, dmg, ("response_id", "submitted_at"), "missing_required")
        dx.blank(frame, dmg, ("email", "comment"), "missing_optional")
        dx.future_date(frame, dmg, "submitted_at")
        dx.bad_email(frame, dmg)
        dx.bad_phone(frame, dmg)
        dx.off_scale(frame, dmg, RATINGS)
        frame = dx.duplicate_rows(frame, dmg, 1)
        self._file(
            FEEDBACK,
            "survey.csv",
            d,
            day,
            frame,
            dmg,
            latin="csv_non_utf8",
            text="comment",
            rename="renamed_column",
        )

    def _file(
        self,
        source: FileSource,
        name: str,
        d: int,
        day: str,
        frame: Frame,
        dmg: dx.Damage,
        *,
        truncate: str = "",
        latin: str = "",
        text: str = "",
        rename: str = "",
    ) -> None:
        relpath = f"{source.folder}/{day}/{name}"
        rows = len(frame[source.columns[0]])
        header = 0 if name.endswith(".jsonl") else 1
        ids = frame[source.columns[0]]
        broken: list[dx.DefectRow] = []
        latin_rows: tuple[int, ...] = ()
        if latin and self._due(latin, d, rows):
            # Rows that are not one of an exact duplicate pair, so the pair stays identical.
            single = [
                r
                for r in range(rows)
                if (r == 0 or ids[r] != ids[r - 1]) and (r + 1 == rows or ids[r] != ids[r + 1])
            ]
            latin_rows = tuple(single[:: max(1, len(single) // 3)])[:3]
            frame[text] = frame[text].copy()
            frame[text][list(latin_rows)] = LATIN_TEXT
            broken += [
                (
                    source.name,
                    day,
                    relpath,
                    _id(ids[r]),
                    r + 1 + header,
                    "non_utf8",
                    f"{text} encoded as cp1252",
                )
                for r in latin_rows
            ]
        lines = (jsonl_lines if header == 0 else csv_lines)(source.columns, frame)
        if rename and self._due(rename, d, rows):
            lines[0] = lines[0].replace(",nps,", ",nps_score,")
            broken.append(
                (source.name, day, relpath, "", 1, "renamed_column", "nps renamed to nps_score")
            )
        cut = bool(truncate) and self._due(truncate, d, rows)
        if cut:
            broken.append(
                (
                    source.name,
                    day,
                    relpath,
                    _id(ids[-1]),
                    len(lines),
                    "truncated_file",
                    "last line cut off mid-record, no final newline",
                )
            )
        write_lines(
            self.out / relpath, lines, truncate=cut, latin=tuple(r + header for r in latin_rows)
        )
        self.manifest.defects(dmg.records(source.name, day, relpath) + broken)
        self.manifest.delivered(source.name, day, rows, relpath, len(lines) - header)
