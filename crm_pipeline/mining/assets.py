"""Mining assets (schema mining): association rules, next-best products and their holdout
evaluation, as of the analysis day."""

import time
from concurrent.futures import ThreadPoolExecutor
from datetime import date, datetime, timedelta
from pathlib import Path

import dagster as dg
import duckdb

from crm_pipeline import replace_file
from crm_pipeline.analytics.assets import data_seen, record_runs, serving_run
from crm_pipeline.analytics.scoring import ModelRun
from crm_pipeline.analytics.settings import AnalysisSettings
from crm_pipeline.marts import Built, Mart, Settings, as_of_day, mart_assets
from crm_pipeline.mining import efficiency
from crm_pipeline.mining.evaluation import evaluate
from crm_pipeline.mining.opportunities import opportunities, penetration
from crm_pipeline.mining.ranking import purchase_lines
from crm_pipeline.mining.recommend import recommend
from crm_pipeline.mining.rules import LEVELS, mine_rules
from crm_pipeline.mining.schemas import MINING_MODELS
from crm_pipeline.mining.settings import MiningSettings
from crm_pipeline.raw.tables import table_exists
from crm_pipeline.report import chart_metadata, report_html
from crm_pipeline.resources import WAREHOUSE_POOL, WarehouseResource

RULES = dg.AssetKey(["mining", "association_rules"])
# Their runs in analytics.model_runs: the rules mined, the recommender's holdout evaluation.
RULES_RUN, HOLDOUT_RUN, RUNS = "association_rules", "recommender_holdout", "analytics.model_runs"
ORDER_LINES = dg.AssetKey(["core", "order_lines"])


def _first_day(conn: duckdb.DuckDBPyConnection) -> date | None:
    """The first day of the order history the rules and the recommender see."""
    (first,) = conn.execute("SELECT CAST(min(ordered_at) AS DATE) FROM core.order_lines").fetchone()
    return first


def _thresholds(mining: MiningSettings) -> dict:
    return {
        "min_support": mining.min_support,
        "min_baskets": mining.min_baskets,
        "min_confidence": mining.min_confidence,
        "min_lift": mining.min_lift,
    }


def _holds_rules_of(conn: duckdb.DuckDBPyConnection, run_at: datetime) -> bool:
    """Whether mining.association_rules holds the rules of the mining logged at run_at: every
    mining replaces the table and logs itself in the same transaction, so the table holds the
    rules of the latest one."""
    if not table_exists(conn, "mining.association_rules"):
        return False
    (latest,) = conn.execute(
        f"SELECT max(run_at) FROM {RUNS} WHERE model = ? AND status = 'fitted'", [RULES_RUN]
    ).fetchone()
    return latest == run_at


def build_association_rules(
    conn: duckdb.DuckDBPyConnection, day: date, settings: Settings
) -> Built:
    """Mine the rules as of the day, unless rules mined within refit_days on the same
    history with the same thresholds serve it (then the table stays as it is)."""
    mining, first_day = settings.mining, _first_day(conn)
    serving = serving_run(conn, RULES_RUN, day, mining.refit_days, first_day, _thresholds(mining))
    if serving and _holds_rules_of(conn, serving[0]):
        mined = serving[1]
        return Built(
            {"mined_as_of": dg.MetadataValue.text(mined.isoformat())},
            f"rules mined as of {mined} kept (they serve {mining.refit_days} days)",
        )
    started = time.perf_counter()
    tables = {level: f"{level}_rules" for level in LEVELS}
    baskets = mine_rules(conn, day, mining, tables)["product"]
    counts = {
        level: conn.execute(f"SELECT count(*) FROM {table}").fetchall()[0][0]
        for level, table in tables.items()
    }
    parts = [f"SELECT * FROM {table}" for table in tables.values()]
    conn.begin()
    conn.execute(
        "CREATE OR REPLACE TABLE mining.association_rules AS "
        f"SELECT *, CAST($day AS TIMESTAMP) AS as_of FROM ({' UNION ALL '.join(parts)})",
        {"day": day},
    )
    for level in LEVELS:
        conn.execute(f"DROP TABLE {level}_rules")
    mined = ModelRun(
        RULES_RUN,
        "fitted",
        _thresholds(mining),
        None,
        baskets,
        time.perf_counter() - started,
        f"{counts['product']} product and {counts['category']} category rules",
    )
    record_runs(conn, [(mined, first_day, day)], day)
    conn.commit()
    top = conn.execute(
        "SELECT antecedent, consequent, round(confidence, 3) AS confidence, round(lift, 2) AS lift "
        "FROM mining.association_rules WHERE level = 'product' ORDER BY lift DESC LIMIT 10"
    ).df()
    return Built(
        {
            "baskets": baskets,
            "rules_by_level": dg.MetadataValue.json(counts),
            "strongest_product_rules": dg.MetadataValue.md(top.to_markdown(index=False)),
        },
        f"{counts['product']} product and {counts['category']} category rules from {baskets} baskets",
    )


