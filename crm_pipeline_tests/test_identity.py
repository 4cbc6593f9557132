"""Identity resolution on hand-made records: the hard cases stay apart, the same person across
channels gets one key, and keys stay stable (merges recorded) from one load to the next."""

from __future__ import annotations

import hashlib
import hmac
import re
from datetime import datetime
from itertools import permutations

import duckdb
import pandas as pd

from crm_pipeline.core import identity
from crm_pipeline.core.crosswalk import pairwise_scores
from crm_pipeline.core.identity import COLUMNS, load_records
from crm_pipeline.core.keys import assign_keys, new_key
from crm_pipeline.staging.build import ensure_tables
from crm_pipeline.staging.rules import SOURCES as STAGING_SOURCES

T0 = datetime(2025, 1, 1)
SECRET = b"a test secret of at least 32 characters"
NO_KEYS = pd.DataFrame(columns=["source", "source_id", "customer_key", "key_since"])


def _records(*rows: dict) -> pd.DataFrame:
    frame = pd.DataFrame([{c: row.get(c) for c in COLUMNS} for row in rows])
    frame["seen_at"] = frame["seen_at"].fillna(T0)
    return frame


def account(i: str, **values) -> dict:
    return {"source": "online_accounts", "source_id": i, "account_id": i, **values}


def member(card: str, **values) -> dict:
    return {"source": "loyalty_members", "source_id": card, "card_no": card, **values}


def receipt(i: str, **values) -> dict:
    return {"source": "store_purchases", "source_id": i, **values}


def resolve(records: pd.DataFrame) -> pd.DataFrame:
    """Resolve hand-made records in a throwaway DuckDB; one row per record with its component."""
    conn = duckdb.connect()
    conn.register("frame", records)
    typed = ", ".join(
        f"CAST({c} AS {'DATE' if c == 'birth_date' else 'TIMESTAMP' if c == 'seen_at' else 'VARCHAR'}) AS {c}"
        for c in COLUMNS
    )
    load_records(conn, f"SELECT {typed} FROM frame")
    links = identity.resolve(conn)
    ids = conn.execute("SELECT rid, source, source_id, seen_at FROM id_records").df()
    return ids.merge(links, on="rid")


def _keyed(resolved: pd.DataFrame, previous: pd.DataFrame, now: datetime, secret: bytes = SECRET):
    """Each record with its key (the crosswalk), and the merges."""
    conn = duckdb.connect()
    conn.register("resolved", resolved[["source", "source_id", "seen_at", "component"]])
    conn.register("previous", previous[["source", "source_id", "customer_key", "key_since"]])
    merges = assign_keys(conn, now, secret)
    keys = conn.execute("SELECT * FROM component_keys").df()
    return resolved.merge(keys, on="component"), merges


def _groups(resolved: pd.DataFrame) -> set[frozenset[str]]:
    return {frozenset(g["source_id"]) for _, g in resolved.groupby("component")}


def test_one_person_across_account_card_receipts_and_survey_is_one_customer() -> None:
    resolved = resolve(
        _records(
            account("A1", email="anna@gmail.com", phone="+4930111", name_key="anna berg"),
            member("LC1", email=None, phone="+4930111", name_key="anna berg"),
            receipt("R1", card_no="LC1"),
            receipt("R2", phone="+4930111"),
            {"source": "feedback", "source_id": "F1", "email": "anna@gmail.com"},
            {"source": "inquiries", "source_id": "I1", "account_id": "A1"},
        )
    )
    assert _groups(resolved) == {frozenset({"A1", "LC1", "R1", "R2", "F1", "I1"})}
    rules = dict(zip(resolved["source_id"], resolved["match_rule"], strict=True))
    assert rules["R1"] == "loyalty_card" and rules["R2"] == "phone" and rules["F1"] == "email"


