"""Analytics assets (schema analytics): every customer-level result as of one day.

scored_customers fits the models and scores each customer; the group-level tables (needs,
satisfaction) place answers and contacts by the customers' attributes of the same day. Each
table has a blocking contract check: its pandera model and one row per grain.
"""

import json
from datetime import UTC, date, datetime, timedelta
from functools import cache

import dagster as dg
import duckdb
import numpy as np
import pandas as pd
import scipy

from crm_pipeline import code_digest
from crm_pipeline.analytics import breakdowns
from crm_pipeline.analytics.clv import BgNbdFit
from crm_pipeline.analytics.features import (
    customer_features,
    customer_purchase_days,
    purchase_days_between,
)
from crm_pipeline.analytics.gamma_gamma import GammaGammaFit
from crm_pipeline.analytics.needs import ipa, need_scores
from crm_pipeline.analytics.schemas import ANALYTICS_MODELS
from crm_pipeline.analytics.scoring import ClvFits, ModelRun, holdout_run, score_customers
from crm_pipeline.core.model import inquiries_as_of
from crm_pipeline.marts import Built, Mart, Settings, mart_assets, write_frame
from crm_pipeline.raw.tables import table_exists
from crm_pipeline.report import chart_metadata
from crm_pipeline.staging.staged_with import STAGED_WITH_TABLE

UNTIL = "< CAST($end AS DATE) + INTERVAL 1 DAY"
MODEL_RUNS_DDL = """
CREATE TABLE IF NOT EXISTS analytics.model_runs (
    run_at TIMESTAMP, model VARCHAR, status VARCHAR, parameters VARCHAR,
    log_likelihood DOUBLE, customers BIGINT, seconds DOUBLE, as_of TIMESTAMP,
    data_from TIMESTAMP, data_to TIMESTAMP, note VARCHAR, metrics VARCHAR, code VARCHAR
)
"""


@cache
def model_code() -> str:
    """The digest of the code that fits and mines (the analytics and mining modules, and the
    numeric libraries): a fit made by other code (before an upgrade) serves no later day."""
    return code_digest(("analytics", "mining"), np.__version__, scipy.__version__)


def _model_runs_table(conn: duckdb.DuckDBPyConnection) -> None:
    """analytics.model_runs, with the columns an older warehouse lacks added."""
    conn.execute("CREATE SCHEMA IF NOT EXISTS analytics")
    conn.execute(MODEL_RUNS_DDL)
    for column in ("data_from", "data_to"):
        conn.execute(
            f"ALTER TABLE analytics.model_runs ADD COLUMN IF NOT EXISTS {column} TIMESTAMP"
        )
    conn.execute(
        "ALTER TABLE analytics.model_runs ADD COLUMN IF NOT EXISTS metrics VARCHAR DEFAULT '{}'"
    )
    conn.execute("ALTER TABLE analytics.model_runs ADD COLUMN IF NOT EXISTS code VARCHAR")


def data_seen(first_day: date | None, last_day: date) -> tuple[date | None, date | None]:
    """The first and last day of the data a fit saw, for model_runs: none (NULL, NULL) when
    its last day is before the history's first (a holdout's cut-off in a short history)."""
    if first_day is None or last_day < first_day:
        return None, None
    return first_day, last_day


def record_runs(
    conn: duckdb.DuckDBPyConnection,
    runs: list[tuple[ModelRun, date | None, date | None]],
    day: date,
) -> pd.DataFrame:
    """Append model runs, each with the first and last day of the data it saw, to
    analytics.model_runs (adding columns an older warehouse lacks); returns the rows."""
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
                "data_from": pd.Timestamp(start) if start else pd.NaT,
                "data_to": pd.Timestamp(end) if end else pd.NaT,
                "note": r.note,
                "metrics": json.dumps(r.metrics),
                "code": model_code(),
            }
            for r, start, end in runs
        ]
    )
    _model_runs_table(conn)
    conn.register("runs_frame", log)
    conn.execute("INSERT INTO analytics.model_runs BY NAME SELECT * FROM runs_frame")
    conn.unregister("runs_frame")
    return log


