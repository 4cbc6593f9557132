"""Identity resolution: which staged records are the same customer.

Records that carry who someone is (accounts, loyalty members, receipts with a card or phone,
inquiries, survey responses, orders) are linked by rules, strongest first:

- account_id, loyalty_card, email: the same normalised value is the same customer (an email is
  one mailbox; ids are issued by our own systems);
- phone_and_name: named records (accounts, members) sharing a phone are the same customer only
  when their names agree, because families and a company's staff share one phone;
- phone: a record that gives only a phone joins the one named customer with that phone; when
  several named customers share it, it is left unresolved rather than guessed;
- name_and_birth_date / name_and_address: named records whose name keys are equal and birth
  dates equal, or whose names agree (rapidfuzz, so typos match) at the same address when at
  most one of them gives a birth date.

rapidfuzz is used over splink: candidate pairs are few after blocking in DuckDB (same phone,
same address), and a plain similarity threshold is explainable to an analyst and tested on
the hard cases; a trained probabilistic model would need labelled pairs production does not
have. Links are found as set work in DuckDB (each record to the first record sharing a value);
only phones shared by several names go through Python. Components of the link graph are found
with scipy's connected_components.
"""

from __future__ import annotations

import duckdb
import numpy as np
import pandas as pd
from rapidfuzz import fuzz
from rapidfuzz.process import cpdist
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

NAME_MATCH = 90  # rapidfuzz ratio on name keys at which two names are the same name
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
UNRESOLVED = "unresolved_shared_phone"
# Every match rule a record can carry.
RULES = [*RULE_CONFIDENCE, UNRESOLVED]
RECORDS = "id_records"
# The columns a records query gives load_records, in this order.
COLUMNS = (
    "source",
    "source_id",
    "account_id",
    "card_no",
    "email",
    "phone",
    "name_key",
    "birth_date",
    "address",
    "seen_at",
)

# Every value a rule compares, as an expression over a record. Records that share none of
# them, directly or through other records, are never linked: each group of records that do
# resolves alike on its own or among all records. The links star the first three and the
# name with birth date already; a group also follows every shared phone and named address.
NAME_AND_BIRTH_DATE = "CASE WHEN birth_date IS NOT NULL THEN name_key || '|' || birth_date END"
NAMED_ADDRESS = "CASE WHEN name_key IS NOT NULL THEN lower(address) END"
SHARED_VALUES = ("account_id", "card_no", "email", "phone", NAME_AND_BIRTH_DATE, NAMED_ADDRESS)
BEYOND_LINKS = ("phone", NAMED_ADDRESS)


RECORDS_SQL = """
SELECT 'online_accounts' AS source, account_id AS source_id, account_id, NULL AS card_no,
       email, phone, name_key, birth_date,
       -- Without a street, a city alone is no address (concat_ws would give the city).
       CASE WHEN address IS NOT NULL THEN concat_ws(', ', address, city) END AS address,
       created_at AS seen_at
FROM staging.online_accounts
UNION ALL
SELECT 'loyalty_members', card_no, NULL, card_no, email, phone, name_key, birth_date, address,
       CAST(joined_at AS TIMESTAMP)
FROM staging.loyalty_members
UNION ALL
-- A receipt's card and phone are those of its first line that has one: lines may disagree
-- (a phone typed with a digit missing), and any one of them would change between runs.
SELECT 'store_purchases', receipt_id, NULL,
       arg_min(loyalty_card, struct_pack(f := source_file, l := source_line))
           FILTER (WHERE loyalty_card IS NOT NULL),
       NULL,
       arg_min(phone, struct_pack(f := source_file, l := source_line))
           FILTER (WHERE phone IS NOT NULL),
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
"""

Edges = list[tuple[np.ndarray, np.ndarray, str]]


