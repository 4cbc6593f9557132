"""Writing the crosswalk with stable keys, and scoring it against a generator's ground truth.

A run resolves again only what new records can change. core.identity_groups keeps, for every
record, a digest of the values it was resolved with and its group: the records it shares any
value a rule compares with, directly or through others (`identity.SHARED_VALUES`). Links
never cross groups, so a group resolves alike alone or among all records. A run reads every
record, finds those new, changed or gone since the last one (by digest), and resolves the
groups they were in or now touch, which is the same as resolving everything, and rewrites
only their rows. A whole resolution runs when there is no earlier one, when the identity code
changed since (its digest is part of every record's), when the crosswalk was written by
anything else since (the two tables carry the mark of the write that made them), or when
more than a fifth of the records would be resolved again (a full load, a long backfill).
"""

from __future__ import annotations

import hashlib
import sys
import uuid
from datetime import datetime
from pathlib import Path

import duckdb
import rapidfuzz

from crm_pipeline.core import identity, keys
from crm_pipeline.core.identity import (
    COLUMNS,
    RECORDS,
    RECORDS_SQL,
    SHARED_VALUES,
    load_records,
    resolve,
)
from crm_pipeline.core.keys import assign_keys
from crm_pipeline.core.order_lines import Written
from crm_pipeline.raw.tables import table_exists

CROSSWALK = "core.customer_crosswalk"
MERGES = "core.customer_key_merges"
GROUPS = "core.identity_groups"
# Sources a generator's identities.csv scores (orders reach a customer through their account).
SCORED_SOURCES = ("online_accounts", "loyalty_members", "store_purchases", "inquiries", "feedback")
# Above this share of records to resolve again, every record is resolved.
WHOLE_ABOVE = 0.2
# The code that decides links, keys and the crosswalk's rows, and the name matcher: when one
# changes, earlier resolutions are not reused.
CODE_DIGEST = hashlib.sha256(
    b"".join(Path(m.__file__).read_bytes() for m in (identity, keys, sys.modules[__name__]))
    + rapidfuzz.__version__.encode()
).hexdigest()[:16]
ALL_RECORDS = "id_all_records"
# The start of the comment the crosswalk and the groups share when written together.
MARK = "Resolved together with its identity groups, write "


def _digest() -> str:
    """A record's digest: the identity code's and every value resolution reads."""
    return f"hash('{CODE_DIGEST}', {', '.join(COLUMNS)})"