def serving_run(
    conn: duckdb.DuckDBPyConnection,
    model: str,
    day: date,
    refit_days: int,
    first_day: date | None,
    parameters: dict | None = None,
) -> tuple[datetime, date] | None:
    """The latest fitted run of `model` in analytics.model_runs that may serve the day, as
    (run_at, as_of): as of the day or up to `refit_days` before it (never after: no later data
    may reach a result), on history from the same first day, by this code (and with these
    parameters, when given), and on that history as it stands: no day of purchases up to its
    as-of day staged again since (a re-delivered day, or every day run again after an
    upgrade). None when there is none, or refit_days is 0."""
    if not refit_days or first_day is None:
        return None
    _model_runs_table(conn)
    # Days staged again after the fit (staging.staged_with: one row per source and day).
    restaged = (
        f"""
          AND NOT EXISTS (
              SELECT 1 FROM {STAGED_WITH_TABLE} AS w
              WHERE w.source IN ('online_orders', 'online_order_items', 'store_purchases')
                AND w.partition_date <= CAST(r.as_of AS DATE)
                AND w.loaded_at > r.run_at
          )"""
        if table_exists(conn, STAGED_WITH_TABLE)
        else ""
    )
    found = conn.execute(
        f"""
        SELECT run_at, CAST(as_of AS DATE)
        FROM analytics.model_runs AS r
        WHERE model = $model AND status = 'fitted'
          AND CAST(as_of AS DATE) BETWEEN CAST($day AS DATE) - $days AND CAST($day AS DATE)
          AND CAST(data_from AS DATE) = CAST($first AS DATE)
          AND code = $code
          AND ($parameters IS NULL OR parameters = $parameters){restaged}
        ORDER BY as_of DESC, run_at DESC
        LIMIT 1
        """,
        {
            "model": model,
            "day": day,
            "days": refit_days,
            "first": first_day,
            "code": model_code(),
            "parameters": None if parameters is None else json.dumps(parameters),
        },
    ).fetchall()
    return found[0] if found else None


def reusable_fits(
    conn: duckdb.DuckDBPyConnection, day: date, refit_days: int, first_day: date | None
) -> tuple[ClvFits, date] | None:
    """The CLV fits of the run that may score the day (serving_run), and their as-of day."""
    serving = serving_run(conn, "bgnbd", day, refit_days, first_day)
    if serving is None:
        return None
    rows = conn.execute(
        """
        SELECT model, parameters, log_likelihood, customers
        FROM analytics.model_runs
        WHERE run_at = ? AND model IN ('bgnbd', 'gamma_gamma') AND status = 'fitted'
        """,
        [serving[0]],
    ).fetchall()
    fits = {model: (json.loads(p), ll, n) for model, p, ll, n in rows}
    if set(fits) != {"bgnbd", "gamma_gamma"}:
        return None
    (bg, bg_ll, bg_n), (gg, gg_ll, gg_n) = fits["bgnbd"], fits["gamma_gamma"]
    return (
        ClvFits(
            BgNbdFit(bg["r"], bg["alpha"], bg["a"], bg["b"], bg_ll, bg_n, True),
            GammaGammaFit(gg["p"], gg["q"], gg["gamma"], gg_ll, gg_n, True),
        ),
        serving[1],
    )


def _core(*tables: str) -> list[dg.AssetKey]:
    return [dg.AssetKey(["core", t]) for t in tables]


SCORED = dg.AssetKey(["analytics", "scored_customers"])


