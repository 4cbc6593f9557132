"""Stable customer keys: a customer seen before keeps its key whatever a new load brings.

Each resolved component takes the key its records already had. When a new link joins
customers that had different keys, the oldest key survives and the others are recorded in
core.customer_key_merges (never silently rewritten); when a customer's records are pulled
apart, the key stays with the part holding most of them. A customer never seen before gets
'C' + 16 hex digits of HMAC-SHA256, keyed with the warehouse's secret (core/secret.py), of
its earliest record's source and id: pseudonymous also towards whoever holds the sources'
ids (without the secret no key can be recomputed from them), and the same on a rebuild from
scratch with the same secret as long as records arrived in time order. A retired key is
never given out again. The work is set work, so it runs in DuckDB over the frames.
"""

from __future__ import annotations

import hashlib
import hmac
from datetime import datetime

import duckdb
import pandas as pd

from crm_pipeline.raw.tables import table_exists

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


def _pads(secret: bytes) -> dict[str, bytes]:
    """HMAC's inner and outer pads of the secret (RFC 2104), as the parameters of KEYED."""
    block = (secret if len(secret) <= 64 else hashlib.sha256(secret).digest()).ljust(64, b"\0")
    return {
        "inner": bytes(b ^ 0x36 for b in block),
        "outer": bytes(b ^ 0x5C for b in block),
    }


# The key of a customer whose first record is `anchor` (salt 0), in SQL: HMAC-SHA256 with
# the pads of _pads as $inner and $outer; new_key gives the same for any salt.
KEYED = (
    "'C' || upper(substr(sha256($outer || unhex(sha256($inner || encode(anchor || '#0')))), 1, 16))"
)

NEW_KEYS_SQL = f"""
CREATE OR REPLACE TEMP TABLE fresh AS
SELECT component, anchor, {KEYED} AS customer_key
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


def new_key(anchor: str, salt: int, secret: bytes) -> str:
    """The key of a new customer whose first record is `anchor` (salt > 0 only on a clash)."""
    digest = hmac.new(secret, f"{anchor}#{salt}".encode(), hashlib.sha256).hexdigest()
    return "C" + digest[:16].upper()


def assign_keys(
    conn: duckdb.DuckDBPyConnection,
    now: datetime,
    secret: bytes,
    retired: frozenset[str] = frozenset(),
) -> pd.DataFrame:
    """Keys per component, given the previous crosswalk, the secret new keys are made with
    and the keys retired by merges (never given out again), as the temporary table
    `component_keys` (component, customer_key, key_since); returns the merges (retired_key,
    surviving_key, merged_at).

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
    conn.execute(NEW_KEYS_SQL, _pads(secret))
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
            while (key := new_key(anchor, salt, secret)) in taken:
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


# Where a customer's key is held: these columns of every table, and the rows of a column
# naming any kind of thing that name a customer (table, column, those rows).
KEY_COLUMNS = ("customer_key", "retired_key", "surviving_key")
NAMING_CUSTOMERS = (
    ("core.excluded_rows", "id", "entity = 'customers'"),
    ("mining.opportunities", "target", "target_kind = 'customer'"),
)


def rekey(conn: duckdb.DuckDBPyConnection, secret: bytes, now: datetime) -> tuple[int, int]:
    """Give every customer the key a rebuild from scratch with `secret` would give it (the
    keyed hash of its earliest record), in every table that holds customer keys; a retired
    key becomes a keyed hash of itself (still never given out again). Returns how many keys of
    customers changed, and how many retired keys. Run in the caller's transaction: a key is
    replaced everywhere or nowhere."""
    conn.execute(
        """
        CREATE OR REPLACE TEMP TABLE resolved AS
        SELECT source, source_id, seen_at, customer_key AS component
        FROM core.customer_crosswalk
        """
    )
    conn.execute(
        "CREATE OR REPLACE TEMP VIEW previous AS SELECT NULL::VARCHAR AS source, "
        "NULL::VARCHAR AS source_id, NULL::VARCHAR AS customer_key, "
        "NULL::TIMESTAMP AS key_since WHERE FALSE"
    )
    merges = conn.execute("SELECT retired_key FROM core.customer_key_merges").fetchall()
    old_retired = [k for (k,) in merges]
    retired = {old: new_key(f"retired:{old}", 0, secret) for old in old_retired}
    assign_keys(conn, now, secret, frozenset(retired.values()))
    conn.execute(
        """
        CREATE OR REPLACE TEMP TABLE key_map AS
        SELECT component AS old_key, customer_key AS new_key FROM component_keys
        UNION ALL
        SELECT unnest(CAST(? AS VARCHAR[])), unnest(CAST(? AS VARCHAR[]))
        """,
        [list(retired), list(retired.values())],
    )
    holders = conn.execute(
        """
        SELECT schema_name || '.' || table_name, column_name
        FROM duckdb_columns()
        WHERE database_name = current_database() AND NOT internal
          AND column_name IN (SELECT unnest(CAST(? AS VARCHAR[])))
          AND schema_name || '.' || table_name IN (
              SELECT schema_name || '.' || table_name FROM duckdb_tables()
              WHERE database_name = current_database())
        ORDER BY ALL
        """,
        [list(KEY_COLUMNS)],
    ).fetchall()
    targets = [(t, c, "TRUE") for t, c in holders]
    targets += [named for named in NAMING_CUSTOMERS if table_exists(conn, named[0])]
    for table, column, where in targets:
        conn.execute(
            f'UPDATE {table} AS t SET "{column}" = m.new_key FROM key_map AS m '
            f'WHERE t."{column}" = m.old_key AND {where}'
        )
    (changed,) = conn.execute(
        "SELECT count(*) FROM component_keys WHERE component <> customer_key"
    ).fetchone()
    for temp in ("resolved", "component_keys", "key_map"):
        conn.execute(f"DROP TABLE {temp}")
    conn.execute("DROP VIEW previous")
    return changed, len(retired)