def test_a_family_sharing_one_phone_stays_apart_and_a_phone_only_receipt_is_not_guessed() -> None:
    resolved = resolve(
        _records(
            account(
                "A1", email="tom.lee@x.com", phone="+1415", name_key="lee tom", address="1 Oak St"
            ),
            account(
                "A2", email="amy.lee@x.com", phone="+1415", name_key="amy lee", address="1 Oak St"
            ),
            receipt("R1", phone="+1415"),
        )
    )
    assert _groups(resolved) == {frozenset({"A1"}), frozenset({"A2"}), frozenset({"R1"})}
    assert resolved.set_index("source_id").loc["R1", "match_rule"] == "unresolved_shared_phone"


def test_two_people_with_the_same_common_name_stay_apart() -> None:
    resolved = resolve(
        _records(
            account(
                "A1",
                email="w1@qq.com",
                name_key="wang wei",
                birth_date=pd.Timestamp("1980-01-02"),
                address="1 A Rd, Beijing",
            ),
            member(
                "LC1",
                email="w2@qq.com",
                name_key="wang wei",
                birth_date=pd.Timestamp("1991-05-06"),
                address="9 B Rd, Shanghai",
            ),
        )
    )
    assert len(_groups(resolved)) == 2


def test_a_company_and_its_employee_stay_apart() -> None:
    resolved = resolve(
        _records(
            account(
                "A1",
                email="ceo@acme.com",
                phone="+4989",
                name_key="hans maier",
                address="Hauptstr 1, Munich",
            ),
            account(
                "A2",
                email="eva@gmx.de",
                phone="+4989",
                name_key="eva kurz",
                address="Hauptstr 1, Munich",
            ),
        )
    )
    assert len(_groups(resolved)) == 2


def test_a_typo_with_the_same_address_is_the_same_person() -> None:
    resolved = resolve(
        _records(
            account(
                "A1", email="rodney@x.com", name_key="rodney smith", address="5 Elm St, Boston"
            ),
            member("LC1", name_key="rdney smith", address="5 Elm St, Boston"),
        )
    )
    assert _groups(resolved) == {frozenset({"A1", "LC1"})}
    assert set(resolved["match_rule"]) == {"name_and_address"}


def test_keys_are_stable_across_loads_and_a_merge_is_recorded() -> None:
    first = _records(
        account("A1", email="a@x.com", name_key="ann lee"),
        account("A2", email="b@x.com", name_key="bob ray"),
        account("A3", email="c@x.com", name_key="cy dee"),
    )
    keyed, merges = _keyed(resolve(first), NO_KEYS, T0)
    assert merges.empty and keyed["customer_key"].nunique() == 3
    before = dict(zip(keyed["source_id"], keyed["customer_key"], strict=True))
    # Re-running gives the same keys.
    again, _ = _keyed(resolve(first), keyed, datetime(2025, 1, 2))
    assert dict(zip(again["source_id"], again["customer_key"], strict=True)) == before
    # A later survey links A1 and A2 (the same mailbox as A2, the account id of A1).
    later = pd.concat(
        [
            first,
            _records(
                {"source": "feedback", "source_id": "F1", "account_id": "A1", "email": "b@x.com"}
            ),
        ],
        ignore_index=True,
    )
    keys_then = keyed.assign(key_since=[T0, datetime(2025, 1, 5), T0])
    merged, merges = _keyed(resolve(later), keys_then, datetime(2025, 2, 1))
    after = dict(zip(merged["source_id"], merged["customer_key"], strict=True))
    assert after["A1"] == after["A2"] == after["F1"] == before["A1"]  # the older key survives
    assert after["A3"] == before["A3"]
    assert merges[["retired_key", "surviving_key"]].values.tolist() == [
        [before["A2"], before["A1"]]
    ]