def build_scored_customers(conn: duckdb.DuckDBPyConnection, day: date, settings: Settings) -> Built:
    """Fit BG/NBD and Gamma-Gamma on every buyer up to the day, check BG/NBD on a holdout,
    score every customer first seen by then, and log the fits to analytics.model_runs; within
    `refit_days` of a fit on the same history, score with its parameters instead (a daily run
    rescores every customer without refitting every day)."""
    analysis = settings.analysis
    end = {"end": day}
    customers = (
        conn.execute(
            f"""
            SELECT customer_key, customer_type, city, region, CAST(income AS DOUBLE) AS income,
                   date_diff('day', first_seen_at, CAST($end AS DATE)) AS tenure_days
            FROM core.customers WHERE first_seen_at {UNTIL}
            ORDER BY customer_key  -- in the order rank_by_value breaks ties by: no re-sort
            """,
            end,
        )
        .df()
        .set_index("customer_key")
    )
    feedback = conn.execute(
        "SELECT customer_key, submitted_at, satisfaction_rating, nps FROM core.feedback "
        f"WHERE submitted_at {UNTIL}",
        end,
    ).df()
    inquiries = conn.execute(
        "SELECT customer_key, topic, first_response_hours, resolution_hours "
        f"FROM ({inquiries_as_of('$end')})",
        end,
    ).df()
    first_day = conn.execute(
        "SELECT CAST(min(ordered_at) AS DATE) FROM core.order_lines "
        f"WHERE customer_key IS NOT NULL AND ordered_at {UNTIL}",
        end,
    ).fetchall()[0][0]
    reusable = reusable_fits(conn, day, analysis.refit_days, first_day)
    # Read once for the day's features and the holdout's (features at the cutoff, purchases after).
    customer_purchase_days(conn, day)
    scored, runs = score_customers(
        customers,
        customer_features(conn, day, read_table=True),
        feedback,
        inquiries,
        analysis.clv_months,
        analysis.discount_rate,
        analysis.minimums(),
        reused=reusable[0] if reusable else None,
    )
    logged = [(r, first_day, day) for r in runs]
    holdout = None
    if not reusable:
        cutoff = day - timedelta(days=analysis.holdout_days)
        holdout = holdout_run(
            customer_features(conn, cutoff, read_table=True),
            purchase_days_between(conn, cutoff, day, read_table=True),
            analysis.holdout_days,
            analysis.minimums(),
        )
        logged.append((holdout, *data_seen(first_day, cutoff)))
    scored["as_of"] = pd.Timestamp(day)
    conn.register("scored_frame", scored.reset_index(names="customer_key"))
    conn.begin()
    write_frame(
        conn,
        "analytics.scored_customers",
        "scored_frame",
        ANALYTICS_MODELS["scored_customers"],
        "value_rank",
    )
    log = record_runs(conn, logged, day) if logged else None
    conn.commit()
    conn.unregister("scored_frame")
    fits = {}
    if log is not None:
        shown = log[
            ["model", "status", "parameters", "log_likelihood", "customers", "seconds", "note"]
        ]
        fits["model_runs"] = dg.MetadataValue.md(shown.to_markdown(index=False))
    if holdout is not None:
        fits["holdout"] = dg.MetadataValue.json(holdout.metrics or {"skipped": holdout.note})
    elif not runs:
        fits["clv_fits"] = dg.MetadataValue.text(
            f"BG/NBD and Gamma-Gamma parameters fitted as of {reusable[1]} (within "
            f"{analysis.refit_days} days), in analytics.model_runs with their holdout check"
        )
    return Built(
        fits
        | {"segments": dg.MetadataValue.json(scored["rfm_segment"].value_counts().to_dict())}
        | chart_metadata(conn, "RFM segments: size and value"),
        f"{len(scored)} customers scored",
    )


def _needs_answers(
    conn: duckdb.DuckDBPyConnection, day: date, segments: bool = False
) -> pd.DataFrame:
    """Need answers up to the day; with `segments`, the customer's RFM segment and type."""
    unknown = f"'{breakdowns.UNKNOWN}'"
    attributes = (
        f"coalesce(s.rfm_segment, {unknown}) AS rfm_segment, "
        f"coalesce(s.customer_type, {unknown}) AS customer_type"
        if segments
        else "NULL AS rfm_segment, NULL AS customer_type"
    )
    joined = "LEFT JOIN analytics.scored_customers AS s USING (customer_key)" if segments else ""
    return conn.execute(
        f"""
        SELECT n.customer_key, n.dimension, CAST(n.importance AS DOUBLE) AS importance,
               CAST(n.satisfaction AS DOUBLE) AS satisfaction, {attributes}
        FROM core.feedback_needs AS n {joined}
        WHERE n.submitted_at {UNTIL}
        """,
        {"end": day},
    ).df()