def _level(level: str) -> str:
    return f"(SELECT * FROM mining.association_rules WHERE level = '{level}')"


def build_recommendations(conn: duckdb.DuckDBPyConnection, day: date, settings: Settings) -> Built:
    """The top products of every buyer as of the day; the recommender's holdout evaluation
    too, unless one within refit_days on the same history serves (as the rules do)."""
    mining, first_day = settings.mining, _first_day(conn)
    n = mining.recommendations
    lines = purchase_lines(conn, day)
    cutoff = day - timedelta(days=mining.holdout_days)
    evaluation = {"recommendations": n, "holdout_days": mining.holdout_days}
    evaluated = serving_run(conn, HOLDOUT_RUN, day, mining.refit_days, first_day, evaluation)
    # The holdout needs no database: it runs on a second thread while the recommendations are
    # ranked and written (numpy and DuckDB release the GIL in their loops).
    with ThreadPoolExecutor(1) as pool:
        holdout = None if evaluated else pool.submit(evaluate, lines, cutoff, n)
        recommend(
            conn,
            day,
            _level("product"),
            _level("category"),
            n,
            "mining.recommendations",
            lines=lines,
        )
        figures = holdout.result() if holdout else None
    levels = conn.execute(
        "SELECT rule_level, count(*) FROM mining.recommendations GROUP BY 1"
    ).fetchall()
    by_level = {"by_rule_level": dg.MetadataValue.json(dict(levels))}
    total = sum(c for _, c in levels)
    if figures is None:
        return Built(
            by_level
            | {"holdout": dg.MetadataValue.text(f"evaluated as of {evaluated[1]}, in {RUNS}")},
            f"{total} recommendations; holdout of {evaluated[1]} serves",
        )
    if figures["customers"]:
        note = (
            f"recommended from purchases up to {cutoff}, scored on first purchases of a product "
            f"up to {day}: hit rate at {n} {figures[f'hit_rate_at_{n}']:.3f} against "
            f"{figures[f'baseline_hit_rate_at_{n}']:.3f} for the best sellers"
        )
    else:
        note = (
            f"no customer bought up to {cutoff} (the cut-off, holdout_days = "
            f"{mining.holdout_days} before {day}) and bought a product new to them after it: "
            "nothing to score (a history shorter than the holdout has none)"
        )
    run = ModelRun(
        HOLDOUT_RUN,
        "fitted" if figures["customers"] else "skipped",
        evaluation,
        None,
        figures["customers"],
        0.0,
        note,
        figures,
    )
    record_runs(conn, [(run, *data_seen(first_day, cutoff))], day)
    return Built(
        by_level | {"holdout": dg.MetadataValue.json(figures)},
        f"{total} recommendations; holdout {run.note}",
    )


def build_sales_efficiency(conn: duckdb.DuckDBPyConnection, day: date, _: Settings) -> Built:
    efficiency.sales_efficiency(conn, day, "mining.sales_efficiency")
    overall = conn.execute(
        "SELECT * EXCLUDE (as_of) FROM mining.sales_efficiency "
        "WHERE breakdown IN ('overall', 'channel')"
    ).df()
    return Built(
        {"overall_and_channels": dg.MetadataValue.md(overall.to_markdown(index=False))}, "written"
    )


def build_cohort_retention(conn: duckdb.DuckDBPyConnection, day: date, _: Settings) -> Built:
    efficiency.cohort_retention(conn, day, "mining.cohort_retention")
    return Built(chart_metadata(conn, "Cohort retention"), "written")


def build_inquiry_conversion(
    conn: duckdb.DuckDBPyConnection, day: date, settings: Settings
) -> Built:
    days = settings.mining.conversion_days
    efficiency.inquiry_conversion(conn, day, days, "mining.inquiry_conversion")
    return Built({}, f"written ({days}-day window)")


def build_penetration(conn: duckdb.DuckDBPyConnection, day: date, settings: Settings) -> Built:
    penetration(conn, day, settings.mining, "mining.penetration")
    cells, white = conn.execute(
        "SELECT count(*), count(*) FILTER (WHERE whitespace) FROM mining.penetration"
    ).fetchall()[0]
    return Built({"whitespace_cells": white}, f"{cells} cells, {white} whitespace")