def build_crosswalk(
    conn: duckdb.DuckDBPyConnection,
    now: datetime,
    secret: bytes,
    whole_above: float = WHOLE_ABOVE,
) -> Written:
    """Resolve identities, keep earlier keys, make new ones with `secret`, record merges,
    write the crosswalk: whole, or only the groups of records new or changed since the last
    run (see the module), unless more than `whole_above` of the records would be resolved
    again."""
    conn.execute(
        f"""
        CREATE TABLE IF NOT EXISTS {MERGES} (
            retired_key VARCHAR NOT NULL,
            surviving_key VARCHAR NOT NULL,
            merged_at TIMESTAMP NOT NULL
        )
        """
    )
    exists = table_exists(conn, CROSSWALK)
    conn.execute(
        "CREATE OR REPLACE TEMP VIEW previous AS "
        + (
            f"SELECT source, source_id, customer_key, key_since FROM {CROSSWALK}"
            if exists
            else "SELECT NULL::VARCHAR AS source, NULL::VARCHAR AS source_id, "
            "NULL::VARCHAR AS customer_key, NULL::TIMESTAMP AS key_since WHERE FALSE"
        )
    )
    # Every record with its digest; a first resolution reads them straight into id_records.
    records = (
        f"SELECT {', '.join(COLUMNS)}, {_digest()} AS digest, "
        f"hash(source, source_id) AS id_hash FROM ({RECORDS_SQL})"
    )
    redo = None
    if exists and _agree(conn):
        conn.execute(f"CREATE OR REPLACE TEMP TABLE {ALL_RECORDS} AS {records}")
        redo = _records_to_resolve(conn, whole_above)
        records = f"SELECT * FROM {ALL_RECORDS}"
        if redo is not None:
            records += " SEMI JOIN redo USING (source, source_id)"
    load_records(conn, records)
    links = resolve(conn, groups=True)
    # A group is named by a hash of its lowest record's source and id (a clash of two groups'
    # names only makes a later run resolve both).
    named = conn.execute(f"SELECT id_hash FROM {RECORDS} ORDER BY rid").fetchnumpy()["id_hash"]
    links["id_group"] = named[links.pop("group").to_numpy()]
    conn.register("links_frame", links)
    conn.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE resolved AS
        SELECT r.source, r.source_id, r.seen_at, r.digest, l.component, l.match_rule,
               l.confidence, l.id_group
        FROM {RECORDS} AS r
        JOIN links_frame AS l USING (rid)
        """
    )
    conn.unregister("links_frame")
    retired = frozenset(k for (k,) in conn.execute(f"SELECT retired_key FROM {MERGES}").fetchall())
    merges = assign_keys(conn, now, secret, retired)
    conn.execute("DROP VIEW previous")
    rows = """
        SELECT
            r.source,
            r.source_id,
            CAST(k.customer_key AS VARCHAR) AS customer_key,
            CAST(r.match_rule AS VARCHAR) AS match_rule,
            CAST(r.confidence AS DOUBLE) AS confidence,
            CAST(r.seen_at AS TIMESTAMP) AS seen_at,
            k.key_since
        FROM resolved AS r
        JOIN component_keys AS k USING (component)
        ORDER BY customer_key, seen_at, source, source_id
    """
    groups = "SELECT source, source_id, digest, id_group FROM resolved"
    if redo is None:
        conn.execute(f"CREATE OR REPLACE TABLE {CROSSWALK} AS {rows}")
        conn.execute(f"CREATE OR REPLACE TABLE {GROUPS} AS {groups}")
        written = Written(True, "every record resolved, written whole")
    else:
        for table in (CROSSWALK, GROUPS):
            conn.execute(
                f"DELETE FROM {table} AS t USING replaced AS x "
                "WHERE t.source = x.source AND t.source_id = x.source_id"
            )
        conn.execute(f"INSERT INTO {CROSSWALK} {rows}")
        conn.execute(f"INSERT INTO {GROUPS} {groups}")
        written = Written(False, redo)
    # Both tables carry the mark of the write that made them agree: a crosswalk written by
    # anything else (an older version, by hand) has another, or none, and is not built on.
    mark = f"{MARK}{uuid.uuid4().hex}"
    for table in (CROSSWALK, GROUPS):
        conn.execute(f"COMMENT ON TABLE {table} IS '{mark}'")
    if len(merges):
        conn.register("merges_frame", merges)
        conn.execute(f"INSERT INTO {MERGES} SELECT * FROM merges_frame")
        conn.unregister("merges_frame")
    for temp in (
        "component_keys",
        "resolved",
        RECORDS,
        "phone_owners",
        ALL_RECORDS,
        "redo",
        "replaced",
    ):
        conn.execute(f"DROP TABLE IF EXISTS {temp}")
    return written


def _agree(conn: duckdb.DuckDBPyConnection) -> bool:
    """Whether the crosswalk and the identity groups were written together (see MARK)."""
    marks = conn.execute(
        "SELECT list(comment ORDER BY table_name) FROM duckdb_tables() "
        "WHERE schema_name = 'core' AND table_name IN (?, ?)",
        [CROSSWALK.split(".")[1], GROUPS.split(".")[1]],
    ).fetchall()[0][0]
    return len(marks or []) == 2 and marks[0] == marks[1] and (marks[0] or "").startswith(MARK)


def _records_to_resolve(conn: duckdb.DuckDBPyConnection, whole_above: float) -> str | None:
    """Which records to resolve again: the groups of records new, changed or gone since the
    last run, and of the records sharing a value with the new and changed ones, as the temp
    tables `redo` (records now) and `replaced` (rows of the crosswalk they replace). Says
    what it chose, or None when resolving every record is the better choice."""
    # One join finds the records new or changed (values now) and changed or gone (group then).
    conn.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE differing AS
        SELECT a.*, g.id_group AS old_group
        FROM {ALL_RECORDS} AS a
        FULL JOIN {GROUPS} AS g ON g.source = a.source AND g.source_id = a.source_id
        WHERE a.source IS NULL OR g.source IS NULL OR a.digest IS DISTINCT FROM g.digest
        """
    )
    conn.execute("CREATE OR REPLACE TEMP VIEW changed AS FROM differing WHERE source IS NOT NULL")
    sharing = " UNION ".join(
        f"SELECT source, source_id FROM {ALL_RECORDS} "
        f"WHERE {value} IN (SELECT {value} FROM changed WHERE {value} IS NOT NULL)"
        for value in SHARED_VALUES
    )
    conn.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE replaced AS
        WITH touched AS (
            -- Records whose values changed or are gone, and those sharing the new values.
            SELECT old_group AS id_group FROM differing WHERE old_group IS NOT NULL
            UNION
            SELECT g.id_group
            FROM {GROUPS} AS g
            JOIN ({sharing}) AS s USING (source, source_id)
        )
        SELECT source, source_id FROM {GROUPS} SEMI JOIN touched USING (id_group)
        """
    )
    conn.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE redo AS
        SELECT source, source_id FROM {ALL_RECORDS} SEMI JOIN replaced USING (source, source_id)
        UNION
        SELECT source, source_id FROM changed
        """
    )
    changed, gone, redo, everyone = conn.execute(
        f"""
        SELECT count(*) FILTER (WHERE source IS NOT NULL), count(*) FILTER (WHERE source IS NULL),
               (SELECT count(*) FROM redo), (SELECT count(*) FROM {ALL_RECORDS})
        FROM differing
        """
    ).fetchall()[0]
    conn.execute("DROP VIEW changed")
    conn.execute("DROP TABLE differing")
    if redo > whole_above * everyone:
        return None
    return (
        f"{redo} of {everyone} records resolved again, in the groups {changed} new or changed "
        f"records and {gone} gone ones were in or now touch; the others' rows kept"
    )


