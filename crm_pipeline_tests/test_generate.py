"""The data generator: reproducible, counted, broken in recorded places, true to its manifest."""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import sqlite3
from datetime import date
from pathlib import Path

import pandas as pd
import pytest

from crm_pipeline import SettingError, landing
from crm_pipeline.generate import add_arguments, generate, run_from_args
from crm_pipeline.generate.run import NotADemoZone

SMALL = {"customers": 400, "days": 14, "start": date(2025, 11, 20)}


def tree_digest(*roots: Path) -> dict[str, str]:
    """sha256 of every file under the roots, summary.json without its wall-time field."""
    out = {}
    for root in roots:
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            data = path.read_bytes()
            if path.name == "summary.json":
                summary = json.loads(data)
                summary.pop("generation_seconds")
                data = json.dumps(summary, sort_keys=True).encode()
            out[f"{root.name}/{path.relative_to(root)}"] = hashlib.sha256(data).hexdigest()
    return out


def run(tmp: Path, **kw) -> tuple[Path, Path, dict]:
    out = tmp / "landing"
    summary = generate(out, **(SMALL | kw))
    return out, landing.ground_truth_dir_for(out), summary


def data_lines(path: Path) -> list[bytes]:
    lines = path.read_bytes().split(b"\n")
    return lines[:-1] if lines[-1] == b"" else lines


@pytest.fixture(scope="module")
def dirty(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict]:
    return run(tmp_path_factory.mktemp("dirty"), customers=1500, days=30, defect_rate=0.05)


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict]:
    return run(tmp_path_factory.mktemp("clean"), defect_rate=0.0)


def defects_of(truth: Path) -> pd.DataFrame:
    return pd.read_csv(truth / "defects.csv", dtype=str, keep_default_na=False)


def test_same_seed_gives_byte_identical_landing_zone_and_manifest(tmp_path: Path) -> None:
    first = run(tmp_path / "a")
    second = run(tmp_path / "b")
    assert tree_digest(first[0], first[1]) == tree_digest(second[0], second[1])


def test_a_different_seed_gives_different_data(tmp_path: Path) -> None:
    a, _, _ = run(tmp_path / "a", seed=1)
    b, _, _ = run(tmp_path / "b", seed=2)
    digests_a, digests_b = tree_digest(a), tree_digest(b)
    assert (
        digests_a["landing/reference/loyalty_members.csv"]
        != digests_b["landing/reference/loyalty_members.csv"]
    )
    assert digests_a["landing/online_shop.sqlite"] != digests_b["landing/online_shop.sqlite"]


def test_summary_counts_equal_the_rows_in_files_and_database(
    dirty: tuple[Path, Path, dict],
) -> None:
    out, _, summary = dirty
    for rel, expected in summary["data_lines_per_file"].items():
        header = 0 if rel.endswith(".jsonl") else 1
        assert len(data_lines(out / rel)) - header == expected, rel
    with sqlite3.connect(out / landing.SHOP_DATABASE_FILE) as db:
        for table in landing.SHOP_TABLES:
            assert (
                db.execute(f"select count(*) from {table.name}").fetchone()[0]
                == summary["rows"][table.name]
            )
    for source, per_day in summary["rows_per_day"].items():
        assert sum(per_day.values()) == summary["rows"][source]
        assert len(per_day) == summary["parameters"]["days"]
    assert 1.5 < summary["rows"]["order_items"] / summary["rows"]["orders"] < 3.5


def test_every_day_has_a_file_for_every_daily_source_even_when_empty(tmp_path: Path) -> None:
    out, _, _ = run(tmp_path, customers=3, days=7)
    for source in landing.DAILY_FILE_SOURCES:
        days = sorted(p.name for p in (out / source.folder).iterdir())
        assert days == [f"2025-11-{d}" for d in range(20, 27)]
        for day in days:
            files = source.files(out, day)
            assert len(files) == 1
            if files[0].suffix == ".csv":
                assert files[0].read_text().split("\n")[0].split(",")[0] == source.columns[0]


