"""Identity resolution: which staged records are the same customer.

Records that carry who someone is (accounts, loyalty members, receipts with a card or phone,
inquiries, survey responses, orders) are linked by rules, strongest first:

- account_id, loyalty_card, email: the same normalised value is the same customer (an email is
  one mailbox; ids are issued by our own systems);
- phone_and_name: named records (accounts, members) sharing a phone are the same customer only
  when their names agree, because families and a company's staff share one phone;
- phone: a record that gives only a phone joins the one named customer with that phone; when
  several named customers share it, it is left unresolved rather than guessed;
- name_and_address / name_and_birth_date: named records with no shared id whose names agree
  (rapidfuzz, so typos and spellings match) and whose address or birth date agree too.

rapidfuzz is used over splink: candidate pairs are few after blocking in DuckDB (same name key,
or same address), and a plain similarity threshold is explainable to an analyst and tested on
the hard cases; a trained probabilistic model would need labelled pairs we do not have in
production. Components of the resulting graph are found with scipy's connected_components.
"""

from __future__ import annotations

from dataclasses import dataclass

import duckdb
import numpy as np
import pandas as pd
from rapidfuzz import fuzz
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

NAME_MATCH = 90  # rapidfuzz ratio on name keys at which two names are the same name
ADDRESS_MATCH = 85  # token_sort_ratio on addresses for the same address
RULE_CONFIDENCE = {
    "account_id": 1.0,
    "loyalty_card": 1.0,
    "email": 0.99,
    "phone_and_name": 0.95,
    "phone": 0.9,
    "name_and_birth_date": 0.9,
    "name_and_address": 0.85,
    "single": 1.0,
}

RECORDS_SQL = """
SELECT 'online_accounts' AS source, account_id AS source_id, account_id, NULL AS card_no,
       email, phone, name_key, birth_date, concat_ws(', ', address, city) AS address,
       created_at AS seen_at
FROM staging.online_accounts
UNION ALL
SELECT 'loyalty_members', card_no, NULL, card_no, email, phone, name_key, birth_date, address,
       CAST(joined_at AS TIMESTAMP)
FROM staging.loyalty_members
UNION ALL
SELECT 'store_purchases', receipt_id, NULL, any_value(loyalty_card), NULL, any_value(phone),
       NULL, NULL, NULL, min(purchased_at)
FROM staging.store_purchases
WHERE loyalty_card IS NOT NULL OR phone IS NOT NULL
GROUP BY receipt_id
UNION ALL
SELECT 'inquiries', inquiry_id, account_id, NULL, email, phone, NULL, NULL, NULL, opened_at
FROM staging.inquiries
WHERE coalesce(account_id, email, phone) IS NOT NULL
UNION ALL
SELECT 'feedback', response_id, account_id, NULL, email, phone, NULL, NULL, NULL, submitted_at
FROM staging.feedback
WHERE coalesce(account_id, email, phone) IS NOT NULL
UNION ALL
SELECT 'online_orders', order_id, account_id, NULL, NULL, NULL, NULL, NULL, NULL, ordered_at
FROM staging.online_orders
ORDER BY source, source_id
"""


@dataclass
class Resolution:
    """One row per record: its component (a customer) and how it was matched."""

    records: pd.DataFrame  # source, source_id, seen_at, component, match_rule, confidence


