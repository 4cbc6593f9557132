"""The static HTML report beside the warehouse: the charts and the headline tables of the
analytics and mining marts, in one file that opens in a browser with no server."""

from __future__ import annotations

import base64
import hashlib
import html
from collections.abc import Callable
from datetime import date

import dagster as dg
import duckdb
import pandas as pd

from crm_pipeline import pictures

CHART_QUERIES: dict[str, tuple[str, Callable[[pd.DataFrame], bytes]]] = {
    "Needs: importance against performance": (
        (
            "SELECT dimension, importance, satisfaction, quadrant FROM analytics.need_ipa "
            "WHERE breakdown = 'overall'"
        ),
        pictures.ipa_chart,
    ),
    "RFM segments: size and value": (
        (
            "SELECT rfm_segment, count(*) AS customers, sum(clv_12m) AS clv "
            "FROM analytics.scored_customers GROUP BY 1"
        ),
        pictures.segment_chart,
    ),
    "Cohort retention": ("FROM mining.cohort_retention", pictures.cohort_heatmap),
    "Top opportunities": (
        (
            "SELECT type || ': ' || target || coalesce(' / ' || category, '') AS label, type, "
            "estimated_value FROM mining.opportunities WHERE rank <= 3"
        ),
        pictures.opportunities_chart,
    ),
}
TABLE_QUERIES = {
    "Sales": "SELECT * EXCLUDE (as_of) FROM mining.sales_efficiency "
    "WHERE breakdown IN ('overall', 'channel', 'category') ORDER BY breakdown, revenue DESC",
    "Satisfaction": "SELECT * EXCLUDE (as_of) FROM analytics.satisfaction_summary "
    "WHERE breakdown IN ('overall', 'rfm_segment', 'contact_channel') ORDER BY ALL",
    "Needs": "SELECT * EXCLUDE (as_of) FROM analytics.need_ipa WHERE breakdown = 'overall'",
    "Unmet needs": "SELECT * EXCLUDE (as_of) FROM analytics.unmet_needs WHERE topic_rank <= 5",
    "Inquiry conversion": "SELECT * EXCLUDE (as_of) FROM mining.inquiry_conversion",
    "Top opportunities": "SELECT type, target, category, round(estimated_value) AS value, reason "
    "FROM mining.opportunities WHERE rank <= 5 ORDER BY type, rank",
    "Model runs (latest)": "SELECT model, status, customers, seconds, note FROM "
    "analytics.model_runs QUALIFY run_at = max(run_at) OVER (PARTITION BY model) ORDER BY model",
}
STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
table { border-collapse: collapse; font-size: 12px; margin-bottom: 1.5em; }
th, td { border: 1px solid #ddd; padding: 3px 6px; text-align: right; }
th { background: #f3f3f3; } td:first-child, th:first-child { text-align: left; }
img { max-width: 100%; } .missing { color: #a00; }
"""


# The last drawing of each chart, by a digest of the frame drawn: a run draws each chart for
# its asset's metadata and again for the report, and matplotlib is the slow part.
_drawn: dict[str, tuple[bytes, bytes]] = {}


def _digest(frame: pd.DataFrame) -> bytes:
    rows = pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes()
    return hashlib.sha256(repr(list(frame.columns)).encode() + rows).digest()


def chart(conn: duckdb.DuckDBPyConnection, title: str) -> bytes:
    """One of the report's charts, drawn from the warehouse."""
    query, draw = CHART_QUERIES[title]
    frame = conn.execute(query).df()
    if not len(frame):
        return pictures.no_data(title)
    digest = _digest(frame)
    if title not in _drawn or _drawn[title][0] != digest:
        _drawn[title] = (digest, draw(frame))
    return _drawn[title][1]


def chart_metadata(conn: duckdb.DuckDBPyConnection, title: str) -> dict:
    """The chart as Markdown metadata, which the Dagster UI shows as an image."""
    return {"chart": dg.MetadataValue.md(pictures.markdown_image(chart(conn, title), title))}


def _section(title: str, body: str) -> str:
    return f"<h2>{html.escape(title)}</h2>\n{body}\n"


def report_html(conn: duckdb.DuckDBPyConnection, as_of: date) -> tuple[str, list[str]]:
    """The report and the titles of the sections that could not be drawn (their tables are
    missing: those assets have not been materialized)."""
    parts, missing = [], []
    for title in CHART_QUERIES:
        try:
            png = chart(conn, title)
        except duckdb.CatalogException:
            missing.append(title)
            parts.append(_section(title, "<p class=missing>not materialized yet</p>"))
            continue
        image = base64.b64encode(png).decode()
        parts.append(
            _section(title, f'<img alt="{html.escape(title)}" src="data:image/png;base64,{image}">')
        )
    for title, query in TABLE_QUERIES.items():
        try:
            frame = conn.execute(query).df()
        except duckdb.CatalogException:
            missing.append(title)
            parts.append(_section(title, "<p class=missing>not materialized yet</p>"))
            continue
        parts.append(
            _section(
                title, frame.to_html(index=False, float_format=lambda v: f"{v:,.2f}", na_rep="")
            )
        )
    page = (
        f"<!doctype html>\n<html><head><meta charset=utf-8><title>CRM report, as of {as_of}</title>"
        f"<style>{STYLE}</style></head><body>\n<h1>CRM report, as of {as_of}</h1>\n"
        + "".join(parts)
        + "</body></html>\n"
    )
    return page, missing