def test_each_broken_file_case_is_present_and_recorded(dirty: tuple[Path, Path, dict]) -> None:
    out, truth, _ = dirty
    broken = defects_of(truth)
    broken = broken[broken["defect"].isin(["truncated_file", "renamed_column", "non_utf8"])]
    files = {(r.defect, r.source): r for r in broken.itertuples()}
    assert set(files) >= {
        ("truncated_file", "store_purchases"),
        ("truncated_file", "inquiries"),
        ("renamed_column", "feedback"),
        ("non_utf8", "feedback"),
        ("non_utf8", "inquiries"),
    }
    pos = files[("truncated_file", "store_purchases")]
    raw = (out / pos.file).read_bytes()
    assert not raw.endswith(b"\n")
    assert len(raw.split(b"\n")) == int(pos.line)
    assert len(raw.split(b"\n")[-1].split(b",")) < len(landing.STORE_PURCHASES.columns)
    jsonl = files[("truncated_file", "inquiries")]
    last = (out / jsonl.file).read_bytes().split(b"\n")[-1]
    with pytest.raises(json.JSONDecodeError):
        json.loads(last)
    header = (
        (out / files[("renamed_column", "feedback")].file).read_text().split("\n")[0].split(",")
    )
    assert "nps_score" in header and "nps" not in header
    for source in ("feedback", "inquiries"):
        rows = broken[(broken["defect"] == "non_utf8") & (broken["source"] == source)]
        lines = (out / rows["file"].iloc[0]).read_bytes().split(b"\n")
        for line in rows["line"].astype(int):
            with pytest.raises(UnicodeDecodeError):
                lines[line - 1].decode("utf-8")


def test_recorded_defects_point_at_the_damaged_line(dirty: tuple[Path, Path, dict]) -> None:
    out, truth, _ = dirty
    found = defects_of(truth)
    in_files = found[
        (found["line"] != "")
        & found["defect"].isin(["duplicate_row", "future_date", "unknown_sku"])
    ]
    assert set(in_files["defect"]) == {"duplicate_row", "future_date", "unknown_sku"}
    for row in in_files.itertuples():
        lines = (out / row.file).read_bytes().split(b"\n")
        line = int(row.line)
        if row.defect == "duplicate_row":
            assert lines[line - 1] == lines[line - 2], row
        else:
            assert row.detail.split(" = ")[1].encode() in lines[line - 1], row
    assert {"reexported_order", "negative_price", "missing_required", "name_typo"} <= set(
        found["defect"]
    )


def test_reexported_orders_appear_twice_with_their_items(dirty: tuple[Path, Path, dict]) -> None:
    out, truth, _ = dirty
    again = defects_of(truth).query("defect == 'reexported_order'")["record_id"]
    with sqlite3.connect(out / landing.SHOP_DATABASE_FILE) as db:
        orders = pd.read_sql("select order_id from orders", db)["order_id"].value_counts()
    assert set(orders[orders == 2].index) == set(again)


def test_no_defects_and_no_broken_files_at_defect_rate_zero(clean: tuple[Path, Path, dict]) -> None:
    out, truth, summary = clean
    assert summary["defects"] == {}
    assert defects_of(truth).empty
    for source in (*landing.DAILY_FILE_SOURCES, *landing.REFERENCE_FILES):
        for path in (out / source.folder).rglob(source.pattern):
            text = path.read_bytes().decode("utf-8")
            assert text == "" or text.endswith("\n")
            if path.suffix == ".jsonl":
                assert all(
                    json.loads(line)["topic"] in landing.INQUIRY_TOPICS
                    for line in text.splitlines()
                )
            else:
                rows = list(csv.reader(io.StringIO(text)))
                assert tuple(rows[0]) == source.columns
                assert all(len(r) == len(source.columns) for r in rows)
    with sqlite3.connect(out / landing.SHOP_DATABASE_FILE) as db:
        mismatch = db.execute("""
            select count(*) from orders o
            join (
                select order_id, sum(quantity * unit_price - discount) as net
                from order_items
                group by order_id
            ) i
              on i.order_id = o.order_id
            where abs(o.total_amount - i.net) > 0.01
        """).fetchone()[0]
        assert mismatch == 0
        assert (
            db.execute("select count(*) - count(distinct order_id) from orders").fetchone()[0] == 0
        )


def test_every_identity_refers_to_a_record_that_exists(dirty: tuple[Path, Path, dict]) -> None:
    out, truth, _ = dirty
    identities = pd.read_csv(truth / "identities.csv", dtype=str)
    # A record whose id was blanked or cut off is still a true identity, but cannot be found by id.
    lost = set(
        defects_of(truth).query("defect in ['missing_required', 'truncated_file']")["record_id"]
    )
    with sqlite3.connect(out / landing.SHOP_DATABASE_FILE) as db:
        accounts = set(pd.read_sql("select account_id from accounts", db)["account_id"])
    cards = set(pd.read_csv(out / "reference/loyalty_members.csv", dtype=str)["card_no"])
    seen: dict[str, set[str]] = {"online_accounts": accounts, "loyalty_members": cards}
    for source, key in (
        ("store_purchases", "receipt_id"),
        ("feedback", "response_id"),
        ("inquiries", "inquiry_id"),
    ):
        ids: set[str] = set()
        for path in (out / source).rglob("*.*"):
            for line in (
                path.read_bytes()
                .decode("utf-8", errors="replace")
                .splitlines()[1 if source != "inquiries" else 0 :]
            ):
                ids.add(json.loads(line).get(key) if line.endswith("}") else line.split(",")[0])
        seen[source] = ids
    for source, group in identities.groupby("source"):
        missing = set(group["source_id"]) - seen[source] - lost
        assert not missing, (source, sorted(missing)[:5])
    assert identities["person_id"].str.fullmatch(r"P\d{7}").all()
    assert set(identities["source"]) == {
        "online_accounts",
        "loyalty_members",
        "store_purchases",
        "inquiries",
        "feedback",
    }