def load_records(conn: duckdb.DuckDBPyConnection, query: str = RECORDS_SQL) -> None:
    """Every identity-bearing record, numbered 0..n-1 (rid) by source and source id, as a
    temp table.

    The numbering decides ties (the record a phone-only link goes through is the lowest
    numbered), so it follows the records' ids, not the order a table happens to hold them
    in, which differs between runs: the same records resolve alike every time. Each source is
    numbered on its own, after the sources before it: the same numbers as one ordering by
    (source, source id), with the sorting split across the sources (a fifth less time at 1M).
    """
    conn.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE {RECORDS} AS
        WITH records AS ({query}), sources AS (
            SELECT source, count(*) AS n FROM records GROUP BY source
        ), offsets AS (
            SELECT source, CAST(coalesce(sum(n) OVER (ORDER BY source ROWS BETWEEN UNBOUNDED
                PRECEDING AND 1 PRECEDING), 0) AS BIGINT) AS offset_rid
            FROM sources
        )
        SELECT o.offset_rid + row_number() OVER (PARTITION BY r.source ORDER BY r.source_id) - 1
                   AS rid,
               r.*
        FROM records AS r
        JOIN offsets AS o USING (source)
        """
    )


def names_agree(a: str | None, b: str | None) -> bool:
    """Two name keys name the same person (equal, or a typo apart)."""
    if not a or not b:
        return False
    return a == b or fuzz.ratio(a, b) >= NAME_MATCH


def _pairs(
    conn: duckdb.DuckDBPyConnection, sql: str, rule: str
) -> tuple[np.ndarray, np.ndarray, str]:
    found = conn.execute(sql).fetchnumpy()
    return found["a"].astype(np.int64), found["b"].astype(np.int64), rule


def _star_sql(column: str, where: str = "TRUE") -> str:
    """Each record to the first record sharing its value (enough to connect them all)."""
    return f"""
        SELECT rid AS a, min(rid) OVER (PARTITION BY {column}) AS b
        FROM {RECORDS}
        WHERE {column} IS NOT NULL AND {where}
        QUALIFY a <> b
    """


def _components(n: int, edges: Edges) -> np.ndarray:
    a = np.concatenate([e[0] for e in edges] or [np.zeros(0, np.int64)])
    b = np.concatenate([e[1] for e in edges] or [np.zeros(0, np.int64)])
    graph = coo_matrix((np.ones(len(a), dtype=np.int8), (a, b)), shape=(n, n))
    return connected_components(graph, directed=False)[1]


def _shared_phone_owners(
    conn: duckdb.DuckDBPyConnection, component: np.ndarray
) -> tuple[pd.DataFrame, list[int], list[int]]:
    """Phones several names share (families, a company's staff, typos): compare the names in
    Python; returns each phone's distinct people and the links between records found to be
    one person."""
    shared = conn.execute(
        f"""
        SELECT phone, rid, name_key
        FROM {RECORDS}
        WHERE phone IS NOT NULL AND name_key IS NOT NULL
        QUALIFY count(DISTINCT name_key) OVER (PARTITION BY phone) > 1
        ORDER BY phone, rid
        """
    ).fetchnumpy()
    # One slice of the sorted rows per phone, over plain lists: pandas' groupby costs more
    # than the name comparisons across tens of thousands of small groups.
    phones, rids, keys = (shared[c].tolist() for c in ("phone", "rid", "name_key"))
    starts = [i for i in range(len(phones)) if i == 0 or phones[i] != phones[i - 1]]
    bounds = zip(starts, starts[1:] + [len(phones)] if starts else [], strict=True)
    owners, link_a, link_b = [], [], []
    for start, end in bounds:
        people: list[tuple[int, str]] = []
        for rid, key in zip(rids[start:end], keys[start:end], strict=True):
            match = next((r for r, k in people if names_agree(k, key)), None)
            if match is None:
                people.append((rid, key))
            elif component[match] != component[rid]:
                link_a.append(rid)
                link_b.append(match)
        owners.append((phones[start], people[0][0], len(people)))
    frame = pd.DataFrame(owners, columns=["phone", "owner", "owners"])
    return frame, link_a, link_b


def _conflicting(
    conn: duckdb.DuckDBPyConnection, component: np.ndarray, a: np.ndarray, b: np.ndarray
) -> np.ndarray:
    """Pairs a phone alone would link although their customers already say they are two
    people: each has an email of its own (a mailbox is one person, and they do not share
    one), or they carry names that disagree. A phone is shared by families and offices, so
    it never overrides that evidence."""
    n = len(component)
    emailed = conn.execute(f"SELECT rid FROM {RECORDS} WHERE email IS NOT NULL").fetchnumpy()
    has_email = np.bincount(component[emailed["rid"].astype(np.int64)], minlength=n) > 0
    ca, cb = component[a], component[b]
    conflict = (ca != cb) & has_email[ca] & has_email[cb]
    # A customer's name is that of its first named record by number: the same on every run,
    # whatever order the table holds the records in.
    named = conn.execute(
        f"SELECT rid, name_key FROM {RECORDS} WHERE name_key IS NOT NULL ORDER BY rid"
    ).df()
    names = pd.Series(
        named["name_key"].to_numpy(), index=component[named["rid"].to_numpy(np.int64)]
    )
    names = names[~names.index.duplicated()]
    name_a = names.reindex(ca).to_numpy(dtype=object)
    name_b = names.reindex(cb).to_numpy(dtype=object)
    both = (ca != cb) & pd.notna(name_a) & pd.notna(name_b) & (name_a != name_b)
    if both.any():
        score = cpdist(name_a[both].tolist(), name_b[both].tolist(), scorer=fuzz.ratio, workers=-1)
        conflict[np.flatnonzero(both)[score < NAME_MATCH]] = True
    return conflict


def _phone_edges(
    conn: duckdb.DuckDBPyConnection, component: np.ndarray
) -> tuple[Edges, np.ndarray]:
    """Named records sharing a phone join when their names agree; records that give only a
    phone join the single named customer with it, or each other when no one named has it."""
    shared, link_a, link_b = _shared_phone_owners(conn, component)
    simple = _pairs(
        conn,
        f"""
        SELECT rid AS a, min(rid) OVER (PARTITION BY phone) AS b
        FROM {RECORDS}
        WHERE phone IS NOT NULL AND name_key IS NOT NULL
        QUALIFY count(DISTINCT name_key) OVER (PARTITION BY phone) = 1 AND a <> b
        """,
        "phone_and_name",
    )
    conn.register("shared_owners", shared)
    conn.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE phone_owners AS
        SELECT phone, min(rid) AS owner, 1 AS owners
        FROM {RECORDS}
        WHERE phone IS NOT NULL AND name_key IS NOT NULL
        GROUP BY phone
        HAVING count(DISTINCT name_key) = 1
        UNION ALL
        SELECT phone, owner, owners FROM shared_owners
        """
    )
    conn.unregister("shared_owners")
    joined = conn.execute(
        f"""
        SELECT r.rid AS a,
               coalesce(o.owner, min(r.rid) OVER (PARTITION BY r.phone)) AS b,
               coalesce(o.owners, 0) AS owners
        FROM {RECORDS} AS r
        LEFT JOIN phone_owners AS o USING (phone)
        WHERE r.phone IS NOT NULL AND r.name_key IS NULL
        """
    ).fetchnumpy()
    a, b, owners = (joined[k].astype(np.int64) for k in ("a", "b", "owners"))
    # Several named customers share the phone: a record with nothing else to go on stays apart.
    ambiguous = a[owners > 1]
    sizes = np.bincount(component, minlength=len(component))
    unresolved = ambiguous[sizes[component[ambiguous]] == 1]
    keep = (owners <= 1) & (a != b)
    keep[keep] = ~_conflicting(conn, component, a[keep], b[keep])
    edges = [
        simple,
        (np.asarray(link_a, dtype=np.int64), np.asarray(link_b, dtype=np.int64), "phone_and_name"),
        (a[keep], b[keep], "phone"),
    ]
    return edges, unresolved


