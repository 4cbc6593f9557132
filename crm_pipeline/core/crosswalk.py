"""Writing the crosswalk with stable keys, and scoring it against a generator's ground truth."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import duckdb
import pandas as pd

from crm_pipeline.core.identity import load_records, resolve
from crm_pipeline.core.keys import assign_keys

CROSSWALK = "core.customer_crosswalk"
MERGES = "core.customer_key_merges"
# Sources a generator's identities.csv scores (orders reach a customer through their account).
SCORED_SOURCES = ("online_accounts", "loyalty_members", "store_purchases", "inquiries", "feedback")


def build_crosswalk(conn: duckdb.DuckDBPyConnection, now: datetime) -> pd.DataFrame:
    """Resolve identities, keep earlier keys, record merges; returns the new crosswalk."""
    conn.execute(
        f"""
        CREATE TABLE IF NOT EXISTS {MERGES} (
            retired_key VARCHAR NOT NULL,
            surviving_key VARCHAR NOT NULL,
            merged_at TIMESTAMP NOT NULL
        )
        """
    )
    exists = conn.execute(
        "SELECT count(*) FROM information_schema.tables "
        "WHERE table_schema = 'core' AND table_name = 'customer_crosswalk'"
    ).fetchone()[0]
    previous = (
        conn.execute(f"SELECT source, source_id, customer_key, key_since FROM {CROSSWALK}").df()
        if exists
        else pd.DataFrame(columns=["source", "source_id", "customer_key", "key_since"])
    )
    resolved = resolve(load_records(conn))
    keyed, merges = assign_keys(resolved, previous, now)
    crosswalk = keyed[
        ["source", "source_id", "customer_key", "match_rule", "confidence", "seen_at", "key_since"]
    ]
    conn.register("crosswalk_frame", crosswalk)
    conn.execute(
        f"""
        CREATE OR REPLACE TABLE {CROSSWALK} AS
        SELECT
            CAST(source AS VARCHAR) AS source,
            CAST(source_id AS VARCHAR) AS source_id,
            CAST(customer_key AS VARCHAR) AS customer_key,
            CAST(match_rule AS VARCHAR) AS match_rule,
            CAST(confidence AS DOUBLE) AS confidence,
            CAST(seen_at AS TIMESTAMP) AS seen_at,
            CAST(key_since AS TIMESTAMP) AS key_since
        FROM crosswalk_frame
        ORDER BY customer_key, seen_at, source, source_id
        """
    )
    conn.unregister("crosswalk_frame")
    if len(merges):
        conn.register("merges_frame", merges)
        conn.execute(f"INSERT INTO {MERGES} SELECT * FROM merges_frame")
        conn.unregister("merges_frame")
    return crosswalk


def pairwise_scores(conn: duckdb.DuckDBPyConnection, identities_csv: Path) -> dict[str, float]:
    """Pairwise precision and recall of the crosswalk against true identities.

    A pair is two source records; it is true when both are one person, predicted when both
    have one key. Records the crosswalk does not hold (quarantined ones) are left out.
    """
    row = conn.execute(
        f"""
        WITH truth AS (
            SELECT source, source_id, person_id
            FROM read_csv(?, header = true, all_varchar = true)
        ), both_sides AS (
            SELECT t.person_id, x.customer_key
            FROM truth AS t
            JOIN {CROSSWALK} AS x USING (source, source_id)
        ), pairs AS (
            SELECT 'true' AS kind, count(*) AS n FROM both_sides GROUP BY person_id
            UNION ALL
            SELECT 'predicted', count(*) FROM both_sides GROUP BY customer_key
            UNION ALL
            SELECT 'both', count(*) FROM both_sides GROUP BY person_id, customer_key
        )
        SELECT
            sum(n * (n - 1) / 2) FILTER (WHERE kind = 'true'),
            sum(n * (n - 1) / 2) FILTER (WHERE kind = 'predicted'),
            sum(n * (n - 1) / 2) FILTER (WHERE kind = 'both'),
            (SELECT count(*) FROM truth),
            (SELECT count(*) FROM both_sides)
        FROM pairs
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