def build_need_ipa(conn: duckdb.DuckDBPyConnection, day: date, _: Settings) -> Built:
    answers = _needs_answers(conn, day, segments=True)
    tables = [ipa(answers).assign(breakdown="overall", group_value="all")]
    for by in ("rfm_segment", "customer_type"):
        tables.append(
            ipa(answers, by=[by]).rename(columns={by: "group_value"}).assign(breakdown=by)
        )
    frame = pd.concat(tables, ignore_index=True).dropna(subset=["satisfaction"])
    frame["as_of"] = pd.Timestamp(day)
    columns = list(ANALYTICS_MODELS["need_ipa"].to_schema().columns)
    conn.register("ipa_frame", frame[columns])
    write_frame(conn, "analytics.need_ipa", "ipa_frame", ANALYTICS_MODELS["need_ipa"])
    conn.unregister("ipa_frame")
    overall = frame[frame["breakdown"] == "overall"].set_index("dimension")
    return Built(
        {"overall": dg.MetadataValue.md(overall.drop(columns=["as_of"]).to_markdown())}
        | chart_metadata(conn, "Needs: importance against performance"),
        f"{len(frame)} rows from {len(answers)} answers",
    )


def build_customer_needs(conn: duckdb.DuckDBPyConnection, day: date, _: Settings) -> Built:
    answers = _needs_answers(conn, day).dropna(subset=["importance", "satisfaction"])
    frame = need_scores(answers)
    frame["as_of"] = pd.Timestamp(day)
    conn.register("needs_frame", frame)
    write_frame(
        conn,
        "analytics.customer_needs",
        "needs_frame",
        ANALYTICS_MODELS["customer_needs"],
        "customer_key, dimension",
    )
    conn.unregister("needs_frame")
    return Built({}, f"{frame['customer_key'].nunique()} customers with answers")


def build_satisfaction_summary(
    conn: duckdb.DuckDBPyConnection, day: date, settings: Settings
) -> Built:
    breakdowns.customer_dimensions(conn, day, settings.rules)
    breakdowns.satisfaction_summary(conn, day, "analytics.satisfaction_summary")
    overall = conn.execute(
        "SELECT * EXCLUDE (breakdown, group_value, as_of) FROM analytics.satisfaction_summary "
        "WHERE breakdown = 'overall'"
    ).df()
    return Built({"overall": dg.MetadataValue.md(overall.to_markdown(index=False))}, "written")


def build_unmet_needs(conn: duckdb.DuckDBPyConnection, day: date, _: Settings) -> Built:
    breakdowns.unmet_needs(conn, day, "analytics.unmet_needs")
    return Built({}, "written")


analytics_assets = mart_assets(
    "analytics",
    ANALYTICS_MODELS,
    [
        Mart(
            "scored_customers",
            ["customer_key"],
            _core("customers", "order_lines", "feedback", "inquiries"),
            build_scored_customers,
        ),
        Mart(
            "need_ipa",
            ["breakdown", "group_value", "dimension"],
            [*_core("feedback_needs"), SCORED],
            build_need_ipa,
        ),
        Mart(
            "customer_needs",
            ["customer_key", "dimension"],
            _core("feedback_needs"),
            build_customer_needs,
        ),
        Mart(
            "satisfaction_summary",
            ["breakdown", "group_value"],
            [*_core("feedback", "inquiries", "order_lines"), SCORED],
            build_satisfaction_summary,
        ),
        Mart(
            "unmet_needs",
            ["topic", "category"],
            _core("inquiries", "order_lines"),
            build_unmet_needs,
        ),
    ],
)
