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
from rapidfuzz.process import cpdist
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
        a, b = _star(rows, pd.factorize(values.iloc[rows])[0])
        edges.append((a, b, rule))
    return edges


def _components(n: int, pairs: list[tuple[np.ndarray, np.ndarray, str]]) -> np.ndarray:
    if pairs:
        a = np.concatenate([p[0] for p in pairs]).astype(np.int64)
        b = np.concatenate([p[1] for p in pairs]).astype(np.int64)
    else:
        a = b = np.zeros(0, dtype=np.int64)
    graph = coo_matrix((np.ones(len(a), dtype=np.int8), (a, b)), shape=(n, n))
    return connected_components(graph, directed=False)[1]


def _star(rows: np.ndarray, groups: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Edges from each row to the first row of its group (enough to connect the group)."""
    first = pd.Series(rows).groupby(groups).transform("min").to_numpy()
    keep = first != rows
    return rows[keep], first[keep]


def _distinct_names(group: pd.DataFrame, component: np.ndarray) -> tuple[list[int], list[tuple]]:
    """Within named records sharing a value: one representative per distinct person (names
    that agree are one person), and the links between records found to be the same person."""
    seen: list[tuple[int, str]] = []
    links = []
    for rid, key in zip(group.index, group["name_key"], strict=True):
        match = next((r for r, k in seen if names_agree(k, key)), None)
        if match is None:
            seen.append((rid, key))
        elif component[match] != component[rid]:
            links.append((rid, match))
    return [r for r, _ in seen], links


def _phone_edges(
    records: pd.DataFrame, component: np.ndarray
) -> tuple[list[tuple[np.ndarray, np.ndarray, str]], np.ndarray]:
    """Named records sharing a phone join when their names agree; records that give only a
    phone join the single named customer with it. Returns the edges and the records left
    unresolved because several customers share their phone."""
    has_phone = records["phone"].notna().to_numpy()
    named_mask = has_phone & records["name_key"].notna().to_numpy()
    named = records.loc[named_mask, ["phone", "name_key"]]
    names_per_phone = named.groupby("phone")["name_key"].nunique()
    one_name = named["phone"].map(names_per_phone).to_numpy() == 1
    # Most phones carry one name: every record with it is one person (a star per phone).
    simple = named[one_name]
    a, b = _star(simple.index.to_numpy(), pd.factorize(simple["phone"])[0])
    owner = (
        pd.Series(simple.index.to_numpy(), index=simple["phone"].to_numpy()).groupby(level=0).min()
    )
    owners = pd.DataFrame({"owner": owner, "owners": np.ones(len(owner), dtype=np.int64)})
    # Phones with several names (a family, a company's staff, a typo): compare the names.
    name_a, name_b = list(a), list(b)
    shared_rows = []
    for phone, group in named[~one_name].groupby("phone", sort=False):
        people, links = _distinct_names(group, component)
        name_a += [x for x, _ in links]
        name_b += [y for _, y in links]
        shared_rows.append((phone, people[0], len(people)))
    if shared_rows:
        shared = pd.DataFrame(shared_rows, columns=["phone", "owner", "owners"]).set_index("phone")
        owners = pd.concat([owners, shared])
    unnamed = records.loc[has_phone & ~named_mask, ["phone"]]
    found = unnamed.join(owners, on="phone")
    count = found["owners"].fillna(0).to_numpy()
    rows = unnamed.index.to_numpy()
    # One owner: join it. No owner: records with the same phone are one customer.
    single = count == 1
    lone = count == 0
    star_a, star_b = _star(rows[lone], pd.factorize(unnamed["phone"].to_numpy()[lone])[0])
    edges_a = np.concatenate([rows[single], star_a])
    edges_b = np.concatenate([found["owner"].to_numpy()[single].astype(np.int64), star_b])
    # Several owners: a record with nothing else to go on stays apart, marked unresolved.
    sizes = np.bincount(component)
    ambiguous = rows[count > 1]
    unresolved = ambiguous[sizes[component[ambiguous]] == 1]
    edges = [
        (np.asarray(name_a, dtype=np.int64), np.asarray(name_b, dtype=np.int64), "phone_and_name"),
        (edges_a.astype(np.int64), edges_b.astype(np.int64), "phone"),
    ]
    return edges, unresolved


def _fuzzy_edges(
    records: pd.DataFrame, component: np.ndarray
) -> list[tuple[np.ndarray, np.ndarray, str]]:
    """Named records in different customers that are one person by name and birth date, or by
    name and address: exact blocks in pandas, names compared with rapidfuzz (vectorised) only
    within an address, where typos hide."""
    named = records[records["name_key"].notna()].assign(
        component=component[records["name_key"].notna().to_numpy()]
    )
    named = named.drop_duplicates("component")
    dated = named[named["birth_date"].notna()]
    a, b = _star(
        dated.index.to_numpy(),
        pd.factorize(dated["name_key"] + "|" + dated["birth_date"].astype(str))[0],
    )
    placed = named[named["address"].notna()]
    placed = placed.assign(block=placed["address"].str.casefold())
    placed = placed[placed["block"].duplicated(keep=False)]
    side = placed[["block", "name_key", "birth_date"]].reset_index(names="rid")
    pairs = side.merge(side, on="block", suffixes=("_a", "_b"))
    pairs = pairs[pairs["rid_a"] < pairs["rid_b"]]
    # Two birth dates that differ are two people however alike the names; two equal ones
    # were linked above.
    undated = pairs["birth_date_a"].isna() | pairs["birth_date_b"].isna()
    pairs = pairs[undated.to_numpy()]
    names_a = pairs["name_key_a"].astype(object).tolist()
    names_b = pairs["name_key_b"].astype(object).tolist()
    similar = (
        cpdist(names_a, names_b, scorer=fuzz.ratio, workers=-1) >= NAME_MATCH
        if names_a
        else np.zeros(0, dtype=bool)
    )
    pairs = pairs[similar]
    return [
        (a, b, "name_and_birth_date"),
        (
            pairs["rid_a"].to_numpy(dtype=np.int64),
            pairs["rid_b"].to_numpy(dtype=np.int64),
            "name_and_address",
        ),
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
