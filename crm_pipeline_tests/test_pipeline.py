"""The whole pipeline, in process, on a small generated landing zone scored against its manifest."""

from __future__ import annotations

import csv
import re
import shutil
import subprocess
import sys
from datetime import date, timedelta
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from crm_pipeline.analytics.assets import analytics_assets
from crm_pipeline.analytics.features import customer_features
from crm_pipeline.analytics.satisfaction import csat, nps
from crm_pipeline.analytics.scoring import churn_tier
from crm_pipeline.analytics.settings import AnalysisSettings
from crm_pipeline.core.classify import CoreRules
from crm_pipeline.core.crosswalk import pairwise_scores
from crm_pipeline.definitions import defs
from crm_pipeline.dictionary import IDENTITY_TABLES, UNPUBLISHED_TABLES, data_dictionary
from crm_pipeline.dictionary import TABLES as DICTIONARY_TABLES
from crm_pipeline.generate import generate
from crm_pipeline.mining.assets import mining_assets
from crm_pipeline.mining.settings import MiningSettings
from crm_pipeline.report import chart
from crm_pipeline.reporting import personal_columns
from crm_pipeline.resources import LandingZoneResource, WarehouseResource
from crm_pipeline.run import landing_days, materialize_all
from crm_pipeline.staging.assets import staging_assets
from crm_pipeline_tests.conftest import tables_quoting

# Source names in the generator's summary -> raw tables.
RAW_TABLE = {
    "accounts": "online_accounts",
    "orders": "online_orders",
    "order_items": "online_order_items",
    "store_purchases": "store_purchases",
    "inquiries": "inquiries",
    "feedback": "feedback",
    "products": "products",
    "stores": "stores",
    "loyalty_members": "loyalty_members",
}


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("gen") / "landing"
    summary = generate(root, customers=300, days=42, seed=7, defect_rate=0.08)
    warehouse = root.parent / "warehouse.duckdb"
    zone = LandingZoneResource(root=str(root))
    days = landing_days(zone)
    test_defs = dg.Definitions(
        assets=list(defs.assets),
        resources={
            "warehouse": WarehouseResource(path=str(warehouse)),
            "landing_zone": zone,
            "core_rules": CoreRules(),
            "analysis": AnalysisSettings(),
            "mining": MiningSettings(),
        },
    )
    result = materialize_all(test_defs, dg.DagsterInstance.ephemeral(), days[0], days[-1])
    conn = duckdb.connect(str(warehouse), read_only=True)
    defects = list(csv.DictReader((root.parent / "landing_ground_truth" / "defects.csv").open()))
    yield result, conn, summary, defects, days
    conn.close()


def test_every_asset_materializes_in_one_run_over_all_days(run) -> None:
    result, _, _, _, days = run
    assert result.success
    assert len(days) == 42
    materialized = {e.asset_key for e in result.get_asset_materialization_events()}
    assert materialized == set(defs.resolve_asset_graph().get_all_asset_keys())


def test_every_generated_row_is_in_raw_or_in_quarantine(run) -> None:
    _, conn, summary, _, _ = run
    for source, written in summary["rows"].items():
        table = RAW_TABLE[source]
        landed = conn.execute(f"SELECT count(*) FROM raw.{table}").fetchone()[0]
        rejected = conn.execute(
            "SELECT count(*) FROM quarantine.raw_rejects WHERE source = ?", [table]
        ).fetchone()[0]
        assert landed + rejected == written, source


def test_no_error_check_fails_on_generated_data(run) -> None:
    result, _, _, _, _ = run
    errors = [
        (e.asset_key.to_user_string(), e.check_name, e.description)
        for e in result.get_asset_check_evaluations()
        if not e.passed and e.severity == dg.AssetCheckSeverity.ERROR
    ]
    assert errors == []


def test_each_broken_file_of_the_manifest_is_quarantined(run) -> None:
    _, conn, _, defects, _ = run
    expected = {
        "truncated_file": {"missing_values", "invalid_json"},
        "renamed_column": {"header_mismatch"},
        "non_utf8": {"invalid_encoding"},
    }
    broken = [d for d in defects if d["defect"] in expected]
    assert {d["defect"] for d in broken} == set(expected)
    # A record broken two ways (cut off and mis-encoded) may be rejected for either.
    accepted: dict[tuple[str, str], set[str]] = {}
    for d in broken:
        accepted.setdefault((d["file"], d["line"]), set()).update(expected[d["defect"]])
    for d in broken:
        reasons = {
            r
            for (r,) in conn.execute(
                "SELECT reason FROM quarantine.raw_rejects WHERE source_file = ? AND source_line = ?",
                [d["file"], int(d["line"]) + (1 if d["defect"] == "renamed_column" else 0)],
            ).fetchall()
        }
        # A file with a renamed column is set aside whole, whatever else is wrong in it.
        assert reasons & (accepted[d["file"], d["line"]] | {"header_mismatch"}), d


