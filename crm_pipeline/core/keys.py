"""Stable customer keys: a customer seen before keeps its key whatever a new load brings.

Each resolved component takes the key its records already had. When a new link joins
customers that had different keys, the oldest key survives and the others are recorded in
core.customer_key_merges (never silently rewritten); when a customer's records are pulled
apart, the key stays with the part holding most of them. A customer never seen before gets
'C' + 16 hex digits of a hash of its earliest record's id: pseudonymous, and the same on a
rebuild from scratch as long as records arrived in time order. A retired key is never given
out again. The work is set work, so it runs in DuckDB over the frames.
"""

from __future__ import annotations

import hashlib
from datetime import datetime

import duckdb
import pandas as pd

ANCHORS_SQL = """
CREATE OR REPLACE TEMP TABLE anchors AS
SELECT component,
       first(source || ':' || source_id ORDER BY seen_at NULLS LAST, source, source_id) AS anchor
FROM resolved
GROUP BY component
"""

KEYS_SQL = """
WITH claims AS (
    SELECT r.component, p.customer_key, count(*) AS records, min(p.key_since) AS key_since
    FROM resolved AS r
    JOIN previous AS p USING (source, source_id)
    GROUP BY ALL
), owned AS (
    -- A key claimed by several components (a split) stays with the biggest part, on a tie
    -- with the part holding the earliest record.
    SELECT c.*
    FROM claims AS c
    JOIN anchors AS a USING (component)
    QUALIFY row_number() OVER (PARTITION BY customer_key ORDER BY records DESC, a.anchor) = 1
)
SELECT
    component,
    customer_key,
    key_since,
    -- A component holding several keys (a merge) keeps the oldest.
    row_number() OVER (PARTITION BY component ORDER BY key_since, customer_key) AS rank
FROM owned
"""

NEW_KEYS_SQL = """
CREATE OR REPLACE TEMP TABLE fresh AS
SELECT component, anchor, 'C' || upper(substr(sha256(anchor || '#0'), 1, 16)) AS customer_key
FROM anchors
ANTI JOIN (SELECT component FROM kept WHERE rank = 1) AS k USING (component)
"""

# New keys already held by someone (a retired key, an earlier customer's, or another new
# customer's whose first record sorts first): a hash clash, made good with a salt.
CLASHES_SQL = """
SELECT component, anchor
FROM fresh
WHERE customer_key IN (SELECT customer_key FROM previous)
   OR customer_key IN (SELECT unnest(CAST(? AS VARCHAR[])))
UNION
SELECT component, anchor
FROM fresh
QUALIFY row_number() OVER (PARTITION BY customer_key ORDER BY anchor) > 1
"""


def new_key(anchor: str, salt: int) -> str:
    """The key of a new customer whose first record is `anchor` (salt > 0 only on a clash)."""
    return "C" + hashlib.sha256(f"{anchor}#{salt}".encode()).hexdigest()[:16].upper()


def assign_keys(
    conn: duckdb.DuckDBPyConnection, now: datetime, retired: frozenset[str] = frozenset()
) -> pd.DataFrame:
    """Keys per component, given the previous crosswalk and the keys retired by merges
    (never given out again), as the temporary table `component_keys` (component,
    customer_key, key_since); returns the merges (retired_key, surviving_key, merged_at).

    Reads `resolved` (source, source_id, seen_at, component) and `previous` (source,
    source_id, customer_key, key_since) in conn.
    """
    conn.execute(ANCHORS_SQL)
    conn.execute(f"CREATE OR REPLACE TEMP TABLE kept AS {KEYS_SQL}")
    merges = conn.execute(
        """
        SELECT r.customer_key AS retired_key, s.customer_key AS surviving_key,
               CAST(? AS TIMESTAMP) AS merged_at
        FROM kept AS r
        JOIN kept AS s ON s.component = r.component AND s.rank = 1
        WHERE r.rank > 1
        ORDER BY ALL
        """,
        [now],
    ).df()
    conn.execute(NEW_KEYS_SQL)
    clashes = conn.execute(CLASHES_SQL, [sorted(retired)]).fetchall()
    if clashes:
        taken = {
            k for (k,) in conn.execute("SELECT DISTINCT customer_key FROM previous").fetchall()
        }
        taken |= retired
        clashing = {component for component, _ in clashes}
        taken |= {
            k
            for c, k in conn.execute("SELECT component, customer_key FROM fresh").fetchall()
            if c not in clashing
        }
        salted = []
        for component, anchor in sorted(clashes, key=lambda c: c[1]):
            salt = 1
            while (key := new_key(anchor, salt)) in taken:
                salt += 1
            taken.add(key)
            salted.append((component, key))
        conn.executemany(
            "UPDATE fresh SET customer_key = ? WHERE component = ?", [[k, c] for c, k in salted]
        )
    conn.execute(
        """
        CREATE OR REPLACE TEMP TABLE component_keys AS
        SELECT component, customer_key, CAST(key_since AS TIMESTAMP) AS key_since
        FROM kept
        WHERE rank = 1
        UNION ALL
        SELECT component, customer_key, CAST(? AS TIMESTAMP)
        FROM fresh
        """,
        [now],
    )
    for temp in ("kept", "anchors", "fresh"):
        conn.execute(f"DROP TABLE {temp}")
    return merges
