"""Analytics assets (schema analytics): scored customers as of a day, and the model runs."""

import json
from datetime import UTC, datetime

import dagster as dg
import pandas as pd

from crm_pipeline.analytics.features import customer_features
from crm_pipeline.analytics.schemas import ANALYTICS_MODELS
from crm_pipeline.analytics.scoring import score_customers
from crm_pipeline.analytics.settings import AnalysisSettings
from crm_pipeline.contracts import validate_query
from crm_pipeline.core.schemas import column_types
from crm_pipeline.reporting import schema_of, table_metadata
from crm_pipeline.resources import WAREHOUSE_POOL, WarehouseResource

KEY = dg.AssetKey(["analytics", "scored_customers"])
CONTRACT = ANALYTICS_MODELS["scored_customers"]


@dg.asset(
    key=KEY,
    group_name="analytics",
    description=CONTRACT.__doc__,
    deps=[dg.AssetKey(["core", t]) for t in ("customers", "order_lines", "feedback", "inquiries")],
    pool=WAREHOUSE_POOL,
    kinds={"duckdb", "python"},
    tags={"layer": "analytics"},
    metadata={"dagster/column_schema": schema_of(CONTRACT, column_types(CONTRACT))},
    check_specs=[
        dg.AssetCheckSpec(
            "contract",
            asset=KEY,
            blocking=True,
            description="One row per customer, scores in range, P(alive) in [0, 1], one segment each.",
        )
    ],
)
def scored_customers(
    context: dg.AssetExecutionContext, warehouse: WarehouseResource, analysis: AnalysisSettings
) -> dg.MaterializeResult:
    with warehouse.connect() as conn:
        day = (
            analysis.as_of_date()
            or conn.execute(
                "SELECT coalesce(CAST(max(ordered_at) AS DATE), current_date) FROM core.order_lines"
            ).fetchall()[0][0]
        )
        end = {"end": day}
        customers = (
            conn.execute(
                """
            SELECT customer_key, customer_type, city, region, CAST(income AS DOUBLE) AS income,
                   date_diff('day', first_seen_at, CAST($end AS DATE)) AS tenure_days
            FROM core.customers
            WHERE first_seen_at < CAST($end AS DATE) + INTERVAL 1 DAY
            """,
                end,
            )
            .df()
            .set_index("customer_key")
        )
        feedback = conn.execute(
            "SELECT customer_key, satisfaction_rating, nps FROM core.feedback "
            "WHERE submitted_at < CAST($end AS DATE) + INTERVAL 1 DAY",
            end,
        ).df()
        inquiries = conn.execute(
            "SELECT customer_key, topic FROM core.inquiries "
            "WHERE opened_at < CAST($end AS DATE) + INTERVAL 1 DAY",
            end,
        ).df()
        features = customer_features(conn, day)
        scored, runs = score_customers(
            customers, features, feedback, inquiries, analysis.clv_months, analysis.discount_rate
        )
        scored["as_of"] = pd.Timestamp(day)
        frame = scored.reset_index(names="customer_key")
        run_at = datetime.now(UTC).replace(tzinfo=None)
        log = pd.DataFrame(
            [
                {
                    "run_at": run_at,
                    "model": r.model,
                    "status": r.status,
                    "parameters": json.dumps(r.parameters),
                    "log_likelihood": r.log_likelihood,
                    "customers": r.customers,
                    "seconds": round(r.seconds, 3),
                    "as_of": pd.Timestamp(day),
                    "note": r.note,
                }
                for r in runs
            ]
        )
        conn.execute("CREATE SCHEMA IF NOT EXISTS analytics")
        conn.register("scored_frame", frame)
        conn.register("runs_frame", log)
        conn.begin()
        conn.execute(
            "CREATE OR REPLACE TABLE analytics.scored_customers AS SELECT * FROM scored_frame"
        )
        conn.execute(
            "CREATE TABLE IF NOT EXISTS analytics.model_runs AS SELECT * FROM runs_frame WHERE FALSE"
        )
        conn.execute("INSERT INTO analytics.model_runs SELECT * FROM runs_frame")
        conn.commit()
        outcome = validate_query(conn, "SELECT * FROM analytics.scored_customers", [], CONTRACT)
        dupes = conn.execute(
            "SELECT count(*) - count(DISTINCT customer_key) FROM analytics.scored_customers"
        ).fetchall()[0][0]
        metadata = table_metadata(conn, "analytics.scored_customers", CONTRACT)
        metadata["as_of"] = dg.MetadataValue.text(day.isoformat())
        metadata["model_runs"] = dg.MetadataValue.md(
            log.drop(columns="run_at").to_markdown(index=False)
        )
        metadata["segments"] = dg.MetadataValue.json(frame["rfm_segment"].value_counts().to_dict())
        context.log.info(f"analytics.scored_customers: {len(frame)} customers as of {day}")
        return dg.MaterializeResult(
            metadata=metadata,
            check_results=[
                dg.AssetCheckResult(
                    check_name="contract",
                    passed=outcome.passed and dupes == 0,
                    severity=dg.AssetCheckSeverity.ERROR,
                    description=outcome.describe()
                    + (f"\n{dupes} customer keys repeat" if dupes else ""),
                )
            ],
        )


analytics_assets = [scored_customers]
