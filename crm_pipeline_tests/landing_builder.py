"""A tiny hand-made landing zone for raw-layer tests: a few rows per source, defects placed by hand."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import sqlalchemy as sa

from crm_pipeline import landing

DAY1, DAY2 = "2025-01-01", "2025-01-02"


def write_csv(path: Path, header: list[str], rows: list[list[object]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
    return path


def write_shop(url: str) -> None:
    engine = sa.create_engine(url)
    meta = sa.MetaData()
    tables = {
        t.name: sa.Table(t.name, meta, *[sa.Column(c, sa.String) for c in t.columns])
        for t in landing.SHOP_TABLES
    }
    tables["order_items"].append_column(sa.Column("gift_wrap", sa.String))
    meta.drop_all(engine)
    meta.create_all(engine)
    accounts = [
        (
            "A1",
            "ann@example.com",
            "+1 415 555 0100",
            "Ann Lee",
            "f",
            "1990-04-01",
            "1 Main St",
            "Springfield",
            "individual",
            None,
            "52000",
            "2024-12-01 09:00:00",
        ),
        (
            "A2",
            "bo@example.com",
            "(415) 555-0101",
            "Bo Chen",
            "m",
            "1985-02-02",
            "2 Oak Ave",
            "Springfield",
            "individual",
            None,
            None,
            "2024-12-02 10:00:00",
        ),
    ]
    orders = [
        ("O1", "A1", f"{DAY1} 10:00:00", "completed", "card", "USD", "30.0"),
        ("O2", "A2", f"{DAY2} 11:00:00", "completed", "card", "USD", "12.5"),
        ("O2", "A2", f"{DAY2} 11:00:00", "completed", "card", "USD", "12.5"),  # re-exported
        ("O3", "A1", "2031-06-01 10:00:00", "completed", "card", "USD", "5.0"),  # future
        ("O4", "A1", None, "completed", "card", "USD", "5.0"),  # no date
    ]
    items = [
        ("O1", "1", "SKU1", "2", "10.0", "0", None),
        ("O1", "2", "SKU2", "1", "10.0", "0", "yes"),
        ("O2", "1", "SKU1", "1", "12.5", "0", None),
        ("O3", "1", "SKU1", "1", "5.0", "0", None),
        ("O9", "1", "SKU1", "1", "5.0", "0", None),  # orphan: no such order
    ]
    with engine.begin() as conn:
        for name, rows in (("accounts", accounts), ("orders", orders), ("order_items", items)):
            table = tables[name]
            conn.execute(table.insert(), [dict(zip(table.columns.keys(), r)) for r in rows])


def build(root: Path) -> Path:
    """Write the zone; returns its root. Known contents are asserted by the tests."""
    write_shop(landing.shop_url_for(root))
    pos = list(landing.STORE_PURCHASES.columns)
    write_csv(
        root / "store_purchases" / DAY1 / "pos.csv",
        pos,
        [
            ["R1", "S1", f"{DAY1} 09:00:00", "C1", "", "SKU1", "1", "10.0", "cash"],
            ["R1", "S1", f"{DAY1} 09:00:00", "C1", "", "SKU2", "2", "5.0", "cash"],
            ["R2", "S1", f"{DAY1} 12:00:00", "", "4155550100", "SKU1", "1", "10.0", "card"],
        ],
    )
    # Day 2: a Latin-1 line, then a file cut off in the middle of its last line.
    day2 = root / "store_purchases" / DAY2 / "pos.csv"
    write_csv(day2, pos, [["R3", "S2", f"{DAY2} 09:00:00", "", "", "SKU1", "1", "10.0", "cash"]])
    with day2.open("ab") as f:
        f.write(f"R4,S2,{DAY2} 10:00:00,,,SKU2,1,5.0,caf".encode() + "\u00e9\n".encode("latin-1"))
        f.write(f"R5,S2,{DAY2} 11:00:00,,,SKU1,1,10.0,cash\n".encode())
        f.write(f"R6,S2,{DAY2} 11:30:00,,,SK".encode())

    inquiry = {c: None for c in landing.INQUIRIES.columns}
    lines = [
        json.dumps(
            {
                **inquiry,
                "inquiry_id": "I1",
                "topic": "complaint",
                "text": "broken\nlid",
                "opened_at": f"{DAY1} 08:00:00",
                "priority": "high",
            }
        ),
        json.dumps({**inquiry, "inquiry_id": "I2", "topic": "pre_sales"}),
        '{"inquiry_id": "I3", "topic": "comp',
    ]
    path = root / "inquiries" / DAY1 / "helpdesk.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines), encoding="utf-8")
    (root / "inquiries" / DAY2).mkdir(parents=True)
    (root / "inquiries" / DAY2 / "helpdesk.jsonl").write_text("", encoding="utf-8")

    answers = ["4", "3"] * len(landing.NEED_DIMENSIONS)
    survey = list(landing.FEEDBACK.columns)
    write_csv(
        root / "feedback" / DAY1 / "survey.csv",
        survey,
        [
            ["F1", f"{DAY1} 18:00:00", "A1", "", "", "5", "9", *answers, "great,\nreally"],
            ["F2", f"{DAY1} 19:00:00", "", "bo@example.com", "", "2", "3", *answers, ""],
        ],
    )
    renamed = ["nps_score" if c == "nps" else c for c in survey]
    write_csv(
        root / "feedback" / DAY2 / "survey.csv",
        renamed,
        [
            ["F3", f"{DAY2} 18:00:00", "A2", "", "", "4", "8", *answers, "ok"],
        ],
    )

    write_csv(
        root / "reference" / "products.csv",
        list(landing.PRODUCTS.columns),
        [
            ["SKU1", "Kettle", "Kitchen", "Appliances", "physical", "10.0", "6.0"],
            ["SKU2", "Setup call", "Services", "Support", "service", "5.0", "1.0"],
        ],
    )
    write_csv(
        root / "reference" / "stores.csv",
        list(landing.STORES.columns),
        [
            ["S1", "Springfield", "West"],
            ["S2", "Shelbyville", "West"],
        ],
    )
    write_csv(
        root / "reference" / "loyalty_members.csv",
        list(landing.LOYALTY_MEMBERS.columns),
        [
            [
                "C1",
                "ANN LEE",
                "415-555-0100",
                "Ann.Lee@example.com",
                "1990-04-01",
                "1 Main St",
                "",
                "2024-06-01",
            ],
        ],
    )
    return root
