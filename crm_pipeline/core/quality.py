"""The data-quality report: where every delivered row went, per source and partition, and how
identity-bearing records were matched."""

from __future__ import annotations

import duckdb
import pandas as pd

# One row per source, partition, stage and rule: a long table analysts pivot as they need.
REPORT_SQL = """
CREATE OR REPLACE TABLE core.quality_report AS
WITH counts AS (
    SELECT source, partition_date, 'delivered' AS stage, '' AS rule, sum(source_rows) AS rows
    FROM raw.deliveries GROUP BY ALL
    UNION ALL
    SELECT source, partition_date, 'raw_rejected', reason, count(*)
    FROM quarantine.raw_rejects GROUP BY ALL
    UNION ALL
    SELECT source, partition_date, 'quarantined', rule, count(*)
    FROM quarantine.staging_rejects GROUP BY ALL
    UNION ALL
    SELECT source, partition_date, 'merged', rule, count(*)
    FROM quarantine.merged_duplicates GROUP BY ALL
    UNION ALL
    SELECT source, partition_date, 'nulled', column_name, sum(rows)
    FROM quarantine.nulled_values GROUP BY ALL
    UNION ALL
    -- Orders whose recorded total differs from their staged lines (a line set aside, or the
    -- shop's total is wrong): kept, and flagged for the analyst.
    SELECT 'online_orders', o.partition_date, 'flagged', 'total_mismatch', count(*)
    FROM staging.online_orders AS o
    LEFT JOIN (
        SELECT order_id, sum(quantity * unit_price - discount) AS net
        FROM staging.online_order_items
        GROUP BY order_id
    ) AS i USING (order_id)
    WHERE abs(o.total_amount - coalesce(i.net, 0)) > 0.01
    GROUP BY ALL
    UNION ALL
    -- Orders whose account is not among the staged accounts (the shop's accounts table lacks
    -- it, or its row was set aside): kept, under a customer known from the order alone.
    SELECT 'online_orders', o.partition_date, 'flagged', 'unknown_account', count(*)
    FROM staging.online_orders AS o
    ANTI JOIN staging.online_accounts AS a USING (account_id)
    GROUP BY ALL
    UNION ALL
    -- Orders in another currency than most of the shop's: kept, their amounts added to the
    -- others' as delivered (nothing converts them).
    SELECT 'online_orders', o.partition_date, 'flagged', 'other_currency', count(*)
    FROM staging.online_orders AS o
    WHERE o.currency <> (
        SELECT currency FROM staging.online_orders
        WHERE currency IS NOT NULL
        GROUP BY currency
        ORDER BY count(*) DESC, currency
        LIMIT 1
    )
    GROUP BY ALL
    UNION ALL
    SELECT source, NULL, 'identity_match', match_rule, count(*)
    FROM core.customer_crosswalk GROUP BY ALL
    {raw_and_staged}
)
SELECT source, partition_date, stage, rule, CAST(rows AS BIGINT) AS rows
FROM counts
ORDER BY source, partition_date NULLS FIRST, stage, rule
"""
STAGES = (
    "delivered",
    "raw_rejected",
    "raw",
    "quarantined",
    "merged",
    "staged",
    "nulled",
    "flagged",
    "identity_match",
)


def build_quality_report(conn: duckdb.DuckDBPyConnection, sources: list[str]) -> None:
    raw_and_staged = "".join(
        f"""
    UNION ALL
    SELECT '{s}', partition_date, 'raw', '', count(*) FROM raw.{s} GROUP BY ALL
    UNION ALL
    SELECT '{s}', partition_date, 'staged', '', count(*) FROM staging.{s} GROUP BY ALL"""
        for s in sources
    )
    conn.execute(REPORT_SQL.format(raw_and_staged=raw_and_staged))


def summary_markdown(conn: duckdb.DuckDBPyConnection) -> str:
    """Totals per source: rows in, rows set aside at each stage, rows out, matches by rule."""
    totals = conn.execute(
        """
        SELECT source, stage, sum(rows) AS rows
        FROM core.quality_report
        WHERE stage <> 'identity_match'
        GROUP BY ALL
        """
    ).df()
    table = totals.pivot(index="source", columns="stage", values="rows").fillna(0).astype(int)
    table = table.reindex(columns=[s for s in STAGES if s in table.columns])
    matches = conn.execute(
        """
        SELECT rule AS match_rule, sum(rows) AS records
        FROM core.quality_report
        WHERE stage = 'identity_match'
        GROUP BY ALL
        ORDER BY 2 DESC
        """
    ).df()
    rules = conn.execute(
        """
        SELECT source, stage, rule, sum(rows) AS rows
        FROM core.quality_report
        WHERE stage IN ('raw_rejected', 'quarantined', 'merged', 'nulled', 'flagged')
        GROUP BY ALL
        ORDER BY source, stage, rows DESC
        """
    ).df()
    return "\n\n".join(
        [
            "### Rows per source (all partitions; nulled = staged values kept as NULL)",
            table.reset_index().to_markdown(index=False),
            "### Set aside, by rule",
            rules.to_markdown(index=False) if len(rules) else "_nothing set aside_",
            "### Identity matches, by rule",
            matches.to_markdown(index=False) if len(matches) else "_no records_",
        ]
    )


def unconserved(conn: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    """Source partitions where raw != staged + quarantined + merged (should be none)."""
    return conn.execute(
        """
        SELECT source, partition_date,
               sum(rows) FILTER (WHERE stage = 'raw') AS raw,
               sum(rows) FILTER (WHERE stage IN ('staged', 'quarantined', 'merged')) AS accounted
        FROM core.quality_report
        WHERE stage IN ('raw', 'staged', 'quarantined', 'merged')
        GROUP BY ALL
        HAVING coalesce(raw, 0) <> coalesce(accounted, 0)
        """
    ).df()