def test_new_keys_are_pseudonymous_and_reproducible() -> None:
    records = _records(account("A1", email="a@x.com"), account("A2", email="b@x.com"))
    one, _ = _keyed(resolve(records), NO_KEYS, T0)
    two, _ = _keyed(resolve(records), NO_KEYS, datetime(2026, 1, 1))
    assert one["customer_key"].tolist() == two["customer_key"].tolist()
    assert all(re.fullmatch(r"C[0-9A-F]{16}", k) for k in one["customer_key"])
    assert one["customer_key"].nunique() == 2
    # HMAC-SHA256 of the first record with the secret, as Python's hmac computes it; the
    # plain hash of the id (what anyone holding the ids could compute) is no key.
    keys = one.set_index("source_id")["customer_key"]
    for account_id in ("A1", "A2"):
        digest = hmac.new(SECRET, f"online_accounts:{account_id}#0".encode(), hashlib.sha256)
        assert keys[account_id] == "C" + digest.hexdigest()[:16].upper()
        plain = hashlib.sha256(f"online_accounts:{account_id}#0".encode()).hexdigest()
        assert keys[account_id] != "C" + plain[:16].upper()
    other, _ = _keyed(resolve(records), NO_KEYS, T0, b"another secret, at least 32 characters")
    assert not set(other["customer_key"]) & set(one["customer_key"])


def test_a_rebuild_from_scratch_gives_the_keys_anchored_on_the_earliest_record() -> None:
    opened = _records(account("A1", email="a@x.com", seen_at=datetime(2024, 5, 1)))
    first, _ = _keyed(resolve(opened), NO_KEYS, T0)
    # A survey that sorts before the account by id, but came later, joins the customer.
    survey = {"source": "feedback", "source_id": "F1", "account_id": "A1"}
    both = pd.concat([opened, _records({**survey, "seen_at": datetime(2025, 2, 1)})])
    rebuilt, _ = _keyed(resolve(both.reset_index(drop=True)), NO_KEYS, datetime(2025, 3, 1))
    assert set(rebuilt["customer_key"]) == {first["customer_key"].iloc[0]}


def test_a_new_key_that_clashes_with_a_customer_seen_before_is_salted() -> None:
    records = _records(account("A1", email="a@x.com"), account("A2", email="b@x.com"))
    resolved = resolve(records)
    # A1 already holds the key A2's first record hashes to.
    clashing = new_key("online_accounts:A2", 0, SECRET)
    previous = pd.DataFrame(
        [
            {
                "source": "online_accounts",
                "source_id": "A1",
                "customer_key": clashing,
                "key_since": T0,
            }
        ]
    )
    keyed, merges = _keyed(resolved, previous, T0)
    keys = keyed.set_index("source_id")["customer_key"]
    assert keys["A1"] == clashing
    assert keys["A2"] == new_key("online_accounts:A2", 1, SECRET)
    assert merges.empty


def test_a_retired_key_is_never_given_out_again() -> None:
    records = _records(account("A1", email="a@x.com"), account("A2", email="b@x.com"))
    keyed, _ = _keyed(resolve(records), NO_KEYS, T0)
    retired = keyed.set_index("source_id").loc["A2", "customer_key"]
    conn = duckdb.connect()
    # A2 was merged away earlier; now it stands alone again and must get a fresh key.
    alone = resolve(records[records["source_id"] == "A2"].reset_index(drop=True))
    conn.register("resolved", alone[["source", "source_id", "seen_at", "component"]])
    conn.register("previous", NO_KEYS)
    assign_keys(conn, T0, SECRET, frozenset({retired}))
    (key,) = conn.execute("SELECT customer_key FROM component_keys").fetchone()
    assert key != retired