def test_complainers_rate_their_experience_lower(tmp_path: Path) -> None:
    out, truth, _ = run(tmp_path, customers=3000, days=60, defect_rate=0.0)
    ids = pd.read_csv(truth / "identities.csv", dtype=str)
    inquiries = pd.concat(
        pd.read_json(p, lines=True, dtype=False)
        for p in (out / "inquiries").rglob("*.jsonl")
        if p.stat().st_size
    )
    complained = set(
        ids.merge(
            inquiries.query("topic == 'complaint'"), left_on="source_id", right_on="inquiry_id"
        )["person_id"]
    )
    survey = pd.concat(
        pd.read_csv(p, dtype={"response_id": str}) for p in (out / "feedback").rglob("*.csv")
    )
    survey = survey.merge(ids, left_on="response_id", right_on="source_id")
    by = survey.groupby(survey["person_id"].isin(complained))["nps"].mean()
    assert by[True] < by[False] - 1


def test_cli_flags_reach_the_generator(tmp_path: Path) -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(
        [
            "--out",
            str(tmp_path / "landing"),
            "--customers",
            "50",
            "--start",
            "2025-03-01",
            "--days",
            "3",
            "--seed",
            "7",
            "--defect-rate",
            "0",
            "--locales",
            "en_US=0.5,zh_CN=0.5",
            "--shop-url",
            f"sqlite:///{tmp_path / 'shop.db'}",
            "--manifest-dir",
            str(tmp_path / "truth"),
        ]
    )
    summary = run_from_args(args)
    assert summary["parameters"] == {
        "seed": 7,
        "customers": 50,
        "start": "2025-03-01",
        "days": 3,
        "defect_rate": 0.0,
        "locales": {"en_US": 0.5, "zh_CN": 0.5},
    }
    assert (tmp_path / "shop.db").exists() and (tmp_path / "truth" / "summary.json").exists()


def test_a_folder_the_generator_did_not_write_is_left_as_it_was(tmp_path: Path) -> None:
    out = tmp_path / "landing"
    delivery = out / "store_purchases" / "2025-11-20" / "pos_export.csv"
    delivery.parent.mkdir(parents=True)
    delivery.write_text("receipt_id\nR1\n", encoding="utf-8")
    with pytest.raises(NotADemoZone, match="not written by crm-pipeline generate"):
        generate(out, **SMALL)
    assert delivery.read_text(encoding="utf-8") == "receipt_id\nR1\n"
    assert sorted(p.name for p in out.iterdir()) == ["store_purchases"]


def test_a_demo_zone_is_replaced_only_once_every_option_is_valid(tmp_path: Path) -> None:
    out, _, _ = run(tmp_path)
    before = tree_digest(out)
    with pytest.raises(SettingError, match="Faker has no locale xx_YY"):
        generate(out, **SMALL, locales={"xx_YY": 1.0})
    assert tree_digest(out) == before  # nothing deleted
    generate(out, **(SMALL | {"seed": 43}))
    assert tree_digest(out) != before


def test_a_zone_generated_before_the_mark_is_replaced_and_a_shop_database_in_use_is_not(
    tmp_path: Path,
) -> None:
    out, _, _ = run(tmp_path)
    (out / ".crm-pipeline-demo").unlink()  # as zones written before the mark are
    generate(out, **(SMALL | {"seed": 43}))  # its ground truth beside it says it is a demo
    shop = tmp_path / "shop.sqlite"
    with sqlite3.connect(shop) as db:
        db.execute("CREATE TABLE orders (order_id TEXT)")
        db.execute("INSERT INTO orders VALUES ('O1')")
    with pytest.raises(NotADemoZone, match=r"already holds shop tables \['orders'\]"):
        generate(tmp_path / "elsewhere", **SMALL, shop_url=f"sqlite:///{shop}")
    with sqlite3.connect(shop) as db:
        assert db.execute("SELECT order_id FROM orders").fetchall() == [("O1",)]