def pairwise_scores(conn: duckdb.DuckDBPyConnection, identities_csv: Path) -> dict[str, float]:
    """Pairwise precision and recall of the crosswalk against true identities.

    A pair is two source records; it is true when both are one person, predicted when both
    have one key. Records the crosswalk does not hold (quarantined ones) are left out.
    """
    # One count per (person, key) cell; a person's records and a key's records are sums of
    # cells, so the three pair counts come from one pass over the records.
    row = conn.execute(
        f"""
        WITH truth AS (
            SELECT source, source_id, person_id
            FROM read_csv(?, header = true, all_varchar = true)
        ), cells AS (
            SELECT t.person_id, x.customer_key, count(*) AS n
            FROM truth AS t
            JOIN {CROSSWALK} AS x USING (source, source_id)
            GROUP BY ALL
        ), people AS (
            SELECT sum(n) AS n FROM cells GROUP BY person_id
        ), keys AS (
            SELECT sum(n) AS n FROM cells GROUP BY customer_key
        )
        SELECT
            (SELECT sum(n * (n - 1) / 2) FROM people),
            (SELECT sum(n * (n - 1) / 2) FROM keys),
            (SELECT sum(n * (n - 1) / 2) FROM cells),
            (SELECT count(*) FROM truth),
            (SELECT sum(n) FROM cells)
        """,
        [str(identities_csv)],
    ).fetchall()[0]
    true_pairs, predicted, correct, records, matched = (float(v or 0) for v in row)
    return {
        "precision": correct / predicted if predicted else 1.0,
        "recall": correct / true_pairs if true_pairs else 1.0,
        "true_pairs": true_pairs,
        "predicted_pairs": predicted,
        "records_scored": matched,
        "records_in_truth": records,
    }