def load_records(conn: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    """Every identity-bearing staged record, with a dense record number."""
    records = conn.execute(RECORDS_SQL).df()
    records.index = pd.RangeIndex(len(records))
    return records


def names_agree(a: str | None, b: str | None) -> bool:
    """Two name keys name the same person (equal, or a typo apart)."""
    if not a or not b:
        return False
    return a == b or fuzz.ratio(a, b) >= NAME_MATCH


def addresses_agree(a: str | None, b: str | None) -> bool:
    if not a or not b:
        return False
    return fuzz.token_sort_ratio(a.casefold(), b.casefold()) >= ADDRESS_MATCH


def _token_edges(records: pd.DataFrame) -> list[tuple[np.ndarray, np.ndarray, str]]:
    """Record pairs sharing an account id, a card or an email: each record to the first
    record carrying the same value (a star per value is enough for connectivity)."""
    edges = []
    for column, rule in (
        ("account_id", "account_id"),
        ("card_no", "loyalty_card"),
        ("email", "email"),
    ):
        values = records[column]
        present = values.notna().to_numpy()
        rows = np.flatnonzero(present)
        if len(rows) == 0:
            continue
        codes, _ = pd.factorize(values.iloc[rows])
        first = pd.Series(rows).groupby(codes).transform("min").to_numpy()
        keep = first != rows
        edges.append((rows[keep], first[keep], rule))
    return edges


def _components(n: int, pairs: list[tuple[np.ndarray, np.ndarray, str]]) -> np.ndarray:
    if pairs:
        a = np.concatenate([p[0] for p in pairs]).astype(np.int64)
        b = np.concatenate([p[1] for p in pairs]).astype(np.int64)
    else:
        a = b = np.zeros(0, dtype=np.int64)
    graph = coo_matrix((np.ones(len(a), dtype=np.int8), (a, b)), shape=(n, n))
    return connected_components(graph, directed=False)[1]


def _phone_edges(
    records: pd.DataFrame, component: np.ndarray
) -> tuple[list[tuple[np.ndarray, np.ndarray, str]], np.ndarray]:
    """Named records sharing a phone join when their names agree; records that give only a
    phone join the single named customer with it. Returns the edges and the records left
    unresolved because several customers share their phone."""
    phoned = records[records["phone"].notna()].assign(component=component[records["phone"].notna()])
    named = phoned[phoned["name_key"].notna()]
    edges_a, edges_b, name_a, name_b = [], [], [], []
    # Named customers per phone, after joining those whose names agree.
    owners: dict[str, list[tuple[int, str]]] = {}
    for phone, group in named.groupby("phone", sort=False):
        seen: list[tuple[int, str]] = []  # (record, name key) of each distinct customer
        for rid, key in zip(group.index, group["name_key"], strict=True):
            match = next((r for r, k in seen if names_agree(k, key)), None)
            if match is None:
                seen.append((rid, key))
            elif component[match] != component[rid]:
                name_a.append(rid)
                name_b.append(match)
        owners[phone] = seen
    unresolved = []
    for phone, group in phoned[phoned["name_key"].isna()].groupby("phone", sort=False):
        seen = owners.get(phone, [])
        rids = group.index.to_numpy()
        if len(seen) == 1:
            target = seen[0][0]
        elif not seen:
            target = rids[0]
        else:
            # Several customers share this phone: a record that has nothing else stays apart.
            alone = group.index[~group["component"].duplicated(keep=False)]
            unresolved.extend(alone)
            continue
        edges_a.extend(rids)
        edges_b.extend([target] * len(rids))
    edges = [
        (np.asarray(name_a, dtype=np.int64), np.asarray(name_b, dtype=np.int64), "phone_and_name"),
        (np.asarray(edges_a, dtype=np.int64), np.asarray(edges_b, dtype=np.int64), "phone"),
    ]
    return edges, np.asarray(unresolved, dtype=np.int64)


def _fuzzy_edges(
    records: pd.DataFrame, component: np.ndarray
) -> list[tuple[np.ndarray, np.ndarray, str]]:
    """Named records in different customers whose names agree and whose birth date or address
    agrees too; candidates are blocked on the exact name key or the exact address."""
    named = records[records["name_key"].notna()].assign(
        component=component[records["name_key"].notna()]
    )
    named = named.drop_duplicates("component")
    found = {"name_and_birth_date": ([], []), "name_and_address": ([], [])}
    for block in ("name_key", "address"):
        for _, group in named[named[block].notna()].groupby(block, sort=False):
            if len(group) < 2:
                continue
            rows = list(group.itertuples())
            for i, x in enumerate(rows):
                for y in rows[i + 1 :]:
                    if not names_agree(x.name_key, y.name_key):
                        continue
                    if pd.notna(x.birth_date) and pd.notna(y.birth_date):
                        if x.birth_date == y.birth_date:
                            found["name_and_birth_date"][0].append(x.Index)
                            found["name_and_birth_date"][1].append(y.Index)
                        continue  # two birth dates that differ are two people
                    if addresses_agree(x.address, y.address):
                        found["name_and_address"][0].append(x.Index)
                        found["name_and_address"][1].append(y.Index)
    return [
        (np.asarray(a, dtype=np.int64), np.asarray(b, dtype=np.int64), rule)
        for rule, (a, b) in found.items()
    ]


def resolve(records: pd.DataFrame) -> pd.DataFrame:
    """Link the records; returns source, source_id, seen_at, component, match_rule, confidence."""
    n = len(records)
    edges = _token_edges(records)
    component = _components(n, edges)
    phone_edges, unresolved = _phone_edges(records, component)
    edges += phone_edges
    component = _components(n, edges)
    edges += _fuzzy_edges(records, component)
    component = _components(n, edges)
    # A record's rule is the strongest rule of the links it takes part in.
    rule = np.full(n, "single", dtype=object)
    confidence = np.zeros(n)
    for a, b, name in edges:
        for ends in (a, b):
            better = RULE_CONFIDENCE[name] > confidence[ends]
            rule[ends[better]] = name
            confidence[ends[better]] = RULE_CONFIDENCE[name]
    alone = rule == "single"
    confidence[alone] = 1.0
    rule[unresolved] = "unresolved_shared_phone"
    confidence[unresolved] = 0.0
    return pd.DataFrame(
        {
            "source": records["source"].to_numpy(),
            "source_id": records["source_id"].to_numpy(),
            "seen_at": records["seen_at"].to_numpy(),
            "component": component,
            "match_rule": rule,
            "confidence": confidence,
        }
    )