def _fuzzy_edges(conn: duckdb.DuckDBPyConnection) -> Edges:
    """Named records that are one person by name key and birth date, or by agreeing names at
    one address when at most one gives a birth date (two that differ are two people)."""
    birth = _pairs(
        conn,
        _star_sql(NAME_AND_BIRTH_DATE),
        "name_and_birth_date",
    )
    candidates = conn.execute(
        f"""
        WITH placed AS (
            SELECT rid, lower(address) AS block, name_key, birth_date
            FROM {RECORDS}
            WHERE address IS NOT NULL AND name_key IS NOT NULL
            QUALIFY count(*) OVER (PARTITION BY block) > 1
        )
        SELECT x.rid AS a, y.rid AS b, x.name_key AS name_a, y.name_key AS name_b
        FROM placed AS x
        JOIN placed AS y ON x.block = y.block AND x.rid < y.rid
        WHERE x.birth_date IS NULL OR y.birth_date IS NULL
        """
    ).df()
    similar = (
        cpdist(
            candidates["name_a"].tolist(),
            candidates["name_b"].tolist(),
            scorer=fuzz.ratio,
            workers=-1,
        )
        >= NAME_MATCH
        if len(candidates)
        else np.zeros(0, dtype=bool)
    )
    chosen = candidates[similar]
    return [
        birth,
        (
            chosen["a"].to_numpy(dtype=np.int64),
            chosen["b"].to_numpy(dtype=np.int64),
            "name_and_address",
        ),
    ]