def test_orders_without_a_partition_day_are_quarantined_not_lost(run) -> None:
    _, conn, _, defects, _ = run
    undatable = {
        d["record_id"]
        for d in defects
        if d["source"] == "orders"
        and (d["defect"] == "future_date" or d["detail"] == "ordered_at missing")
    }
    quarantined = {
        r
        for (r,) in conn.execute(
            "SELECT raw_text ->> 'order_id' FROM quarantine.raw_rejects "
            "WHERE source = 'online_orders' AND reason = 'no_partition'"
        ).fetchall()
    }
    assert undatable and undatable == quarantined


def test_every_blocking_check_of_every_layer_passes(run) -> None:
    result = run[0]
    evaluations = result.get_asset_check_evaluations()
    layers = {e.asset_key.path[0] for e in evaluations}
    assert {"staging", "core", "analytics", "mining"} <= layers
    failed = [
        (e.asset_key.to_user_string(), e.check_name, e.description)
        for e in evaluations
        if not e.passed and e.severity == dg.AssetCheckSeverity.ERROR
    ]
    assert failed == []


def test_raw_and_staging_assets_declare_the_columns_the_warehouse_holds(run) -> None:
    """Their materializations leave the column schema to the definition, so it must be true."""
    result, conn, *_ = run
    graph = defs.resolve_asset_graph()
    keys = [k for k in graph.get_all_asset_keys() if k.path[0] in ("raw", "staging")]
    assert len(keys) == 18
    for key in keys:
        declared = [
            (c.name, c.type.removesuffix(" NOT NULL"))
            for c in graph.get(key).metadata["dagster/column_schema"].columns
        ]
        held = conn.execute(
            "SELECT column_name, data_type FROM duckdb_columns() "
            "WHERE schema_name = ? AND table_name = ? ORDER BY column_index",
            key.path,
        ).fetchall()
        assert declared == held, key.to_user_string()
    shown = result.asset_materializations_for_node("staging__online_orders")[0].metadata
    assert "dagster/column_schema" not in shown
    # Each day of the range run carries the range's figures: not as the day's row count.
    staged = conn.execute("SELECT count(*) FROM staging.online_orders").fetchall()[0][0]
    assert "dagster/row_count" not in shown and shown["rows_in_run"].value == staged > 0
    shown = result.asset_materializations_for_node("raw__online_orders")[0].metadata
    loaded = conn.execute("SELECT count(*) FROM raw.online_orders").fetchall()[0][0]
    assert "dagster/row_count" not in shown and shown["rows_in_run"].value == loaded > staged


def test_injected_erroneous_values_never_reach_staging(run) -> None:
    _, conn, _, defects, _ = run
    staged = {
        "store_purchases": "staging.store_purchases",
        "feedback": "staging.feedback",
        "inquiries": "staging.inquiries",
    }
    checked = set()
    for d in defects:
        if d["source"] in staged and d["defect"] in (
            "future_date",
            "negative_price",
            "unknown_sku",
            "rating_off_scale",
        ):
            checked.add(d["defect"])
            # An inquiry about a product the catalogue lacks is kept, without the product.
            value = "sku" if d["source"] == "inquiries" and d["defect"] == "unknown_sku" else "*"
            kept = conn.execute(
                f"SELECT count({value}) FROM {staged[d['source']]} "
                "WHERE source_file = ? AND source_line = ?",
                [d["file"], int(d["line"])],
            ).fetchone()[0]
            assert kept == 0, d
    assert checked == {"future_date", "negative_price", "unknown_sku", "rating_off_scale"}


def test_identity_resolution_scores_against_the_true_identities(run) -> None:
    _, conn, _, _, _ = run
    warehouse = Path(conn.execute("SELECT file FROM pragma_database_list").fetchall()[0][0])
    scores = pairwise_scores(conn, warehouse.parent / "landing_ground_truth" / "identities.csv")
    # At eight times the default defect rate the targets (0.98 / 0.95) must still nearly hold.
    assert scores["precision"] >= 0.97 and scores["recall"] >= 0.9, scores


def _querying(language: str) -> list[str]:
    """The README's code blocks in `language` under its Querying section."""
    readme = (Path(__file__).parents[1] / "README.md").read_text(encoding="utf-8")
    start = readme.index("\n## Querying\n")
    section = readme[start : readme.index("\n## ", start + 1)]
    return re.findall(rf"```{language}\n(.*?)```", section, re.DOTALL)