def build_opportunities(conn: duckdb.DuckDBPyConnection, day: date, settings: Settings) -> Built:
    opportunities(conn, day, settings.mining, "mining.opportunities")
    top = conn.execute(
        "SELECT type, target, category, round(estimated_value) AS value, reason "
        "FROM mining.opportunities WHERE rank <= 3 ORDER BY type, rank"
    ).df()
    counts = conn.execute("SELECT type, count(*) FROM mining.opportunities GROUP BY 1").fetchall()
    return Built(
        {
            "top_opportunities": dg.MetadataValue.md(top.to_markdown(index=False)),
            "by_type": dg.MetadataValue.json(dict(counts)),
        }
        | chart_metadata(conn, "Top opportunities"),
        f"{sum(c for _, c in counts)} opportunities",
    )


INQUIRIES = dg.AssetKey(["core", "inquiries"])
REPORT = dg.AssetKey(["mining", "report"])


def write_report(
    warehouse: WarehouseResource, analysis: AnalysisSettings
) -> tuple[Path, str, date, list[str]]:
    """Write report.html beside the warehouse, from its tables as of the analysis day: its
    path, text, day and the sections that could not be drawn."""
    with warehouse.connect(read_only=True) as conn:
        day = as_of_day(conn, analysis)
        page, missing = report_html(conn, day)
    path = Path(warehouse.path).resolve().with_name("report.html")
    partial = path.with_suffix(".html.partial")
    partial.write_text(page, encoding="utf-8")
    replace_file(partial, path)  # readers never see half a report
    return path, page, day, missing


@dg.asset(
    key=REPORT,
    group_name="mining",
    description="A static HTML report beside the warehouse (report.html): the charts and the "
    "headline tables of the analytics and mining marts; it opens in a browser with no server.",
    deps=[
        dg.AssetKey(["analytics", name])
        for name in ("scored_customers", "need_ipa", "satisfaction_summary", "unmet_needs")
    ]
    + [
        dg.AssetKey(["mining", name])
        for name in ("sales_efficiency", "cohort_retention", "inquiry_conversion", "opportunities")
    ],
    pool=WAREHOUSE_POOL,
    kinds={"html"},
    tags={"layer": "mining"},
    check_specs=[
        dg.AssetCheckSpec(
            "complete",
            asset=REPORT,
            description="Every chart and table of the report could be drawn.",
        )
    ],
)
def report(
    context: dg.AssetExecutionContext, warehouse: WarehouseResource, analysis: AnalysisSettings
) -> dg.MaterializeResult:
    path, page, day, missing = write_report(warehouse, analysis)
    context.log.info(f"Report written to {path}")
    return dg.MaterializeResult(
        metadata={
            "path": dg.MetadataValue.path(str(path)),
            "bytes": len(page.encode()),
            "as_of": dg.MetadataValue.text(day.isoformat()),
        },
        check_results=[
            dg.AssetCheckResult(
                check_name="complete",
                passed=not missing,
                severity=dg.AssetCheckSeverity.WARN,
                description=(
                    "Every section drawn"
                    if not missing
                    else "Not materialized yet, so missing: " + ", ".join(missing)
                ),
            )
        ],
    )


mining_assets = mart_assets(
    "mining",
    MINING_MODELS,
    [
        Mart(
            "association_rules",
            ["level", "antecedent", "consequent"],
            [ORDER_LINES],
            build_association_rules,
            large_memory=True,
        ),
        Mart(
            "recommendations",
            ["customer_key", "rank"],
            [ORDER_LINES, dg.AssetKey(["core", "products"]), RULES],
            build_recommendations,
            large_memory=True,
        ),
        Mart(
            "sales_efficiency",
            ["breakdown", "group_value"],
            [ORDER_LINES, INQUIRIES],
            build_sales_efficiency,
            large_memory=True,
        ),
        Mart(
            "penetration",
            ["customer_type", "region", "category"],
            [ORDER_LINES, dg.AssetKey(["analytics", "scored_customers"])],
            build_penetration,
            large_memory=True,
        ),
        Mart(
            "opportunities",
            ["type", "target", "category"],
            [
                dg.AssetKey(["mining", "penetration"]),
                ORDER_LINES,
                dg.AssetKey(["core", "stores"]),
                dg.AssetKey(["analytics", "scored_customers"]),
                dg.AssetKey(["mining", "recommendations"]),
            ],
            build_opportunities,
            large_memory=True,
        ),
        Mart(
            "cohort_retention",
            ["cohort_month", "months_since"],
            [ORDER_LINES],
            build_cohort_retention,
            large_memory=True,
        ),
        Mart(
            "inquiry_conversion",
            ["topic", "channel"],
            [ORDER_LINES, INQUIRIES],
            build_inquiry_conversion,
            large_memory=True,
        ),
    ],
)
mining_assets.append(report)