def resolve(conn: duckdb.DuckDBPyConnection, groups: bool = False) -> pd.DataFrame:
    """Link the records of the id_records table.

    Returns one row per record: rid, component (a customer), match_rule, confidence; with
    `groups`, also group: the lowest rid of the records it shares any of SHARED_VALUES with,
    directly or through others (every link lies inside one group).
    """
    n = conn.execute(f"SELECT count(*) FROM {RECORDS}").fetchall()[0][0]
    edges: Edges = [
        _pairs(conn, _star_sql("account_id"), "account_id"),
        _pairs(conn, _star_sql("card_no"), "loyalty_card"),
        _pairs(conn, _star_sql("email"), "email"),
    ]
    component = _components(n, edges)
    phone_edges, unresolved = _phone_edges(conn, component)
    edges += phone_edges + _fuzzy_edges(conn)
    component = _components(n, edges)
    # A record's rule is the strongest rule of the links it takes part in, held as a number
    # into RULES (a categorical column: millions of Python strings cost seconds to hand over).
    rule = np.full(n, RULES.index("single"), dtype=np.int8)
    confidence = np.zeros(n)
    for a, b, name in edges:
        for ends in (a, b):
            better = RULE_CONFIDENCE[name] > confidence[ends]
            rule[ends[better]] = RULES.index(name)
            confidence[ends[better]] = RULE_CONFIDENCE[name]
    confidence[rule == RULES.index("single")] = 1.0
    rule[unresolved] = RULES.index(UNRESOLVED)
    confidence[unresolved] = 0.0
    resolved = pd.DataFrame(
        {
            "rid": np.arange(n),
            "component": component,
            "match_rule": pd.Categorical.from_codes(rule, categories=RULES),
            "confidence": confidence,
        }
    )
    if groups:
        # Customers that share a phone or a named address, as a graph of the customers.
        a, b, _ = zip(*[_pairs(conn, _star_sql(v), "") for v in BEYOND_LINKS], strict=True)
        ca, cb = component[np.concatenate(a)], component[np.concatenate(b)]
        apart = ca != cb
        shared = _components(component.max(initial=-1) + 1, [(ca[apart], cb[apart], "")])
        shared = shared[component]
        lowest = np.full(shared.max(initial=-1) + 1, n, dtype=np.int64)
        np.minimum.at(lowest, shared, np.arange(n, dtype=np.int64))
        resolved["group"] = lowest[shared]
    return resolved