def test_a_receipt_whose_lines_disagree_takes_the_card_and_phone_of_its_first_line() -> None:
    conn = duckdb.connect()
    for source in STAGING_SOURCES.values():
        ensure_tables(conn, source)
    # The second line comes first in the table; its phone lost a digit.
    lines = [(2, "+491784918332", "LC9"), (1, "+4917849183323", "LC1"), (3, None, None)]
    for line, phone, card in lines:
        conn.execute(
            "INSERT INTO staging.store_purchases (receipt_id, purchased_at, phone, loyalty_card, "
            "source_file, source_line, loaded_at) VALUES ('R1', ?, ?, ?, 'pos.csv', ?, ?)",
            [T0, phone, card, line, T0],
        )
    load_records(conn)
    record = conn.execute(
        "SELECT phone, card_no FROM id_records WHERE source = 'store_purchases'"
    ).fetchall()
    assert record == [("+4917849183323", "LC1")]


def test_two_accounts_with_a_city_but_no_street_are_not_one_address() -> None:
    conn = duckdb.connect()
    for source in STAGING_SOURCES.values():
        ensure_tables(conn, source)
    for account_id, street in (
        ("A1", None),
        ("A2", None),
        ("A3", "1 Rue Haute"),
        ("A4", "1 Rue Haute"),
    ):
        conn.execute(
            "INSERT INTO staging.online_accounts (account_id, name_key, address, city, created_at, "
            "source_file, source_line, loaded_at) VALUES (?, 'marie dubois', ?, 'Paris', ?, "
            "'shop', 1, ?)",
            [account_id, street, T0, T0],
        )
    load_records(conn)
    ids = conn.execute("SELECT rid, source_id FROM id_records").df()
    groups = _groups(ids.merge(identity.resolve(conn), on="rid"))
    # The same name at the same street is one person; the same name in the same city is not.
    assert groups == {frozenset({"A1"}), frozenset({"A2"}), frozenset({"A3", "A4"})}


def test_records_resolve_alike_whatever_order_the_tables_hold_them_in() -> None:
    # A phone no named customer holds, on an inquiry of each of two customers and on one
    # inquiry that gives only the phone: which of them the phone links through is a tie.
    records = _records(
        account("A1", email="hui@x.com", name_key="hui wu"),
        account("A2", email="bo@x.com", name_key="bo li"),
        {"source": "inquiries", "source_id": "I3", "email": "hui@x.com", "phone": "+8613071326988"},
        {"source": "inquiries", "source_id": "I1", "account_id": "A2", "phone": "+8613071326988"},
        {"source": "inquiries", "source_id": "I2", "phone": "+8613071326988"},
    )
    groups = {
        frozenset(_groups(resolve(records.iloc[[0, 1, *order]].reset_index(drop=True))))
        for order in permutations([2, 3, 4])
    }
    assert len(groups) == 1


def test_pairwise_scores_count_pairs_of_records_against_the_true_people(tmp_path) -> None:
    # Person P1 has three records, split over two keys; P2's one record shares a key with P1's
    # third. A record the crosswalk does not hold (quarantined) is left out.
    truth = tmp_path / "identities.csv"
    truth.write_text(
        "source,source_id,person_id\n"
        "online_accounts,A1,P1\nloyalty_members,L1,P1\ninquiries,I1,P1\n"
        "feedback,F1,P2\nfeedback,F2,P2\n"
    )
    conn = duckdb.connect()
    conn.execute("CREATE SCHEMA core")
    conn.execute(
        "CREATE TABLE core.customer_crosswalk AS SELECT * FROM (VALUES "
        "('online_accounts', 'A1', 'K1'), ('loyalty_members', 'L1', 'K1'), "
        "('inquiries', 'I1', 'K2'), ('feedback', 'F1', 'K2')) AS t(source, source_id, customer_key)"
    )
    scores = pairwise_scores(conn, truth)
    # True pairs: P1's three records make 3 (P2's one scored record makes none); predicted:
    # one per key; right: A1-L1 only.
    assert scores == {
        "precision": 0.5,
        "recall": 1 / 3,
        "true_pairs": 3.0,
        "predicted_pairs": 2.0,
        "records_scored": 4.0,
        "records_in_truth": 5.0,
    }