@pytest.fixture(scope="module")
def analyst_folder(run, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder laid out as the README's commands expect: data/published.duckdb (the run's
    published copy) and .venv (the environment running these tests)."""
    _, conn, _, _, _ = run
    warehouse = Path(conn.execute("SELECT file FROM pragma_database_list").fetchall()[0][0])
    folder = tmp_path_factory.mktemp("analyst")
    (folder / "data").mkdir()
    (folder / "data" / "published.duckdb").symlink_to(warehouse.with_name("published.duckdb"))
    (folder / ".venv").symlink_to(Path(sys.prefix))
    return folder


def test_the_readme_example_queries_return_rows_from_the_published_copy(analyst_folder) -> None:
    [block] = _querying("sql")
    queries = [q.strip() for q in re.sub(r"--[^\n]*", "", block).split(";") if q.strip()]
    assert len(queries) >= 5
    with duckdb.connect(str(analyst_folder / "data" / "published.duckdb"), read_only=True) as conn:
        for query in queries:
            assert conn.execute(query).fetchall(), query


def _printed(command: list[str], folder: Path) -> str:
    """What a command run in `folder` printed; it must succeed."""
    done = subprocess.run(command, cwd=folder, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_the_readme_connection_recipes_run_as_written(analyst_folder) -> None:
    [cli] = _querying("sh")
    [python, alchemy] = _querying("python")
    printed = _printed(["bash", "-c", cli], analyst_folder)
    assert "rfm_segment" in printed and "No purchase" in printed  # the DuckDB CLI's table
    assert "lifecycle_stage" in _printed([sys.executable, "-c", python], analyst_folder)
    printed = _printed([sys.executable, "-c", alchemy], analyst_folder)
    # The five most valuable customers, by key and CLV; the schema's tables and a table's
    # columns, as a BI tool reflects them.
    assert len(re.findall(r"\('C[0-9A-F]+', ", printed)) == 5, printed
    assert "'scored_customers'" in printed and "'need_ipa'" in printed, printed
    assert "[('customer_key', 'VARCHAR'), ('customer_type', 'VARCHAR'), " in printed, printed


def _dictionary_types(text: str) -> dict[tuple[str, str], str]:
    """(table, column) -> the type a data dictionary shows."""
    return {
        (table, row.split(" | ")[0].lstrip("| ")): row.split(" | ")[1]
        for table, section in (part.split("\n", 1) for part in text.split("\n## ")[1:])
        for row in section.splitlines()
        if row.startswith("| ") and not row.startswith(("| column ", "|---"))
    }


def test_the_data_dictionary_gives_each_column_the_type_the_warehouse_stores(run) -> None:
    _, conn, _, _, _ = run
    warehouse = conn.execute("SELECT file FROM pragma_database_list").fetchall()[0][0]
    text = data_dictionary(warehouse)
    stored = conn.execute(
        "SELECT table_schema || '.' || table_name, column_name, data_type "
        "FROM information_schema.columns"
    ).fetchall()
    shown = _dictionary_types(text)
    assert len(stored) > 400
    for table, column, data_type in stored:
        if table in DICTIONARY_TABLES:
            assert shown[(table, column)] == data_type, (table, column)
    # Written from the published copy, as the command writes it: the tables the copy leaves
    # out (the identity tables) show their SQL types too, not the contract's pandas ones.
    copied = _dictionary_types(data_dictionary(str(Path(warehouse).with_name("published.duckdb"))))
    for table, column, data_type in stored:
        if table in IDENTITY_TABLES:
            assert copied[(table, column)] == data_type, (table, column)
    # The contract's pandas type (float64) was shown before.
    assert shown[("core.customers", "income")] == "DECIMAL(12,2)"
    # Tables written only by an erasure are listed, and said to be missing.
    erasures = text.split("\n## raw.erasures\n")[1].split("\n## ")[0]
    assert "Not in the warehouse yet" in erasures
    # Each table says what the published copy holds of it, as the publish wrote it.
    tables = "SELECT schema_name || '.' || table_name FROM duckdb_tables()"
    held = {table for (table,) in conn.execute(tables).fetchall()}
    with duckdb.connect(str(Path(warehouse).with_name("published.duckdb")), read_only=True) as copy:
        in_copy = {table for (table,) in copy.execute(tables).fetchall()}
    assert len(in_copy) > 20 and len(held - in_copy) > 10
    for table, section in (part.split("\n", 1) for part in text.split("\n## ")[1:]):
        said = section.split("Published copy")[1].split("\n")[0]
        if table in held:
            assert ("left out" in said) == (table not in in_copy), table
    assert "personal columns empty" in text.split("\n## core.customers\n")[1].split("\n## ")[0]
    # No mart column of a type a BI tool's driver cannot read, or of none at all.
    odd = [
        (table, column, data_type)
        for table, column, data_type in stored
        if table.startswith(("analytics.", "mining."))
        and data_type in ("HUGEINT", "NULL", '"NULL"')
    ]
    assert odd == []


def test_a_buyer_without_a_repeat_purchase_has_no_model_churn_risk_but_the_rules_tier(
    run,
) -> None:
    _, conn, _, _, _ = run
    (as_of,) = conn.execute(
        "SELECT max(CAST(as_of AS DATE)) FROM analytics.scored_customers"
    ).fetchone()
    repeats = customer_features(conn, as_of)["x"]
    scored = (
        conn.execute(
            "SELECT customer_key, p_alive, churn_risk, churn_tier, rule_churn_tier "
            "FROM analytics.scored_customers WHERE customer_key IN (SELECT unnest(?))",
            [list(repeats.index)],
        )
        .df()
        .set_index("customer_key")
    )
    one_time = scored.loc[repeats.index[repeats == 0]]
    repeaters = scored.loc[repeats.index[repeats > 0]]
    assert len(one_time) > 20 and len(repeaters) > 20
    # The model holds a one-time buyer alive whenever they bought: no churn risk from it.
    assert (one_time["p_alive"] == 1).all()
    assert one_time["churn_risk"].isna().all()
    assert (one_time["churn_tier"] == one_time["rule_churn_tier"]).all()
    assert (repeaters["churn_risk"] - (1 - repeaters["p_alive"])).abs().max() < 1e-12
    assert (repeaters["churn_tier"] == churn_tier(repeaters["churn_risk"])).all()


def test_scored_customers_has_one_row_per_customer_and_no_personal_data(run) -> None:
    _, conn, _, _, _ = run
    customers = conn.execute("SELECT count(*) FROM core.customers").fetchall()[0][0]
    scored = conn.execute(
        "SELECT count(*), count(DISTINCT customer_key) FROM analytics.scored_customers"
    ).fetchall()[0]
    assert scored == (customers, customers)
    columns = {
        name
        for (name,) in conn.execute(
            "SELECT column_name FROM information_schema.columns "
            "WHERE table_schema = 'analytics' AND table_name = 'scored_customers'"
        ).fetchall()
    }
    assert not columns & {"full_name", "email", "phone", "address", "birth_date"}
    assert conn.execute(
        "SELECT count(p_alive) > 0 AND min(p_alive) >= 0 AND max(p_alive) <= 1 "
        "FROM analytics.scored_customers"
    ).fetchall()[0][0]
    # A customer who never bought is neither overdue nor on time.
    assert conn.execute(
        "SELECT count(*) FILTER (WHERE r_score IS NULL), "
        "count(*) FILTER (WHERE r_score IS NULL AND overdue IS NULL), "
        "count(*) FILTER (WHERE r_score IS NOT NULL AND overdue IS NULL) "
        "FROM analytics.scored_customers"
    ).fetchone()[1:] == (
        conn.execute(
            "SELECT count(*) FILTER (WHERE r_score IS NULL) FROM analytics.scored_customers"
        ).fetchone()[0],
        0,
    )


def test_the_satisfaction_summary_agrees_with_the_measures_on_the_core_tables(run) -> None:
    _, conn, _, _, _ = run
    feedback = conn.execute("SELECT satisfaction_rating, nps FROM core.feedback").df()
    topics = conn.execute("SELECT topic FROM core.inquiries").df()["topic"]
    overall = conn.execute(
        "SELECT responses, csat, nps, inquiries, complaints FROM analytics.satisfaction_summary "
        "WHERE breakdown = 'overall'"
    ).fetchall()
    assert len(overall) == 1
    responses, csat_pct, nps_pct, inquiries, complaints = overall[0]
    assert responses == feedback["satisfaction_rating"].count()
    assert csat_pct == pytest.approx(csat(feedback["satisfaction_rating"]))
    assert nps_pct == pytest.approx(nps(feedback["nps"]))
    assert (inquiries, complaints) == (len(topics), (topics == "complaint").sum())
    # Each breakdown places every answer and every inquiry exactly once.
    totals = conn.execute(
        "SELECT breakdown, sum(responses), sum(inquiries) FROM analytics.satisfaction_summary "
        "GROUP BY 1"
    ).fetchall()
    for breakdown, answered, asked in totals:
        assert answered == (responses if breakdown != "contact_channel" else 0), breakdown
        assert asked == inquiries, breakdown


def test_unmet_needs_count_every_pre_sales_question_and_complaint(run) -> None:
    _, conn, _, _, _ = run
    expected = dict(
        conn.execute(
            "SELECT topic, count(*) FROM core.inquiries "
            "WHERE topic IN ('pre_sales', 'complaint') GROUP BY 1"
        ).fetchall()
    )
    got = conn.execute(
        "SELECT topic, sum(inquiries), sum(share_of_topic), min(topic_rank) "
        "FROM analytics.unmet_needs GROUP BY 1"
    ).fetchall()
    assert set(expected) == {"pre_sales", "complaint"}
    assert {t: n for t, n, _, _ in got} == expected
    for _, _, share, first in got:
        assert share == pytest.approx(100) and first == 1


ANALYTICS_TABLES = (
    "scored_customers",
    "need_ipa",
    "customer_needs",
    "satisfaction_summary",
    "unmet_needs",
)


def _analytics_as_of(warehouse: Path, day: date, refit_days: int = 7) -> dict[str, list]:
    result = dg.materialize(
        analytics_assets,
        resources={
            "warehouse": WarehouseResource(path=str(warehouse)),
            "core_rules": CoreRules(),
            "mining": MiningSettings(),
            # Few enough customers that the models are fitted on this small zone.
            "analysis": AnalysisSettings(
                as_of=day.isoformat(),
                holdout_days=7,
                min_buyers_to_fit=20,
                min_repeat_buyers_to_fit=3,
                refit_days=refit_days,
            ),
        },
    )
    assert result.success
    with duckdb.connect(str(warehouse), read_only=True) as conn:
        tables = {
            name: sorted(map(repr, conn.execute(f"FROM analytics.{name}").fetchall()))
            for name in ANALYTICS_TABLES
        }
        tables["model_runs"] = conn.execute(
            "SELECT model, status, parameters, log_likelihood, customers, data_from, data_to, "
            "metrics FROM analytics.model_runs ORDER BY model"
        ).fetchall()
    return tables


def test_an_as_of_result_is_the_same_with_or_without_the_data_after_the_day(
    run, tmp_path: Path
) -> None:
    _, conn, _, _, days = run
    day = date.fromisoformat(days[len(days) * 2 // 3])
    source = Path(conn.execute("SELECT file FROM pragma_database_list").fetchall()[0][0])
    full, cut = tmp_path / "full.duckdb", tmp_path / "cut.duckdb"
    shutil.copy(source, full)
    shutil.copy(source, cut)
    # The last inquiries opened by the day (pre-sales questions and complaints among them),
    # answered and closed only days after it.
    for copy in (full, cut):
        with duckdb.connect(str(copy)) as writer:
            writer.execute(
                """
                UPDATE core.inquiries
                SET first_response_at = CAST($day AS DATE) + INTERVAL 2 DAY,
                    closed_at = CAST($day AS DATE) + INTERVAL 3 DAY,
                    first_response_hours = date_diff('second', opened_at,
                        CAST($day AS DATE) + INTERVAL 2 DAY) / 3600,
                    resolution_hours = date_diff('second', opened_at,
                        CAST($day AS DATE) + INTERVAL 3 DAY) / 3600
                WHERE inquiry_id IN (
                    (SELECT inquiry_id FROM core.inquiries
                     WHERE CAST(opened_at AS DATE) <= $day AND customer_key IS NOT NULL
                       AND topic IN ('complaint', 'pre_sales')
                     ORDER BY opened_at DESC LIMIT 4)
                    UNION ALL
                    (SELECT inquiry_id FROM core.inquiries
                     WHERE CAST(opened_at AS DATE) <= $day ORDER BY opened_at DESC LIMIT 4)
                )
                """,
                {"day": day},
            )
    later = {
        "core.order_lines": "ordered_at",
        "core.feedback": "submitted_at",
        "core.feedback_needs": "submitted_at",
        "core.inquiries": "opened_at",
        "core.customers": "first_seen_at",
    }
    with duckdb.connect(str(cut)) as writer:
        removed = 0
        for table, column in later.items():
            removed += writer.execute(
                f"DELETE FROM {table} WHERE {column} >= ?", [day + timedelta(days=1)]
            ).fetchall()[0][0]
        # An inquiry opened by the day but answered or closed later was open on it.
        for at, hours in (
            ("first_response_at", "first_response_hours"),
            ("closed_at", "resolution_hours"),
        ):
            removed += writer.execute(
                f"UPDATE core.inquiries SET {at} = NULL, {hours} = NULL WHERE {at} >= ?",
                [day + timedelta(days=1)],
            ).fetchall()[0][0]
    assert removed > 100  # a real share of the data lies after the day
    for copy in (full, cut):
        with duckdb.connect(str(copy)) as writer:
            writer.execute("DROP SCHEMA analytics CASCADE")
    with_later, without = _analytics_as_of(full, day), _analytics_as_of(cut, day)
    assert len(with_later["scored_customers"]) > 100
    assert [status for _, status, *_ in with_later["model_runs"]] == ["fitted"] * 3
    for name, rows in without.items():
        assert with_later[name] == rows, name


def _copy_as_of(run, folder: Path, *dropping: str) -> tuple[date, Path]:
    """A day two thirds into the run, and a copy of its warehouse without what `dropping` drops."""
    _, conn, _, _, days = run
    warehouse = folder / "warehouse.duckdb"
    shutil.copy(
        Path(conn.execute("SELECT file FROM pragma_database_list").fetchall()[0][0]), warehouse
    )
    with duckdb.connect(str(warehouse)) as writer:
        for statement in dropping:
            writer.execute(statement)
    return date.fromisoformat(days[len(days) * 2 // 3]), warehouse


def test_a_clv_fit_scores_the_days_after_it_until_refit_days_and_never_a_day_before(
    run, tmp_path: Path
) -> None:
    day, warehouse = _copy_as_of(run, tmp_path, "DROP SCHEMA analytics CASCADE")

    def fitted_as_of() -> list[date]:
        with duckdb.connect(str(warehouse), read_only=True) as reader:
            return [
                d.date()
                for (d,) in reader.execute(
                    "SELECT as_of FROM analytics.model_runs WHERE model = 'bgnbd' ORDER BY run_at"
                ).fetchall()
            ]

    def p_alive() -> dict[str, float]:
        with duckdb.connect(str(warehouse), read_only=True) as reader:
            return dict(
                reader.execute(
                    "SELECT customer_key, p_alive FROM analytics.scored_customers "
                    "WHERE p_alive IS NOT NULL"
                ).fetchall()
            )

    first = _analytics_as_of(warehouse, day, refit_days=3)
    before = p_alive()
    # Three days on: scored again with the same parameters, so nothing is fitted or logged,
    # and the chances of being alive of repeat buyers who did not come back fall with the day.
    later = _analytics_as_of(warehouse, day + timedelta(days=3), refit_days=3)
    after = p_alive()
    assert fitted_as_of() == [day]
    assert later["model_runs"] == first["model_runs"]
    assert len(before) > 100
    assert sum(after[k] < before[k] for k in before if before[k] < 0.999) >= 10
    # The day before the fit may not use it (it saw that day's future); four days on is too late.
    _analytics_as_of(warehouse, day - timedelta(days=1), refit_days=3)
    _analytics_as_of(warehouse, day + timedelta(days=4), refit_days=3)
    assert fitted_as_of() == [day, day - timedelta(days=1), day + timedelta(days=4)]
    # A day of purchases up to a fit's day staged again since (re-delivered, or run again
    # after an upgrade) changes the history it was fitted on: it serves no more.
    _analytics_as_of(warehouse, day + timedelta(days=5), refit_days=3)
    assert fitted_as_of()[-1] == day + timedelta(days=4)  # served
    [store] = [a for a in staging_assets if a.key.path == ["staging", "store_purchases"]]
    restaged = (day - timedelta(days=2)).isoformat()
    assert dg.materialize(
        [store],
        resources={"warehouse": WarehouseResource(path=str(warehouse))},
        partition_key=restaged,
    ).success
    _analytics_as_of(warehouse, day + timedelta(days=5), refit_days=3)
    assert fitted_as_of()[-1] == day + timedelta(days=5)
    # A fit made by other code (the version before an upgrade) serves no later day.
    with duckdb.connect(str(warehouse)) as writer:
        writer.execute("UPDATE analytics.model_runs SET code = 'an earlier version'")
    _analytics_as_of(warehouse, day + timedelta(days=6), refit_days=3)
    assert fitted_as_of()[-1] == day + timedelta(days=6)
    # Scored with the fit of its own day again, a day's table is the one its fit gave.
    assert (
        _analytics_as_of(warehouse, day, refit_days=3)["scored_customers"]
        == (first["scored_customers"])
    )


def test_mined_rules_serve_until_refit_days_and_the_holdout_runs_with_each_mining(
    run, tmp_path: Path
) -> None:
    day, warehouse = _copy_as_of(
        run, tmp_path, "DROP TABLE analytics.model_runs", "DROP SCHEMA mining CASCADE"
    )
    selected = [
        a for a in mining_assets if a.key.path[-1] in ("association_rules", "recommendations")
    ]

    def mine(as_of: date, **settings) -> tuple[list, date, date]:
        """Runs logged (model, as of), and the as-of days of the rules and recommendations."""
        result = dg.materialize(
            selected,
            resources={
                "warehouse": WarehouseResource(path=str(warehouse)),
                "core_rules": CoreRules(),
                "analysis": AnalysisSettings(as_of=as_of.isoformat()),
                "mining": MiningSettings(refit_days=3, holdout_days=7, **settings),
            },
        )
        assert result.success
        with duckdb.connect(str(warehouse), read_only=True) as reader:
            runs = [
                (m, d.date())
                for m, d in reader.execute(
                    "SELECT model, as_of FROM analytics.model_runs ORDER BY run_at, model"
                ).fetchall()
            ]
            rules, recommended = (
                reader.execute(f"SELECT max(as_of) FROM mining.{t}").fetchall()[0][0].date()
                for t in ("association_rules", "recommendations")
            )
        return runs, rules, recommended

    mined = [("association_rules", day), ("recommender_holdout", day)]
    assert mine(day) == (mined, day, day)
    # Three days on the rules serve and the holdout stands; every buyer is recommended anew.
    later = day + timedelta(days=3)
    assert mine(later) == (mined, day, later)
    # Four days on, the day before, or with another threshold: mined and evaluated again.
    for as_of, settings in ((day + timedelta(days=4), {}), (day - timedelta(days=1), {})):
        mined += [("association_rules", as_of), ("recommender_holdout", as_of)]
        assert mine(as_of, **settings) == (mined, as_of, as_of)
    mined += [("association_rules", day)]
    assert mine(day, min_confidence=0.05)[0] == mined
    # The table holds the rules mined last: rules an earlier mining gave are mined again, and
    # a later day's rules never serve an earlier day.
    following = day + timedelta(days=1)
    mined += [("association_rules", following)]
    assert mine(following) == (mined, following, following)
    mined += [("association_rules", day)]
    assert mine(day) == (mined, day, day)
    # An evaluation of another number of recommendations does not serve.
    mined += [("recommender_holdout", day)]
    assert mine(day, recommendations=5) == (mined, day, day)


def test_the_report_beside_the_warehouse_draws_every_chart_and_table(run) -> None:
    result, conn, _, _, _ = run
    warehouse = Path(conn.execute("SELECT file FROM pragma_database_list").fetchall()[0][0])
    page = (warehouse.parent / "report.html").read_text(encoding="utf-8")
    assert page.count('<img alt="') == 4
    assert "not materialized yet" not in page
    assert "<h2>Top opportunities</h2>" in page and "<h2>Sales</h2>" in page
    complete = [e for e in result.get_asset_check_evaluations() if e.check_name == "complete"]
    assert [e.passed for e in complete] == [True]


def test_a_chart_is_drawn_once_for_its_asset_and_the_report_and_anew_when_its_data_change() -> None:
    conn = duckdb.connect()
    conn.execute("CREATE SCHEMA analytics")
    conn.execute(
        "CREATE TABLE analytics.need_ipa AS SELECT * FROM (VALUES "
        "('overall', 'delivery', 4.5, 3.0, 'Concentrate here'), "
        "('overall', 'price', 2.0, 4.0, 'Possible overkill')) "
        "AS t(breakdown, dimension, importance, satisfaction, quadrant)"
    )
    title = "Needs: importance against performance"
    drawn = chart(conn, title)
    assert drawn[:8] == b"\x89PNG\r\n\x1a\n"
    assert chart(conn, title) is drawn  # the report reuses the asset's drawing
    conn.execute("UPDATE analytics.need_ipa SET satisfaction = 1.5 WHERE dimension = 'price'")
    redrawn = chart(conn, title)
    assert redrawn != drawn and chart(conn, title) is redrawn


def test_every_mining_table_is_written_and_the_recommender_evaluated(run) -> None:
    _, conn, _, _, _ = run
    for table in (
        "association_rules",
        "recommendations",
        "opportunities",
        "sales_efficiency",
        "cohort_retention",
        "inquiry_conversion",
    ):
        assert conn.execute(f"SELECT count(*) FROM mining.{table}").fetchall()[0][0] > 0, table
    customers = conn.execute(
        "SELECT count(DISTINCT customer_key) FROM core.order_lines "
        "WHERE customer_key IS NOT NULL AND order_status <> 'refunded'"
    ).fetchall()[0][0]
    assert conn.execute(
        "SELECT count(DISTINCT customer_key), max(rank) FROM mining.recommendations"
    ).fetchall()[0] == (customers, 10)
    # 42 days of history, a 90-day holdout: both holdout checks are skipped, saying why, with
    # no made-up rate and no data range (their cut-off is before the first day).
    holdouts = conn.execute(
        "SELECT model, status, data_from, data_to, note FROM analytics.model_runs "
        "WHERE model LIKE '%holdout' ORDER BY model"
    ).fetchall()
    assert [row[:4] for row in holdouts] == [
        ("bgnbd_holdout", "skipped", None, None),
        ("recommender_holdout", "skipped", None, None),
    ]
    assert "nothing to score" in holdouts[1][4] and "hit rate" not in holdouts[1][4]


def test_the_published_copy_holds_the_run_without_its_personal_data(run) -> None:
    _, conn, _, _, _ = run
    warehouse = Path(conn.execute("SELECT file FROM pragma_database_list").fetchall()[0][0])
    published = warehouse.parent / "published.duckdb"
    count = (
        "SELECT schema_name || '.' || table_name, estimated_size FROM duckdb_tables() ORDER BY 1"
    )
    held = conn.execute(count).fetchall()
    personal = {
        value
        for column in ("email", "phone", "full_name", "address")
        for (value,) in conn.execute(
            f"SELECT DISTINCT {column} FROM raw.online_accounts WHERE length({column}) > 6"
        ).fetchall()
    }
    assert len(personal) > 500 and tables_quoting(warehouse, list(personal))
    with duckdb.connect(str(published), read_only=True) as copy:
        # Every table of the run but the delivered records, every row of each.
        kept = [(table, rows) for table, rows in held if table not in UNPUBLISHED_TABLES]
        assert copy.execute(count).fetchall() == kept
        assert {"raw.deliveries", "quarantine.staging_rejects", "core.customers"} <= {
            table for table, _ in kept
        }
        # Nothing ties a key to an account id or a card number: the crosswalk stays behind.
        ids = conn.execute(
            "SELECT source_id FROM core.customer_crosswalk "
            "WHERE source IN ('online_accounts', 'loyalty_members')"
        ).fetchall()
        assert len(ids) > 100 and tables_quoting(published, [i for (i,) in ids]) == []
        # Every personal column empty, every other column as the warehouse holds it.
        emptied = []
        for table, _ in kept:
            info = copy.execute(f"SELECT name FROM pragma_table_info('{table}')").fetchall()
            for column in personal_columns(DICTIONARY_TABLES[table][0]) & {n for (n,) in info}:
                assert copy.execute(f"SELECT count({column}) FROM {table}").fetchall() == [(0,)]
                emptied.append(f"{table}.{column}")
        customers = sorted(personal_columns(DICTIONARY_TABLES["core.customers"][0]))
        assert len(customers) >= 6 and len(emptied) > len(customers)
        # Each column keeps its type, and its NOT NULL unless it was emptied.
        columns = (
            "SELECT schema_name || '.' || table_name || '.' || column_name, data_type, "
            "is_nullable FROM duckdb_columns() WHERE NOT internal ORDER BY 1"
        )
        in_copy = copy.execute(columns).fetchall()
        kept_columns = {table for table, _ in kept}
        expected = [
            (name, kind, nullable or name in emptied)
            for name, kind, nullable in conn.execute(columns).fetchall()
            if name.rsplit(".", 1)[0] in kept_columns
        ]
        assert in_copy == expected and sum(not nullable for *_, nullable in in_copy) > 20
        counts = " + ".join(f"count({c})" for c in customers)
        assert copy.execute(f"SELECT {counts} FROM core.customers").fetchall() == [(0,)]
        rest = (
            f"SELECT * EXCLUDE ({', '.join(customers)}) FROM core.customers ORDER BY customer_key"
        )
        assert copy.execute(rest).fetchall() == conn.execute(rest).fetchall()
    assert tables_quoting(published, list(personal)) == []
    # Not in the file's bytes either: it is written anew, not copied and blanked.
    data = published.read_bytes()
    assert [value for value in personal if value.encode() in data] == []


def test_no_materialization_or_check_shows_a_delivered_email_phone_or_name(run) -> None:
    result, conn, *_ = run
    shown = []
    for event in result.get_asset_materialization_events():
        shown += [str(v.value) for v in event.materialization.metadata.values()]
    for evaluation in result.get_asset_check_evaluations():
        shown.append(evaluation.description or "")
        shown += [str(v.value) for v in evaluation.metadata.values()]
    text = "\n".join(shown)
    personal = {
        value
        for column in ("email", "phone", "full_name")
        for (value,) in conn.execute(
            f"SELECT DISTINCT {column} FROM raw.online_accounts WHERE length({column}) > 6"
        ).fetchall()
    }
    assert len(personal) > 500
    assert [value for value in personal if value in text] == []
    # The previews still show each value's shape: an operator sees what a column holds.
    assert re.search(r"[xX]+@[xX]+\.[xX]+", text)
